package placement

import (
	"cmp"
	"slices"
)

// everyNode runs one instance on every usable node.
func (s *scheduler) everyNode(v *view) {
	live := make(map[string]Instance, len(v.live))
	for _, in := range v.live {
		live[in.Node] = in
	}
	healthy := 0
	for _, n := range v.usable {
		if in, ok := live[n.Name]; ok {
			s.assign(v, in, "", false)
			if in.Healthy {
				healthy++
			}
			continue
		}
		s.place(v, n.Name, "")
	}
	s.keepLost(v)
	// Draining instances stop once an instance elsewhere serves.
	var kept []string
	for _, in := range v.draining {
		if healthy == 0 {
			s.assign(v, in, "", true)
			kept = append(kept, in.Node)
			continue
		}
		s.drop(in)
	}
	if len(v.usable) == 0 {
		s.report(v, SeverityError, 0, 0, noNode(v)+drainNote(kept))
	}
}

// keepLost keeps the instances on dead nodes assigned, uncounted.
func (s *scheduler) keepLost(v *view) {
	for _, in := range v.lost {
		s.assign(v, in, "", false)
	}
}

// count runs Placement.Count instances, at most one per node, spread over
// fault domains.
func (s *scheduler) count(v *view) {
	want := v.spec.Placement.Count
	sp := newSpread(s, v)

	// Too many (the count went down, or a lost node came back): remove
	// from the fullest fault domain, an unhealthy instance first. A healthy
	// one removed stays, draining, while a kept one is not yet healthy.
	var surplus []Instance
	for len(sp.live) > want {
		worst := slices.MaxFunc(sp.live, func(a, b Instance) int {
			return cmp.Or(cmp.Compare(sp.fd[s.fdOf(a.Node)], sp.fd[s.fdOf(b.Node)]), compareBool(b.Healthy, a.Healthy),
				cmp.Compare(sp.ud[s.udOf(a.Node)], sp.ud[s.udOf(b.Node)]), cmp.Compare(a.Node, b.Node))
		})
		sp.remove(worst, !worst.Healthy)
		if worst.Healthy {
			surplus = append(surplus, worst)
		}
	}
	// An unhealthy instance in a fault domain two or more above another
	// that has room is moved there (from the fullest domain, the last by
	// name); healthy ones stay.
	for {
		to, ok := sp.emptiest()
		if !ok {
			break
		}
		var movable []Instance
		for _, in := range sp.live {
			if !in.Healthy && sp.fd[s.fdOf(in.Node)] >= sp.fd[to]+2 {
				movable = append(movable, in)
			}
		}
		if len(movable) == 0 {
			break
		}
		sp.remove(slices.MaxFunc(movable, func(a, b Instance) int {
			return cmp.Or(cmp.Compare(sp.fd[s.fdOf(a.Node)], sp.fd[s.fdOf(b.Node)]), cmp.Compare(a.Node, b.Node))
		}), true)
	}
	// Fill the emptiest fault domain while Service Fabric's rule allows.
	for len(sp.live) < want {
		fd, ok := sp.emptiest()
		if !ok || sp.fd[fd] > sp.minCount() {
			break
		}
		sp.add(sp.bestNode(fd))
	}
	healthy := 0
	for _, in := range sp.live {
		if in.Healthy {
			healthy++
		}
	}
	sp.emit()
	s.keepLost(v)
	// Each placed instance not yet healthy keeps one instance that should
	// go (on a draining node, or surplus), the healthy ones first; with
	// none placed, they all stay: a drain does not take the last instances
	// of a plugin down.
	drain := append(surplus, v.draining...)
	slices.SortFunc(drain, func(a, b Instance) int { return cmp.Or(compareBool(b.Healthy, a.Healthy), cmp.Compare(a.Node, b.Node)) })
	keep := len(sp.live) - healthy
	if len(sp.live) == 0 {
		keep = len(drain)
	}
	var kept []string
	for i, in := range drain {
		if i < keep {
			s.assign(v, in, "", true)
			if !v.isUsable[in.Node] {
				kept = append(kept, in.Node)
			}
			continue
		}
		s.drop(in)
	}

	placed := len(sp.live)
	switch {
	case placed == 0:
		s.report(v, SeverityError, want, 0, noNode(v)+drainNote(kept))
	case placed < want:
		why := sp.shortBecause() + drainNote(kept)
		if u := sp.uneven(); u != "" {
			why += "; " + u
		}
		s.report(v, SeverityWarning, want, placed, why)
	case sp.uneven() != "":
		s.report(v, SeverityWarning, want, placed, sp.uneven())
	}
}

