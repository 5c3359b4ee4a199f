//go:build !unix

package proctest

import (
	"os"
	"os/exec"
	"syscall"
)

// setProcAttrs has nothing to set without Unix process groups.
func setProcAttrs(*exec.Cmd, bool, bool) {}

// signal sends sig to p itself: there are no process groups to signal.
func signal(p *os.Process, _ bool, sig syscall.Signal) error { return p.Signal(sig) }
