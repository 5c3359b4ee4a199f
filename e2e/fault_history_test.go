package e2e

// The history of a fault test and its linearizability check with porcupine,
// on the model of internal/kvhistory.
//
// Keys come in groups of kvhistory.GroupSize ("e3-g1-s0", "e3-g1-s1",
// ...): epoch e, group g, slot s. A transaction touches keys of one group
// only, so the history is checked group by group. Clients move to new key
// names every epoch, which keeps each group's history, and so the search,
// small however long the test runs.

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"raftexample/internal/kvhistory"
)

// history records operations from many goroutines.
type history struct {
	start time.Time

	mu            sync.Mutex
	ops           []porcupine.Operation
	ackedWrites   int
	indeterminate int
	refusedWrites int // writes refused before they entered the log; not in ops
	failedReads   int
	unexpected    []string // answers no correct member gives
}

func newHistory() *history { return &history{start: time.Now()} }

// now is the time since the test began, for call and return times.
func (h *history) now() int64 { return int64(time.Since(h.start)) }

// add records a finished operation; a nil output drops a read that had no
// answer.
func (h *history) add(client int, in kvhistory.Input, call int64, out *kvhistory.Output) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if out == nil {
		h.failedReads++
		return
	}
	ret := h.now()
	if out.Unknown {
		h.indeterminate++
		ret = math.MaxInt64 // it may take effect at any time after its call
	} else if !in.IsRead() && !out.Failed {
		h.ackedWrites++
	}
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: *out, Return: ret})
}

func (h *history) refused() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.refusedWrites++
}

func (h *history) unexpectedAnswer(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.unexpected = append(h.unexpected, fmt.Sprintf(format, args...))
}

// check runs porcupine over the history. On a violation (or a check that
// did not finish) it writes porcupine's visualisation to a file that
// outlives the test and logs where.
func (h *history) check(t *testing.T, timeout time.Duration) porcupine.CheckResult {
	h.mu.Lock()
	ops := slices.Clone(h.ops)
	h.mu.Unlock()
	began := time.Now()
	res, info := porcupine.CheckOperationsVerbose(kvhistory.Model(), ops, timeout)
	t.Logf("porcupine checked %d operations in %v: %s", len(ops), time.Since(began).Round(time.Millisecond), res)
	if res != porcupine.Ok {
		if path, err := kvhistory.Visualize(info, t.Name()); err != nil {
			t.Errorf("cannot write porcupine's visualisation to %s: %v", path, err)
		} else {
			t.Logf("porcupine's visualisation of the history: %s", path)
		}
	}
	return res
}
