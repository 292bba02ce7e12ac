package governance

import (
	"fmt"
	"math"
	"strconv"
)

// Limits are the resource limits of one plugin instance. A zero field means
// no limit.
type Limits struct {
	// MemoryBytes caps the instance's memory. Where the kernel lets us say
	// so, no swap is allowed on top, so a leak ends in an OOM kill rather
	// than in swapping.
	MemoryBytes int64
	// CPU caps CPU time in cores, e.g. 0.25 for a quarter of one core,
	// enforced per CPUPeriod.
	CPU float64
	// Pids caps the number of processes and threads.
	Pids int64
}

// Validate reports whether every limit is zero or a usable value.
func (l Limits) Validate() error {
	switch {
	case l.MemoryBytes < 0:
		return fmt.Errorf("%w: memory %d bytes is negative", ErrInvalidLimits, l.MemoryBytes)
	case math.IsNaN(l.CPU) || math.IsInf(l.CPU, 0) || l.CPU < 0:
		return fmt.Errorf("%w: cpu %v is not a non-negative number of cores", ErrInvalidLimits, l.CPU)
	case l.CPU > 0 && l.CPU < MinCPU:
		return fmt.Errorf("%w: cpu %v core is below the kernel minimum of %v core", ErrInvalidLimits, l.CPU, MinCPU)
	case l.Pids < 0:
		return fmt.Errorf("%w: pids %d is negative", ErrInvalidLimits, l.Pids)
	}
	return nil
}

// cpuQuotaMicros is the CFS quota, in microseconds per CPUPeriod, of a limit
// of cores.
func cpuQuotaMicros(cores float64) int64 {
	return int64(math.Round(cores * float64(CPUPeriod.Microseconds())))
}

// LimitStatus says whether one resource limit of a group is enforced, and
// why not when it is not.
type LimitStatus struct {
	Resource string // "memory", "cpu" or "pids"
	Limit    string // "64 MiB", "0.25 core", "256 pids", or "unlimited"
	// Value is the limit as a number, in bytes, cores or processes; 0 when
	// there is none.
	Value    float64
	Enforced bool
	Reason   string // why Enforced is false; "" when it is true
}

// Usage is what a group's processes use, or have used, as the kernel counts
// it for the cgroup. Counters a mode does not provide are zero.
type Usage struct {
	MemoryBytes       uint64 // memory charged now
	MemoryPeakBytes   uint64 // highest memory charged since the group was made (v2: where memory.peak exists)
	CPUUsageNanos     uint64 // CPU time consumed
	CPUThrottledNanos uint64 // time the group was held back by its CPU limit
	Pids              uint64 // processes and threads now
	PidsLimitHits     uint64 // forks and thread creations the pids limit refused
	OOMKills          uint64 // processes the kernel OOM-killed in the group
}

const reasonNoLimit = "no limit set"

// statuses builds the LimitStatus of each resource; why returns, for a
// resource with a limit, why it is not enforced ("" when it is).
func statuses(l Limits, why func(resource string) string) []LimitStatus {
	out := []LimitStatus{
		{Resource: ResourceMemory, Limit: formatBytes(l.MemoryBytes), Value: float64(max(l.MemoryBytes, 0))},
		{Resource: ResourceCPU, Limit: formatCPU(l.CPU), Value: max(l.CPU, 0)},
		{Resource: ResourcePids, Limit: formatPids(l.Pids), Value: float64(max(l.Pids, 0))},
	}
	set := map[string]bool{ResourceMemory: l.MemoryBytes > 0, ResourceCPU: l.CPU > 0, ResourcePids: l.Pids > 0}
	for i := range out {
		if !set[out[i].Resource] {
			out[i].Reason = reasonNoLimit
			continue
		}
		out[i].Reason = why(out[i].Resource)
		out[i].Enforced = out[i].Reason == ""
	}
	return out
}

// NotEnforced is the LimitStatus of limits l that no group enforces, for
// the reason why.
func NotEnforced(l Limits, why string) []LimitStatus {
	return statuses(l, func(string) string { return why })
}

// Set sets the limit of resource (ResourceMemory, ResourceCPU or
// ResourcePids) to value, in LimitStatus.Value's units.
func (l *Limits) Set(resource string, value float64) error {
	switch resource {
	case ResourceMemory:
		l.MemoryBytes = int64(value)
	case ResourceCPU:
		l.CPU = value
	case ResourcePids:
		l.Pids = int64(value)
	default:
		return fmt.Errorf("%w: unknown resource %q", ErrInvalidLimits, resource)
	}
	return nil
}

// formatBytes writes n in the largest binary unit that divides it exactly.
func formatBytes(n int64) string {
	if n <= 0 {
		return "unlimited"
	}
	for _, u := range []struct {
		size int64
		name string
	}{{1 << 40, "TiB"}, {1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

func formatCPU(cores float64) string {
	if cores <= 0 {
		return "unlimited"
	}
	unit := "core"
	if cores > 1 {
		unit = "cores"
	}
	return strconv.FormatFloat(cores, 'f', -1, 64) + " " + unit
}

func formatPids(n int64) string {
	if n <= 0 {
		return "unlimited"
	}
	return fmt.Sprintf("%d pids", n)
}
