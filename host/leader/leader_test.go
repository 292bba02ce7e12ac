package leader_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plughost/plughost/host/leader"
	"github.com/plughost/plughost/internal/testenv"
	"github.com/plughost/plughost/store"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// A task that fails is run again within the term; it ends with the store.
func TestTaskRunsAgainAfterAnError(t *testing.T) {
	st, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	var runs, live atomic.Int32
	leader.Run(st, "flaky", leader.TaskFunc(func(ctx context.Context) error {
		live.Add(1)
		defer live.Add(-1)
		if runs.Add(1) < 3 {
			return errors.New("store not ready")
		}
		<-ctx.Done()
		return ctx.Err()
	}), nil)
	testenv.Eventually(t, 10*time.Second, "a third run that stays", func() bool { return runs.Load() == 3 && live.Load() == 1 })
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if n := live.Load(); n != 0 {
		t.Errorf("%d runs still live after Close", n)
	}
}
