package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/plughost/plughost/host/acl"
	aclv1 "github.com/plughost/plughost/proto/plughost/acl/v1"
	"github.com/plughost/plughost/store"
)

// TestRequireOperatorRead: /metrics and /v1/health answer a token whose
// policy gives operator = "read" (read-only, management), refuse one
// without it with 403 naming the permission, and a missing or unknown
// token with 401 and a WWW-Authenticate challenge.
func TestRequireOperatorRead(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r := acl.NewResolver(st, nil)
	svc := acl.NewService(st, r)
	_, mgmt, err := acl.Bootstrap(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	token := func(policy string) string {
		t.Helper()
		resp, err := svc.CreateToken(ctx, &aclv1.CreateTokenRequest{Description: policy, Policies: []string{policy}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetToken().GetSecretId()
	}
	if _, err := svc.CreatePolicy(ctx, &aclv1.CreatePolicyRequest{Name: "echo-caller", Rules: `plugin "echo" { policy = "write" }`}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreatePolicy(ctx, &aclv1.CreatePolicyRequest{Name: "ops-denied", Rules: `operator = "deny"`}); err != nil {
		t.Fatal(err)
	}
	readOnly, echoCaller, opsDenied := token(acl.ReadOnly), token("echo-caller"), token("ops-denied")
	r.Reload(ctx)

	h := requireOperatorRead(r, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("served"))
	}))
	for _, tc := range []struct {
		name, header, value string
		code                int
		reason              string
	}{
		{"no token", "", "", http.StatusUnauthorized, acl.ReasonNoToken},
		{"not bearer", "Authorization", "Basic " + readOnly, http.StatusUnauthorized, acl.ReasonNoToken},
		{"unknown token", "Authorization", "Bearer 9f1c2d3e-0000-4000-8000-000000000000", http.StatusUnauthorized, acl.ReasonTokenNotFound},
		{"no operator rule", "Authorization", "Bearer " + echoCaller, http.StatusForbidden, acl.ReasonPermissionDeny},
		{"operator deny", "Authorization", "Bearer " + opsDenied, http.StatusForbidden, acl.ReasonPermissionDeny},
		{"read-only", "Authorization", "Bearer " + readOnly, http.StatusOK, ""},
		{"read-only, lower-case scheme", "Authorization", "bearer " + readOnly, http.StatusOK, ""},
		{"read-only, x-plughost-token", "X-Plughost-Token", readOnly, http.StatusOK, ""},
		{"management", "Authorization", "Bearer " + mgmt, http.StatusOK, ""},
	} {
		for _, path := range []string{"/metrics", "/v1/health"} {
			req := httptest.NewRequest(http.MethodGet, path, nil)
			if tc.header != "" {
				req.Header.Set(tc.header, tc.value)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.code {
				t.Errorf("%s, %s: %d %s, want %d", tc.name, path, rec.Code, rec.Body, tc.code)
				continue
			}
			if tc.code == http.StatusOK {
				if rec.Body.String() != "served" {
					t.Errorf("%s, %s: body %q", tc.name, path, rec.Body)
				}
				continue
			}
			var body httpRefusal
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Errorf("%s, %s: body %q: %v", tc.name, path, rec.Body, err)
				continue
			}
			if body.Reason != tc.reason || body.Permission != `operator = "read"` || !strings.Contains(body.Error, path) {
				t.Errorf("%s, %s: body %+v, want reason %s naming the path and operator = \"read\"", tc.name, path, body, tc.reason)
			}
			if strings.Contains(rec.Body.String(), readOnly) || strings.Contains(rec.Body.String(), echoCaller) {
				t.Errorf("%s, %s: the refusal echoes a secret: %s", tc.name, path, rec.Body)
			}
			challenge := rec.Header().Get("WWW-Authenticate")
			if tc.code == http.StatusUnauthorized && !strings.HasPrefix(challenge, "Bearer ") {
				t.Errorf("%s, %s: WWW-Authenticate %q, want a Bearer challenge", tc.name, path, challenge)
			}
			if tc.code == http.StatusUnauthorized && !strings.Contains(body.Error, "plughost acl token create -policy read-only") {
				t.Errorf("%s, %s: the 401 does not say how to get a token: %s", tc.name, path, body.Error)
			}
			if tc.code == http.StatusForbidden && !strings.Contains(body.Error, `needs operator = "read"`) {
				t.Errorf("%s, %s: the 403 does not name the permission: %s", tc.name, path, body.Error)
			}
		}
	}
}
