package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/plughost/plughost/host/tlsutil"
)

// File names `plughost tls` writes, in -dir.
const (
	caCertFile = "plughost-agent-ca.pem"
	caKeyFile  = "plughost-agent-ca-key.pem"
)

// runTLS is `plughost tls ca create` and `plughost tls cert create`: the
// cluster CA and the certificates of its nodes and CLI users.
func runTLS(_ context.Context, env *cliEnv, args []string) error {
	area, rest, err := subcommand("tls", args)
	if err != nil {
		return err
	}
	sub, rest, err := subcommand("tls "+area, rest)
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("tls "+area+" "+sub, flag.ContinueOnError)
	dir := fs.String("dir", ".", "directory to write the files in")
	if area == "ca" {
		days := fs.Int("days", tlsutil.DefaultCADays, "days the CA is valid")
		if err := parse(fs, rest); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return usagef("tls ca create takes no arguments")
		}
		ca, err := tlsutil.CreateCA(*days)
		if err != nil {
			return err
		}
		return writePEM(env, ca, filepath.Join(*dir, caCertFile), filepath.Join(*dir, caKeyFile), "CA")
	}

	server := fs.Bool("server", false, "a server certificate, for an agent (with -node)")
	client := fs.Bool("client", false, "a client certificate, for a CLI user")
	node := fs.String("node", "", "the node name the server certificate names: the agent's -node")
	caFile := fs.String("ca", "", "the CA certificate (default DIR/"+caCertFile+")")
	keyFile := fs.String("key", "", "the CA key (default DIR/"+caKeyFile+")")
	days := fs.Int("days", tlsutil.DefaultCertDays, "days the certificate is valid (at most the CA's)")
	var ips, names multiFlag
	fs.Var(&ips, "additional-ipaddress", "another IP address the server certificate names, for CLIs that dial it there (repeatable)")
	fs.Var(&names, "additional-dnsname", "another DNS name the server certificate names (repeatable)")
	if err := parse(fs, rest); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("tls cert create takes no arguments")
	}
	if *server == *client {
		return usagef("tls cert create: give one of -server or -client")
	}
	if *server && *node == "" {
		return usagef("tls cert create -server: -node NAME is required (the agent's -node)")
	}
	if *client && (*node != "" || len(ips) > 0 || len(names) > 0) {
		return usagef("tls cert create -client: -node, -additional-ipaddress and -additional-dnsname are for -server")
	}
	if *caFile == "" {
		*caFile = filepath.Join(*dir, caCertFile)
	}
	if *keyFile == "" {
		*keyFile = filepath.Join(*dir, caKeyFile)
	}
	req := tlsutil.CertRequest{Node: *node, Days: *days, DNS: names}
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return usagef("-additional-ipaddress %q is not an IP address", s)
		}
		req.IPs = append(req.IPs, ip)
	}
	if req.CA.Cert, err = os.ReadFile(*caFile); err != nil {
		return fmt.Errorf("CA certificate: %w (make it with `plughost tls ca create`, or give -ca)", err)
	}
	if req.CA.Key, err = os.ReadFile(*keyFile); err != nil {
		return fmt.Errorf("CA key: %w (give -key)", err)
	}
	p, err := tlsutil.CreateCert(req)
	if err != nil {
		return err
	}
	if *server {
		base := filepath.Join(*dir, "plughost-server-"+*node)
		return writePEM(env, p, base+".pem", base+"-key.pem", "server certificate for node "+*node)
	}
	// Client certificates are numbered: the first free one.
	for i := 0; ; i++ {
		base := filepath.Join(*dir, "plughost-client-"+strconv.Itoa(i))
		if _, err := os.Stat(base + ".pem"); err == nil {
			continue
		}
		return writePEM(env, p, base+".pem", base+"-key.pem", "client certificate")
	}
}

func writePEM(env *cliEnv, p tlsutil.PEM, cert, key, what string) error {
	if err := tlsutil.WriteFiles(p, cert, key); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "==> wrote the %s: %s\n==> and its private key (0600, keep it secret): %s\n", what, cert, key)
	return nil
}
