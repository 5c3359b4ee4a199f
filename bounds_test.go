package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"raftexample/internal/wire"
)

// Tests of the byte bounds (README, "Bounded resources"): --max-key-bytes, --quota-bytes,
// --watch-history(-bytes) and the watcher queue, --max-log-bytes.

// compactedBody is the body of a 410 answer to a watch.
type compactedBody struct {
	Error           string `json:"error"`
	Code            int    `json:"code"`
	CompactRevision uint64 `json:"compactRevision"`
}

// expectCompacted checks that a watch from rev answers 410 naming compact.
func expectCompacted(t *testing.T, base, query string, compact uint64) {
	t.Helper()
	r := do(t, http.MethodGet, base+"/v1/watch?"+query, "")
	expectJSONError(t, r, http.StatusGone, "watch "+query)
	var b compactedBody
	if err := json.Unmarshal([]byte(r.body), &b); err != nil {
		t.Fatal(err)
	}
	if b.CompactRevision != compact || !strings.Contains(b.Error, fmt.Sprint(compact)) {
		t.Fatalf("watch %s: 410 %q, want compactRevision %d named in the body and the message", query, r.body, compact)
	}
}

// Every route that takes a key takes one of --max-key-bytes and answers 400
// to one byte more, naming the flag and both sizes: plain text on root
// paths, JSON under /v1. Keys of 1 MB were accepted through the path.
func TestMaxKeyBytesOnEveryRoute(t *testing.T) {
	const limit = 8 << 10
	c := newTestCluster(t, 1, nil)
	base := c.members[0].srv.URL
	for _, n := range []int{limit, limit + 1} {
		key := "k" + strings.Repeat("x", n-1)
		over := n > limit
		check := func(what string, r reply, ok int) {
			t.Helper()
			if !over {
				expect(t, r, ok, fmt.Sprintf("%s with a key of %d bytes", what, n))
				return
			}
			expect(t, r, http.StatusBadRequest, fmt.Sprintf("%s with a key of %d bytes", what, n))
			for _, s := range []string{"--max-key-bytes", fmt.Sprint(n), fmt.Sprint(limit)} {
				if !strings.Contains(r.body, s) {
					t.Errorf("%s: 400 %q does not name %s", what, r.body, s)
				}
			}
			isJSON := r.header.Get("Content-Type") == "application/json"
			if root := !strings.HasPrefix(what, "/v1"); root == isJSON {
				t.Errorf("%s: 400 with Content-Type %q", what, r.header.Get("Content-Type"))
			}
		}
		check("PUT /{key}", do(t, http.MethodPut, base+"/"+key, "v"), http.StatusNoContent)
		check("GET /{key}", do(t, http.MethodGet, base+"/"+key, ""), http.StatusOK)
		check("DELETE /{key}", do(t, http.MethodDelete, base+"/"+key, ""), http.StatusNoContent)
		check("/v1 PUT", do(t, http.MethodPut, base+"/v1/kv/"+key, "v"), http.StatusNoContent)
		check("/v1 GET", do(t, http.MethodGet, base+"/v1/kv/"+key, ""), http.StatusOK)
		check("/v1 list prefix", do(t, http.MethodGet, base+"/v1/kv?"+url.Values{"prefix": {key}}.Encode(), ""), http.StatusOK)
		check("/v1 list after", do(t, http.MethodGet, base+"/v1/kv?"+url.Values{"after": {key}}.Encode(), ""), http.StatusOK)
		check("/v1 DELETE", do(t, http.MethodDelete, base+"/v1/kv/"+key, ""), http.StatusNoContent)
		check("/v1 txn", do(t, http.MethodPost, base+"/v1/txn", txnJSON(t, putOp("short", "v"), putOp(key, "v"))), http.StatusOK)
		for _, q := range []string{"key", "prefix"} {
			query := url.Values{q: {key}}.Encode()
			if over {
				check("/v1 watch "+q, do(t, http.MethodGet, base+"/v1/watch?"+query, ""), 0)
				continue
			}
			openWatch(t, base, query).stop()
		}
	}
	// The member is up, and nothing over the limit was written.
	mustPut(t, base, "after", "ok")
	if l := list(t, base, url.Values{"prefix": {"k"}}); len(l.Keys) != 1 || len(l.Keys[0].Key) != limit {
		t.Fatalf("keys after the test: %d, want only the txn's key of %d bytes", len(l.Keys), limit)
	}
}

