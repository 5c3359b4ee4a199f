//go:build unix

package proctest

import (
	"os"
	"os/exec"
	"syscall"
)

// setProcAttrs puts the command in a process group of its own and, where
// the kernel can (Linux), makes it die with this program.
func setProcAttrs(cmd *exec.Cmd, ownGroup, dieWithParent bool) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: ownGroup}
	if dieWithParent {
		setParentDeathSignal(cmd.SysProcAttr)
	}
}

// signal sends sig to p, or to p's process group.
func signal(p *os.Process, group bool, sig syscall.Signal) error {
	if group {
		return syscall.Kill(-p.Pid, sig)
	}
	return p.Signal(sig)
}
