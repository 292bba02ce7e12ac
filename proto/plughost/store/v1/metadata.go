package storev1

// CallerAddrHeader is the metadata the agent's router sets, on the calls it
// passes to the agent's own server over its in-memory connection, to the
// address of the client connection each came in on, so that per-client
// limits (watches) count the client rather than the router. The store
// trusts it on that in-memory connection alone; the router replaces any
// value a client sent.
const CallerAddrHeader = "plughost-caller-addr"
