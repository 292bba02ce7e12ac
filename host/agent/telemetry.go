package agent

import (
	"fmt"
	"time"

	metrics "github.com/hashicorp/go-metrics/compat"
	metricsprom "github.com/hashicorp/go-metrics/compat/prometheus"
	"github.com/prometheus/client_golang/prometheus"
)

// libraryMetricsRetention is how long a raft, serf or memberlist metric
// stays on /metrics after its last update, as Consul's
// prometheus_retention_time: timers of events that stopped (a leader's
// replication to a peer that left) drop out instead of repeating their
// last figures.
const libraryMetricsRetention = time.Minute

// registerLibraryMetrics sends what hashicorp/raft, raft-wal, serf and
// memberlist measure (commit time, log store and replication latency,
// gossip health) to reg, named plughost_raft_commitTime and so on. The
// go-metrics sink those libraries report to is process-wide: the agent
// made last in a process gets them.
func registerLibraryMetrics(reg prometheus.Registerer) error {
	sink, err := metricsprom.NewPrometheusSinkFrom(metricsprom.PrometheusOpts{
		Name:       "plughost_library_metrics",
		Registerer: reg,
		Expiration: libraryMetricsRetention,
	})
	if err != nil {
		return fmt.Errorf("agent: raft and serf metrics: %w", err)
	}
	cfg := metrics.DefaultConfig("plughost")
	cfg.EnableHostname = false
	cfg.EnableHostnameLabel = false
	cfg.EnableRuntimeMetrics = false // the Go collector reports the runtime
	if _, err := metrics.NewGlobal(cfg, sink); err != nil {
		return fmt.Errorf("agent: raft and serf metrics: %w", err)
	}
	return nil
}
