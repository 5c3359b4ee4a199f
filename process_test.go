package main

// What the root package's tests share with the end-to-end suite (e2e/):
// the process harness and the request helper of internal/proctest. The
// in-process tests talk to members through these wrappers; the few tests
// here that run the built binary (TLS, stale data, start-up logs, the
// connection measurement) build it on first use, so that the rest of the
// package does not pay for a build.

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"raftexample/internal/proctest"
)

// raftexample is the binary of the process tests, built on first use.
var raftexample proctest.Binary

func TestMain(m *testing.M) {
	code := m.Run()
	if err := raftexample.Remove(); err != nil {
		fmt.Fprintln(os.Stderr, "removing the built binary:", err)
	}
	os.Exit(code)
}

var seedFlag = flag.Uint64("seed", 0, "seed of the randomised tests; 0 takes one from the clock")

// testSeed returns the seed of a randomised test, from -seed or the clock,
// and logs it so that a failure can be replayed.
func testSeed(t testing.TB) uint64 {
	t.Helper()
	return proctest.Seed(t, *seedFlag, ".")
}

func putOK(t *testing.T, base, key, value string) { t.Helper(); proctest.PutOK(t, base, key, value) }

func waitKeys(t *testing.T, base string, want map[string]*string) {
	t.Helper()
	proctest.WaitKeys(t, base, want)
}

func present(kv map[string]string) map[string]*string { return proctest.Present(kv) }
