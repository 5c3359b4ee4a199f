// Package proctest runs raftexample members as processes of their own. The
// end-to-end suite (e2e/), the root package's few process tests and
// cmd/kvbench share it: it builds the binary, writes a member's command
// line on free loopback ports, starts, signals, kills and restarts
// processes with their output kept in a log file, waits for a member to
// serve, and sends the HTTP requests the tests make.
//
// Process and the functions that return an error are for any caller
// (kvbench is not a test); Proc, Cluster and the functions that take a TB
// fail the test instead.
package proctest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Process is one command, started (and started again) the same way, its
// stdout and stderr appended to a log file. Set the exported fields before
// the first Start; only one goroutine may call Start.
type Process struct {
	Name string   // what log lines and errors call it
	Argv []string // the command and its arguments
	Dir  string   // working directory
	Env  []string // added to this program's environment
	Log  string   // path of the log file

	// OwnGroup runs the process in a process group of its own, so that a
	// signal reaches what it started too (the member a shell runs).
	OwnGroup bool
	// DieWithParent asks the kernel (Linux) to kill the process when this
	// program dies without stopping it.
	DieWithParent bool

	cmd  *exec.Cmd
	done chan struct{} // closed once cmd has exited
	err  error         // cmd.Wait's answer; read it only after done is closed
}

// Start starts the process; it must not be running.
func (p *Process) Start() error {
	if p.Running() {
		return fmt.Errorf("%s is already running", p.Name)
	}
	out, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	fmt.Fprintf(out, "=== %s starting: %s\n", time.Now().Format(time.StampMicro), strings.Join(p.Argv, " "))
	cmd := exec.Command(p.Argv[0], p.Argv[1:]...)
	cmd.Dir = p.Dir
	if len(p.Env) > 0 {
		cmd.Env = append(os.Environ(), p.Env...)
	}
	cmd.Stdout, cmd.Stderr = out, out
	setProcAttrs(cmd, p.OwnGroup, p.DieWithParent)
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() { // ends when the process does
		err := cmd.Wait()
		fmt.Fprintf(out, "=== %s exited: %v\n", time.Now().Format(time.StampMicro), err)
		out.Close()
		p.err = err
		close(done)
	}()
	return nil
}

// Running reports whether the process was started and has not exited.
func (p *Process) Running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Pid is the process ID of the latest start, or 0 before the first.
func (p *Process) Pid() int {
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Done is closed when the latest start has exited (nil before the first).
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is how the latest start ended (cmd.Wait's error); read it only after
// Done is closed.
func (p *Process) Err() error { return p.err }

// Signal sends sig to the process, or to its whole group with OwnGroup.
// A process that has already exited is not an error.
func (p *Process) Signal(sig syscall.Signal) error {
	if !p.Running() {
		return nil
	}
	if err := signal(p.cmd.Process, p.OwnGroup, sig); err != nil && !errors.Is(err, os.ErrProcessDone) && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %v to %s: %w", sig, p.Name, err)
	}
	return nil
}

// Wait waits up to timeout for the process to exit by itself and returns
// its exit code, -1 if a signal ended it.
func (p *Process) Wait(timeout time.Duration) (int, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		return 0, fmt.Errorf("%s still running after %v", p.Name, timeout)
	}
	var exitErr *exec.ExitError
	switch {
	case p.err == nil:
		return 0, nil
	case errors.As(p.err, &exitErr):
		return exitErr.ExitCode(), nil
	default:
		return 0, fmt.Errorf("waiting for %s: %w", p.Name, p.err)
	}
}

// Kill sends SIGKILL and waits up to timeout for the exit.
func (p *Process) Kill(timeout time.Duration) error {
	if !p.Running() {
		return nil
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	if _, err := p.Wait(timeout); err != nil {
		return fmt.Errorf("after SIGKILL: %w", err)
	}
	return nil
}

// Stop sends sig and waits for the exit, killing the process if it is
// still running after grace.
func (p *Process) Stop(sig syscall.Signal, grace time.Duration) error {
	if !p.Running() {
		return nil
	}
	if err := p.Signal(sig); err != nil {
		return err
	}
	if _, err := p.Wait(grace); err == nil {
		return nil
	}
	return p.Kill(ExitTimeout)
}

// Output is everything the process has logged, over all its starts.
func (p *Process) Output() string {
	b, _ := os.ReadFile(p.Log)
	return string(b)
}

// Tail is the last n lines of the log.
func (p *Process) Tail(n int) string { return TailFile(p.Log, n) }

// TailFile returns the last n lines of a file, or why it cannot.
func TailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
