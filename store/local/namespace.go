package local

import "fmt"

// SystemNamespace is reserved for the agent: its catalog, desired versions
// and history. Plugins can never name it.
const SystemNamespace = "_sys"

// ValidPluginNamespace reports whether ns can be a plugin's namespace.
func ValidPluginNamespace(ns string) error {
	if ns == SystemNamespace {
		return fmt.Errorf("%w: %q is reserved for the agent", ErrInvalidNamespace, ns)
	}
	if !isPluginName(ns) {
		return fmt.Errorf("%w: %q does not match [a-z][a-z0-9-]{0,62}", ErrInvalidNamespace, ns)
	}
	return nil
}

// ValidNamespace accepts any namespace a request to the store may name: a
// plugin's, or the agent's own.
func ValidNamespace(ns string) error {
	if ns == "" {
		return fmt.Errorf("%w: namespace is required", ErrInvalidNamespace)
	}
	if ns == SystemNamespace {
		return nil
	}
	return ValidPluginNamespace(ns)
}

// isPluginName reports whether ns matches [a-z][a-z0-9-]{0,62}, the shape
// of a plugin's name.
func isPluginName(ns string) bool {
	if len(ns) == 0 || len(ns) > 63 || ns[0] < 'a' || ns[0] > 'z' {
		return false
	}
	for i := 1; i < len(ns); i++ {
		c := ns[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}
