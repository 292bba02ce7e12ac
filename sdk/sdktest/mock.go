package sdktest

import (
	"context"
	"errors"
	"iter"

	"github.com/plughost/plughost/sdk"
)

// ErrNotMocked is returned by a MockStore method whose function field is nil.
var ErrNotMocked = errors.New("sdktest: MockStore method not mocked")

// MockStore is an sdk.Store whose methods call its function fields, for unit
// tests that need the store to fail in ways the in-memory one does not
// (sdk.ErrLimit, sdk.ErrUnavailable, sdk.ErrOutcomeUnknown, ...). Hand it
// to a plugin in an sdk.Env of the test's making. A nil field answers
// ErrNotMocked; WithConsistency returns the same mock.
type MockStore struct {
	GetF         func(ctx context.Context, key string) (sdk.KV, error)
	PutF         func(ctx context.Context, key string, value []byte, opts sdk.PutOptions) (sdk.KV, error)
	DeleteF      func(ctx context.Context, key string, opts sdk.DeleteOptions) (bool, error)
	DeleteRangeF func(ctx context.Context, prefix string) (int64, error)
	ListF        func(ctx context.Context, prefix string, opts sdk.ListOptions) (sdk.Page, error)
	TxnF         func(ctx context.Context, t sdk.Txn) (sdk.TxnResult, error)
	WatchF       func(ctx context.Context, prefix string, fromRevision int64) iter.Seq2[sdk.Event, error]
}

var _ sdk.Store = (*MockStore)(nil)

// Get implements sdk.Store.
func (m *MockStore) Get(ctx context.Context, key string) (sdk.KV, error) {
	if m.GetF == nil {
		return sdk.KV{}, ErrNotMocked
	}
	return m.GetF(ctx, key)
}

// Put implements sdk.Store.
func (m *MockStore) Put(ctx context.Context, key string, value []byte, opts sdk.PutOptions) (sdk.KV, error) {
	if m.PutF == nil {
		return sdk.KV{}, ErrNotMocked
	}
	return m.PutF(ctx, key, value, opts)
}

// Delete implements sdk.Store.
func (m *MockStore) Delete(ctx context.Context, key string, opts sdk.DeleteOptions) (bool, error) {
	if m.DeleteF == nil {
		return false, ErrNotMocked
	}
	return m.DeleteF(ctx, key, opts)
}

// DeleteRange implements sdk.Store.
func (m *MockStore) DeleteRange(ctx context.Context, prefix string) (int64, error) {
	if m.DeleteRangeF == nil {
		return 0, ErrNotMocked
	}
	return m.DeleteRangeF(ctx, prefix)
}

// List implements sdk.Store.
func (m *MockStore) List(ctx context.Context, prefix string, opts sdk.ListOptions) (sdk.Page, error) {
	if m.ListF == nil {
		return sdk.Page{}, ErrNotMocked
	}
	return m.ListF(ctx, prefix, opts)
}

// Txn implements sdk.Store.
func (m *MockStore) Txn(ctx context.Context, t sdk.Txn) (sdk.TxnResult, error) {
	if m.TxnF == nil {
		return sdk.TxnResult{}, ErrNotMocked
	}
	return m.TxnF(ctx, t)
}

// Watch implements sdk.Store.
func (m *MockStore) Watch(ctx context.Context, prefix string, fromRevision int64) iter.Seq2[sdk.Event, error] {
	if m.WatchF == nil {
		return func(yield func(sdk.Event, error) bool) { yield(sdk.Event{}, ErrNotMocked) }
	}
	return m.WatchF(ctx, prefix, fromRevision)
}

// WithConsistency implements sdk.Store.
func (m *MockStore) WithConsistency(sdk.Consistency) sdk.Store { return m }
