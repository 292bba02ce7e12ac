package main

import (
	"flag"
	"os"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/plughost/plughost/host/tlsutil"
)

// clientTLS are the TLS flags of every command that talks to an agent
// (area: tls): with a CA, the agent's API is dialed with TLS (-api-tls).
type clientTLS struct {
	caFile, certFile, keyFile string
}

func (c *clientTLS) register(fs *flag.FlagSet) {
	fs.StringVar(&c.caFile, "ca-file", os.Getenv("PLUGHOST_CACERT"), "CA certificate to verify an -api-tls agent with; dial with TLS when set (env PLUGHOST_CACERT)")
	fs.StringVar(&c.certFile, "client-cert", os.Getenv("PLUGHOST_CLIENT_CERT"), "client certificate for an agent with -api-verify-client (env PLUGHOST_CLIENT_CERT)")
	fs.StringVar(&c.keyFile, "client-key", os.Getenv("PLUGHOST_CLIENT_KEY"), "key of -client-cert (env PLUGHOST_CLIENT_KEY)")
}

// credentials are TLS with -ca-file, plaintext without.
func (c *clientTLS) credentials() (credentials.TransportCredentials, error) {
	if c.caFile == "" {
		if c.certFile != "" || c.keyFile != "" {
			return nil, usagef("-client-cert and -client-key need -ca-file (env PLUGHOST_CACERT)")
		}
		return insecure.NewCredentials(), nil
	}
	tc, err := tlsutil.Client(c.caFile, c.certFile, c.keyFile)
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(tc), nil
}
