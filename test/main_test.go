package test

import (
	"testing"

	"github.com/plughost/plughost/internal/testenv"
)

// TestMain removes the binaries and bundles the tests built once they ran.
func TestMain(m *testing.M) { testenv.Main(m) }
