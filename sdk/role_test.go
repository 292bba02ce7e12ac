package sdk

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	pluginv1 "github.com/plughost/plughost/proto/plughost/plugin/v1"
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store/local"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// rolePlugin records its role changes.
type rolePlugin struct {
	lifecyclePlugin
	mu      sync.Mutex
	changes []string
}

func (p *rolePlugin) RoleChanged(_ context.Context, role Role, epoch int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.changes = append(p.changes, fmt.Sprintf("%s@%d", role, epoch))
	return nil
}

var _ RoleChanger = (*rolePlugin)(nil)

// TestRoleAndEpochTravelWithWrites: an instance configured as its
// singleton's active writes with its epoch; the store refuses that epoch
// once the singleton moved on, even while the agent already holds the
// newer one (the SDK sends the epoch it was given, the agent does not
// replace it); SetRole brings the new epoch and RoleChanged.
func TestRoleAndEpochTravelWithWrites(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mem, err := local.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	agent := local.NewServer(mem)
	single := func(active string) int64 {
		t.Helper()
		r, err := agent.Put(ctx, &storev1.PutRequest{Namespace: local.SystemNamespace, Key: []byte("singleton/life"), Value: []byte(`{"active":"` + active + `"}`)})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetRevision()
	}
	e1 := single("n1")
	var mu sync.Mutex
	held := local.Role{Kind: local.RoleActive, Epoch: e1}
	storeSrv := grpc.NewServer()
	storev1.RegisterStoreServiceServer(storeSrv, local.Bind(agent, local.Binding{Namespace: "life", Role: func() local.Role {
		mu.Lock()
		defer mu.Unlock()
		return held
	}}))
	storeConn := serveBuf(t, storeSrv)

	p := &rolePlugin{}
	s, err := NewInProcessServer(Info{Name: "life", Version: "1.0.0"}, p, InProcessConfig{
		DialStore: func(context.Context, uint32) (*grpc.ClientConn, error) { return storeConn, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	life := pluginv1.NewPluginServiceClient(serveBuf(t, s))
	if _, err := life.Configure(ctx, &pluginv1.ConfigureRequest{StoreBrokerId: 1, Role: pluginv1.Role_ROLE_ACTIVE, Epoch: e1}); err != nil {
		t.Fatal(err)
	}
	env := p.env
	if r, e := env.Role(); r != RoleActive || e != e1 {
		t.Fatalf("role at configure: %s %d", r, e)
	}
	if _, err := env.Store.Put(ctx, "n", []byte("1"), PutOptions{}); err != nil {
		t.Fatalf("the active's write: %v", err)
	}

	e2 := single("n1") // a failover back to this node: a new epoch
	mu.Lock()
	held = local.Role{Kind: local.RoleActive, Epoch: e2}
	mu.Unlock()
	_, err = env.Store.Put(ctx, "n", []byte("2"), PutOptions{})
	if !errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), fmt.Sprintf("write from epoch %d refused: singleton life's current epoch is %d (active on n1)", e1, e2)) {
		t.Fatalf("write at the epoch the instance was given, after a newer one: %v", err)
	}
	if _, err := life.SetRole(ctx, &pluginv1.SetRoleRequest{Role: pluginv1.Role_ROLE_ACTIVE, Epoch: e2}); err != nil {
		t.Fatal(err)
	}
	for _, write := range []func() error{
		func() error { _, err := env.Store.Put(ctx, "n", []byte("3"), PutOptions{}); return err },
		func() error { _, err := env.Store.Delete(ctx, "n", DeleteOptions{}); return err },
		func() error { _, err := env.Store.DeleteRange(ctx, "n"); return err },
		func() error {
			_, err := env.Store.Txn(ctx, Txn{Then: []Op{{Kind: OpPut, Key: "t", Value: []byte("1")}}})
			return err
		},
	} {
		if err := write(); err != nil {
			t.Errorf("write at the new epoch: %v", err)
		}
	}

	if _, err := life.SetRole(ctx, &pluginv1.SetRoleRequest{Role: pluginv1.Role_ROLE_STANDBY}); err != nil {
		t.Fatal(err)
	}
	if r, e := env.Role(); r != RoleStandby || e != 0 {
		t.Errorf("role after SetRole standby: %s %d", r, e)
	}
	// The agent still holds it active at e2; the SDK's write carries no
	// epoch (a standby has none), which the agent stamps.
	if _, err := env.Store.Put(ctx, "n", []byte("4"), PutOptions{}); err != nil {
		t.Errorf("standby's write while the agent holds it active: %v", err)
	}
	mu.Lock()
	held = local.Role{Kind: local.RoleStandby, Why: "the active is n2"}
	mu.Unlock()
	if _, err := env.Store.Put(ctx, "n", []byte("5"), PutOptions{}); !errors.Is(err, ErrFenced) {
		t.Errorf("standby's write: %v", err)
	}

	_, err = life.SetRole(ctx, &pluginv1.SetRoleRequest{Role: pluginv1.Role_ROLE_ACTIVE})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("active without an epoch: %v", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if got, want := strings.Join(p.changes, " "), fmt.Sprintf("active@%d standby@0", e2); got != want {
		t.Errorf("role changes %q, want %q", got, want)
	}
}
