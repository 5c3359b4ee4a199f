package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// lockBody is a lock's or campaign's answer.
type lockBody struct {
	Key     string `json:"key"`
	Fencing uint64 `json:"fencing"`
	Rev     uint64 `json:"rev"`
	Lease   uint64 `json:"lease"`
	Value   string `json:"value"`
}

// asyncLock asks for a lock in the background; the answer arrives on the
// returned channel.
func asyncLock(t *testing.T, url string, lease uint64) <-chan reply {
	ch := make(chan reply, 1)
	go func() {
		r, err := send(context.Background(), testHTTP, "POST", url, fmt.Sprintf(`{"lease":%d}`, lease))
		if err != nil {
			r = reply{code: -1, body: err.Error()}
		}
		ch <- r
	}()
	return ch
}

// lockKeys lists the keys under a lock's name, from the member's state.
func lockKeys(t *testing.T, m *member, name string) []string {
	t.Helper()
	page, err := m.kvs.List(t.Context(), name+"/", "", 100, true)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, it := range page.Items {
		keys = append(keys, it.Key)
	}
	return keys
}

// waitQueued waits until the lock has n contenders' keys.
func waitQueued(t *testing.T, m *member, name string, n int) {
	t.Helper()
	eventually(t, 3*time.Second, func() error {
		if got := lockKeys(t, m, name); len(got) != n {
			return fmt.Errorf("keys %v, want %d", got, n)
		}
		return nil
	})
}

// notYet fails if ch answers within d: the request must still be waiting.
func notYet(t *testing.T, ch <-chan reply, d time.Duration, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s answered %v while it should wait", what, r)
	case <-time.After(d):
	}
}

func answer(t *testing.T, ch <-chan reply, what string) reply {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no answer", what)
		return reply{}
	}
}

func wakeups(t *testing.T, m *member) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.cfg.Metrics.lockWakeups.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

// Two clients: the second waits until the first unlocks, and gets a higher
// fencing token. Locking again with the same lease is the same hold.
func TestLockWaitsForUnlock(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	m := c.follower()
	url := m.srv.URL + "/v1/locks/job"
	a, b := grantLease(t, m.srv.URL, "30s"), grantLease(t, m.srv.URL, "30s")
	first := decodeJSON[lockBody](t, answer(t, asyncLock(t, url, a), "first lock"))
	if first.Key != fmt.Sprintf("job/%x", a) || first.Fencing == 0 || first.Lease != a {
		t.Fatalf("first lock: %+v", first)
	}
	again := decodeJSON[lockBody](t, answer(t, asyncLock(t, url, a), "lock again"))
	if again != first {
		t.Fatalf("locking again with the same lease: %+v, first %+v", again, first)
	}
	second := asyncLock(t, url, b)
	waitQueued(t, m, "job", 2)
	notYet(t, second, 200*time.Millisecond, "the second lock")
	if r := do(t, "DELETE", c.members[0].srv.URL+"/v1/kv/"+first.Key, ""); r.code != http.StatusNoContent {
		t.Fatalf("unlock: %v", r)
	}
	r := answer(t, second, "the second lock")
	got := decodeJSON[lockBody](t, r)
	if r.code != http.StatusOK || got.Fencing <= first.Fencing {
		t.Fatalf("second lock %v after fencing %d", r, first.Fencing)
	}
}

// With a holder and three waiters, deleting the last waiter's key wakes
// nobody; unlocking wakes only the next waiter, each time.
func TestLockWakesOnlyTheNextWaiter(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	m := c.members[0]
	url := m.srv.URL + "/v1/locks/q?wait=20s"
	var leases []uint64
	for range 4 {
		leases = append(leases, grantLease(t, m.srv.URL, "60s"))
	}
	holder := decodeJSON[lockBody](t, answer(t, asyncLock(t, url, leases[0]), "holder"))
	var waiting []<-chan reply
	for i, l := range leases[1:] {
		waiting = append(waiting, asyncLock(t, url, l))
		waitQueued(t, m, "q", i+2) // in this order
	}
	before := wakeups(t, m)
	if r := do(t, "DELETE", fmt.Sprintf("%s/v1/kv/q/%x", m.srv.URL, leases[3]), ""); r.code != http.StatusNoContent {
		t.Fatalf("delete the last waiter's key: %v", r)
	}
	if r := answer(t, waiting[2], "the last waiter"); r.code != http.StatusConflict {
		t.Fatalf("the last waiter, its key deleted: %v", r)
	}
	notYet(t, waiting[0], 200*time.Millisecond, "the first waiter")
	if n := wakeups(t, m); n != before {
		t.Fatalf("deleting the last waiter's key woke %v waiters", n-before)
	}
	do(t, "DELETE", m.srv.URL+"/v1/kv/"+holder.Key, "")
	next := decodeJSON[lockBody](t, answer(t, waiting[0], "the first waiter"))
	if next.Fencing <= holder.Fencing {
		t.Fatalf("fencing %d after %d", next.Fencing, holder.Fencing)
	}
	notYet(t, waiting[1], 200*time.Millisecond, "the second waiter")
	if n := wakeups(t, m); n != before+1 {
		t.Fatalf("one unlock woke %v waiters", n-before)
	}
	do(t, "DELETE", m.srv.URL+"/v1/kv/"+next.Key, "")
	last := decodeJSON[lockBody](t, answer(t, waiting[1], "the second waiter"))
	if last.Fencing <= next.Fencing || wakeups(t, m) != before+2 {
		t.Fatalf("fencing %d after %d; %v wakeups", last.Fencing, next.Fencing, wakeups(t, m)-before)
	}
}

