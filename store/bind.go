package store

import (
	storev1 "github.com/plughost/plughost/proto/plughost/store/v1"
	"github.com/plughost/plughost/store/local"
)

// Binding ties a store connection to one plugin: its namespace and its
// request rate (requests per second, with a burst; Rate 0 is unlimited).
type Binding = local.Binding

// Bind returns srv restricted to b; see local.Bind.
func Bind(srv storev1.StoreServiceServer, b Binding) storev1.StoreServiceServer {
	return local.Bind(srv, b)
}
