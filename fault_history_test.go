package main

// The history of a fault test and its linearizability check with porcupine.
//
// Keys come in groups of groupSize ("e3-g1-s0", "e3-g1-s1", ...): epoch e,
// group g, slot s. A transaction touches keys of one group only, so the
// history is checked group by group (porcupine's Partition), and each group
// is a small state: the values of its keys. Clients move to new key names
// every epoch, which keeps each group's history, and so the search, small
// however long the test runs.
//
// Every value written is unique in the whole test. That lets the model
// express compare-and-swap: a client learns a key's revision together with
// its value (GET /v1/kv answers both; a successful PUT /v1/kv writes a value
// it chose and answers the new revision), and "the key is at revision r"
// holds exactly when "the key holds the value written at revision r", since
// no other write ever wrote that value.
//
// An operation without a definite answer (a 503, a 504, a transport error,
// a client timeout) is indeterminate: its return time is "never", so
// porcupine may place it anywhere after its call, including after
// everything else, which is the same as it never taking effect. A read
// without an answer changes nothing and is left out.

import (
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

const groupSize = 3

// groupState is one group's keys: slot -> value, "" when absent (values
// written are never empty).
type groupState [groupSize]string

// Kinds of model operations.
const (
	mGet    = 'g'
	mPut    = 'p'
	mDelete = 'd'
)

// Conditions of model operations.
const (
	condNoneM   = 0
	condValueM  = 'v' // the key holds expect (If-Match / ifRev, translated)
	condAbsentM = 'a' // the key is absent (If-None-Match: * / ifAbsent)
)

// mOp is one key operation of a model input.
type mOp struct {
	slot   int
	kind   byte
	value  string // put: the value written
	cond   byte
	expect string // condValueM: the value the key must hold
}

// mInput is one client operation on one group.
type mInput struct {
	group string // "e3-g1": the partition
	ops   []mOp  // one op, or a transaction's ops in order
	desc  string // how it was sent, for the visualisation
}

// mOutput is what the client learned.
type mOutput struct {
	unknown bool   // indeterminate: it may or may not have taken effect
	failed  int    // index of the op whose condition failed (412), or -1
	found   []bool // per op, whether its key existed before (nil if the answer does not say)
	value   string // a get's answer, "" for 404
}

func (o mOp) holds(st groupState) bool {
	switch o.cond {
	case condValueM:
		return st[o.slot] == o.expect
	case condAbsentM:
		return st[o.slot] == ""
	}
	return true
}

// firstFailing returns the index of the first op whose condition does not
// hold in st, or -1. All conditions are checked against the state before
// the operation, as the store does.
func firstFailing(st groupState, ops []mOp) int {
	for i, o := range ops {
		if !o.holds(st) {
			return i
		}
	}
	return -1
}

func applyOps(st groupState, ops []mOp) groupState {
	for _, o := range ops {
		switch o.kind {
		case mPut:
			st[o.slot] = o.value
		case mDelete:
			st[o.slot] = ""
		}
	}
	return st
}

func modelStep(state, input, output any) (bool, any) {
	st, in, out := state.(groupState), input.(mInput), output.(mOutput)
	fail := firstFailing(st, in.ops)
	if out.unknown {
		if fail == -1 {
			return true, applyOps(st, in.ops)
		}
		return true, st
	}
	if out.failed >= 0 || fail >= 0 {
		return out.failed == fail, st
	}
	for i, o := range in.ops {
		if out.found != nil && out.found[i] != (st[o.slot] != "") {
			return false, st
		}
		if o.kind == mGet && st[o.slot] != out.value {
			return false, st
		}
	}
	return true, applyOps(st, in.ops)
}

// faultKVModel is the porcupine model of the key-value store, partitioned by group.
var faultKVModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byGroup := map[string][]porcupine.Operation{}
		for _, op := range history {
			g := op.Input.(mInput).group
			byGroup[g] = append(byGroup[g], op)
		}
		var parts [][]porcupine.Operation
		for _, g := range slices.Sorted(maps.Keys(byGroup)) {
			parts = append(parts, byGroup[g])
		}
		return parts
	},
	Init:  func() any { return groupState{} },
	Step:  modelStep,
	Equal: func(a, b any) bool { return a.(groupState) == b.(groupState) },
	DescribeOperation: func(input, output any) string {
		in, out := input.(mInput), output.(mOutput)
		switch {
		case out.unknown:
			return in.desc + " -> ?"
		case out.failed >= 0:
			return fmt.Sprintf("%s -> 412 (op %d)", in.desc, out.failed)
		case len(in.ops) == 1 && in.ops[0].kind == mGet:
			if out.value == "" {
				return in.desc + " -> 404"
			}
			return fmt.Sprintf("%s -> %q", in.desc, out.value)
		case out.found != nil:
			return fmt.Sprintf("%s -> ok found=%v", in.desc, out.found)
		}
		return in.desc + " -> ok"
	},
	DescribeState: func(state any) string {
		st := state.(groupState)
		parts := make([]string, groupSize)
		for i, v := range st {
			if v == "" {
				v = "∅"
			}
			parts[i] = fmt.Sprintf("s%d=%s", i, v)
		}
		return strings.Join(parts, " ")
	},
}

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
func (h *history) add(client int, in mInput, call int64, out *mOutput) {
	h.mu.Lock()
	defer h.mu.Unlock()
	isRead := len(in.ops) == 1 && in.ops[0].kind == mGet
	if out == nil {
		h.failedReads++
		return
	}
	ret := h.now()
	if out.unknown {
		h.indeterminate++
		ret = math.MaxInt64 // it may take effect at any time after its call
	} else if !isRead && out.failed < 0 {
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
	res, info := porcupine.CheckOperationsVerbose(faultKVModel, ops, timeout)
	t.Logf("porcupine checked %d operations in %v: %s", len(ops), time.Since(began).Round(time.Millisecond), res)
	if res != porcupine.Ok {
		path := visualisationPath(t)
		if err := porcupine.VisualizePath(faultKVModel, info, path); err != nil {
			t.Errorf("cannot write porcupine's visualisation to %s: %v", path, err)
		} else {
			t.Logf("porcupine's visualisation of the history: %s", path)
		}
	}
	return res
}

// visualisationPath names a file for porcupine's HTML in the system's temp
// directory (t.TempDir is removed when the test ends), or under
// $RAFTEXAMPLE_FAULT_DIR when set.
func visualisationPath(t *testing.T) string {
	dir := os.Getenv("RAFTEXAMPLE_FAULT_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("create %s: %v", dir, err)
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	return filepath.Join(dir, fmt.Sprintf("raftexample-%s-%s.html", name, time.Now().Format("20060102-150405")))
}

// The checker must reject what a broken store would do: each history below
// breaks linearizability in one way, and a close variant that does not.
func TestFaultCheckerCatchesViolations(t *testing.T) {
	const g = "e0-g0"
	put := func(slot int, v string) mInput {
		return mInput{group: g, ops: []mOp{{slot: slot, kind: mPut, value: v}}, desc: "put " + v}
	}
	cas := func(slot int, expect, v string) mInput {
		return mInput{group: g, ops: []mOp{{slot: slot, kind: mPut, value: v, cond: condValueM, expect: expect}}, desc: "cas " + v}
	}
	get := mInput{group: g, ops: []mOp{{slot: 0, kind: mGet}}, desc: "get"}
	del := mInput{group: g, ops: []mOp{{slot: 0, kind: mDelete}}, desc: "delete"}
	ok := mOutput{failed: -1}
	read := func(v string) mOutput { return mOutput{failed: -1, value: v} }
	op := func(in mInput, out mOutput, call, ret int64) porcupine.Operation {
		if out.unknown {
			ret = math.MaxInt64
		}
		return porcupine.Operation{Input: in, Output: out, Call: call, Return: ret}
	}
	unknown := mOutput{unknown: true, failed: -1}
	txn := mInput{group: g, ops: []mOp{
		{slot: 0, kind: mPut, value: "t0", cond: condAbsentM},
		{slot: 1, kind: mPut, value: "t1"},
	}, desc: "txn"}
	for _, tc := range []struct {
		name string
		ops  []porcupine.Operation
		want porcupine.CheckResult
	}{
		{"stale read", []porcupine.Operation{op(put(0, "a"), ok, 0, 10), op(get, read(""), 20, 30)}, porcupine.Illegal},
		{"fresh read", []porcupine.Operation{op(put(0, "a"), ok, 0, 10), op(get, read("a"), 20, 30)}, porcupine.Ok},
		{"concurrent read", []porcupine.Operation{op(put(0, "a"), ok, 0, 30), op(get, read(""), 10, 20)}, porcupine.Ok},
		{"lost acknowledged write", []porcupine.Operation{op(put(0, "a"), ok, 0, 10), op(put(0, "b"), ok, 20, 30), op(get, read("a"), 40, 50)}, porcupine.Illegal},
		{"indeterminate write seen", []porcupine.Operation{op(put(0, "a"), unknown, 0, 0), op(get, read("a"), 40, 50)}, porcupine.Ok},
		{"indeterminate write never seen", []porcupine.Operation{op(put(0, "a"), unknown, 0, 0), op(get, read(""), 40, 50)}, porcupine.Ok},
		{"indeterminate write undone", []porcupine.Operation{op(put(0, "a"), unknown, 0, 0), op(get, read("a"), 40, 50), op(get, read(""), 60, 70)}, porcupine.Illegal},
		{"value nobody wrote", []porcupine.Operation{op(get, read("x"), 0, 10)}, porcupine.Illegal},
		{"cas refused wrongly", []porcupine.Operation{op(put(0, "a"), ok, 0, 10), op(cas(0, "a", "b"), mOutput{failed: 0}, 20, 30)}, porcupine.Illegal},
		{"cas applied wrongly", []porcupine.Operation{op(put(0, "a"), ok, 0, 10), op(cas(0, "z", "b"), ok, 20, 30)}, porcupine.Illegal},
		{"cas", []porcupine.Operation{op(put(0, "a"), ok, 0, 10), op(cas(0, "a", "b"), ok, 20, 30), op(get, read("b"), 40, 50)}, porcupine.Ok},
		{"delete of an absent key", []porcupine.Operation{op(del, mOutput{failed: -1, found: []bool{true}}, 0, 10)}, porcupine.Illegal},
		{"delete", []porcupine.Operation{op(put(0, "a"), ok, 0, 10), op(del, mOutput{failed: -1, found: []bool{true}}, 20, 30), op(get, read(""), 40, 50)}, porcupine.Ok},
		{"txn half applied", []porcupine.Operation{op(txn, mOutput{failed: -1, found: []bool{false, false}}, 0, 10), op(get, read(""), 20, 30)}, porcupine.Illegal},
		{"txn wrong failed op", []porcupine.Operation{op(txn, mOutput{failed: 1}, 0, 10)}, porcupine.Illegal},
		{"txn", []porcupine.Operation{op(txn, mOutput{failed: -1, found: []bool{false, false}}, 0, 10), op(get, read("t0"), 20, 30)}, porcupine.Ok},
		{"other groups are independent", []porcupine.Operation{op(put(0, "a"), ok, 0, 10),
			op(mInput{group: "e0-g1", ops: []mOp{{slot: 0, kind: mGet}}}, read(""), 20, 30)}, porcupine.Ok},
	} {
		if got := porcupine.CheckOperationsTimeout(faultKVModel, tc.ops, 10*time.Second); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}
