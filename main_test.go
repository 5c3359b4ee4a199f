package main

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
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
