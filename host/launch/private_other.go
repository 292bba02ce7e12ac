//go:build !linux

package launch

import (
	"errors"
	"os"
)

func openChecked(what string, _ Spec, _ []byte) (*os.File, error) {
	return nil, errors.New(what + ": sandboxed plugins need Linux")
}
