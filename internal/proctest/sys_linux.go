package proctest

import "syscall"

// setParentDeathSignal makes the kernel SIGKILL the child when its parent
// dies.
func setParentDeathSignal(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGKILL }
