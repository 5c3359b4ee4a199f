package main

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"

	"raftexample/internal/proctest"
)

func TestRunExitCodes(t *testing.T) {
	busy, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	for _, tc := range []struct {
		name     string
		args     []string
		want     int
		wantText string
	}{
		{"unknown flag", []string{"--bogus"}, 2, "bogus"},
		{"stray argument", []string{"extra"}, 2, "unexpected arguments"},
		{"bad tick settings", []string{"--election-ticks", "1"}, 2, "election-ticks"},
		{"bad log level", []string{"--log-level", "loud"}, 2, "log-level"},
		{"id outside cluster", []string{"--id", "3", "--port", "0", "--data-dir", t.TempDir()}, 2, "no entry in --cluster"},
		{"malformed cluster URL", []string{"--cluster", "127.0.0.1", "--port", "0", "--data-dir", t.TempDir()}, 2, "--cluster"},
		{"port in use", []string{"--port", fmt.Sprint(busyPort), "--data-dir", t.TempDir()}, 1, "listen for clients"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if got := run(tc.args, &out, &errOut); got != tc.want || !strings.Contains(errOut.String(), tc.wantText) {
				t.Fatalf("exit %d, want %d; stderr %q should mention %q", got, tc.want, errOut.String(), tc.wantText)
			}
		})
	}
}

func TestRunVersion(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"--version"}, &out, &out); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.HasPrefix(out.String(), "raftexample ") || !strings.Contains(out.String(), "go1.") {
		t.Fatalf("--version printed %q", out.String())
	}
}

// A binary built from a checkout says which revision it is (--version and
// /v1/status) instead of "dev": the Go toolchain stamps the module version
// and the VCS revision into the build, and memberVersion reads them.
func TestVersionNamesTheRevision(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary again")
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatalf("git rev-parse HEAD: %v (the test needs the git checkout it builds from)", err)
	}
	// -buildvcs=true whatever GOFLAGS says: a plain go build in a checkout stamps it.
	bin, err := proctest.Build(t.Context(), ".", t.TempDir(), "-buildvcs=true")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	if rev := strings.TrimSpace(string(head))[:12]; !strings.HasPrefix(first, "raftexample ") || !strings.Contains(first, rev) {
		t.Fatalf("--version printed %q, want the revision %s", first, rev)
	}
}