// statusStateBytes reads stateBytes from GET /v1/status.
func statusStateBytes(t *testing.T, base string) int64 {
	t.Helper()
	r := do(t, http.MethodGet, base+"/v1/status", "")
	expect(t, r, http.StatusOK, "status")
	var st struct {
		StateBytes *int64 `json:"stateBytes"`
	}
	if err := json.Unmarshal([]byte(r.body), &st); err != nil || st.StateBytes == nil {
		t.Fatalf("status %q: no stateBytes (%v)", r.body, err)
	}
	return *st.StateBytes
}

// A write that would take the state past --quota-bytes gets 507 on every
// write route; reaching the quota exactly works; deletes and writes that
// add nothing work at the quota; freeing space makes writes work again.
// The state's size survives a restart from a snapshot.
func TestQuotaBytes(t *testing.T) {
	const quota = 1000
	opts := defaultMemberOptions()
	opts.kv.QuotaBytes = quota
	c := newTestClusterWith(t, 1, opts, func(cfg *raftConfig) { cfg.SnapshotCount = 3; cfg.CatchupEntries = 1 })
	base := c.members[0].srv.URL

	// Key "a" (1 byte) and a value of 899: 900 bytes; then "b" of 99.
	mustPut(t, base, "a", strings.Repeat("x", 899))
	expect(t, do(t, http.MethodPut, base+"/b", strings.Repeat("y", 99)), http.StatusNoContent, "PUT to exactly the quota")
	if got := statusStateBytes(t, base); got != quota {
		t.Fatalf("stateBytes %d, want %d", got, quota)
	}
	full := func(what string, r reply) {
		t.Helper()
		expect(t, r, http.StatusInsufficientStorage, what)
		if !strings.Contains(r.body, "--quota-bytes") {
			t.Errorf("%s: 507 %q does not name --quota-bytes", what, r.body)
		}
	}
	full("root PUT of a new key", do(t, http.MethodPut, base+"/c", "z"))
	full("/v1 PUT of a bigger value", do(t, http.MethodPut, base+"/v1/kv/b", strings.Repeat("y", 100)))
	full("txn adding a key", do(t, http.MethodPost, base+"/v1/txn", txnJSON(t, putOp("c", ""))))
	expectJSONError(t, do(t, http.MethodPut, base+"/v1/kv/c", "z"), http.StatusInsufficientStorage, "/v1 PUT is JSON")
	// At the quota: writes that add nothing, and deletes, work.
	mustPut(t, base, "b", strings.Repeat("w", 99))
	mustPut(t, base, "a", "smaller")
	expect(t, do(t, http.MethodPost, base+"/v1/txn", txnJSON(t, delOp("b"), putOp("d", strings.Repeat("d", 99)))),
		http.StatusOK, "txn freeing what it adds")
	// Now 1+7 + 1+99 = 108 bytes: fill to one byte under, then over by one.
	expect(t, do(t, http.MethodPut, base+"/e", strings.Repeat("e", quota-108-2)), http.StatusNoContent, "PUT to one under the quota")
	full("PUT over by one", do(t, http.MethodPut, base+"/f", "f"))
	expect(t, do(t, http.MethodPut, base+"/f", ""), http.StatusNoContent, "PUT to exactly the quota")
	full("PUT at the quota", do(t, http.MethodPut, base+"/g", ""))
	expect(t, do(t, http.MethodDelete, base+"/e", ""), http.StatusNoContent, "DELETE at the quota")
	expect(t, do(t, http.MethodPut, base+"/g", "g"), http.StatusNoContent, "PUT after freeing space")

	// The size is the same after a restart from a snapshot.
	want := statusStateBytes(t, base)
	eventually(t, 5*time.Second, func() error {
		if snaps, _ := filepath.Glob(filepath.Join(c.dir, "raftexample-1-snap", "*.snap")); len(snaps) == 0 {
			return fmt.Errorf("no snapshot yet")
		}
		return nil
	})
	base = c.restart(0).srv.URL
	if got := statusStateBytes(t, base); got != want {
		t.Fatalf("stateBytes after a restart %d, want %d", got, want)
	}
	full("PUT over the quota after a restart", do(t, http.MethodPut, base+"/h", strings.Repeat("h", quota)))
	if !strings.Contains(metricsText(t, base), fmt.Sprintf("raftexample_state_bytes %d", want)) {
		t.Error("metrics do not report raftexample_state_bytes")
	}
}

