package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"raftexample/internal/wire"
)

// leaseBody is a lease as the /v1/leases routes answer it.
type leaseBody struct {
	ID               uint64   `json:"id"`
	TTL              string   `json:"ttl"`
	TTLSeconds       int64    `json:"ttlSeconds"`
	Remaining        string   `json:"remaining"`
	RemainingSeconds int64    `json:"remainingSeconds"`
	Keys             []string `json:"keys"`
}

func decodeJSON[T any](t testing.TB, r reply) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		t.Fatalf("answer %v: %v", r, err)
	}
	return v
}

// grantLease grants a lease of ttl on the member at base and returns its ID.
func grantLease(t testing.TB, base, ttl string) uint64 {
	t.Helper()
	r := do(t, "POST", base+"/v1/leases", fmt.Sprintf(`{"ttl":%q}`, ttl))
	if r.code != http.StatusCreated {
		t.Fatalf("grant: %v", r)
	}
	return decodeJSON[leaseBody](t, r).ID
}

// getLease reads a lease; ok is false on 404.
func getLease(t testing.TB, base string, id uint64) (leaseBody, bool) {
	t.Helper()
	r := do(t, "GET", fmt.Sprintf("%s/v1/leases/%d", base, id), "")
	switch r.code {
	case http.StatusOK:
		return decodeJSON[leaseBody](t, r), true
	case http.StatusNotFound:
		return leaseBody{}, false
	}
	t.Fatalf("get lease %d: %v", id, r)
	return leaseBody{}, false
}

func putWith(t testing.TB, base, key, value, query string) reply {
	t.Helper()
	r := do(t, "PUT", base+"/v1/kv/"+key+query, value)
	if r.code != http.StatusNoContent {
		t.Fatalf("PUT %s%s: %v", key, query, r)
	}
	return r
}

