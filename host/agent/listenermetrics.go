package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/plughost/plughost/internal/netlimit"
)

var (
	descListenerConns = prometheus.NewDesc("plughost_listener_connections",
		"Connections open on the listener.", []string{"listener"}, nil)
	descListenerRefused = prometheus.NewDesc("plughost_listener_refused_total",
		"Connections closed as soon as accepted, for the limit named (max_conns, max_conns_per_client).", []string{"listener", "limit"}, nil)
	descListenerPending = prometheus.NewDesc("plughost_listener_pending_connections",
		"Connections open on the listener that have not made their first call or request.", []string{"listener"}, nil)
	descListenerEvicted = prometheus.NewDesc("plughost_listener_pending_evicted_total",
		"Connections without a first call closed to take newer ones, for the limit named (max_pending_conns, max_pending_conns_per_client).", []string{"listener", "limit"}, nil)
	descListenerShortages = prometheus.NewDesc("plughost_listener_accept_shortages_total",
		"Accepts that failed for want of file descriptors or socket memory, each followed by a backoff.", []string{"listener"}, nil)
)

// listenerCollector reports the API and HTTP listeners' limits at work.
type listenerCollector struct{ a *Agent }

func (c *listenerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descListenerConns, descListenerRefused, descListenerPending, descListenerEvicted, descListenerShortages} {
		ch <- d
	}
}

func (c *listenerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, l := range []*netlimit.Listener{c.a.apiLimit, c.a.httpLimit} {
		if l == nil {
			continue
		}
		st, name := l.Stats(), l.Name()
		ch <- prometheus.MustNewConstMetric(descListenerConns, prometheus.GaugeValue, float64(st.Open), name)
		ch <- prometheus.MustNewConstMetric(descListenerRefused, prometheus.CounterValue, float64(st.RefusedMaxConns), name, "max_conns")
		ch <- prometheus.MustNewConstMetric(descListenerRefused, prometheus.CounterValue, float64(st.RefusedPerClient), name, "max_conns_per_client")
		ch <- prometheus.MustNewConstMetric(descListenerPending, prometheus.GaugeValue, float64(st.Pending), name)
		ch <- prometheus.MustNewConstMetric(descListenerEvicted, prometheus.CounterValue, float64(st.EvictedPending), name, "max_pending_conns")
		ch <- prometheus.MustNewConstMetric(descListenerEvicted, prometheus.CounterValue, float64(st.EvictedPendingPerClient), name, "max_pending_conns_per_client")
		ch <- prometheus.MustNewConstMetric(descListenerShortages, prometheus.CounterValue, float64(st.AcceptShortages), name)
	}
}
