package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"raftexample/internal/wire"
)

// rawNode is a raftNode without a kvstore: the test reads commitC itself.
type rawNode struct {
	rc          *raftNode
	proposeC    chan proposal
	confChangeC chan proposal
}

func startRawNode(t *testing.T, cfg raftConfig, getSnapshot func() func(io.Writer) error) *rawNode {
	t.Helper()
	n := &rawNode{proposeC: make(chan proposal), confChangeC: make(chan proposal)}
	if getSnapshot == nil {
		getSnapshot = func() func(io.Writer) error { return emptyState }
	}
	rc, err := newRaftNode(cfg, getSnapshot, n.proposeC, n.confChangeC, nil)
	if err != nil {
		t.Fatal(err)
	}
	n.rc = rc
	t.Cleanup(rc.Stop)
	return n
}

// waitClean waits for errorC to close and fails on any error sent on it.
func waitClean(t *testing.T, rc *raftNode) {
	t.Helper()
	select {
	case err, ok := <-rc.errorC:
		if ok {
			t.Fatalf("unexpected error: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("member did not shut down")
	}
}

// Feeding every committed entry back in as a new proposal must not stall
// raft: the Ready loop may never wait on a proposer that waits on it.
func TestProposeOnCommit(t *testing.T) {
	lns, peers := freeListeners(t, 3)
	dir := t.TempDir()
	nodes := make([]*rawNode, 3)
	for i := range nodes {
		cfg := testRaftConfig(t, uint64(i+1), peers, dir)
		cfg.PeerListener = lns[i]
		nodes[i] = startRawNode(t, cfg, nil)
	}
	const rounds = 100
	var wg sync.WaitGroup
	seenBy := make([]int, len(nodes)) // entries each member saw committed
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each member starts one chain of proposals, then re-proposes
			// whatever commits until it has seen enough.
			n.proposeC <- proposal{data: putEntry(fmt.Sprintf("k%d", i), []byte("v"))}
			seen := 0
			defer func() { seenBy[i] = seen }()
			for c := range n.rc.commitC {
				for _, e := range c.entries {
					if len(e.data) == 0 {
						continue
					}
					seen++
					if seen <= rounds {
						go func(data []byte) {
							select {
							case n.proposeC <- proposal{data: data}:
							case <-n.rc.stopc:
							}
						}(e.data)
					}
				}
				close(c.applyDoneC)
				if seen >= rounds {
					n.rc.stop()
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("proposals fed back from commits stalled")
	}
	// commitC also closes when a member fails: each must have seen its
	// rounds through and stopped without an error.
	for i, n := range nodes {
		n.rc.Stop()
		if err, ok := <-n.rc.errorC; ok {
			t.Errorf("member %d failed: %v", i+1, err)
		}
		if seenBy[i] < rounds {
			t.Errorf("member %d saw %d committed entries, want %d", i+1, seenBy[i], rounds)
		}
	}
}

// Closing proposeC before anything was proposed shuts the member down cleanly.
func TestCloseProposerBeforeReplay(t *testing.T) {
	lns, peers := freeListeners(t, 1)
	cfg := testRaftConfig(t, 1, peers, t.TempDir())
	cfg.PeerListener = lns[0]
	n := startRawNode(t, cfg, nil)
	go func() {
		for c := range n.rc.commitC {
			close(c.applyDoneC)
		}
	}()
	close(n.proposeC)
	waitClean(t, n.rc)
}

// Closing proposeC while commits are still flowing shuts down cleanly.
func TestCloseProposerInflight(t *testing.T) {
	lns, peers := freeListeners(t, 1)
	cfg := testRaftConfig(t, 1, peers, t.TempDir())
	cfg.PeerListener = lns[0]
	n := startRawNode(t, cfg, nil)
	var committed atomic.Int32
	go func() {
		for c := range n.rc.commitC {
			for _, e := range c.entries {
				if len(e.data) > 0 {
					committed.Add(1)
				}
			}
			close(c.applyDoneC)
		}
	}()
	for _, k := range []string{"foo", "bar"} {
		n.proposeC <- proposal{data: putEntry(k, []byte(k))}
	}
	eventually(t, 10*time.Second, func() error {
		if committed.Load() < 2 {
			return fmt.Errorf("%d of 2 proposals committed", committed.Load())
		}
		return nil
	})
	close(n.proposeC)
	waitClean(t, n.rc)
}

// A PUT answers only after the write is applied, so a GET right after it
// sees the value without any waiting.
func TestPutAndGetKeyValue(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	url := c.members[0].srv.URL + "/test-key"
	if r := do(t, http.MethodPut, url, "test-value"); r.code != http.StatusNoContent {
		t.Fatalf("PUT: %d %s", r.code, r.body)
	}
	if r := do(t, http.MethodGet, url, ""); r.code != http.StatusOK || r.body != "test-value" {
		t.Fatalf("GET: %d %q, want 200 test-value", r.code, r.body)
	}
}

// Writes through any member of three are visible on the member that
// answered as soon as it answers.
func TestPutThroughEveryMember(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	for i, m := range c.members {
		key := fmt.Sprintf("%s/key-%d", m.srv.URL, i)
		if r := do(t, http.MethodPut, key, "v"); r.code != http.StatusNoContent {
			t.Fatalf("PUT via member %d: %d %s", i+1, r.code, r.body)
		}
		if r := do(t, http.MethodGet, key, ""); r.code != http.StatusOK || r.body != "v" {
			t.Fatalf("GET via member %d: %d %q", i+1, r.code, r.body)
		}
	}
}

// A fourth member added at run time joins and commits proposals.
func TestAddNewNode(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lns, urls := freeListeners(t, 1)
	// Until member 4 runs, the leader needs both others each election
	// timeout (100ms here); on a loaded machine it may step down, and the
	// add answers 503 "may still apply": ask again (409 once it applied).
	eventually(t, 10*time.Second, func() error {
		r := do(t, http.MethodPost, c.members[0].srv.URL+"/4", urls[0])
		if r.code != http.StatusNoContent && !(r.code == http.StatusConflict && strings.Contains(r.body, "already exists")) {
			return fmt.Errorf("POST /4: %d %s", r.code, r.body)
		}
		return nil
	})
	cfg := testRaftConfig(t, 4, append(append([]string{}, c.peers...), urls[0]), c.dir)
	cfg.Join = true
	cfg.PeerListener = lns[0]
	m4 := startMember(t, cfg)
	eventually(t, 10*time.Second, func() error {
		if r := do(t, http.MethodPut, m4.srv.URL+"/added", "yes"); r.code != http.StatusNoContent {
			return fmt.Errorf("PUT via new member: %d %s", r.code, r.body)
		}
		return nil
	})
	// Reads are linearizable: member 2 sees the write at once.
	if r := do(t, http.MethodGet, c.members[1].srv.URL+"/added", ""); r.code != http.StatusOK || r.body != "yes" {
		t.Fatalf("GET via member 2: %d %q", r.code, r.body)
	}
}

// raftNode asks for a snapshot only after the kvstore has applied every
// entry it was given, so the snapshot matches the index it is saved at.
func TestSnapshotAfterApply(t *testing.T) {
	lns, peers := freeListeners(t, 1)
	cfg := testRaftConfig(t, 1, peers, t.TempDir())
	cfg.PeerListener = lns[0]
	cfg.SnapshotCount = 4
	var pending atomic.Int32 // commits handed out but not yet applied
	snapshotted := make(chan int32, 16)
	n := startRawNode(t, cfg, func() func(io.Writer) error {
		snapshotted <- pending.Load()
		return emptyState
	})
	go func() {
		for c := range n.rc.commitC {
			pending.Add(1)
			time.Sleep(time.Millisecond) // a slow applier widens any race
			pending.Add(-1)
			close(c.applyDoneC)
		}
	}()
	go func() {
		for i := range 20 {
			select {
			case n.proposeC <- proposal{data: putEntry(fmt.Sprint(i), []byte("v"))}:
			case <-n.rc.stopc:
				return
			}
		}
	}()
	select {
	case p := <-snapshotted:
		if p != 0 {
			t.Fatalf("snapshot taken with %d commits still being applied", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no snapshot taken")
	}
}

// The kvstore's snapshot restores to the same keys, values and revisions.
func TestKVStoreSnapshotRoundTrip(t *testing.T) {
	s := newTestKVStore(testLogger(t), 100)
	s.apply([]committedEntry{
		{index: 5, data: putEntry("foo", []byte("bar"))},
		{index: 6, data: putEntry("bin\x00\xff", []byte{0, 1, 2})},
		{index: 7, data: putEntry("gone", []byte("x"))},
		{index: 8, data: wire.EncodeRequest(wire.Request{Ops: []wire.Op{{Kind: wire.Delete, Key: "gone"}}})},
		{index: 9},
	})
	st := roundTripState(t, s)
	r := newTestKVStore(testLogger(t), 100)
	r.restore(st, 9)
	want := []kvItem{{Key: "bin\x00\xff", Value: []byte{0, 1, 2}, Rev: 6, CreateRev: 6}, {Key: "foo", Value: []byte("bar"), Rev: 5, CreateRev: 5}}
	if r.len() != len(want) || r.applied != 9 {
		t.Fatalf("restored %d keys at %d, want %d at 9", r.len(), r.applied, len(want))
	}
	for _, w := range want {
		got, _ := r.items.Get(kvItem{Key: w.Key})
		if !bytes.Equal(got.Value, w.Value) || got.Rev != w.Rev || got.CreateRev != w.CreateRev {
			t.Errorf("key %q: got %q@%d, want %q@%d", w.Key, got.Value, got.Rev, w.Value, w.Rev)
		}
	}
	if r.histStart != s.histStart || len(r.history) != 4 {
		t.Errorf("history: start %d with %d events, want %d with 4", r.histStart, len(r.history), s.histStart)
	}
}

// An outgoing snapshot carries the member's current ConfState, and the
// snapshot held by raft's storage is left untouched.
func TestSnapshotMessageConfState(t *testing.T) {
	cs := &raftpb.ConfState{Voters: []uint64{2, 6, 8, 10}}
	stored := &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{
		Index: proto.Uint64(7), ConfState: &raftpb.ConfState{Voters: []uint64{1}},
	}}
	snapType := raftpb.MsgSnap
	out := withConfState(&raftpb.Message{Type: &snapType, To: proto.Uint64(2), Snapshot: stored}, cs)
	if got := out.GetSnapshot().GetMetadata().GetConfState(); !proto.Equal(got, cs) {
		t.Fatalf("outgoing snapshot ConfState = %v, want %v", got, cs)
	}
	if got := stored.GetMetadata().GetConfState().GetVoters(); len(got) != 1 {
		t.Fatalf("stored snapshot was modified: %v", got)
	}
}

// A single-member cluster needs nobody's vote: it leads as soon as it
// starts and again as soon as it restarts, without waiting out an election
// timeout (here 10 s) first.
func TestSingleMemberLeadsAtOnce(t *testing.T) {
	const electionTimeout = 10 * time.Second
	slow := func(cfg *raftConfig) { cfg.Tick = 100 * time.Millisecond; cfg.ElectionTicks = 100 }
	began := time.Now()
	c := newTestCluster(t, 1, slow)
	if took := time.Since(began); took > electionTimeout/2 {
		t.Fatalf("the first start took %v to elect a leader, want well under the election timeout %v", took, electionTimeout)
	}
	if r := do(t, http.MethodPut, c.members[0].srv.URL+"/k", "v"); r.code != http.StatusNoContent {
		t.Fatalf("PUT: %d %s", r.code, r.body)
	}
	began = time.Now()
	m := c.restart(0)
	if r := do(t, http.MethodPut, m.srv.URL+"/k", "v2"); r.code != http.StatusNoContent {
		t.Fatalf("PUT after the restart: %d %s", r.code, r.body)
	}
	if took := time.Since(began); took > electionTimeout/2 {
		t.Fatalf("the restart took %v to take a write, want well under the election timeout %v", took, electionTimeout)
	}
}

// Restarting a member several times, with snapshots taken every few
// entries, keeps every acknowledged write.
func TestRestartFromSnapshotKeepsData(t *testing.T) {
	c := newTestCluster(t, 1, func(cfg *raftConfig) { cfg.SnapshotCount = 3; cfg.CatchupEntries = 2 })
	want := map[string]string{}
	for round := range 3 {
		m := c.members[0]
		for i := range 7 {
			k, v := fmt.Sprintf("r%d-k%d", round, i), fmt.Sprintf("v%d", i)
			if r := do(t, http.MethodPut, m.srv.URL+"/"+k, v); r.code != http.StatusNoContent {
				t.Fatalf("PUT %s: %d %s", k, r.code, r.body)
			}
			want[k] = v
		}
		m = c.restart(0)
		for k, v := range want {
			if r := do(t, http.MethodGet, m.srv.URL+"/"+k, ""); r.code != http.StatusOK || r.body != v {
				t.Fatalf("after restart %d: GET %s = %d %q, want %q", round+1, k, r.code, r.body, v)
			}
		}
	}
	snaps, _ := filepath.Glob(filepath.Join(c.dir, "raftexample-1-snap", "*.snap"))
	if len(snaps) == 0 {
		t.Fatal("no snapshot files were written")
	}
}

// On restart, raft hands back only entries after the snapshot, and the
// snapshot comes first: nothing is applied twice.
func TestRestartAppliesNothingTwice(t *testing.T) {
	lns, peers := freeListeners(t, 1)
	dir := t.TempDir()
	cfg := testRaftConfig(t, 1, peers, dir)
	cfg.PeerListener = lns[0]
	cfg.SnapshotCount = 2
	m := startMember(t, cfg)
	for i := range 5 {
		if err := m.kvs.Put(t.Context(), fmt.Sprint(i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, func() error {
		if snaps, _ := filepath.Glob(filepath.Join(dir, "raftexample-1-snap", "*.snap")); len(snaps) == 0 {
			return fmt.Errorf("no snapshot yet")
		}
		return nil
	})
	m.stop()

	cfg.PeerListener = relisten(t, peers[0])
	n := startRawNode(t, cfg, nil)
	first := nextCommit(t, n)
	if first.snapshotIndex == 0 {
		t.Fatal("first commit after restart is not the snapshot")
	}
	close(first.applyDoneC)
	last := first.snapshotIndex
	for last < n.rc.bootCommit {
		c := nextCommit(t, n)
		for _, e := range c.entries {
			if e.index <= last {
				t.Fatalf("entry %d delivered after %d", e.index, last)
			}
			last = e.index
		}
		close(c.applyDoneC)
	}
}

// nextCommit reads the next commit of n, failing the test (rather than
// panicking on a nil commit) when n stops, fails or publishes nothing for
// ten seconds.
func nextCommit(t *testing.T, n *rawNode) *commit {
	t.Helper()
	select {
	case c, ok := <-n.rc.commitC:
		if !ok {
			err := <-n.rc.errorC
			t.Fatalf("commitC closed before the expected commit (member error: %v)", err)
		}
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no commit within 10s")
		return nil
	}
}

// Members added at run time are remembered in snapshots: a restarted member
// reconnects to them although its --cluster does not list them.
func TestRestartRemembersAddedMembers(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *raftConfig) { cfg.SnapshotCount = 2; cfg.CatchupEntries = 1 })
	lns, urls := freeListeners(t, 1)
	if _, err := c.members[0].memberAdmin.AddMember(t.Context(), 4, urls[0], false); err != nil {
		t.Fatal(err)
	}
	cfg := testRaftConfig(t, 4, append(append([]string{}, c.peers...), urls[0]), c.dir)
	cfg.Join, cfg.PeerListener, cfg.SnapshotCount = true, lns[0], 2
	c.members = append(c.members, startMember(t, cfg))
	for i := range 6 { // enough entries for a snapshot that includes member 4
		if err := c.members[0].kvs.Put(t.Context(), fmt.Sprint(i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	m := c.restart(1)
	if m.rc.transport.Get(types.ID(4)) == nil {
		t.Fatal("restarted member does not know member 4")
	}
	if err := m.kvs.Put(t.Context(), "after", []byte("restart")); err != nil {
		t.Fatal(err)
	}
}

// A removed member shuts itself down and refuses to start from its data.
func TestRemovedMemberStops(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	if r := do(t, http.MethodDelete, c.members[0].srv.URL+"/3", ""); r.code != http.StatusNoContent {
		t.Fatalf("DELETE /3: %d %s", r.code, r.body)
	}
	m3 := c.members[2]
	select {
	case err := <-m3.rc.errorC:
		if !errors.Is(err, errRemoved) {
			t.Fatalf("member 3 stopped with %v, want errRemoved", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("member 3 did not stop")
	}
	if _, err := newRaftNode(m3.cfg, m3.kvs.getSnapshot, make(chan proposal), make(chan proposal), nil); err == nil {
		t.Fatal("removed member started again")
	}
	// If member 3 led, proposals forwarded to it were lost: wait for the
	// survivors to elect a leader of their own.
	c.members[2] = nil
	c.waitLeader()
	if r := do(t, http.MethodPut, c.members[1].srv.URL+"/still", "works"); r.code != http.StatusNoContent {
		t.Fatalf("PUT after removal: %d %s", r.code, r.body)
	}
	if !c.members[0].rc.IsIDRemoved(3) || c.members[0].rc.IsIDRemoved(2) {
		t.Fatal("IsIDRemoved does not match the membership")
	}
	if r := do(t, http.MethodPost, c.members[0].srv.URL+"/3", "http://127.0.0.1:1"); r.code != http.StatusConflict {
		t.Fatalf("re-adding removed ID 3: %d, want 409", r.code)
	}
}

// Entries with bad content that reach the log are skipped by every member,
// and the cluster keeps working, also after a restart.
func TestBadEntriesAreSkipped(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	m := c.members[0]
	bad := [][]byte{{0xff}, {wire.EntryVersion, 9, 1, 1, 'k'}, putEntry("x", []byte("y"))[:4]}
	refused := make(chan error, len(bad))
	for _, data := range bad {
		m.proposeC <- proposal{ctx: t.Context(), data: data, refused: refused}
	}
	addType := raftpb.ConfChangeAddNode
	cc := &raftpb.ConfChange{Type: &addType, NodeId: proto.Uint64(7), Context: []byte("::not a url"), Id: proto.Uint64(7777)}
	x, err := proposeAndWait(t.Context(), m.confChangeC, proposal{confChange: cc}, m.rc.confWaits, 7777, m.rc.leader, m.rc.stopc)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := x.(confApplied); r.err == nil {
		t.Fatalf("the membership change with a bad URL was applied at %d", r.index)
	}
	// proposeC is served in order: once this write is applied, raft has
	// answered for every bad entry before it.
	if err := m.kvs.Put(t.Context(), "good", []byte("yes")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-refused:
		t.Fatalf("raft refused a bad entry: %v", err)
	default:
	}
	for _, o := range c.members {
		eventually(t, 5*time.Second, func() error {
			if it, ok, _ := o.kvs.Get(t.Context(), "good", true); !ok || string(it.Value) != "yes" {
				return fmt.Errorf("member %d: good=%q", o.cfg.ID, it.Value)
			}
			return nil
		})
		if o.kvs.len() != 1 {
			t.Fatalf("member %d holds %d keys, want 1", o.cfg.ID, o.kvs.len())
		}
	}
	m = c.restart(0)
	if it, ok, _ := m.kvs.Get(t.Context(), "good", false); !ok || string(it.Value) != "yes" {
		t.Fatalf("after restart good=%q", it.Value)
	}
}

// Old snapshot files are purged beyond MaxSnapshots.
func TestPurgeOldSnapshots(t *testing.T) {
	c := newTestCluster(t, 1, func(cfg *raftConfig) {
		cfg.SnapshotCount, cfg.CatchupEntries = 1, 1
		cfg.MaxSnapshots, cfg.PurgeInterval = 2, 10*time.Millisecond
	})
	m := c.members[0]
	snapdir := filepath.Join(c.dir, "raftexample-1-snap")
	// First more snapshots than --max-snapshots keeps must exist (without
	// them the file count below proves nothing), then purging must bring
	// the files back to the bound. A snapshot is skipped while the last
	// one is still being written, so keep writing until there are enough.
	i := 0
	eventually(t, 10*time.Second, func() error {
		i++
		if err := m.kvs.Put(t.Context(), fmt.Sprint(i), []byte("v")); err != nil {
			t.Fatal(err)
		}
		var h dto.Metric
		if err := m.cfg.Metrics.snapshotDuration.Write(&h); err != nil {
			return err
		}
		if n := h.GetHistogram().GetSampleCount(); n < 4 {
			return fmt.Errorf("%d snapshots taken, want at least 4", n)
		}
		return nil
	})
	eventually(t, 5*time.Second, func() error {
		for _, pattern := range []string{"*.snap", "*.snap.db"} {
			files, _ := filepath.Glob(filepath.Join(snapdir, pattern))
			if len(files) > 2 || len(files) == 0 {
				return fmt.Errorf("%d %s files, want 1 or 2", len(files), pattern)
			}
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(c.dir, "raftexample-1")); err != nil {
		t.Fatal(err)
	}
}

// Without a quorum a write is refused with 503 and Retry-After within a few
// election timeouts, long before the request timeout.
func TestNoQuorumAnswersQuickly(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.members[1].stop()
	c.members[2].stop()
	req, _ := http.NewRequest(http.MethodPut, c.members[0].srv.URL+"/k", strings.NewReader("v"))
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("PUT without quorum: %d Retry-After=%q after %v", resp.StatusCode, resp.Header.Get("Retry-After"), took)
	}
	if limit := 20 * c.members[0].cfg.electionTimeout(); took > limit {
		t.Fatalf("PUT without quorum took %v, want under %v", took, limit)
	}
}

// Stopping a member while requests are in flight answers every one of them
// and returns; nothing hangs.
func TestStopWithRequestsInFlight(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	m := c.members[0]
	var wg sync.WaitGroup
	codes := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := m.kvs.Put(t.Context(), fmt.Sprint(i), []byte("v"))
			if err != nil && !errors.Is(err, errStopping) {
				codes <- err
			}
		}()
	}
	m.rc.Stop()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("requests still waiting after Stop")
	}
	close(codes)
	for err := range codes {
		t.Errorf("in-flight PUT: %v, want success or errStopping", err)
	}
}

// Two membership changes at once: raft would silently turn the second into a
// no-op, so it is refused with a conflict instead.
func TestConcurrentMembershipChanges(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	_, urls := freeListeners(t, 2)
	results := make(chan error, 2)
	for i, u := range urls {
		go func() {
			_, err := c.members[0].memberAdmin.AddMember(t.Context(), uint64(4+i), u, false)
			results <- err
		}()
	}
	var ok, conflict int
	for range 2 {
		switch err := <-results; {
		case err == nil:
			ok++
		case errors.Is(err, errConflict):
			conflict++
		default:
			t.Fatalf("unexpected error: %v", err)
		}
	}
	if ok < 1 || ok+conflict != 2 {
		t.Fatalf("%d succeeded, %d conflicted", ok, conflict)
	}
}

// A follower that fell behind the leader's compacted log catches up from a
// snapshot streamed to it: the raft message with the .snap.db file after it.
// Member 3 never snapshots by itself, so a state file in its snapshot
// directory can only have come from the leader.
func TestFollowerCatchesUpFromStreamedSnapshot(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *raftConfig) {
		cfg.SnapshotCount, cfg.CatchupEntries = 5, 1
		if cfg.ID == 3 {
			cfg.SnapshotCount = 1 << 40
		}
	})
	if c.waitLeader() == 3 { // stop a follower: the test is not about elections
		if err := c.members[2].memberAdmin.TransferLeader(t.Context(), 1); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, func() error {
			if l := c.waitLeader(); l == 3 {
				return errors.New("member 3 still leads")
			}
			return nil
		})
	}
	c.members[2].stop()
	leader := c.members[c.waitLeader()-1]
	want := map[string]string{}
	for i := range 30 {
		k, v := fmt.Sprintf("k%02d", i), strings.Repeat("v", i)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		err := leader.kvs.Put(ctx, k, []byte(v))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		want[k] = v
	}
	m3 := c.restart(2)
	eventually(t, 10*time.Second, func() error {
		for k, v := range want {
			it, ok, err := m3.kvs.Get(t.Context(), k, true)
			if err != nil || !ok || string(it.Value) != v {
				return fmt.Errorf("member 3: %s = %q, %v, %v; want %q", k, it.Value, ok, err, v)
			}
		}
		return nil
	})
	got, _ := filepath.Glob(filepath.Join(c.dir, "raftexample-3-snap", "*.snap.db"))
	if len(got) == 0 {
		t.Fatal("member 3 caught up without receiving a snapshot state file")
	}
}

// With SnapshotLogRatio, a member holding a large state waits for the log
// to grow by that share of the state's size before snapshotting again, not
// just for SnapshotCount entries.
func TestSnapshotWaitsForLogToGrowWithState(t *testing.T) {
	c := newTestCluster(t, 1, func(cfg *raftConfig) { cfg.SnapshotCount, cfg.SnapshotLogRatio = 5, 1 })
	m := c.members[0]
	put := func(k string, size int) {
		t.Helper()
		if err := m.kvs.Put(t.Context(), k, bytes.Repeat([]byte("x"), size)); err != nil {
			t.Fatal(err)
		}
	}
	stateFiles := func() []string {
		got, _ := filepath.Glob(filepath.Join(c.dir, "raftexample-1-snap", "*.snap.db"))
		return got
	}
	waitStateFiles := func(n int) {
		t.Helper()
		eventually(t, 10*time.Second, func() error {
			if got := stateFiles(); len(got) < n {
				return fmt.Errorf("%d state files, want %d", len(got), n)
			}
			return nil
		})
	}
	put("big-1", 50_000)
	for i := range 6 {
		put(fmt.Sprint("a", i), 10)
	}
	waitStateFiles(1)   // the first snapshot: there was no state before
	for i := range 30 { // six times --snapshot-count, but a few hundred bytes
		put(fmt.Sprint("b", i), 10)
	}
	put("big-2", 200_000) // now the log outweighs the state (the value twice: item and history)
	for i := range 6 {
		put(fmt.Sprint("c", i), 10)
	}
	waitStateFiles(2)
	if got := stateFiles(); len(got) != 2 {
		t.Fatalf("snapshots taken: %v; want 2, the small writes in between should not trigger one", got)
	}
}

// syncingWriter writes everything it is given and keeps to its rate: two
// syncs' worth of data at 20 kB/s cannot take less than about 100 ms.
func TestSyncingWriterPaces(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "state")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := &syncingWriter{f: f, every: 1000, rate: 20_000}
	data := bytes.Repeat([]byte("0123456789"), 300) // 3 000 bytes, in 6 writes
	start := time.Now()
	for i := 0; i < len(data); i += 500 {
		if _, err := w.Write(data[i : i+500]); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took < 90*time.Millisecond {
		t.Errorf("3 000 bytes at 20 kB/s took %v", took)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil || !bytes.Equal(got, data) || w.n != int64(len(data)) {
		t.Fatalf("file holds %d bytes (%v), counted %d; want the %d written", len(got), err, w.n, len(data))
	}
}

// Writes that queue up while the leader hands its leadership over are
// proposed to raft as a batch; raft refuses them all, and every writer
// hears a definite "dropped" at once rather than waiting out its timeout.
func TestWritesDuringTransferAreRefusedTogether(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *raftConfig) { cfg.ElectionTicks = 50 })
	lead := c.waitLeader()
	leader := c.byID(lead)
	var target *member
	for _, m := range c.members {
		if m.cfg.ID != lead {
			target = m
		}
	}
	target.stop() // the transfer then waits an election timeout for it
	leader.rc.node.TransferLeadership(t.Context(), lead, target.cfg.ID)
	eventually(t, 5*time.Second, func() error {
		if tr := leader.rc.node.Status().LeadTransferee; tr != target.cfg.ID {
			return fmt.Errorf("transferee %d, want %d", tr, target.cfg.ID)
		}
		return nil
	})
	const writers = 50
	errs := make([]error, writers)
	took := make([]time.Duration, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			start := time.Now()
			errs[i] = leader.kvs.Put(ctx, fmt.Sprintf("w%d", i), []byte("v"))
			took[i] = time.Since(start)
		})
	}
	wg.Wait()
	dropped := 0
	for i, err := range errs {
		switch {
		case errors.Is(err, errDropped):
			dropped++
			if took[i] > 2*time.Second {
				t.Errorf("write %d was refused only after %v", i, took[i])
			}
		case err != nil:
			t.Errorf("write %d: %v, want success or a definite refusal", i, err)
		}
	}
	if dropped == 0 {
		t.Fatalf("no write was refused during the transfer")
	}
	// After the transfer gives up, refused writes are absent, taken ones present.
	eventually(t, 10*time.Second, func() error {
		for i, err := range errs {
			_, ok, gerr := c.byID(lead).kvs.Get(t.Context(), fmt.Sprintf("w%d", i), false)
			if gerr != nil {
				return gerr
			}
			if ok != (err == nil) {
				return fmt.Errorf("write %d (%v): present=%v", i, err, ok)
			}
		}
		return nil
	})
	t.Logf("%d of %d writes refused during the transfer", dropped, writers)
}

// Stop returns only once every goroutine the member started has ended:
// none that runs this package's code outlives it, not even one that only
// waits to close a listener.
func TestStopLeavesNoGoroutines(t *testing.T) {
	before := goroutines(t)
	c := newTestCluster(t, 1, func(cfg *raftConfig) {
		cfg.SnapshotCount, cfg.CatchupEntries = 1, 1 // a snapshot writer too
		cfg.MaxSnapshots, cfg.MaxWALs, cfg.PurgeInterval = 2, 2, 10*time.Millisecond
	})
	m := c.members[0]
	for i := range 5 {
		if err := m.kvs.Put(t.Context(), fmt.Sprint(i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if len(ownGoroutines(t, before)) == 0 {
		t.Fatal("no goroutine of the member found while it runs: the check below would prove nothing")
	}
	m.stop()
	// A goroutine that has just signalled its WaitGroup may still be
	// returning; one that was never waited for stays.
	eventually(t, 2*time.Second, func() error {
		if left := ownGoroutines(t, before); len(left) > 0 {
			return fmt.Errorf("%d goroutines still run after Stop:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		return nil
	})
}

// goroutines returns the stacks of every goroutine, by their first line
// ("goroutine 7 [running]:" without the state).
func goroutines(t *testing.T) map[string]string {
	t.Helper()
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	all := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		id, _, _ := strings.Cut(g, " [")
		all[id] = g
	}
	return all
}

// ownGoroutines returns the stacks of goroutines not in before that run,
// or were started by, this package's non-test code.
func ownGoroutines(t *testing.T, before map[string]string) []string {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	dir := filepath.Dir(self) + "/"
	var own []string
	for id, g := range goroutines(t) {
		if _, old := before[id]; old {
			continue
		}
		for _, line := range strings.Split(g, "\n") {
			if file, ok := strings.CutPrefix(strings.TrimSpace(line), dir); ok && !strings.Contains(file, "_test.go:") && !strings.Contains(file, "/") {
				own = append(own, g)
				break
			}
		}
	}
	return own
}
