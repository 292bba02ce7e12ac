package agent

import (
	"github.com/prometheus/client_golang/prometheus"
)

var (
	descCalls = prometheus.NewDesc("plughost_router_calls_total",
		"Calls routed to the plugin's services, whatever their outcome.", []string{"plugin"}, nil)
	descCallFailures = prometheus.NewDesc("plughost_router_call_failures_total",
		"Routed calls that ended with a status other than OK.", []string{"plugin", "code"}, nil)
	descHeld = prometheus.NewDesc("plughost_router_calls_held_total",
		"Calls held while the plugin had no serving instance (restart-style swaps).", []string{"plugin"}, nil)
	descHeldSeconds = prometheus.NewDesc("plughost_router_calls_held_seconds_total",
		"Time routed calls spent held.", []string{"plugin"}, nil)
	descUnknown = prometheus.NewDesc("plughost_router_unknown_service_calls_total",
		"Calls to services no plugin declares.", nil, nil)
)

// routerCollector reports the router's counters.
type routerCollector struct{ a *Agent }

func (c *routerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCalls, descCallFailures, descHeld, descHeldSeconds, descUnknown} {
		ch <- d
	}
}

func (c *routerCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.a.router.Stats()
	ch <- prometheus.MustNewConstMetric(descUnknown, prometheus.CounterValue, float64(st.UnknownService))
	for _, p := range st.Plugins {
		ch <- prometheus.MustNewConstMetric(descCalls, prometheus.CounterValue, float64(p.Calls), p.Plugin)
		ch <- prometheus.MustNewConstMetric(descHeld, prometheus.CounterValue, float64(p.Held), p.Plugin)
		ch <- prometheus.MustNewConstMetric(descHeldSeconds, prometheus.CounterValue, p.HeldTime.Seconds(), p.Plugin)
		for code, n := range p.Failures {
			ch <- prometheus.MustNewConstMetric(descCallFailures, prometheus.CounterValue, float64(n), p.Plugin, code.String())
		}
	}
}
