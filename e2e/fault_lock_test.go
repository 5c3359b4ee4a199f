package e2e

// The lock history checker: clients take a lock with short leases while
// nemeses kill, pause, partition and replace members, and write to a
// resource that checks fencing tokens, as a lock's users must (a client may
// believe it holds a lock whose lease already ended: a paused member can
// answer late). The history shows whether the lock service kept its
// promises: one hold per token, tokens increasing with real time, and a
// resource that never let a stale holder in after a newer one.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"
)

// lockHold is one successful lock: the client, its lease, the token, and
// when the lock was asked for, answered, released (unlock sent) and the
// release acknowledged (zero when it was not).
type lockHold struct {
	client, n   int
	lease       uint64
	token       uint64
	asked       time.Time
	answered    time.Time
	releaseSent time.Time
	released    time.Time
}

// fencedResource is what a lock protects: it accepts a write only with a
// token at least the highest it has seen, and records what it accepted.
type fencedResource struct {
	mu       sync.Mutex
	highest  uint64
	accepted []fencedWrite
	rejected int
}

type fencedWrite struct {
	token  uint64
	client int
	at     time.Time
}

func (r *fencedResource) write(token uint64, client int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if token < r.highest {
		r.rejected++
		return false
	}
	r.highest = token
	r.accepted = append(r.accepted, fencedWrite{token, client, time.Now()})
	return true
}

// lockClient loops: grant a short lease, lock, write twice to the resource
// with a pause between, unlock, revoke.
type lockClient struct {
	c     *faultCluster
	id    int
	rng   *rand.Rand
	res   *fencedResource
	holds []lockHold
	fails map[string]int
}

const lockName = "fenced"

func (lc *lockClient) run(ctx context.Context) {
	for n := 0; ctx.Err() == nil; n++ {
		ids := lc.c.activeIDs()
		base := lc.c.api(ids[lc.rng.IntN(len(ids))])
		lease, ok := lc.grant(ctx, base)
		if !ok {
			lc.pause(ctx)
			continue
		}
		h := lockHold{client: lc.id, n: n, lease: lease, asked: time.Now()}
		r, err := lc.c.send(ctx, http.MethodPost, fmt.Sprintf("%s/v1/locks/%s?wait=3s", base, lockName), fmt.Sprintf(`{"lease":%d}`, lease))
		if err != nil || r.Code != http.StatusOK {
			lc.fail("lock", r.Code, err)
			lc.revoke(base, lease)
			continue
		}
		h.answered = time.Now()
		var got struct {
			Key     string `json:"key"`
			Fencing uint64 `json:"fencing"`
		}
		if err := json.Unmarshal([]byte(r.Body), &got); err != nil || got.Fencing == 0 {
			lc.c.t.Errorf("client %d: lock answered %q", lc.id, r.Body)
			return
		}
		h.token = got.Fencing
		lc.res.write(h.token, lc.id)
		hold(time.Duration(lc.rng.IntN(150)) * time.Millisecond)
		lc.res.write(h.token, lc.id)
		h.releaseSent = time.Now()
		r, err = lc.c.send(context.Background(), http.MethodDelete, base+"/v1/kv/"+got.Key, "")
		if err == nil && (r.Code == http.StatusNoContent || r.Code == http.StatusNotFound) {
			h.released = time.Now() // gone either way: unlocked, or its lease ended
		}
		lc.holds = append(lc.holds, h)
		lc.revoke(base, lease)
	}
}

func (lc *lockClient) grant(ctx context.Context, base string) (uint64, bool) {
	r, err := lc.c.send(ctx, http.MethodPost, base+"/v1/leases", `{"ttl":"2s"}`)
	if err != nil || r.Code != http.StatusCreated {
		lc.fail("grant", r.Code, err)
		return 0, false
	}
	var l struct {
		ID uint64 `json:"id"`
	}
	json.Unmarshal([]byte(r.Body), &l)
	return l.ID, l.ID != 0
}

func (lc *lockClient) revoke(base string, lease uint64) {
	lc.c.send(context.Background(), http.MethodDelete, fmt.Sprintf("%s/v1/leases/%d", base, lease), "")
}

func (lc *lockClient) fail(what string, code int, err error) {
	if err != nil {
		lc.fails[what+" error"]++
	} else {
		lc.fails[fmt.Sprintf("%s %d", what, code)]++
	}
}

func (lc *lockClient) pause(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Duration(50+lc.rng.IntN(100)) * time.Millisecond):
	}
}

// checkLockHistory checks the holds and the resource's log.
func checkLockHistory(t *testing.T, holds []lockHold, res *fencedResource) {
	byToken := map[uint64]lockHold{}
	for _, h := range holds {
		if o, dup := byToken[h.token]; dup && (o.client != h.client || o.n != h.n) {
			t.Errorf("token %d given to two holds: client %d #%d and client %d #%d", h.token, o.client, o.n, h.client, h.n)
		}
		byToken[h.token] = h
	}
	overlaps := 0
	for _, a := range holds {
		for _, b := range holds {
			if a.released.IsZero() || a.token == b.token {
				continue
			}
			// a was unlocked, and knew it, before b asked: b's token is newer.
			if a.released.Before(b.asked) && b.token <= a.token {
				t.Errorf("client %d #%d got token %d after client %d #%d released token %d", b.client, b.n, b.token, a.client, a.n, a.token)
			}
			if a.token < b.token && b.answered.Before(a.releaseSent) && a.answered.Before(b.releaseSent) {
				overlaps++ // a's lease ended while it held: the resource fences it off
			}
		}
	}
	res.mu.Lock()
	defer res.mu.Unlock()
	for i := 1; i < len(res.accepted); i++ {
		if p, w := res.accepted[i-1], res.accepted[i]; w.token < p.token {
			t.Errorf("the resource accepted token %d (client %d) after token %d (client %d)", w.token, w.client, p.token, p.client)
		}
	}
	t.Logf("RESULT lock history: holds=%d overlapping-holds=%d accepted-writes=%d fenced-off-writes=%d", len(holds), overlaps, len(res.accepted), res.rejected)
	if len(holds) < 10 {
		t.Errorf("only %d holds: the lock made too little progress to check", len(holds))
	}
}

// Clients lock and write to a fenced resource while members are killed,
// paused, cut off and replaced; the lock's history is then checked.
func TestFaultLockFencing(t *testing.T) {
	skipFaultScheduleIfShort(t)
	c := newFaultCluster(t, newProxyNet(t), 3, "--lease-checkpoint-interval", "500ms")
	res := &fencedResource{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	clients := make([]*lockClient, 4)
	for i := range clients {
		clients[i] = &lockClient{c: c, id: i, rng: rand.New(rand.NewPCG(c.seed, uint64(500+i))), res: res, fails: map[string]int{}}
		wg.Go(func() { clients[i].run(ctx) })
	}
	c.runSchedule([]nemesis{
		nemesisKillLeader, nemesisPauseLeader, nemesisIsolateLeader, nemesisKill, nemesisChurn,
	}, scheduleLength(20*time.Second))
	cancel()
	wg.Wait()
	var holds []lockHold
	fails := map[string]int{}
	for _, lc := range clients {
		holds = append(holds, lc.holds...)
		for k, n := range lc.fails {
			fails[k] += n
		}
	}
	t.Logf("failed requests: %v", fails)
	checkLockHistory(t, holds, res)
	c.finish()
}
