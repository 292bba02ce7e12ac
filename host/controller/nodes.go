package controller

import (
	"context"

	"github.com/plughost/plughost/host/intent"
)

// ineligible reads the nodes the operator drained (node/<node> records,
// area nodes). A node without a record is eligible; a refused record is
// logged and leaves its node eligible.
func (p *Placer) ineligible(ctx context.Context) (map[string]bool, error) {
	states, refused, err := p.db.NodeStates(ctx)
	if err != nil {
		return nil, err
	}
	p.logRefused(refused)
	out := map[string]bool{}
	for name := range intent.Drained(states) {
		out[name] = true
	}
	return out, nil
}
