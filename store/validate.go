package store

import "github.com/plughost/plughost/store/local"

// Request limits that are not configurable.
const (
	// MaxKeyBytes is the longest key.
	MaxKeyBytes = local.MaxKeyBytes
	// MaxTxnOps bounds the compares, and the operations of each branch, of
	// one transaction.
	MaxTxnOps = local.MaxTxnOps
)
