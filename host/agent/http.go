package agent

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/plughost/plughost/host/acl"
)

// httpHandler serves /v1/health and /metrics: plugins, router, process,
// and the store's raft and the cluster's gossip (plughost_raft_*,
// plughost_serf_*, plughost_memberlist_*). Both need a token whose policy
// gives operator = "read" (see requireOperatorRead), as Consul's
// /v1/agent/metrics needs agent:read.
func (a *Agent) httpHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(&pluginCollector{a: a}, &routerCollector{a: a}, &listenerCollector{a: a})
	if err := registerLibraryMetrics(reg); err != nil {
		a.log.Warn("/metrics goes without raft and serf metrics", "error", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", requireOperatorRead(a.acl, promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	mux.Handle("GET /v1/health", requireOperatorRead(a.acl, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		type plugin struct {
			Name    string `json:"name"`
			Version string `json:"version"`
			State   string `json:"state"`
		}
		body := struct {
			Node    string   `json:"node"`
			Version string   `json:"version"`
			Plugins []plugin `json:"plugins"`
		}{Node: a.cfg.Node, Version: Version}
		for _, st := range a.super.List() {
			body.Plugins = append(body.Plugins, plugin{Name: st.Name, Version: st.Running, State: stateName(st.State)})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(body)
	})))
	return mux
}

// httpPermission is what /metrics and /v1/health need, in a policy's words.
const httpPermission = `operator = "read"`

// httpHowToGetToken ends the messages of requests refused for want of a token.
const httpHowToGetToken = `send one as "Authorization: Bearer SECRET" (Prometheus: the scrape config's authorization); ` +
	`make one with 'plughost acl token create -policy read-only' (the CLI's own token comes from -token, -token-file or PLUGHOST_TOKEN; ` +
	`a dev agent's management token is in its data dir's acl-token file)`

// httpRefusal is the body of a refused request: the ACL error reason
// (acl.Reason*), the permission needed, and what to do.
type httpRefusal struct {
	Error      string `json:"error"`
	Reason     string `json:"reason"`
	Permission string `json:"permission"`
}

// requireOperatorRead lets through to h the requests whose token (header
// Authorization: Bearer, or X-Plughost-Token, as on the API) r resolves
// to a token whose policy gives operator = "read": 401 without a known
// token, 403 with one that lacks it. r resolves from its in-memory copy
// of the ACL records, with no store read per request.
func requireOperatorRead(r *acl.Resolver, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		secret := acl.SecretOf(acl.HeaderAuthorization, req.Header.Get(acl.HeaderAuthorization))
		if secret == "" {
			secret = acl.SecretOf(acl.HeaderToken, req.Header.Get(acl.HeaderToken))
		}
		what := req.Method + " " + req.URL.Path
		id, err := r.Resolve(secret)
		switch {
		case err == acl.ErrNoToken:
			w.Header().Set("WWW-Authenticate", `Bearer realm="plughost"`)
			refuse(w, http.StatusUnauthorized, httpRefusal{Reason: acl.ReasonNoToken, Permission: httpPermission,
				Error: fmt.Sprintf("no ACL token: %s needs a token whose policy gives %s; %s", what, httpPermission, httpHowToGetToken)})
		case err != nil:
			w.Header().Set("WWW-Authenticate", `Bearer realm="plughost", error="invalid_token"`)
			refuse(w, http.StatusUnauthorized, httpRefusal{Reason: acl.ReasonTokenNotFound, Permission: httpPermission,
				Error: fmt.Sprintf("ACL token not found: it was deleted or never existed; %s needs a token whose policy gives %s; %s", what, httpPermission, httpHowToGetToken)})
		case id.Authz.Operator() < acl.Read:
			refuse(w, http.StatusForbidden, httpRefusal{Reason: acl.ReasonPermissionDeny, Permission: httpPermission,
				Error: fmt.Sprintf("permission denied: %s may not %s: it needs %s; ask an operator for a token with a policy that grants it (the built-in read-only does: 'plughost acl token create -policy read-only')", id.Actor(), what, httpPermission)})
		default:
			h.ServeHTTP(w, req)
		}
	})
}

func refuse(w http.ResponseWriter, code int, body httpRefusal) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}
