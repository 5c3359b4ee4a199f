// Package kvhistory is the porcupine model of raftexample's key-value API
// and the operations that tests record against it: the in-process
// linearizability test (the root package) and the fault suite (e2e/) check
// their histories with this one model.
//
// Keys come in groups of up to GroupSize keys, named by the test; an
// operation touches the keys of one group only (a transaction may touch
// several), so a history is checked group by group (porcupine's
// Partition), and each group is a small state: the values of its keys. A
// test that has no transactions makes each key a group of its own.
//
// Every value a test writes is unique in the test. That lets the model
// express compare-and-swap: a client learns a key's revision together with
// its value (GET /v1/kv answers both; a successful PUT /v1/kv answers the
// revision of the value it wrote), and "the key is at revision r" holds
// exactly when "the key holds the value written at revision r", since no
// other write ever wrote that value. A condition on a revision is recorded
// as a condition on that value.
//
// An operation without a definite answer (a 503, a 504, a transport error,
// a client timeout) is Unknown: give it return time "never"
// (math.MaxInt64, or after everything else) and porcupine may place it
// anywhere after its call, including after everything else, which is the
// same as it never taking effect. A read without an answer changes nothing
// and is left out of the history.
package kvhistory

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// GroupSize is the most keys a group holds.
const GroupSize = 3

// State is one group's keys: slot -> value, "" when absent (values written
// are never empty).
type State [GroupSize]string

// Kind is what an Op does to its key.
type Kind byte

const (
	Get    Kind = 'g'
	Put    Kind = 'p'
	Delete Kind = 'd'
)

// Cond is the condition an Op is made on.
type Cond byte

const (
	CondNone   Cond = 0
	CondValue  Cond = 'v' // the key holds Expect (If-Match / ifRev, translated to the value)
	CondAbsent Cond = 'a' // the key is absent (If-None-Match: * / ifAbsent)
)

// Op is one key operation of an Input.
type Op struct {
	Slot   int // the key's place in its group
	Kind   Kind
	Value  string // Put: the value written
	Cond   Cond
	Expect string // CondValue: the value the key must hold
}

// Input is one client operation on one group.
type Input struct {
	Group string // the partition the operation belongs to
	Ops   []Op   // one op, or a transaction's ops in order
	Desc  string // how it was sent, for porcupine's visualisation
}

// IsRead reports whether in is a single Get.
func (in Input) IsRead() bool { return len(in.Ops) == 1 && in.Ops[0].Kind == Get }

// Output is what the client learned. The zero Output is a plain success.
type Output struct {
	Unknown  bool   // indeterminate: it may or may not have taken effect
	Failed   bool   // a condition did not hold (412); nothing was applied
	FailedOp int    // with Failed: the index of the op whose condition failed
	Found    []bool // per op, whether its key existed before (nil if the answer does not say)
	Value    string // a Get's answer, "" for 404
}

// holds reports whether o's condition holds in st.
func (o Op) holds(st State) bool {
	switch o.Cond {
	case CondValue:
		return st[o.Slot] == o.Expect
	case CondAbsent:
		return st[o.Slot] == ""
	}
	return true
}

// firstFailing returns the index of the first op whose condition does not
// hold in st, or -1. All conditions are checked against the state before
// the operation, as the store does.
func firstFailing(st State, ops []Op) int {
	for i, o := range ops {
		if !o.holds(st) {
			return i
		}
	}
	return -1
}

func apply(st State, ops []Op) State {
	for _, o := range ops {
		switch o.Kind {
		case Put:
			st[o.Slot] = o.Value
		case Delete:
			st[o.Slot] = ""
		}
	}
	return st
}

// step is the model's transition: whether out is a legal answer to in in
// state st, and the state after it.
func step(state, input, output any) (bool, any) {
	st, in, out := state.(State), input.(Input), output.(Output)
	fail := firstFailing(st, in.Ops)
	if out.Unknown {
		if fail == -1 {
			return true, apply(st, in.Ops)
		}
		return true, st
	}
	if out.Failed || fail >= 0 {
		return out.Failed && out.FailedOp == fail, st
	}
	for i, o := range in.Ops {
		if out.Found != nil && out.Found[i] != (st[o.Slot] != "") {
			return false, st
		}
		if o.Kind == Get && st[o.Slot] != out.Value {
			return false, st
		}
	}
	return true, apply(st, in.Ops)
}

// Model is the porcupine model of the store, partitioned by group.
func Model() porcupine.Model {
	return porcupine.Model{
		Partition:         partition,
		Init:              func() any { return State{} },
		Step:              step,
		Equal:             func(a, b any) bool { return a.(State) == b.(State) },
		DescribeOperation: describeOperation,
		DescribeState:     describeState,
	}
}

func partition(history []porcupine.Operation) [][]porcupine.Operation {
	byGroup := map[string][]porcupine.Operation{}
	for _, op := range history {
		g := op.Input.(Input).Group
		byGroup[g] = append(byGroup[g], op)
	}
	var parts [][]porcupine.Operation
	for _, g := range slices.Sorted(maps.Keys(byGroup)) {
		parts = append(parts, byGroup[g])
	}
	return parts
}

func describeOperation(input, output any) string {
	in, out := input.(Input), output.(Output)
	switch {
	case out.Unknown:
		return in.Desc + " -> ?"
	case out.Failed:
		return fmt.Sprintf("%s -> 412 (op %d)", in.Desc, out.FailedOp)
	case in.IsRead():
		if out.Value == "" {
			return in.Desc + " -> 404"
		}
		return fmt.Sprintf("%s -> %q", in.Desc, out.Value)
	case out.Found != nil:
		return fmt.Sprintf("%s -> ok found=%v", in.Desc, out.Found)
	}
	return in.Desc + " -> ok"
}

func describeState(state any) string {
	st := state.(State)
	parts := make([]string, GroupSize)
	for i, v := range st {
		if v == "" {
			v = "∅"
		}
		parts[i] = fmt.Sprintf("s%d=%s", i, v)
	}
	return strings.Join(parts, " ")
}

// Visualize writes porcupine's HTML view of a check to a file that
// outlives the test (t.TempDir is removed when the test ends): in
// $RAFTEXAMPLE_FAULT_DIR when set, else in the system's temp directory.
// name (a test's name) starts the file's name. It returns the path.
func Visualize(info porcupine.LinearizationInfo, name string) (string, error) {
	dir := os.Getenv("RAFTEXAMPLE_FAULT_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	name = strings.NewReplacer("/", "_", " ", "_").Replace(name)
	f, err := os.CreateTemp(dir, fmt.Sprintf("raftexample-%s-%s-*.html", name, time.Now().Format("20060102-150405")))
	if err != nil {
		return "", err
	}
	err = porcupine.Visualize(Model(), info, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return f.Name(), err
}