// singleton runs one active instance and, with standby 1, one standby on
// another node.
func (s *scheduler) singleton(v *view) {
	type cand struct {
		in    Instance
		class class
	}
	var actives, standbys, others []cand
	for cl, list := range [][]Instance{v.live, v.draining, v.lost} {
		for _, in := range list {
			c := cand{in, class(cl)}
			switch in.Role {
			case RoleActive:
				actives = append(actives, c)
			case RoleStandby:
				standbys = append(standbys, c)
			default:
				others = append(others, c)
			}
		}
	}
	best := func(cs []cand) []cand {
		slices.SortStableFunc(cs, func(a, b cand) int {
			return cmp.Or(cmp.Compare(a.class, b.class), compareBool(b.in.Healthy, a.in.Healthy), cmp.Compare(a.in.Node, b.in.Node))
		})
		return cs
	}
	actives, standbys, others = best(actives), best(standbys), best(others)
	first := func(cs []cand, ok func(cand) bool) *cand {
		for i := range cs {
			if ok(cs[i]) {
				return &cs[i]
			}
		}
		return nil
	}
	used := make(map[string]bool) // nodes whose current instance is kept
	var a, sb *cand               // the current active and standby, if any
	if len(actives) > 0 {
		a = &actives[0]
	}
	sb = first(standbys, func(c cand) bool { return c.class == usable })
	healthySb := first(standbys, func(c cand) bool { return c.class != lost && c.in.Healthy })

	var active Instance
	activeDraining, placedActive, keptActive := false, false, false
	switch {
	case a != nil && a.class == usable:
		active, keptActive = a.in, true
	case healthySb != nil && (a == nil || a.class == lost || healthySb.class == usable):
		// Promote a healthy standby: on a usable node, or on a draining
		// one when the active is gone.
		active, keptActive = healthySb.in, true
		activeDraining = healthySb.class == draining
		if sb != nil && sb.in.Node == active.Node {
			sb = nil
		}
	case a != nil && a.class == draining:
		// The active stays until its replacement, a standby, is healthy.
		active, activeDraining, keptActive = a.in, true, true
	default:
		// No active, and no healthy standby to promote: a new node (the
		// standby, still starting, stays the standby).
		avoid := map[string]bool{}
		var avoidFD *string
		if sb != nil {
			avoid[sb.in.Node] = true
			fd := s.fdOf(sb.in.Node)
			avoidFD = &fd
		}
		if o := first(others, func(c cand) bool { return c.class == usable && !avoid[c.in.Node] }); o != nil {
			active, keptActive = o.in, true
		} else if n := s.leastLoaded(v, avoidFD, avoid); n != "" {
			active, placedActive = s.place(v, n, RoleActive), true
		}
	}
	if keptActive {
		s.assign(v, active, RoleActive, activeDraining)
		placedActive = true
	}
	if placedActive {
		used[active.Node] = true
	}

	// The standby: a warm spare, or the replacement of a draining active.
	wantStandby := v.spec.Placement.Standby == 1 || activeDraining
	var standby *Instance
	if wantStandby && placedActive {
		if sb != nil && !used[sb.in.Node] {
			standby = &sb.in
		} else if o := first(others, func(c cand) bool { return c.class == usable && !used[c.in.Node] }); o != nil {
			standby = &o.in
		}
		if standby != nil {
			s.assign(v, *standby, RoleStandby, false)
		} else {
			fd := s.fdOf(active.Node)
			if n := s.leastLoaded(v, &fd, used); n != "" {
				in := s.place(v, n, RoleStandby)
				standby = &in
			}
		}
		if standby != nil {
			used[standby.Node] = true
		}
	}
	// A standby on a draining node stays until the new one is healthy.
	if standby != nil && !standby.Healthy {
		if d := first(standbys, func(c cand) bool { return c.class == draining && !used[c.in.Node] }); d != nil {
			used[d.in.Node] = true
			s.assign(v, d.in, RoleStandby, true)
		}
	}
	// Every other instance goes: never two actives.
	for _, list := range [][]Instance{v.live, v.draining, v.lost} {
		for _, in := range list {
			if !used[in.Node] {
				s.drop(in)
			}
		}
	}

	want := 1 + v.spec.Placement.Standby
	placed := min(want, len(v.usable))
	switch {
	case len(v.usable) == 0:
		var kept []string
		if placedActive && activeDraining {
			kept = []string{active.Node}
		}
		s.report(v, SeverityError, want, 0, noNode(v)+drainNote(kept))
	case placed < want:
		s.report(v, SeverityWarning, want, placed, onlyNodes(v))
	}
}

// leastLoaded returns the usable node not in used with the fewest
// instances, outside fault domain *avoidFD when there is one, first by name
// on a tie; "" when none is left.
func (s *scheduler) leastLoaded(v *view, avoidFD *string, used map[string]bool) string {
	var best *Node
	key := func(n *Node) [2]int {
		avoid := 0
		if avoidFD != nil && n.FaultDomain == *avoidFD {
			avoid = 1
		}
		return [2]int{avoid, s.load[n.Name]}
	}
	for _, n := range v.usable {
		if !used[n.Name] && (best == nil || less2(key(n), key(best))) {
			best = n
		}
	}
	if best == nil {
		return ""
	}
	return best.Name
}

func (s *scheduler) fdOf(node string) string { return s.nodes[node].FaultDomain }
func (s *scheduler) udOf(node string) string { return s.nodes[node].UpgradeDomain }

func (s *scheduler) report(v *view, sev string, want, placed int, why string) {
	s.diags = append(s.diags, Diagnostic{Plugin: v.spec.Plugin, Severity: sev, Wanted: want, Placed: placed,
		Message: wanted(v, placed) + ": " + why})
}
