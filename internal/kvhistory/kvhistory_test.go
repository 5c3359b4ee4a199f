package kvhistory

import (
	"math"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// The checker must reject what a broken store would do: each history below
// breaks linearizability in one way, and a close variant that does not.
// These are the fault suite's histories: groups of keys and transactions.
func TestFaultCheckerCatchesViolations(t *testing.T) {
	const g = "e0-g0"
	put := func(slot int, v string) Input {
		return Input{Group: g, Ops: []Op{{Slot: slot, Kind: Put, Value: v}}, Desc: "put " + v}
	}
	cas := func(slot int, expect, v string) Input {
		return Input{Group: g, Ops: []Op{{Slot: slot, Kind: Put, Value: v, Cond: CondValue, Expect: expect}}, Desc: "cas " + v}
	}
	get := Input{Group: g, Ops: []Op{{Slot: 0, Kind: Get}}, Desc: "get"}
	del := Input{Group: g, Ops: []Op{{Slot: 0, Kind: Delete}}, Desc: "delete"}
	ok := Output{}
	read := func(v string) Output { return Output{Value: v} }
	op := func(in Input, out Output, call, ret int64) porcupine.Operation {
		if out.Unknown {
			ret = math.MaxInt64
		}
		return porcupine.Operation{Input: in, Output: out, Call: call, Return: ret}
	}
	unknown := Output{Unknown: true}
	txn := Input{Group: g, Ops: []Op{
		{Slot: 0, Kind: Put, Value: "t0", Cond: CondAbsent},
		{Slot: 1, Kind: Put, Value: "t1"},
	}, Desc: "txn"}
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
		{"cas refused wrongly", []porcupine.Operation{op(put(0, "a"), ok, 0, 10), op(cas(0, "a", "b"), Output{Failed: true, FailedOp: 0}, 20, 30)}, porcupine.Illegal},
		{"cas applied wrongly", []porcupine.Operation{op(put(0, "a"), ok, 0, 10), op(cas(0, "z", "b"), ok, 20, 30)}, porcupine.Illegal},
		{"cas", []porcupine.Operation{op(put(0, "a"), ok, 0, 10), op(cas(0, "a", "b"), ok, 20, 30), op(get, read("b"), 40, 50)}, porcupine.Ok},
		{"delete of an absent key", []porcupine.Operation{op(del, Output{Found: []bool{true}}, 0, 10)}, porcupine.Illegal},
		{"delete", []porcupine.Operation{op(put(0, "a"), ok, 0, 10), op(del, Output{Found: []bool{true}}, 20, 30), op(get, read(""), 40, 50)}, porcupine.Ok},
		{"txn half applied", []porcupine.Operation{op(txn, Output{Found: []bool{false, false}}, 0, 10), op(get, read(""), 20, 30)}, porcupine.Illegal},
		{"txn wrong failed op", []porcupine.Operation{op(txn, Output{Failed: true, FailedOp: 1}, 0, 10)}, porcupine.Illegal},
		{"txn", []porcupine.Operation{op(txn, Output{Found: []bool{false, false}}, 0, 10), op(get, read("t0"), 20, 30)}, porcupine.Ok},
		{"other groups are independent", []porcupine.Operation{op(put(0, "a"), ok, 0, 10),
			op(Input{Group: "e0-g1", Ops: []Op{{Slot: 0, Kind: Get}}}, read(""), 20, 30)}, porcupine.Ok},
	} {
		if got := porcupine.CheckOperationsTimeout(Model(), tc.ops, 10*time.Second); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

// The model accepts legal histories and rejects illegal ones, so a pass of
// the real check means something. These are the in-process
// linearizability test's histories: one key per group, as that test
// records them, with compare-and-set on the value read or on absence.
func TestKVModel(t *testing.T) {
	op := func(call, ret int64, in Input, out Output) porcupine.Operation {
		return porcupine.Operation{Input: in, Output: out, Call: call, Return: ret}
	}
	key := func(o Op) Input { return Input{Group: "k", Ops: []Op{o}} }
	put := func(v string) Input { return key(Op{Kind: Put, Value: v}) }
	get := key(Op{Kind: Get})
	del := key(Op{Kind: Delete})
	cas := func(expect, v string) Input {
		if expect == "" {
			return key(Op{Kind: Put, Value: v, Cond: CondAbsent})
		}
		return key(Op{Kind: Put, Value: v, Cond: CondValue, Expect: expect})
	}
	read := func(v string) Output { return Output{Value: v} }
	ok, unknown := Output{}, Output{Unknown: true}
	deleted, notFound := Output{Found: []bool{true}}, Output{Found: []bool{false}}
	refused := Output{Failed: true}
	for _, tc := range []struct {
		name    string
		history []porcupine.Operation
		legal   bool
	}{
		{"read after write", []porcupine.Operation{op(0, 1, put("a"), ok), op(2, 3, get, read("a"))}, true},
		{"stale read", []porcupine.Operation{op(0, 1, put("a"), ok), op(2, 3, put("b"), ok), op(4, 5, get, read("a"))}, false},
		{"concurrent read may see either", []porcupine.Operation{op(0, 1, put("a"), ok), op(2, 5, put("b"), ok), op(3, 4, get, read("a"))}, true},
		{"read of nothing written", []porcupine.Operation{op(0, 1, get, read("x"))}, false},
		{"absent at first", []porcupine.Operation{op(0, 1, get, read("")), op(2, 3, del, notFound)}, true},
		{"delete of a present key says 404", []porcupine.Operation{op(0, 1, put("a"), ok), op(2, 3, del, notFound)}, false},
		{"delete of an absent key says 204", []porcupine.Operation{op(0, 1, del, deleted)}, false},
		{"read after delete", []porcupine.Operation{op(0, 1, put("a"), ok), op(2, 3, del, deleted), op(4, 5, get, read("a"))}, false},
		{"cas on the current value", []porcupine.Operation{op(0, 1, put("a"), ok), op(2, 3, cas("a", "b"), ok), op(4, 5, get, read("b"))}, true},
		{"cas on a stale value succeeds", []porcupine.Operation{op(0, 1, put("a"), ok), op(2, 3, put("b"), ok), op(4, 5, cas("a", "c"), ok)}, false},
		{"cas on the current value fails", []porcupine.Operation{op(0, 1, put("a"), ok), op(2, 3, cas("a", "b"), refused)}, false},
		{"cas on absence", []porcupine.Operation{op(0, 1, cas("", "a"), ok), op(2, 3, cas("", "b"), refused), op(4, 5, get, read("a"))}, true},
		{"two cas from one value both succeed", []porcupine.Operation{op(0, 1, put("a"), ok), op(2, 5, cas("a", "b"), ok), op(3, 6, cas("a", "c"), ok)}, false},
		{"unknown put seen later", []porcupine.Operation{op(0, math.MaxInt64, put("a"), unknown), op(2, 3, get, read("a"))}, true},
		{"unknown put never applied", []porcupine.Operation{op(0, math.MaxInt64, put("a"), unknown), op(2, 3, get, read(""))}, true},
		{"unknown put seen, then gone", []porcupine.Operation{op(0, math.MaxInt64, put("a"), unknown), op(2, 3, get, read("a")), op(4, 5, get, read(""))}, false},
		{"unknown cas applied", []porcupine.Operation{op(0, 1, put("a"), ok), op(2, math.MaxInt64, cas("a", "b"), unknown), op(4, 5, get, read("b"))}, true},
		{"unknown cas on a stale value applied", []porcupine.Operation{op(0, 1, put("a"), ok), op(2, 3, put("c"), ok), op(4, math.MaxInt64, cas("a", "b"), unknown), op(5, 6, get, read("b"))}, false},
		{"unknown delete", []porcupine.Operation{op(0, 1, put("a"), ok), op(2, math.MaxInt64, del, unknown), op(3, 4, get, read("")), op(5, 6, get, read(""))}, true},
	} {
		if got := porcupine.CheckOperations(Model(), tc.history); got != tc.legal {
			t.Errorf("%s: linearizable = %v, want %v", tc.name, got, tc.legal)
		}
	}
}
