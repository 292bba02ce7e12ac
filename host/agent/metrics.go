package agent

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	operatorv1 "github.com/plughost/plughost/proto/plughost/operator/v1"
)

// stateName is an instance state in lower case: "running", "failed".
func stateName(s operatorv1.InstanceState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "INSTANCE_STATE_"))
}

var (
	descState = prometheus.NewDesc("plughost_plugin_state",
		"1 for the state the plugin is in on this node.", []string{"plugin", "version", "state"}, nil)
	descRestarts = prometheus.NewDesc("plughost_plugin_restarts_total",
		"Restarts of the plugin on this node.", []string{"plugin"}, nil)
	descHealthy = prometheus.NewDesc("plughost_plugin_healthy",
		"1 when the plugin serves on this node and passes its health checks.", []string{"plugin", "version"}, nil)
	descInstanceState = prometheus.NewDesc("plughost_instance_state",
		"1 for the state the instance is in (running, unhealthy while its health checks fail, draining, ...).", []string{"plugin", "version", "instance", "state"}, nil)
	descInstanceHealthy = prometheus.NewDesc("plughost_instance_healthy",
		"1 when the instance passed its last health check.", []string{"plugin", "version", "instance"}, nil)
	descMemory = prometheus.NewDesc("plughost_instance_memory_bytes",
		"Memory used by the instance's cgroup.", []string{"plugin", "version", "instance"}, nil)
	descMemoryPeak = prometheus.NewDesc("plughost_instance_memory_peak_bytes",
		"Peak memory used by the instance's cgroup.", []string{"plugin", "version", "instance"}, nil)
	descCPU = prometheus.NewDesc("plughost_instance_cpu_seconds_total",
		"CPU time used by the instance's cgroup.", []string{"plugin", "version", "instance"}, nil)
	descThrottled = prometheus.NewDesc("plughost_instance_cpu_throttled_seconds_total",
		"Time the instance's cgroup was throttled by its CPU quota.", []string{"plugin", "version", "instance"}, nil)
	descPids = prometheus.NewDesc("plughost_instance_pids",
		"Processes and threads in the instance's cgroup.", []string{"plugin", "version", "instance"}, nil)
	descPidsRefused = prometheus.NewDesc("plughost_instance_pids_limit_hits_total",
		"Forks and thread creations the instance's pids limit refused.", []string{"plugin", "version", "instance"}, nil)
	descLimit = prometheus.NewDesc("plughost_instance_limit_enforced",
		"1 when the resource limit is enforced by a cgroup.", []string{"plugin", "version", "instance", "resource"}, nil)
)

// pluginCollector reports the supervisor's view of every plugin.
type pluginCollector struct{ a *Agent }

func (c *pluginCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descState, descRestarts, descHealthy, descInstanceState, descInstanceHealthy,
		descMemory, descMemoryPeak, descCPU, descThrottled, descPids, descPidsRefused, descLimit} {
		ch <- d
	}
}

func (c *pluginCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.a.super.List() {
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, 1, st.Name, st.Running, stateName(st.State))
		ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, float64(st.Restarts), st.Name)
		// The plugin is healthy when it serves and the instance serving
		// passes its checks: a plugin stays running while its instance
		// fails checks below the failure threshold.
		healthy := st.State == operatorv1.InstanceState_INSTANCE_STATE_RUNNING
		for _, in := range st.Instances {
			if in.Version == st.Running && in.State != operatorv1.InstanceState_INSTANCE_STATE_RUNNING {
				healthy = false
			}
		}
		ch <- prometheus.MustNewConstMetric(descHealthy, prometheus.GaugeValue, gauge(healthy), st.Name, st.Running)
		for _, in := range st.Instances {
			labels := []string{st.Name, in.Version, in.ID}
			ch <- prometheus.MustNewConstMetric(descInstanceState, prometheus.GaugeValue, 1, st.Name, in.Version, in.ID, stateName(in.State))
			ch <- prometheus.MustNewConstMetric(descInstanceHealthy, prometheus.GaugeValue,
				gauge(in.State == operatorv1.InstanceState_INSTANCE_STATE_RUNNING), labels...)
			for _, l := range in.Limits {
				v := 0.0
				if l.Enforced {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(descLimit, prometheus.GaugeValue, v, st.Name, in.Version, in.ID, l.Resource)
			}
			u := in.Usage
			if u == nil {
				continue
			}
			ch <- prometheus.MustNewConstMetric(descMemory, prometheus.GaugeValue, float64(u.MemoryBytes), labels...)
			ch <- prometheus.MustNewConstMetric(descMemoryPeak, prometheus.GaugeValue, float64(u.MemoryPeakBytes), labels...)
			ch <- prometheus.MustNewConstMetric(descCPU, prometheus.CounterValue, float64(u.CPUUsageNanos)/1e9, labels...)
			ch <- prometheus.MustNewConstMetric(descThrottled, prometheus.CounterValue, float64(u.CPUThrottledNanos)/1e9, labels...)
			ch <- prometheus.MustNewConstMetric(descPids, prometheus.GaugeValue, float64(u.Pids), labels...)
			ch <- prometheus.MustNewConstMetric(descPidsRefused, prometheus.CounterValue, float64(u.PidsLimitHits), labels...)
		}
	}
}

func gauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