func metricsText(t *testing.T, base string) string {
	t.Helper()
	r := do(t, http.MethodGet, base+"/metrics", "")
	expect(t, r, http.StatusOK, "metrics")
	return string(r.body)
}

// A 410 names compactRevision: the lowest rev a watch may start from. A
// watch from it gets every retained change; one below it is 410.
func TestWatchCompactRevision(t *testing.T) {
	const window = 5
	c := newTestClusterWithHistory(t, 1, window, nil)
	base := c.members[0].srv.URL
	var revs []uint64
	for i := range 12 {
		revs = append(revs, mustPut(t, base, "h", fmt.Sprint(i)))
	}
	// The window holds revisions 7..11; it starts after revision 6.
	compact := revs[6]
	expectCompacted(t, base, fmt.Sprintf("key=h&rev=%d", compact-1), compact)
	expectCompacted(t, base, "prefix=&rev=0", compact)
	w := openWatch(t, base, fmt.Sprintf("key=h&rev=%d", compact))
	var want []wantEvent
	for i := 7; i < 12; i++ {
		want = append(want, wantEvent{"put", "h", fmt.Sprint(i), revs[i]})
	}
	checkEvents(t, w.events(t, len(want), 5*time.Second), want)
}

// A watch from a revision not reached yet waits for it: no change at or
// below it is ever delivered, neither from the history nor live. A watch
// from rev 999999999 got the next change, at revision 24.
func TestWatchFromFutureRevision(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	m := c.members[0]
	base := m.srv.URL
	now := mustPut(t, base, "fut", "0")
	far := openWatch(t, base, "key=fut&rev=999999999")
	near := openWatch(t, base, fmt.Sprintf("key=fut&rev=%d", now+3))
	var want []wantEvent
	for i := 1; len(want) < 3; i++ {
		e := wantEvent{"put", "fut", fmt.Sprint(i), mustPut(t, base, "fut", fmt.Sprint(i))}
		if e.rev > now+3 {
			want = append(want, e)
		}
	}
	checkEvents(t, near.events(t, len(want), 5*time.Second), want)
	// Every write has been applied, so any event for far is queued or sent.
	m.kvs.mu.RLock()
	for w := range m.kvs.watchers {
		if len(w.revs) != 0 {
			t.Errorf("watcher %q after %d has %d revisions queued", w.key, w.after, len(w.revs))
		}
	}
	m.kvs.mu.RUnlock()
	for beats := 0; beats < 2; {
		msg, ok := far.next(t, 5*time.Second)
		switch {
		case !ok:
			t.Fatalf("the future watch ended: %v", far.err)
		case msg.data != "":
			t.Fatalf("the watch from rev 999999999 got %v", decodeEvent(t, msg))
		case msg.comment == "heartbeat":
			beats++
		}
	}
}

// One txn of 38 000 puts reaches every watcher whole, and evicts only as
// many older revisions as its bytes require: watches from before it still
// work, and a 410 names the oldest revision left. It cut every watcher
// off and emptied the whole history.
func TestLargeTxnKeepsWatchersAndHistory(t *testing.T) {
	if testing.Short() {
		t.Skip("a 38 000-put transaction watched twice takes seconds")
	}
	const puts, small, keep = 38000, 20, 10
	key := func(i int) string { return fmt.Sprintf("t/%05d", i) }
	txnBytes := int64(puts) * eventBytes(event{Key: key(0)})
	smallValue := strings.Repeat("v", 1000)
	smallBytes := eventBytes(event{Key: "h/00", Value: []byte(smallValue)})
	opts := defaultMemberOptions()
	opts.http.MaxRequestBytes = 1536 << 10 // the flag's default: the txn body is 1.5 MB
	opts.kv.HistoryRevisions = 1000
	opts.kv.HistoryBytes = txnBytes + keep*smallBytes // room for the txn and 10 more
	opts.kv.WatchQueueBytes = 1 << 20                 // smaller than the txn
	c := newTestClusterWith(t, 1, opts, nil)
	base := c.members[0].srv.URL
	var revs []uint64
	for i := range small {
		revs = append(revs, mustPut(t, base, fmt.Sprintf("h/%02d", i), smallValue))
	}
	watchers := []*watchStream{openWatch(t, base, "prefix=t/"), openWatch(t, base, "prefix=")}
	ops := make([]txnOpJSON, puts)
	for i := range ops {
		ops[i] = putOp(key(i), "")
	}
	r := do(t, http.MethodPost, base+"/v1/txn", txnJSON(t, ops...))
	expect(t, r, http.StatusOK, "txn of 38 000 puts")
	var tr txnReply
	if err := json.Unmarshal([]byte(r.body), &tr); err != nil {
		t.Fatal(err)
	}
	mark := mustPut(t, base, "t/zz-after", "end")
	for i, w := range watchers {
		got := 0
		for {
			e, ok := w.nextEvent(t, 20*time.Second)
			if !ok || e.name == "cutoff" {
				t.Fatalf("watcher %d ended after %d events: %v %v", i, got, e, w.err)
			}
			if e.Rev == mark {
				break
			}
			if e.Rev != tr.Rev || e.Key != key(got) {
				t.Fatalf("watcher %d: event %d is %v, want %s at %d", i, got, e, key(got), tr.Rev)
			}
			got++
		}
		if got != puts {
			t.Fatalf("watcher %d got %d events of the txn, want %d", i, got, puts)
		}
	}
	// The txn's bytes evicted the oldest 10 small writes, the marker's one
	// more: the history starts after revs[10].
	compact := revs[small-keep]
	expectCompacted(t, base, fmt.Sprintf("prefix=h/&rev=%d", compact-1), compact)
	w := openWatch(t, base, fmt.Sprintf("prefix=h/&rev=%d", compact))
	var want []wantEvent
	for i := small - keep + 1; i < small; i++ {
		want = append(want, wantEvent{"put", fmt.Sprintf("h/%02d", i), smallValue, revs[i]})
	}
	checkEvents(t, w.events(t, len(want), 5*time.Second), want)
}

