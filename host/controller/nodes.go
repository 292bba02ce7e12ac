package controller

import (
	"context"
	"encoding/json"
	"strings"

	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store"
)

// prefixNode is where the operator's node/<node> records are (area: nodes).
const prefixNode = "node/"

// ineligible reads the nodes the operator drained: a node/<node> record
// whose eligible is false. A node without a record is eligible; a record
// that does not decode, or names another node, is ignored.
func (p *Placer) ineligible(ctx context.Context) (map[string]bool, error) {
	out := map[string]bool{}
	var token []byte
	for {
		resp, err := p.cfg.Store.List(ctx, &storev1.ListRequest{Namespace: store.SystemNamespace, Prefix: []byte(prefixNode), PageToken: token})
		if err != nil {
			return nil, err
		}
		for _, kv := range resp.GetKvs() {
			var rec struct {
				Node     string `json:"node"`
				Eligible bool   `json:"eligible"`
			}
			name := strings.TrimPrefix(string(kv.GetKey()), prefixNode)
			if err := json.Unmarshal(kv.GetValue(), &rec); err != nil || rec.Node != name {
				if !p.refused[string(kv.GetKey())] {
					p.refused[string(kv.GetKey())] = true
					p.log.Warn("a node record is refused; the node counts as eligible", "key", string(kv.GetKey()), "value", string(kv.GetValue()))
				}
				continue
			}
			if !rec.Eligible {
				out[name] = true
			}
		}
		token = resp.GetNextPageToken()
		if len(token) == 0 {
			return out, nil
		}
	}
}
