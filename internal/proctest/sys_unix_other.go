//go:build unix && !linux

package proctest

import "syscall"

// setParentDeathSignal has nothing to set where the kernel cannot kill a
// child with its parent; the caller's own cleanup stops it.
func setParentDeathSignal(*syscall.SysProcAttr) {}