// Many large overwrites of one key: snapshots are taken by bytes (though
// --snapshot-count and the state-size hold-back would wait), and raft's
// in-memory log and the watch history stay within their byte bounds on
// every member. They grew with every write.
func TestLogBytesBoundUnderLargeOverwrites(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 16 MiB through a 3-member cluster")
	}
	const maxLog, history, value, writes = 4 << 20, 2 << 20, 256 << 10, 64
	opts := defaultMemberOptions()
	opts.kv.HistoryBytes = history
	c := newTestClusterWith(t, 3, opts, func(cfg *raftConfig) {
		cfg.MaxLogBytes = maxLog
		cfg.SnapshotCount = math.MaxUint32 // never by count
		cfg.SnapshotLogRatio = 1000        // nor by the state's size
	})
	base := c.members[0].srv.URL
	v := strings.Repeat("x", value)
	for i := range writes {
		expect(t, do(t, http.MethodPut, base+"/same", fmt.Sprintf("%03d", i)+v[3:]), http.StatusNoContent, "PUT")
	}
	last := mustPut(t, base, "same", "last")
	for _, m := range c.members {
		eventually(t, 10*time.Second, func() error {
			if m.rc.shared.published.Load() < last {
				return fmt.Errorf("member %d has applied %d of %d", m.cfg.ID, m.rc.shared.published.Load(), last)
			}
			snap, _ := m.rc.raftStorage.Snapshot()
			if idx := snap.GetMetadata().GetIndex(); idx < uint64(writes/2) {
				return fmt.Errorf("member %d: newest snapshot at %d after %d writes", m.cfg.ID, idx, writes)
			}
			return nil
		})
		// In memory: at most half the bound kept for followers, and what was
		// applied since the snapshot: half the bound, or up to the whole
		// bound while the last snapshot was still being written.
		first, _ := m.rc.raftStorage.FirstIndex()
		lastIndex, _ := m.rc.raftStorage.LastIndex()
		ents, err := m.rc.raftStorage.Entries(first, lastIndex+1, math.MaxUint64)
		if err != nil {
			t.Fatal(err)
		}
		var logBytes uint64
		for _, e := range ents {
			logBytes += entryBytes(e)
		}
		if limit := uint64(maxLog*3/2 + value + 1024); logBytes > limit {
			t.Errorf("member %d: raft's log holds %d bytes in %d entries, want at most %d", m.cfg.ID, logBytes, len(ents), limit)
		}
		if h := m.kvs.historyStats(); h.bytes > history {
			t.Errorf("member %d: watch history holds %d bytes, want at most %d", m.cfg.ID, h.bytes, history)
		}
		text := metricsText(t, m.srv.URL)
		for _, name := range []string{"raftexample_raft_log_bytes ", "raftexample_watch_history_bytes ", "raftexample_watchers "} {
			if !strings.Contains(text, name) {
				t.Errorf("member %d: no metric %s", m.cfg.ID, name)
			}
		}
		t.Logf("member %d: log %d bytes in entries %d..%d; history %d bytes", m.cfg.ID, logBytes, first, lastIndex, m.kvs.historyStats().bytes)
	}
}

