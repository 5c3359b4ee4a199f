//go:build !linux

package main

import "os/exec"

// setChildAttrs has nothing to set where the kernel cannot kill children
// with their parent; kvbench's own cleanup stops them.
func setChildAttrs(*exec.Cmd) {}
