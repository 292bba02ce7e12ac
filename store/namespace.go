package store

import "github.com/plughost/plughost/store/local"

// SystemNamespace is reserved for the agent: its catalog, desired versions
// and history. Plugins can never name it.
const SystemNamespace = local.SystemNamespace

// ValidPluginNamespace reports whether ns can be a plugin's namespace.
func ValidPluginNamespace(ns string) error { return local.ValidPluginNamespace(ns) }
