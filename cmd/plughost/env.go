package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc"

	"github.com/plughost/plughost/host/agent"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
)

// cliEnv carries what every command writes to.
type cliEnv struct {
	stdout, stderr io.Writer
}

// clientFlags are the flags of every command that talks to an agent.
type clientFlags struct {
	addr   string
	format string
	tls    clientTLS
	tokenFlags
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	def := os.Getenv("PLUGHOST_ADDR")
	if def == "" {
		def = agent.DefaultAPIAddr
	}
	fs.StringVar(&c.addr, "addr", def, "agent API address (env PLUGHOST_ADDR)")
	fs.StringVar(&c.format, "format", "table", "output format: table or json")
	c.tls.register(fs)
	c.tokenFlags.register(fs)
}

func (c *clientFlags) check() error {
	if c.format != "table" && c.format != "json" {
		return usagef("-format %q: use table or json", c.format)
	}
	return nil
}

// dial connects to the agent. Calls carry the token (see tokenFlags);
// history records the token's name as who made them.
func (c *clientFlags) dial() (*grpc.ClientConn, error) { return c.dialWith() }

// dialLoad connects a load generator to the agent: its calls carry nothing
// but their token and what they are given, as an application's would.
func (c *clientFlags) dialLoad() (*grpc.ClientConn, error) { return c.dialWith() }

func (c *clientFlags) dialWith(opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	creds, err := c.tls.credentials()
	if err != nil {
		return nil, err
	}
	tok, err := c.tokenFlags.dialOption(c.addr)
	if err != nil {
		return nil, err
	}
	if tok != nil {
		opts = append(opts, tok)
	}
	conn, err := grpc.NewClient(c.addr, append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)),
	}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("agent %s: %w", c.addr, err)
	}
	return conn, nil
}

// parse parses args with fs, taking flags wherever they stand among the
// positional arguments, as most CLIs do: `call SERVICE/METHOD -d JSON`
// honours -d. "--" ends the flags; a lone "-" is positional. fs.Args()
// then holds the positional arguments in order. -h or -help returns a
// *helpRequest, which run answers with the command's help; other flag
// errors are usage errors naming the flag.
func parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return &helpRequest{name: fs.Name(), fs: fs}
			}
			return usagef("%s: %v", fs.Name(), err)
		}
		rest := fs.Args()
		if endedByDashes(fs, args[:len(args)-len(rest)]) {
			pos = append(pos, rest...)
			break
		}
		if len(rest) == 0 {
			break
		}
		// The flag package stopped at a positional argument: keep it and
		// parse what follows it.
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	// Leave the positional arguments in fs.Args(), none taken for a flag.
	return fs.Parse(append([]string{"--"}, pos...))
}

// endedByDashes reports whether the flag package, having consumed the
// arguments in consumed, stopped at a "--" that ends the flags rather than
// one given as a flag's value (-d --).
func endedByDashes(fs *flag.FlagSet, consumed []string) bool {
	value := false // the next argument is the value of the flag before it
	for _, a := range consumed {
		if value {
			value = false
			continue
		}
		if a == "--" {
			return true
		}
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		if f := fs.Lookup(name); f != nil {
			b, ok := f.Value.(interface{ IsBoolFlag() bool })
			value = !ok || !b.IsBoolFlag()
		}
	}
	return false
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	line := func(cols []string) {
		for i, c := range cols {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, shown(c))
		}
		fmt.Fprintln(tw)
	}
	line(header)
	for _, r := range rows {
		line(r)
	}
	return tw.Flush()
}

// shown is s as the operator's terminal may show it: text from other
// nodes, plugins and stored values can hold control characters (escape
// sequences, new lines, tabs, bidi overrides), which are written escaped
// as Go writes them ("\x1b", "\n", "\u202e").
func shown(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsGraphic(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == utf8.RuneError:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsGraphic(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
	}
	return b.String()
}

// sendChunks streams r to send in 1 MiB chunks. When send fails the server
// has ended the stream; the caller's CloseAndRecv returns its reason, so
// sendChunks stops quietly then.
func sendChunks(r io.Reader, send func([]byte) error) error {
	buf := make([]byte, 1<<20)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if send(buf[:n]) != nil {
				return nil
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// parseConsistency reads a -consistency flag.
func parseConsistency(s string) (storev1.Consistency, error) {
	c, ok := map[string]storev1.Consistency{
		"linearizable": storev1.Consistency_CONSISTENCY_LINEARIZABLE,
		"session":      storev1.Consistency_CONSISTENCY_SESSION,
		"stale":        storev1.Consistency_CONSISTENCY_STALE,
	}[s]
	if !ok {
		return 0, usagef("-consistency %q: use linearizable, session or stale", s)
	}
	return c, nil
}