// The watch history trims whole revisions: by revisions, by bytes, and
// never the newest, however big; histStart names the last one evicted.
func TestHistoryTrimsWholeRevisions(t *testing.T) {
	s := newTestKVStore(testLogger(t), 3)
	s.cfg.HistoryBytes = 4 * eventBytes(event{Key: "k", Value: []byte("v")})
	index := uint64(0)
	apply := func(keys ...string) {
		index++
		r := wire.Request{ID: index}
		for _, k := range keys {
			r.Ops = append(r.Ops, wire.Op{Kind: wire.Put, Key: k, Value: []byte("v")})
		}
		s.apply([]committedEntry{{index: index, data: wire.EncodeRequest(r)}})
	}
	check := func(revs int, start uint64) {
		t.Helper()
		if h := s.historyStats(); h.revs != revs || s.histStart != start || h.bytes > s.cfg.HistoryBytes && h.revs > 1 {
			t.Fatalf("after index %d: %d revisions, %d bytes, start %d; want %d revisions from %d", index, h.revs, h.bytes, s.histStart, revs, start)
		}
	}
	apply("a")
	apply("b")
	apply("c")
	check(3, 0)
	apply("d") // a fourth revision: the first goes
	check(3, 1)
	apply("e", "f") // five events, over the bytes: the oldest revision goes
	check(3, 2)
	apply("g", "h", "i", "j", "k", "l") // larger than the bound alone: kept
	check(1, 5)
	apply("m")
	check(1, 6)
	st := roundTripState(t, s)
	if len(st.History) != 1 || st.HistStart != 6 {
		t.Fatalf("snapshot history: %d events after %d, want 1 after 6", len(st.History), st.HistStart)
	}
}

// Bad values of the new flags exit 2, naming the flag.
func TestBoundFlags(t *testing.T) {
	for _, flag := range []string{"--max-log-bytes", "--watch-history-bytes", "--quota-bytes", "--max-key-bytes", "--watch-history"} {
		var out, errOut bytes.Buffer
		if code := run([]string{flag, "0"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), flag) {
			t.Errorf("%s 0: exit %d, stderr %q", flag, code, errOut.String())
		}
	}
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.raft.MaxLogBytes != 64<<20 || cfg.watchHistBytes != 64<<20 || cfg.quotaBytes != 2<<30 || cfg.maxKeyBytes != 8<<10 {
		t.Fatalf("defaults: %+v", cfg)
	}
}

// A snapshot is due at exactly half of MaxLogBytes applied since the last
// one, whatever the count and the state's size say; compaction keeps at
// most half of MaxLogBytes, and at most CatchupEntries entries.
func TestLogBytesAtTheBound(t *testing.T) {
	a := &applier{cfg: raftConfig{MaxLogBytes: 100, SnapshotCount: 1000, SnapshotLogRatio: 1000, CatchupEntries: 4},
		log: raft.NewMemoryStorage()}
	a.stateBytes.Store(1 << 30)
	for _, c := range []struct {
		logBytes uint64
		due      bool
	}{{49, false}, {50, true}} {
		if a.logBytes = c.logBytes; a.snapshotDue() != c.due {
			t.Errorf("%d bytes applied of --max-log-bytes 100: due %v, want %v", c.logBytes, !c.due, c.due)
		}
	}
	// Entries 1..10 of 10 bytes each, but 9 and 10 of 20.
	var ents []*raftpb.Entry
	for i := uint64(1); i <= 10; i++ {
		size := 10
		if i >= 9 {
			size = 20
		}
		ents = append(ents, &raftpb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(1), Data: make([]byte, size)})
	}
	if err := a.log.Append(ents); err != nil {
		t.Fatal(err)
	}
	// At 10: 8..10 are exactly 50 bytes and stay; 7 would make 60.
	if got := a.compactIndex(10); got != 7 {
		t.Errorf("snapshot at 10: compact to %d, want 7", got)
	}
	// At 5: 2..5 are 40 bytes, but only 4 entries stay.
	if got := a.compactIndex(5); got != 1 {
		t.Errorf("snapshot at 5: compact to %d, want 1", got)
	}
}
