package cluster

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
)

// FailureDetection tunes memberlist's SWIM failure detector: how soon a
// member that stopped answering (a kill -9, a cut cable) is declared
// failed, which is what starts a singleton's failover. Each member probes
// one other every ProbeInterval and waits ProbeTimeout for its answer
// before asking others to probe it; a member no one reached is suspected,
// and declared failed once the suspicion lasted
// SuspicionMult x max(1, log10(members)) x ProbeInterval, or up to
// SuspicionMaxTimeoutMult times that while no other member confirms it.
//
// With memberlist's LAN defaults (1 s, 500 ms, 4, 6) the suspicion alone
// lasts 4 to 24 s on a small cluster; plughost's defaults, for a LAN or
// loopback, declare a killed member failed in 2 to 4 s (measured by
// TestNodeFailureDetection in test/cluster_nodes_test.go). Raise them on a
// network whose round trips approach ProbeTimeout, or on machines so
// loaded that an agent may not answer for a second: a member declared
// failed that is not rejoins, but its singletons fail over meanwhile.
type FailureDetection struct {
	ProbeInterval           time.Duration
	ProbeTimeout            time.Duration
	SuspicionMult           int
	SuspicionMaxTimeoutMult int
	GossipInterval          time.Duration
}

// DefaultFailureDetection is plughost's failure detection for a LAN.
func DefaultFailureDetection() FailureDetection {
	return FailureDetection{
		ProbeInterval:           500 * time.Millisecond,
		ProbeTimeout:            250 * time.Millisecond,
		SuspicionMult:           3,
		SuspicionMaxTimeoutMult: 2,
		GossipInterval:          100 * time.Millisecond,
	}
}

// WithDefaults fills zero fields from DefaultFailureDetection.
func (f FailureDetection) WithDefaults() FailureDetection {
	d := DefaultFailureDetection()
	if f.ProbeInterval == 0 {
		f.ProbeInterval = d.ProbeInterval
	}
	if f.ProbeTimeout == 0 {
		f.ProbeTimeout = d.ProbeTimeout
	}
	if f.SuspicionMult == 0 {
		f.SuspicionMult = d.SuspicionMult
	}
	if f.SuspicionMaxTimeoutMult == 0 {
		f.SuspicionMaxTimeoutMult = d.SuspicionMaxTimeoutMult
	}
	if f.GossipInterval == 0 {
		f.GossipInterval = d.GossipInterval
	}
	return f
}

// Validate checks f once defaults are applied.
func (f FailureDetection) Validate() error {
	var errs []error
	if f.ProbeInterval < 50*time.Millisecond || f.ProbeInterval > time.Minute {
		errs = append(errs, fmt.Errorf("failure_detection.probe_interval %v must be between 50ms and 1m", f.ProbeInterval))
	}
	if f.ProbeTimeout <= 0 || f.ProbeTimeout >= f.ProbeInterval {
		errs = append(errs, fmt.Errorf("failure_detection.probe_timeout %v must be positive and less than probe_interval %v", f.ProbeTimeout, f.ProbeInterval))
	}
	if f.SuspicionMult < 1 || f.SuspicionMult > 100 {
		errs = append(errs, fmt.Errorf("failure_detection.suspicion_mult %d must be between 1 and 100", f.SuspicionMult))
	}
	if f.SuspicionMaxTimeoutMult < 1 || f.SuspicionMaxTimeoutMult > 100 {
		errs = append(errs, fmt.Errorf("failure_detection.suspicion_max_timeout_mult %d must be between 1 and 100", f.SuspicionMaxTimeoutMult))
	}
	if f.GossipInterval < 10*time.Millisecond || f.GossipInterval > time.Minute {
		errs = append(errs, fmt.Errorf("failure_detection.gossip_interval %v must be between 10ms and 1m", f.GossipInterval))
	}
	return errors.Join(errs...)
}

// apply sets f on a memberlist config.
func (f FailureDetection) apply(ml *memberlist.Config) {
	ml.ProbeInterval = f.ProbeInterval
	ml.ProbeTimeout = f.ProbeTimeout
	ml.SuspicionMult = f.SuspicionMult
	ml.SuspicionMaxTimeoutMult = f.SuspicionMaxTimeoutMult
	ml.GossipInterval = f.GossipInterval
}
