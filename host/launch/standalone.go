package launch

import (
	"context"
	"fmt"

	pluginv1 "github.com/plughost/plughost/proto/plughost/plugin/v1"
	"github.com/plughost/plughost/store"
)

// StartStandalone starts a plugin outside any agent, with a private
// in-memory store, configured and ready for calls: the "direct" side of
// routing benchmarks. The returned stop ends the plugin and its store.
func StartStandalone(ctx context.Context, spec Spec) (*Instance, func(), error) {
	inst, err := Start(ctx, spec)
	if err != nil {
		return nil, nil, err
	}
	st, err := store.OpenMemory()
	if err != nil {
		inst.Kill()
		return nil, nil, err
	}
	stop := func() {
		inst.Stop(context.Background())
		st.Close()
	}
	ns := inst.Description.GetName()
	srv := store.Bind(store.NewServer(st), store.Binding{Namespace: ns})
	if err := inst.Setup(ctx, srv, &pluginv1.ConfigureRequest{Namespace: ns, InstanceId: "standalone",
		Node: &pluginv1.NodeInfo{Name: "standalone"}}); err != nil {
		stop()
		return nil, nil, fmt.Errorf("configuring %s: %w", ns, err)
	}
	return inst, stop, nil
}
