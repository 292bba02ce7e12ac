package store

import (
	"errors"
	"fmt"
	"syscall"
)

// isNoSpace reports whether err is the disk being full or over quota.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// noSpace is err, from writing the raft log under the data directory dir,
// as ErrNoSpace when the disk was full or over quota; other errors pass.
func noSpace(dir string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("%w in %s: free space on that disk; writes resume by themselves", ErrNoSpace, dir)
	case errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("%w in %s (disk quota exceeded): free space or raise the quota; writes resume by themselves", ErrNoSpace, dir)
	}
	return err
}
