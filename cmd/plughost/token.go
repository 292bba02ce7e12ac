package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"google.golang.org/grpc"

	"github.com/plughost/plughost/host/acl"
)

// tokenFlags are the ACL token flags of every command that talks to an
// agent. The token is the first of: -token, -token-file, PLUGHOST_TOKEN,
// PLUGHOST_TOKEN_FILE, and the token a dev agent at -addr recorded for
// this user on this host (loopback addresses only, and only while that
// agent is the one listening there: see acl.FindToken).
type tokenFlags struct {
	token, file string
	// warn receives why a dev agent's record was not used (os.Stderr
	// when nil).
	warn io.Writer
}

func (t *tokenFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.token, "token", "", "ACL token's secret ID (env PLUGHOST_TOKEN; default: a dev agent's own, found on this host)")
	fs.StringVar(&t.file, "token-file", "", "file holding the ACL token's secret ID (env PLUGHOST_TOKEN_FILE)")
}

// secret is the token to send to the agent at addr, or "" for none.
func (t *tokenFlags) secret(addr string) (string, error) {
	switch {
	case t.token != "":
		return t.token, nil
	case t.file != "":
		s, err := acl.ReadTokenFile(t.file)
		if err != nil {
			return "", usagef("-token-file: %v", err)
		}
		return s, nil
	case os.Getenv("PLUGHOST_TOKEN") != "":
		return os.Getenv("PLUGHOST_TOKEN"), nil
	case os.Getenv("PLUGHOST_TOKEN_FILE") != "":
		s, err := acl.ReadTokenFile(os.Getenv("PLUGHOST_TOKEN_FILE"))
		if err != nil {
			return "", usagef("PLUGHOST_TOKEN_FILE: %v", err)
		}
		return s, nil
	}
	s, why := acl.FindToken(addr)
	if why != nil {
		w := t.warn
		if w == nil {
			w = os.Stderr
		}
		fmt.Fprintf(w, "plughost: warning: no token sent: %v\n", why)
	}
	return s, nil
}

// dialOption makes every call carry the token, if there is one.
func (t *tokenFlags) dialOption(addr string) (grpc.DialOption, error) {
	s, err := t.secret(addr)
	if err != nil || s == "" {
		return nil, err
	}
	return grpc.WithPerRPCCredentials(bearer{"authorization": "Bearer " + s}), nil
}

// bearer sends a token as "authorization: Bearer SECRET", the same map
// for every call (gRPC only reads it). The API port is plaintext unless
// TLS is set up: the token is not refused for that.
type bearer map[string]string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return b, nil
}

func (bearer) RequireTransportSecurity() bool { return false }