// ?wait= bounds the wait: just under the holder's release the waiter gets
// 408 and its key is gone; just over it, the lock.
func TestLockWaitBound(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	m := c.members[0]
	a, b := grantLease(t, m.srv.URL, "30s"), grantLease(t, m.srv.URL, "30s")
	holder := decodeJSON[lockBody](t, answer(t, asyncLock(t, m.srv.URL+"/v1/locks/w", a), "holder"))

	start := time.Now()
	r := answer(t, asyncLock(t, m.srv.URL+"/v1/locks/w?wait=400ms", b), "bounded waiter")
	if took := time.Since(start); r.code != http.StatusRequestTimeout || took < 400*time.Millisecond {
		t.Fatalf("after %v: %v", took, r)
	}
	if keys := lockKeys(t, m, "w"); len(keys) != 1 || keys[0] != holder.Key {
		t.Fatalf("after the wait elapsed, keys %v", keys)
	}

	waiter := asyncLock(t, m.srv.URL+"/v1/locks/w?wait=2s", b)
	waitQueued(t, m, "w", 2)
	time.AfterFunc(300*time.Millisecond, func() {
		send(context.Background(), testHTTP, "DELETE", m.srv.URL+"/v1/kv/"+holder.Key, "")
	})
	if r := answer(t, waiter, "waiter"); r.code != http.StatusOK {
		t.Fatalf("released within ?wait=: %v", r)
	}
	for _, q := range []string{"?wait=0s", "?wait=2m", "?wait=soon"} {
		if r := do(t, "POST", m.srv.URL+"/v1/locks/w"+q, fmt.Sprintf(`{"lease":%d}`, a)); r.code != http.StatusBadRequest {
			t.Errorf("%s: %v", q, r)
		}
	}
	if r := do(t, "POST", m.srv.URL+"/v1/locks/w", `{"lease":999999}`); r.code != http.StatusNotFound {
		t.Errorf("a lock on no lease: %v", r)
	}
}

// Revoking the holder's lease releases the lock.
func TestLockReleasedWithItsLease(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	m := c.members[2]
	a, b := grantLease(t, m.srv.URL, "30s"), grantLease(t, m.srv.URL, "30s")
	holder := decodeJSON[lockBody](t, answer(t, asyncLock(t, m.srv.URL+"/v1/locks/r", a), "holder"))
	waiter := asyncLock(t, m.srv.URL+"/v1/locks/r", b)
	waitQueued(t, m, "r", 2)
	do(t, "DELETE", fmt.Sprintf("%s/v1/leases/%d", c.members[0].srv.URL, a), "")
	got := decodeJSON[lockBody](t, answer(t, waiter, "waiter"))
	if got.Fencing <= holder.Fencing {
		t.Fatalf("fencing %d after %d", got.Fencing, holder.Fencing)
	}
}

// sseEvents reads the data lines of a server-sent event stream.
func sseEvents(t *testing.T, url string) (<-chan lockBody, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan lockBody, 16)
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var b lockBody
				json.Unmarshal([]byte(data), &b)
				ch <- b
			}
		}
		close(ch)
	}()
	return ch, cancel
}

func nextEvent(t *testing.T, ch <-chan lockBody) lockBody {
	t.Helper()
	select {
	case b := <-ch:
		return b
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
		return lockBody{}
	}
}

// Campaign, leader, observe and resign.
func TestElection(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	base := c.follower().srv.URL
	a, b := grantLease(t, base, "30s"), grantLease(t, base, "30s")
	if r := do(t, "GET", base+"/v1/elections/e", ""); r.code != http.StatusNotFound {
		t.Fatalf("leader of an empty election: %v", r)
	}
	r := do(t, "POST", base+"/v1/elections/e/campaign", fmt.Sprintf(`{"lease":%d,"value":"alpha"}`, a))
	first := decodeJSON[lockBody](t, r)
	if r.code != http.StatusOK || first.Value != "alpha" || first.Rev == 0 {
		t.Fatalf("campaign: %v", r)
	}
	events, stop := sseEvents(t, c.members[0].srv.URL+"/v1/elections/e/observe")
	defer stop()
	if ev := nextEvent(t, events); ev.Value != "alpha" || ev.Rev != first.Rev {
		t.Fatalf("observed %+v", ev)
	}
	ch := make(chan reply, 1)
	go func() {
		r, _ := send(context.Background(), testHTTP, "POST", base+"/v1/elections/e/campaign?wait=10s", fmt.Sprintf(`{"lease":%d,"value":"beta"}`, b))
		ch <- r
	}()
	waitQueued(t, c.members[0], "e", 2)
	if lead := decodeJSON[lockBody](t, do(t, "GET", base+"/v1/elections/e", "")); lead.Value != "alpha" {
		t.Fatalf("leader %+v while beta waits", lead)
	}
	if r := do(t, "POST", base+"/v1/elections/e/resign", fmt.Sprintf(`{"lease":%d}`, a)); r.code != http.StatusNoContent {
		t.Fatalf("resign: %v", r)
	}
	second := decodeJSON[lockBody](t, answer(t, ch, "beta's campaign"))
	if second.Value != "beta" || second.Rev <= first.Rev {
		t.Fatalf("beta's campaign: %+v", second)
	}
	if ev := nextEvent(t, events); ev.Value != "beta" || ev.Rev != second.Rev {
		t.Fatalf("observed %+v", ev)
	}
	if lead := decodeJSON[lockBody](t, do(t, "GET", base+"/v1/elections/e", "")); lead.Value != "beta" {
		t.Fatalf("leader %+v", lead)
	}
	if r := do(t, "POST", base+"/v1/elections/e/resign", fmt.Sprintf(`{"lease":%d}`, a)); r.code != http.StatusNotFound {
		t.Fatalf("resigning twice: %v", r)
	}
}
