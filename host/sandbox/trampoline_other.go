//go:build !linux

package sandbox

import "errors"

func enter([]string) error { return errors.New("sandboxed plugins need Linux") }
