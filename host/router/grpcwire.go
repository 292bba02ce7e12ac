package router

import (
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2/hpack"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// What the relay reads and writes of gRPC's HTTP/2 mapping
// (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md): the
// grpc-timeout header, and the status trailers of calls it answers itself.

// parseTimeout parses a grpc-timeout value: at most 8 digits and a unit.
func parseTimeout(s string) (time.Duration, bool) {
	if len(s) < 2 || len(s) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	if n > int64(time.Duration(1<<63-1)/unit) {
		return 1<<63 - 1, true
	}
	return time.Duration(n) * unit, true
}

// formatTimeout writes d as a grpc-timeout value, in the finest unit whose
// count fits the 8 digits the protocol allows.
func formatTimeout(d time.Duration) string {
	if d <= 0 {
		return "0n"
	}
	const max = 1e8 - 1
	for _, u := range []struct {
		d time.Duration
		c string
	}{{time.Nanosecond, "n"}, {time.Microsecond, "u"}, {time.Millisecond, "m"}, {time.Second, "S"}, {time.Minute, "M"}} {
		if n := (d + u.d - 1) / u.d; n <= max {
			return strconv.FormatInt(int64(n), 10) + u.c
		}
	}
	n := min((d+time.Hour-1)/time.Hour, max)
	return strconv.FormatInt(int64(n), 10) + "H"
}

// encodeGRPCMessage percent-encodes a grpc-message value: bytes outside
// printable ASCII, and '%' itself, become %XX.
func encodeGRPCMessage(msg string) string {
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= ' ' && c <= '~' && c != '%' {
			b.WriteByte(c)
			continue
		}
		const hex = "0123456789ABCDEF"
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// statusFields are the header fields that end a call with err's status:
// a trailers-only response when no headers were sent yet, else trailers.
func statusFields(err error, headersSent bool, extra []hpack.HeaderField) []hpack.HeaderField {
	st := status.Convert(err)
	fields := make([]hpack.HeaderField, 0, 4+len(extra))
	if !headersSent {
		fields = append(fields,
			hpack.HeaderField{Name: ":status", Value: "200"},
			hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
	}
	fields = append(fields, hpack.HeaderField{Name: "grpc-status", Value: strconv.Itoa(int(st.Code()))})
	if m := st.Message(); m != "" {
		fields = append(fields, hpack.HeaderField{Name: "grpc-message", Value: encodeGRPCMessage(m)})
	}
	if len(st.Proto().GetDetails()) > 0 {
		// The details (an ErrorInfo's reason) travel as gRPC's servers send
		// them: the google.rpc.Status, binary, base64 without padding.
		if b, err := proto.Marshal(st.Proto()); err == nil {
			fields = append(fields, hpack.HeaderField{Name: "grpc-status-details-bin", Value: base64.RawStdEncoding.EncodeToString(b)})
		}
	}
	return append(fields, extra...)
}

// statusReason reads the router's ErrorInfo reason (see ErrorReason) from
// the grpc-status-details-bin of a call's closing header fields, or "".
func statusReason(fields []hpack.HeaderField) string {
	for _, f := range fields {
		if f.Name != "grpc-status-details-bin" {
			continue
		}
		// gRPC sends it without padding; decoders take either.
		b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(f.Value, "="))
		if err != nil {
			return ""
		}
		st := new(spb.Status)
		if proto.Unmarshal(b, st) != nil {
			return ""
		}
		return ErrorReason(status.FromProto(st).Err())
	}
	return ""
}

// statusCode reads the grpc-status of a call's closing header fields; a
// close without one is Unknown, as gRPC clients read it.
func statusCode(fields []hpack.HeaderField) codes.Code {
	for _, f := range fields {
		if f.Name == "grpc-status" {
			if n, err := strconv.ParseUint(f.Value, 10, 32); err == nil {
				return codes.Code(n)
			}
			return codes.Unknown
		}
	}
	return codes.Unknown
}
