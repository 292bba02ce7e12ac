package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/jhump/protoreflect/grpcreflect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// runCall calls any plugin method through the agent, turning JSON into the
// request and the reply into JSON with the descriptors the agent's
// reflection serves.
func runCall(ctx context.Context, env *cliEnv, args []string) error {
	fs := flag.NewFlagSet("call", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	data := fs.String("d", "{}", "request as JSON; for client streams, several JSON objects; '@file' or '@-' reads it")
	timeout := fs.Duration("timeout", 30*time.Second, "deadline of the call")
	var headers multiFlag
	fs.Var(&headers, "H", "metadata 'key: value' to send (repeatable)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return usagef("call takes one SERVICE/METHOD, got %q (give the request with -d)", fs.Args())
	}
	svc, name, ok := strings.Cut(strings.TrimPrefix(fs.Arg(0), "/"), "/")
	if !ok || svc == "" || name == "" {
		return usagef("call: give SERVICE/METHOD, e.g. echo.v1.EchoService/Echo")
	}
	input, err := readData(*data)
	if err != nil {
		return err
	}
	conn, err := cf.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	for _, h := range headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			return usagef("call: -H %q: use 'key: value'", h)
		}
		ctx = metadata.AppendToOutgoingContext(ctx, strings.TrimSpace(k), strings.TrimSpace(v))
	}

	md, err := resolveMethod(ctx, conn, cf.addr, svc, name)
	if _, ok := status.FromError(err); ok && err != nil {
		return err // the agent's own answer, such as the plugin's state: print it as it is
	}
	if err != nil {
		return fmt.Errorf("call: %w", err)
	}
	reqs, err := decodeRequests(md.Input(), input, md.IsStreamingClient())
	if err != nil {
		return fmt.Errorf("call: request: %w", err)
	}
	full := "/" + svc + "/" + name
	out := protojson.MarshalOptions{Multiline: true, Indent: "  "}
	printMsg := func(m proto.Message) error {
		b, err := out.Marshal(m)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(env.stdout, string(b))
		return err
	}
	if !md.IsStreamingClient() && !md.IsStreamingServer() {
		resp := dynamicpb.NewMessage(md.Output())
		if err := conn.Invoke(ctx, full, reqs[0], resp); err != nil {
			return err
		}
		return printMsg(resp)
	}
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: md.IsStreamingClient(), ServerStreams: md.IsStreamingServer()}, full)
	if err != nil {
		return err
	}
	for _, r := range reqs {
		if err := stream.SendMsg(r); err != nil {
			break // RecvMsg reports the status
		}
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	for {
		resp := dynamicpb.NewMessage(md.Output())
		err := stream.RecvMsg(resp)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := printMsg(resp); err != nil {
			return err
		}
	}
}

func readData(d string) ([]byte, error) {
	switch {
	case d == "@-":
		return io.ReadAll(os.Stdin)
	case strings.HasPrefix(d, "@"):
		return os.ReadFile(d[1:])
	}
	return []byte(d), nil
}

// decodeRequests reads one JSON object, or for client streams a sequence.
func decodeRequests(md protoreflect.MessageDescriptor, input []byte, many bool) ([]proto.Message, error) {
	dec := json.NewDecoder(strings.NewReader(string(input)))
	var out []proto.Message
	for {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		m := dynamicpb.NewMessage(md)
		if err := protojson.Unmarshal(raw, m); err != nil {
			return nil, fmt.Errorf("%s: %w", md.FullName(), err)
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		out = append(out, dynamicpb.NewMessage(md))
	}
	if !many && len(out) > 1 {
		return nil, fmt.Errorf("the method takes one %s, got %d JSON values", md.FullName(), len(out))
	}
	return out, nil
}

// resolveMethod finds a method's descriptor through the agent's reflection.
func resolveMethod(ctx context.Context, conn grpc.ClientConnInterface, addr, svc, name string) (protoreflect.MethodDescriptor, error) {
	rc := grpcreflect.NewClientAuto(ctx, conn)
	defer rc.Reset()
	sd, err := rc.ResolveService(svc)
	if err != nil {
		if grpcreflect.IsElementNotFoundError(err) {
			return nil, fmt.Errorf("the agent at %s knows no service %s (see 'plughost plugin list')", addr, svc)
		}
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		return nil, fmt.Errorf("reflection: %w", err)
	}
	mdesc := sd.FindMethodByName(name)
	if mdesc == nil {
		var names []string
		for _, m := range sd.GetMethods() {
			names = append(names, m.GetName())
		}
		return nil, fmt.Errorf("service %s has no method %s (it has %s)", svc, name, strings.Join(names, ", "))
	}
	return mdesc.UnwrapMethod(), nil
}
