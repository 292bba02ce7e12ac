package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	aclv1 "github.com/plughost/plughost/proto/plughost/acl/v1"
)

// stringList is a flag that may be given more than once.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// tokenJSON is a token in `plughost acl token ... -format json`.
type tokenJSON struct {
	AccessorID  string    `json:"accessor_id"`
	SecretID    string    `json:"secret_id,omitempty"`
	Description string    `json:"description"`
	Policies    []string  `json:"policies"`
	CreateTime  time.Time `json:"create_time"`
}

// policyJSON is a policy in `plughost acl policy ... -format json`.
type policyJSON struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Rules       string `json:"rules"`
	Builtin     bool   `json:"builtin"`
}

// runACL is `plughost acl bootstrap|token|policy ...`.
func runACL(ctx context.Context, env *cliEnv, args []string) error {
	area, rest, err := subcommand("acl", args)
	if err != nil {
		return err
	}
	name := "acl " + area
	if area != "bootstrap" {
		sub, r, err := subcommand(name, rest)
		if err != nil {
			return err
		}
		name, rest = name+" "+sub, r
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	var (
		policies    stringList
		description = new(string)
		policyName  = new(string)
		rulesFrom   = new(string)
	)
	switch name {
	case "acl token create":
		fs.Var(&policies, "policy", "name of a policy the token gets (repeat for more)")
		fs.StringVar(description, "description", "", "what the token is for; history records it as the actor")
	case "acl policy create":
		fs.StringVar(policyName, "name", "", "the policy's name")
		fs.StringVar(description, "description", "", "what the policy is for")
		fs.StringVar(rulesFrom, "rules", "", "file holding the rules in HCL ('-' reads stdin)")
	}
	if err := parse(fs, rest); err != nil {
		return err
	}
	if err := cf.check(); err != nil {
		return err
	}
	wantArgs := 0
	switch name {
	case "acl token read", "acl token delete", "acl policy read", "acl policy delete":
		wantArgs = 1
	}
	if fs.NArg() != wantArgs {
		if wantArgs == 0 {
			return usagef("%s takes no arguments", name)
		}
		return usagef("%s: give one %s", name, helps[name].args)
	}
	var rules string
	if name == "acl policy create" {
		if *policyName == "" || *rulesFrom == "" {
			return usagef("acl policy create: give -name and -rules FILE ('-' for stdin)")
		}
		b, err := readRules(*rulesFrom)
		if err != nil {
			return err
		}
		rules = string(b)
	}
	conn, err := cf.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	c := aclv1.NewACLServiceClient(conn)
	switch name {
	case "acl bootstrap":
		resp, err := c.Bootstrap(ctx, &aclv1.BootstrapRequest{})
		if err != nil {
			return err
		}
		if cf.format == "json" {
			return printJSON(env.stdout, toTokenJSON(resp.GetToken()))
		}
		if err := printToken(env.stdout, resp.GetToken()); err != nil {
			return err
		}
		fmt.Fprintln(env.stderr, "Keep the secret ID safe: it is shown once, and it can do everything. Give it with -token or PLUGHOST_TOKEN.")
		return nil
	case "acl token create":
		resp, err := c.CreateToken(ctx, &aclv1.CreateTokenRequest{Description: *description, Policies: policies})
		if err != nil {
			return err
		}
		if cf.format == "json" {
			return printJSON(env.stdout, toTokenJSON(resp.GetToken()))
		}
		return printToken(env.stdout, resp.GetToken())
	case "acl token list":
		resp, err := c.ListTokens(ctx, &aclv1.ListTokensRequest{})
		if err != nil {
			return err
		}
		if cf.format == "json" {
			out := []tokenJSON{}
			for _, t := range resp.GetTokens() {
				out = append(out, toTokenJSON(t))
			}
			return printJSON(env.stdout, out)
		}
		var rows [][]string
		for _, t := range resp.GetTokens() {
			rows = append(rows, []string{t.GetAccessorId(), orDash(t.GetDescription()), strings.Join(t.GetPolicies(), ","),
				t.GetCreateTime().AsTime().Format(time.RFC3339)})
		}
		return table(env.stdout, []string{"ACCESSOR ID", "DESCRIPTION", "POLICIES", "CREATED"}, rows)
	case "acl token read":
		resp, err := c.ReadToken(ctx, &aclv1.ReadTokenRequest{AccessorId: fs.Arg(0)})
		if err != nil {
			return err
		}
		if cf.format == "json" {
			return printJSON(env.stdout, toTokenJSON(resp.GetToken()))
		}
		return printToken(env.stdout, resp.GetToken())
	case "acl token delete":
		if _, err := c.DeleteToken(ctx, &aclv1.DeleteTokenRequest{AccessorId: fs.Arg(0)}); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "token %s deleted\n", fs.Arg(0))
		return nil
	case "acl policy create":
		resp, err := c.CreatePolicy(ctx, &aclv1.CreatePolicyRequest{Name: *policyName, Description: *description, Rules: rules})
		if err != nil {
			return err
		}
		if cf.format == "json" {
			return printJSON(env.stdout, toPolicyJSON(resp.GetPolicy()))
		}
		return printPolicy(env.stdout, resp.GetPolicy())
	case "acl policy list":
		resp, err := c.ListPolicies(ctx, &aclv1.ListPoliciesRequest{})
		if err != nil {
			return err
		}
		if cf.format == "json" {
			out := []policyJSON{}
			for _, p := range resp.GetPolicies() {
				out = append(out, toPolicyJSON(p))
			}
			return printJSON(env.stdout, out)
		}
		var rows [][]string
		for _, p := range resp.GetPolicies() {
			rows = append(rows, []string{p.GetName(), orDash(p.GetDescription()), fmt.Sprint(p.GetBuiltin())})
		}
		return table(env.stdout, []string{"NAME", "DESCRIPTION", "BUILTIN"}, rows)
	case "acl policy read":
		resp, err := c.ReadPolicy(ctx, &aclv1.ReadPolicyRequest{Name: fs.Arg(0)})
		if err != nil {
			return err
		}
		if cf.format == "json" {
			return printJSON(env.stdout, toPolicyJSON(resp.GetPolicy()))
		}
		return printPolicy(env.stdout, resp.GetPolicy())
	case "acl policy delete":
		if _, err := c.DeletePolicy(ctx, &aclv1.DeletePolicyRequest{Name: fs.Arg(0)}); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "policy %s deleted\n", fs.Arg(0))
		return nil
	}
	return usagef("unknown command %q", name)
}