// hasKeyLocally reports whether the member holds key, from its own state.
func hasKeyLocally(t testing.TB, m *member, key string) bool {
	t.Helper()
	_, ok, err := m.kvs.Get(t.Context(), key, true)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func (c *testCluster) leaderMember() *member {
	lead := c.waitLeader()
	for _, m := range c.members {
		if m != nil && m.cfg.ID == lead {
			return m
		}
	}
	c.t.Fatalf("leader %d not found", lead)
	return nil
}

func (c *testCluster) follower() *member {
	lead := c.waitLeader()
	for _, m := range c.members {
		if m != nil && m.cfg.ID != lead {
			return m
		}
	}
	c.t.Fatal("no follower")
	return nil
}

// A key with ?ttl=2s is gone from every member 2 to 3 seconds after its
// write, and a watcher sees its delete.
func TestLeaseTTLKeyExpires(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	f := c.follower()
	w, _, _, err := f.kvs.Watch("svc/a", false, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.kvs.Unwatch(w)
	start := time.Now()
	r := putWith(t, f.srv.URL, "svc/a", "10.0.0.1:80", "?ttl=2s")
	if r.header.Get("X-Lease") == "" {
		t.Fatalf("PUT ?ttl= named no lease: %v", r.header)
	}
	eventually(t, 5*time.Second, func() error {
		for _, m := range c.members {
			if hasKeyLocally(t, m, "svc/a") {
				return fmt.Errorf("member %d still has the key", m.cfg.ID)
			}
		}
		return nil
	})
	if took := time.Since(start); took < 2*time.Second || took > 3*time.Second {
		t.Errorf("key gone after %v, want 2s to 3s", took)
	}
	var sawDelete bool
	for !sawDelete {
		select {
		case evs := <-w.Revisions():
			w.Received(evs)
			sawDelete = evs[0].Type == wire.Delete
		case <-time.After(time.Second):
			t.Fatal("the watcher saw no delete")
		}
	}
	if r := do(t, "GET", f.srv.URL+"/v1/leases", ""); r.body != "{\"leases\":[]}\n" {
		t.Errorf("leases left: %v", r)
	}
}

// Keepalives sent to followers keep a key alive past its TTL; once they
// stop, it goes.
func TestLeaseKeepaliveOnFollower(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	f := c.follower()
	id := grantLease(t, f.srv.URL, "1s")
	putWith(t, c.members[0].srv.URL, "k", "v", fmt.Sprintf("?lease=%d", id))
	for end := time.Now().Add(2500 * time.Millisecond); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		r := do(t, "POST", fmt.Sprintf("%s/v1/leases/%d/keepalive", f.srv.URL, id), "")
		if r.code != http.StatusOK {
			t.Fatalf("keepalive: %v", r)
		}
		if b := decodeJSON[leaseBody](t, r); b.TTLSeconds != 1 || b.RemainingSeconds != 1 {
			t.Fatalf("keepalive answered %+v", b)
		}
	}
	if !hasKeyLocally(t, c.leaderMember(), "k") {
		t.Fatal("the key expired while kept alive")
	}
	l, ok := getLease(t, f.srv.URL, id)
	if !ok || len(l.Keys) != 1 || l.Keys[0] != "k" {
		t.Fatalf("lease %d: %+v, %v", id, l, ok)
	}
	eventually(t, 3*time.Second, func() error {
		if _, ok := getLease(t, f.srv.URL, id); ok {
			return fmt.Errorf("lease %d still there", id)
		}
		return nil
	})
	if r := do(t, "POST", fmt.Sprintf("%s/v1/leases/%d/keepalive", f.srv.URL, id), ""); r.code != http.StatusNotFound {
		t.Fatalf("keepalive of an expired lease: %v", r)
	}
}

// Revoking a lease deletes all its keys in one revision, which a watcher
// receives whole.
func TestLeaseRevokeDeletesKeysInOneRevision(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	base := c.members[1].srv.URL
	id := grantLease(t, base, "30s")
	for _, k := range []string{"a/1", "a/2", "a/3"} {
		putWith(t, base, k, "v", fmt.Sprintf("?lease=%d", id))
	}
	last := putWith(t, base, "a/other", "v", "").rev()
	// From the last write on: member 2 may not have applied it yet.
	w, _, _, err := c.members[2].kvs.Watch("a/", true, last, true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.members[2].kvs.Unwatch(w)
	r := do(t, "DELETE", fmt.Sprintf("%s/v1/leases/%d", base, id), "")
	if r.code != http.StatusNoContent {
		t.Fatalf("revoke: %v", r)
	}
	select {
	case evs := <-w.Revisions():
		if len(evs) != 3 {
			t.Fatalf("one revision of %d events, want the 3 deletes: %+v", len(evs), evs)
		}
		for _, e := range evs {
			if e.Type != wire.Delete || e.Rev != evs[0].Rev {
				t.Fatalf("events %+v", evs)
			}
		}
		if got := r.header.Get("X-Revision"); got != strconv.FormatUint(evs[0].Rev, 10) {
			t.Errorf("X-Revision %s, deletes at %d", got, evs[0].Rev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no deletes seen")
	}
	if !hasKeyLocally(t, c.members[2], "a/other") {
		t.Error("a key without the lease was deleted")
	}
	if r := do(t, "DELETE", fmt.Sprintf("%s/v1/leases/%d", base, id), ""); r.code != http.StatusNotFound {
		t.Errorf("revoking twice: %v", r)
	}
	if r := do(t, "PUT", base+"/v1/kv/x?lease=12345", "v"); r.code != http.StatusNotFound {
		t.Errorf("attaching to no lease: %v", r)
	}
}

// A lease outlives its leader's stop and a leadership transfer: the new
// leader neither expires it early nor forgets it, and it still expires.
func TestLeaseSurvivesLeaderChanges(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	old := c.leaderMember()
	base := c.follower().srv.URL
	start := time.Now()
	id := grantLease(t, base, "3s")
	putWith(t, base, "svc", "v", fmt.Sprintf("?lease=%d", id))

	next := c.follower()
	r := do(t, "POST", old.srv.URL+"/v1/leader", fmt.Sprintf(`{"id":%d}`, next.cfg.ID))
	if r.code != http.StatusNoContent {
		t.Fatalf("transfer: %v", r)
	}
	if l, ok := getLease(t, next.srv.URL, id); !ok || l.RemainingSeconds < 2 {
		t.Fatalf("after the transfer: %+v, %v", l, ok)
	}
	idx := int(next.cfg.ID - 1)
	c.members[idx].stop()
	c.members[idx] = nil
	survivor := c.leaderMember()
	if hasKeyLocally(t, survivor, "svc") != true {
		t.Fatal("the key went with the leader")
	}
	if r := do(t, "POST", fmt.Sprintf("%s/v1/leases/%d/keepalive", survivor.srv.URL, id), ""); r.code != http.StatusOK {
		t.Fatalf("keepalive after the leader stopped: %v", r)
	}
	kept := time.Now()
	eventually(t, 6*time.Second, func() error {
		if hasKeyLocally(t, survivor, "svc") {
			return fmt.Errorf("still there")
		}
		return nil
	})
	if took := time.Since(kept); took < 3*time.Second {
		t.Errorf("expired %v after its last keepalive (TTL 3s), %v after the grant", took, time.Since(start))
	}
}

// A restart of the whole cluster resumes a lease from its checkpointed
// remaining TTL: not from its full TTL, and not expired early.
func TestLeaseResumesAfterWholeClusterRestart(t *testing.T) {
	opts := defaultMemberOptions()
	opts.kv.LeaseCheckpointInterval = 200 * time.Millisecond
	c := newTestClusterWith(t, 3, opts, nil)
	base := c.members[0].srv.URL
	start := time.Now()
	id := grantLease(t, base, "6s")
	putWith(t, base, "svc", "v", fmt.Sprintf("?lease=%d", id))
	eventually(t, 5*time.Second, func() error { // a checkpoint records about 3s left
		for _, m := range c.members {
			m.kvs.mu.RLock()
			rem := m.kvs.leases[id].Remaining
			m.kvs.mu.RUnlock()
			if rem > 3500*time.Millisecond {
				return fmt.Errorf("member %d: checkpointed %v", m.cfg.ID, rem)
			}
		}
		return nil
	})
	for _, m := range c.members {
		m.stop()
	}
	for i, m := range c.members {
		cfg := m.cfg
		cfg.PeerListener = relisten(t, c.peers[i])
		cfg.Metrics = newMetrics()
		c.members[i] = startMemberWith(t, cfg, m.opts)
	}
	lead := c.leaderMember()
	l, ok := getLease(t, lead.srv.URL, id)
	if !ok || !hasKeyLocally(t, lead, "svc") {
		t.Fatalf("the lease or its key did not survive the restart: %+v %v", l, ok)
	}
	if left, _ := time.ParseDuration(l.Remaining); left > 4*time.Second {
		t.Errorf("%v left after the restart, %v after a 6s grant: reset towards full", left, time.Since(start))
	}
	eventually(t, 8*time.Second, func() error {
		if hasKeyLocally(t, lead, "svc") {
			return fmt.Errorf("still there")
		}
		return nil
	})
	if took := time.Since(start); took < 5*time.Second {
		t.Errorf("expired %v after the grant, TTL 6s", took)
	}
}

// A key's own lease (?ttl=) ends when the key is overwritten without it or
// deleted; a put without ?lease detaches the key from its lease.
func TestLeaseOwnTTLAndDetach(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	base := c.members[0].srv.URL
	own, _ := strconv.ParseUint(putWith(t, base, "a", "1", "?ttl=30s").header.Get("X-Lease"), 10, 64)
	if _, ok := getLease(t, base, own); !ok {
		t.Fatalf("own lease %d missing", own)
	}
	putWith(t, base, "a", "2", "")
	if _, ok := getLease(t, base, own); ok {
		t.Fatal("the own lease outlived its key's overwrite")
	}
	shared := grantLease(t, base, "30s")
	putWith(t, base, "b", "1", fmt.Sprintf("?lease=%d", shared))
	putWith(t, base, "b", "2", "")
	if l, _ := getLease(t, base, shared); len(l.Keys) != 0 {
		t.Fatalf("a put without ?lease left the key on its lease: %+v", l)
	}
	if r := do(t, "PUT", base+"/v1/kv/c?ttl=1ms", "v"); r.code != http.StatusBadRequest {
		t.Errorf("ttl under the minimum: %v", r)
	}
	if r := do(t, "PUT", base+"/v1/kv/c?ttl=5s&lease=1", "v"); r.code != http.StatusBadRequest {
		t.Errorf("ttl and lease together: %v", r)
	}
}

// Keys carry their create and mod revisions; the ETag stays the mod
// revision.
func TestCreateRevision(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	base := c.members[0].srv.URL
	first := putWith(t, base, "k", "1", "").rev()
	second := putWith(t, base, "k", "2", "").rev()
	r := do(t, "GET", base+"/v1/kv/k", "")
	if r.header.Get("X-Create-Revision") != strconv.FormatUint(first, 10) || r.header.Get("X-Mod-Revision") != strconv.FormatUint(second, 10) || r.rev() != second {
		t.Fatalf("headers %v, want create %d mod %d", r.header, first, second)
	}
	list := decodeJSON[struct {
		Keys []struct {
			Key       string `json:"key"`
			Rev       uint64 `json:"rev"`
			CreateRev uint64 `json:"createRev"`
			ModRev    uint64 `json:"modRev"`
		} `json:"keys"`
	}](t, do(t, "GET", base+"/v1/kv?prefix=k", ""))
	if len(list.Keys) != 1 || list.Keys[0].CreateRev != first || list.Keys[0].ModRev != second || list.Keys[0].Rev != second {
		t.Fatalf("listing %+v", list)
	}
	do(t, "DELETE", base+"/v1/kv/k", "")
	third := putWith(t, base, "k", "3", "").rev()
	if r := do(t, "GET", base+"/v1/kv/k", ""); r.header.Get("X-Create-Revision") != strconv.FormatUint(third, 10) {
		t.Fatalf("a key created again keeps its old create revision: %v", r.header)
	}
}

// applyOps applies one entry of ops at index, appended in term.
func applyOps(s *kvstore, index, term uint64, ops ...wire.Op) {
	s.apply([]committedEntry{{index: index, term: term, data: wire.EncodeRequest(wire.Request{ID: index, Ops: ops})}})
}

// An expiry applies only if it was appended in the term it names (a deposed
// leader's, forwarded into a later term, is ignored), only if no keepalive
// came between, and only once.
func TestLeaseExpireChecks(t *testing.T) {
	s := newTestKVStore(testLogger(t), 100)
	applyOps(s, 1, 2, wire.Op{Kind: wire.LeaseGrant, Lease: 7, TTL: time.Second})
	applyOps(s, 2, 2, wire.Op{Kind: wire.Put, Key: "k", Value: []byte("v"), Lease: 7})
	has := func() bool { _, ok := s.items.Get(kvItem{Key: "k"}); return ok && s.leases[7] != nil }

	applyOps(s, 3, 3, wire.Op{Kind: wire.LeaseExpire, Lease: 7, RefreshIndex: 1, Term: 2})
	if !has() {
		t.Fatal("an expiry decided in term 2 but appended in term 3 applied")
	}
	applyOps(s, 4, 3, wire.Op{Kind: wire.LeaseKeepalive, Lease: 7})
	applyOps(s, 5, 3, wire.Op{Kind: wire.LeaseExpire, Lease: 7, RefreshIndex: 1, Term: 3})
	if !has() {
		t.Fatal("an expiry from before a keepalive applied after it")
	}
	applyOps(s, 6, 3, wire.Op{Kind: wire.LeaseExpire, Lease: 7, RefreshIndex: 4, Term: 3})
	if has() {
		t.Fatal("a valid expiry did not apply")
	}
	revs := s.histRevs
	applyOps(s, 7, 3, wire.Op{Kind: wire.LeaseExpire, Lease: 7, RefreshIndex: 4, Term: 3})
	if s.histRevs != revs {
		t.Fatal("a lease expired twice")
	}
}

// Leases and the keys' create revisions and leases survive a snapshot.
func TestLeaseSnapshotRoundTrip(t *testing.T) {
	s := newTestKVStore(testLogger(t), 100)
	applyOps(s, 1, 1, wire.Op{Kind: wire.LeaseGrant, Lease: 7, TTL: 10 * time.Second})
	applyOps(s, 2, 1, wire.Op{Kind: wire.Put, Key: "a", Value: []byte("v"), Lease: 7})
	applyOps(s, 3, 1, wire.Op{Kind: wire.Put, Key: "a", Value: []byte("w"), Lease: 7})
	applyOps(s, 4, 1, wire.Op{Kind: wire.Put, Key: "b", Value: []byte("v"), TTL: 5 * time.Second})
	applyOps(s, 5, 1, wire.Op{Kind: wire.LeaseCheckpoint, Checkpoints: []wire.Checkpoint{{Lease: 7, RefreshIndex: 1, Remaining: 3 * time.Second}}})
	r := newTestKVStore(testLogger(t), 100)
	r.restore(roundTripState(t, s), 5)
	a, _ := r.items.Get(kvItem{Key: "a"})
	if a.CreateRev != 2 || a.Rev != 3 || a.Lease != 7 {
		t.Fatalf("a restored as %+v", a)
	}
	l := r.leases[7]
	if l == nil || l.Remaining != 3*time.Second || l.RefreshIndex != 1 || len(l.keys) != 1 || l.Own {
		t.Fatalf("lease 7 restored as %+v", l)
	}
	if own := r.leases[4]; own == nil || !own.Own || len(own.keys) != 1 {
		t.Fatalf("b's own lease (ID 4, its entry's index) restored as %+v", own)
	}
}
