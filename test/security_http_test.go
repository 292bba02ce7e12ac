package test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	aclv1 "github.com/plughost/plughost/proto/plughost/acl/v1"
)

// HTTPGet gets path from the agent's health and metrics port (-http) with
// the agent's management token.
func (a *Agent) HTTPGet(path string) (*http.Response, error) {
	return httpGet(a.HTTP, path, a.Token())
}

// httpGet gets path from the HTTP port at addr, with secret as a bearer
// token unless it is "".
func httpGet(addr, path, secret string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return nil, err
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	c := http.Client{Timeout: 10 * time.Second}
	return c.Do(req)
}

// TestSecurityHTTPNeedsOperatorRead: a real agent's /metrics and
// /v1/health, which name its plugins, their versions and its traffic,
// refuse a request with no token or an unknown one (401, with a Bearer
// challenge and how to get a token) and one whose token's policy gives no
// operator = "read" (403, naming it), and answer a read-only token, as
// Prometheus would send it.
func TestSecurityHTTPNeedsOperatorRead(t *testing.T) {
	t.Parallel()
	a := NewAgent(t, AgentOptions{})
	a.Drop(bundlePath("echo", "1.0.0"))
	a.WaitRunning("echo", "1.0.0")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	aclc := aclv1.NewACLServiceClient(a.Conn())
	if _, err := aclc.CreatePolicy(ctx, &aclv1.CreatePolicyRequest{Name: "echo-ops", Rules: `plugin "echo" { policy = "write" }
namespace "echo" { policy = "write" }`}); err != nil {
		t.Fatal(err)
	}
	token := func(policy string) string {
		t.Helper()
		resp, err := aclc.CreateToken(ctx, &aclv1.CreateTokenRequest{Description: policy, Policies: []string{policy}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetToken().GetSecretId()
	}
	readOnly, echoOps := token("read-only"), token("echo-ops")

	for _, path := range []string{"/metrics", "/v1/health"} {
		for _, tc := range []struct {
			name, secret string
			code         int
			want         string
		}{
			{"no token", "", http.StatusUnauthorized, "plughost acl token create -policy read-only"},
			{"unknown token", "6c4d1e3a-9b0f-4e8a-8c1d-2f6b7a5e9d40", http.StatusUnauthorized, "ACL token not found"},
			{"token without operator read", echoOps, http.StatusForbidden, `needs operator = \"read\"`},
			{"read-only token", readOnly, http.StatusOK, "echo"},
		} {
			resp, err := httpGet(a.HTTP, path, tc.secret)
			if err != nil {
				t.Fatalf("%s %s: %v", tc.name, path, err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("%s %s: %v", tc.name, path, err)
			}
			if resp.StatusCode != tc.code {
				t.Errorf("%s: GET %s answered %s, want %d:\n%.300s", tc.name, path, resp.Status, tc.code, body)
				continue
			}
			if !strings.Contains(string(body), tc.want) {
				t.Errorf("%s: GET %s body lacks %q:\n%.300s", tc.name, path, tc.want, body)
			}
			if tc.code == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s: GET %s: WWW-Authenticate %q, want a Bearer challenge", tc.name, path, resp.Header.Get("WWW-Authenticate"))
			}
			if tc.code != http.StatusOK && strings.Contains(string(body), "plughost_") {
				t.Errorf("%s: GET %s refused but shows metrics:\n%.300s", tc.name, path, body)
			}
		}
	}

	// What the read-only token is given is the real thing.
	resp, err := httpGet(a.HTTP, "/v1/health", readOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var health struct {
		Plugins []struct{ Name, Version string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&health); err != nil {
		t.Fatal(err)
	}
	if len(health.Plugins) != 1 || health.Plugins[0].Name != "echo" || health.Plugins[0].Version != "1.0.0" {
		t.Errorf("/v1/health plugins %+v, want echo 1.0.0", health.Plugins)
	}
}