func readRules(from string) ([]byte, error) {
	if from == "-" {
		return io.ReadAll(os.Stdin)
	}
	b, err := os.ReadFile(from)
	if err != nil {
		return nil, usagef("-rules: %v", err)
	}
	return b, nil
}

func toTokenJSON(t *aclv1.Token) tokenJSON {
	return tokenJSON{t.GetAccessorId(), t.GetSecretId(), t.GetDescription(), t.GetPolicies(), t.GetCreateTime().AsTime()}
}

func toPolicyJSON(p *aclv1.Policy) policyJSON {
	return policyJSON{p.GetName(), p.GetDescription(), p.GetRules(), p.GetBuiltin()}
}

func printToken(w io.Writer, t *aclv1.Token) error {
	fmt.Fprintf(w, "AccessorID:   %s\n", t.GetAccessorId())
	if t.GetSecretId() != "" {
		fmt.Fprintf(w, "SecretID:     %s\n", t.GetSecretId())
	}
	fmt.Fprintf(w, "Description:  %s\n", t.GetDescription())
	fmt.Fprintf(w, "Policies:     %s\n", strings.Join(t.GetPolicies(), ", "))
	_, err := fmt.Fprintf(w, "Created:      %s\n", t.GetCreateTime().AsTime().Format(time.RFC3339))
	return err
}

func printPolicy(w io.Writer, p *aclv1.Policy) error {
	fmt.Fprintf(w, "Name:         %s\n", p.GetName())
	fmt.Fprintf(w, "Description:  %s\n", p.GetDescription())
	if p.GetBuiltin() {
		fmt.Fprintln(w, "Builtin:      true")
	}
	_, err := fmt.Fprintf(w, "Rules:\n%s\n", strings.TrimRight(p.GetRules(), "\n"))
	return err
}
