package agent

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// httpHandler serves /v1/health and /metrics: plugins, router, process,
// and the store's raft and the cluster's gossip (plughost_raft_*,
// plughost_serf_*, plughost_memberlist_*).
func (a *Agent) httpHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(&pluginCollector{a: a}, &routerCollector{a: a}, &listenerCollector{a: a})
	if err := registerLibraryMetrics(reg); err != nil {
		a.log.Warn("/metrics goes without raft and serf metrics", "error", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
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
	})
	return mux
}
