package h2test

import (
	"context"
	"sync"

	"google.golang.org/grpc"
)

// tokens maps an agent's API address to the ACL token the calls made
// there carry: the end-to-end harness sets it once an agent has one
// (SetToken), so that every client of this package authenticates as an
// operator's would.
var tokens sync.Map // addr -> secret

// SetToken makes the calls this package's clients make to addr carry
// secret ("authorization: Bearer SECRET").
func SetToken(addr, secret string) { tokens.Store(addr, secret) }

// tokenOf is the token of addr, or "".
func tokenOf(addr string) string {
	if v, ok := tokens.Load(addr); ok {
		return v.(string)
	}
	return ""
}

// authFields are the header fields that carry addr's token, if any.
func authFields(addr string) []string {
	if s := tokenOf(addr); s != "" {
		return []string{"authorization", "Bearer " + s}
	}
	return nil
}

// tokenOption makes a gRPC client's calls to addr carry its token.
func tokenOption(addr string) grpc.DialOption {
	return grpc.WithPerRPCCredentials(bearer{addr})
}

type bearer struct{ addr string }

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	if s := tokenOf(b.addr); s != "" {
		return map[string]string{"authorization": "Bearer " + s}, nil
	}
	return nil, nil
}

func (bearer) RequireTransportSecurity() bool { return false }
