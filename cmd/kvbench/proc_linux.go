package main

import (
	"os/exec"
	"syscall"
)

// setChildAttrs makes the kernel kill a started member if kvbench itself
// dies without cleaning up.
func setChildAttrs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
