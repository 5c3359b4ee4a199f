package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"go.etcd.io/etcd/client/pkg/v3/types"

	"raftexample/internal/kvhistory"
)

// Linearizability: reads never return stale data, checked with a partition
// and with porcupine on histories of concurrent clients; compare-and-set
// never loses an update.

// partition cuts member m off from every other member, both directions,
// and returns a function that heals the cut.
func partition(c *testCluster, m *member) (heal func()) {
	var others []*member
	for _, o := range c.members {
		if o != m {
			others = append(others, o)
		}
	}
	return cut([]*member{m}, others)
}

// cut drops every message between a member of a and a member of b, both
// directions, and returns a function that heals the cut.
func cut(a, b []*member) (heal func()) {
	for _, x := range a {
		for _, y := range b {
			x.rc.transport.CutPeer(types.ID(y.cfg.ID))
			y.rc.transport.CutPeer(types.ID(x.cfg.ID))
		}
	}
	return func() {
		for _, x := range a {
			for _, y := range b {
				x.rc.transport.MendPeer(types.ID(y.cfg.ID))
				y.rc.transport.MendPeer(types.ID(x.cfg.ID))
			}
		}
	}
}

// A leader cut off from the majority keeps serving its stale state to
// serializable reads but never to linearizable ones: those are refused
// until it is back in touch, and then they see the majority's writes.
func TestPartitionedLeaderRefusesStaleReads(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lead := c.waitLeader()
	old := c.members[lead-1]
	var majority []*member
	for _, m := range c.members {
		if m != old {
			majority = append(majority, m)
		}
	}
	expect(t, do(t, http.MethodPut, old.srv.URL+"/x", "old"), http.StatusNoContent, "PUT x=old")
	for _, m := range c.members {
		eventually(t, 5*time.Second, func() error {
			if r := do(t, http.MethodGet, m.srv.URL+"/x?consistency=serializable", ""); string(r.body) != "old" {
				return fmt.Errorf("member %d: x = %s", m.cfg.ID, r)
			}
			return nil
		})
	}

	heal := partition(c, old)
	healed := false
	defer func() {
		if !healed {
			heal()
		}
	}()

	// Linearizable reads on the old leader, without a pause, for as long as
	// it is cut off. None may answer.
	type tally struct {
		refused int
		bad     []string // answers other than a refusal
	}
	stop := make(chan struct{})
	results := make(chan tally, 1)
	go func() {
		var tl tally
		defer func() { results <- tl }()
		deadline := time.Now().Add(30 * time.Second)
		for range 2000 {
			select {
			case <-stop:
				return
			default:
			}
			if time.Now().After(deadline) {
				return
			}
			r, err := send(context.Background(), testHTTP, http.MethodGet, old.srv.URL+"/x", "")
			switch {
			case err != nil:
				tl.bad = append(tl.bad, err.Error())
			case r.code == http.StatusServiceUnavailable || r.code == http.StatusGatewayTimeout:
				tl.refused++
			default:
				tl.bad = append(tl.bad, r.String())
			}
		}
	}()

	// The old leader keeps answering from its state.
	r := do(t, http.MethodGet, old.srv.URL+"/x?consistency=serializable", "")
	if r.code != http.StatusOK || string(r.body) != "old" {
		t.Fatalf("serializable GET on the cut-off leader: %s, want 200 old", r)
	}
	// The majority elects a leader of its own and takes a write.
	eventually(t, 10*time.Second, func() error {
		l0, l1 := majority[0].rc.leader.current(), majority[1].rc.leader.current()
		if l0 == 0 || l0 != l1 || l0 == old.cfg.ID {
			return fmt.Errorf("majority sees leaders %d and %d", l0, l1)
		}
		return nil
	})
	expect(t, do(t, http.MethodPut, majority[0].srv.URL+"/x", "new"), http.StatusNoContent, "PUT x=new")
	for _, m := range majority {
		if r := do(t, http.MethodGet, m.srv.URL+"/x", ""); r.code != http.StatusOK || string(r.body) != "new" {
			t.Fatalf("linearizable GET on member %d: %s, want 200 new", m.cfg.ID, r)
		}
	}
	// The old leader still holds the old value, so refusing matters.
	r = do(t, http.MethodGet, old.srv.URL+"/x?consistency=serializable", "")
	if r.code != http.StatusOK || string(r.body) != "old" {
		t.Fatalf("serializable GET on the cut-off member after the write: %s, want 200 old", r)
	}
	r = do(t, http.MethodGet, old.srv.URL+"/x", "")
	if r.code != http.StatusServiceUnavailable && r.code != http.StatusGatewayTimeout {
		t.Fatalf("linearizable GET on the cut-off member: %s, want 503 or 504", r)
	}
	close(stop)
	tl := <-results
	if tl.refused == 0 || len(tl.bad) > 0 {
		t.Fatalf("linearizable GETs on the cut-off leader: %d refused, other answers: %q", tl.refused, tl.bad)
	}
	t.Logf("the cut-off leader refused %d linearizable reads", tl.refused)

	// Healed, it answers linearizable reads again, with the new value.
	heal()
	healed = true
	awaitHealedRead(t, old, "old", "new")
}

// awaitHealedRead waits until a linearizable GET of x on m answers want,
// and fails at once if one answers stale.
func awaitHealedRead(t *testing.T, m *member, stale, want string) {
	t.Helper()
	eventually(t, 15*time.Second, func() error {
		r, err := send(t.Context(), testHTTP, http.MethodGet, m.srv.URL+"/x", "")
		switch {
		case err != nil:
			return err
		case r.code == http.StatusOK && string(r.body) == stale:
			t.Fatalf("linearizable GET on healed member %d returned the stale value %q", m.cfg.ID, stale)
		case r.code != http.StatusOK || string(r.body) != want:
			return fmt.Errorf("linearizable GET on healed member %d: %s", m.cfg.ID, r)
		}
		return nil
	})
}

// A follower's linearizable reads are answered by its leader's ReadIndex
// rounds (read.go). When that leader is cut off with the follower, and the
// majority has elected another leader and taken a write, the follower's
// reads must be refused, not answered from its stale state. Member 1 is
// made leader and given a long election timeout, so it goes on believing
// it leads, and keeps taking the follower's requests, well after the write;
// its rounds time out long before the follower's, so the follower sees
// each of them fail.
func TestFollowerOfCutOffLeaderRefusesStaleReads(t *testing.T) {
	c := newTestCluster(t, 5, func(cfg *raftConfig) {
		if cfg.ID == 1 {
			cfg.ElectionTicks = 300 // 3 s before it checks for a quorum
			cfg.ReadTimeout = 300 * time.Millisecond
		}
	})
	eventually(t, 10*time.Second, func() error {
		if l := c.waitLeader(); l != 1 {
			c.members[l-1].rc.node.TransferLeadership(t.Context(), l, 1)
			return fmt.Errorf("leader is %d, want 1", l)
		}
		return nil
	})
	old, follower := c.members[0], c.members[1]
	majority := c.members[2:]
	expect(t, do(t, http.MethodPut, old.srv.URL+"/x", "old"), http.StatusNoContent, "PUT x=old")
	expect(t, do(t, http.MethodGet, follower.srv.URL+"/x", ""), http.StatusOK, "GET x on the follower")

	heal := cut([]*member{old, follower}, majority)
	defer heal()
	eventually(t, 5*time.Second, func() error {
		l := majority[0].rc.leader.current()
		if l == 0 || l == old.cfg.ID || l != majority[1].rc.leader.current() || l != majority[2].rc.leader.current() {
			return fmt.Errorf("the majority has no leader of its own yet")
		}
		return nil
	})
	expect(t, do(t, http.MethodPut, majority[0].srv.URL+"/x", "new"), http.StatusNoContent, "PUT x=new")
	if old.rc.shared.leadTerm.Load() == 0 || follower.rc.leader.current() != old.cfg.ID {
		t.Fatalf("member 1 no longer leads the follower; the test needs a longer election timeout")
	}
	r := do(t, http.MethodGet, follower.srv.URL+"/x", "")
	if r.code != http.StatusServiceUnavailable && r.code != http.StatusGatewayTimeout {
		t.Fatalf("linearizable GET on the follower of the cut-off leader: %s, want 503 or 504", r)
	}

	// Healed, the follower's reads go to the new leader's rounds.
	heal()
	awaitHealedRead(t, follower, "old", "new")
}

// ---- the history, on the model of internal/kvhistory ----

// Each key is a group of its own (kvhistory's keys in slot 0). Every write
// in the test writes a value no other write uses, so a value names the
// write that produced it, and so does a revision (the raft index of that
// write): "the key is at revision R", which If-Match checks, is the same as
// "the key holds the value read together with R". The test checks that
// pairing separately (see revisionLog), which lets the model compare
// values rather than predict raft indices.

// linInput is one operation on key: a get, put or delete, or a
// compare-and-set (a put on the condition that key holds expect, or is
// absent when expect is "").
func linInput(kind kvhistory.Kind, key, value string, cas bool, expect string) kvhistory.Input {
	op := kvhistory.Op{Kind: kind, Value: value}
	desc := fmt.Sprintf("%s(%s)", map[kvhistory.Kind]string{kvhistory.Get: "get", kvhistory.Put: "put", kvhistory.Delete: "delete"}[kind], key)
	switch {
	case cas && expect == "":
		op.Cond = kvhistory.CondAbsent
		desc = fmt.Sprintf("cas(%s, absent → %s)", key, value)
	case cas:
		op.Cond, op.Expect = kvhistory.CondValue, expect
		desc = fmt.Sprintf("cas(%s, %q → %s)", key, expect, value)
	case kind == kvhistory.Put:
		desc = fmt.Sprintf("put(%s, %s)", key, value)
	}
	return kvhistory.Input{Group: key, Ops: []kvhistory.Op{op}, Desc: desc}
}

// linKind names an operation for the tallies: get, put, delete or cas.
func linKind(in kvhistory.Input) string {
	switch op := in.Ops[0]; {
	case op.Cond != kvhistory.CondNone:
		return "cas"
	case op.Kind == kvhistory.Get:
		return "get"
	case op.Kind == kvhistory.Put:
		return "put"
	default:
		return "delete"
	}
}

// linOK reports whether an answered operation found what it looked for: a
// get its key (200), a put its success, a delete its key (204, not 404), a
// cas its condition (204, not 412).
func linOK(in kvhistory.Input, out kvhistory.Output) bool {
	switch {
	case out.Failed:
		return false
	case in.IsRead():
		return out.Value != ""
	case out.Found != nil:
		return out.Found[0]
	}
	return true
}

// revisionLog checks that each revision seen names one value and each value
// one revision, per key: what makes comparing values stand for comparing
// revisions in the model.
type revisionLog struct {
	mu      sync.Mutex
	byValue map[string]uint64 // key + "\x00" + value -> rev
	byRev   map[string]string // key + "\x00" + rev -> value
	errs    []string
}

func (l *revisionLog) see(key, value string, rev uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	vk, rk := key+"\x00"+value, key+"\x00"+strconv.FormatUint(rev, 10)
	if r, ok := l.byValue[vk]; ok && r != rev {
		l.errs = append(l.errs, fmt.Sprintf("key %q value %q seen at revisions %d and %d", key, value, r, rev))
	}
	if v, ok := l.byRev[rk]; ok && v != value {
		l.errs = append(l.errs, fmt.Sprintf("key %q revision %d seen with values %q and %q", key, rev, v, value))
	}
	l.byValue[vk], l.byRev[rk] = rev, value
}

// linClient is one client of the linearizability check.
type linClient struct {
	id      int
	rng     *rand.Rand
	members []*member
	http    *http.Client
	start   time.Time
	revs    *revisionLog
	nextID  *atomic.Int32 // client IDs for the visualization
	ops     []porcupine.Operation
	errs    []string
	seq     int
}

func (c *linClient) now() int64 { return time.Since(c.start).Nanoseconds() }

// record adds an operation; one without a definite answer gets return time
// "never" (fixed after the run), and the client continues under a new ID,
// as porcupine's visualization expects one pending call per client.
func (c *linClient) record(call int64, in kvhistory.Input, out kvhistory.Output) {
	ret := c.now()
	if out.Unknown {
		ret = math.MaxInt64
	}
	c.ops = append(c.ops, porcupine.Operation{ClientId: c.id, Input: in, Output: out, Call: call, Return: ret})
	if out.Unknown {
		c.id = int(c.nextID.Add(1)) - 1
	}
}

// indefinite reports whether a write's answer leaves its outcome open.
func indefinite(r reply, err error) bool {
	return err != nil || r.code == http.StatusServiceUnavailable || r.code == http.StatusGatewayTimeout
}

func (c *linClient) unexpected(what string, r reply, err error) {
	c.errs = append(c.errs, fmt.Sprintf("%s: %v %v", what, r, err))
}

func (c *linClient) base() string { return c.members[c.rng.IntN(len(c.members))].srv.URL }

// get reads key linearizably through /v1; ok is false when no definite
// answer came (a read without one changes nothing and is left out).
func (c *linClient) get(ctx context.Context, key string) (value string, rev uint64, ok bool) {
	call := c.now()
	r, err := send(ctx, c.http, http.MethodGet, c.base()+"/v1/kv/"+key, "")
	switch {
	case err == nil && r.code == http.StatusOK:
		rev, perr := parseETag(r.header.Get("ETag"))
		if perr != nil || len(r.body) == 0 {
			c.unexpected("GET "+key, r, perr)
			return "", 0, false
		}
		c.revs.see(key, string(r.body), rev)
		c.record(call, linInput(kvhistory.Get, key, "", false, ""), kvhistory.Output{Value: string(r.body)})
		return string(r.body), rev, true
	case err == nil && r.code == http.StatusNotFound:
		c.record(call, linInput(kvhistory.Get, key, "", false, ""), kvhistory.Output{})
		return "", 0, true
	case indefinite(r, err):
		return "", 0, false
	default:
		c.unexpected("GET "+key, r, err)
		return "", 0, false
	}
}

func (c *linClient) newValue() string {
	c.seq++
	return fmt.Sprintf("c%d-%d", c.id, c.seq)
}

func (c *linClient) put(ctx context.Context, key string) {
	value := c.newValue()
	in := linInput(kvhistory.Put, key, value, false, "")
	v1 := c.rng.IntN(2) == 0
	u := c.base() + "/" + key
	if v1 {
		u = c.base() + "/v1/kv/" + key
	}
	call := c.now()
	r, err := send(ctx, c.http, http.MethodPut, u, value)
	switch {
	case err == nil && r.code == http.StatusNoContent:
		if v1 {
			c.revs.see(key, value, r.rev())
		}
		c.record(call, in, kvhistory.Output{})
	case indefinite(r, err):
		c.record(call, in, kvhistory.Output{Unknown: true})
	default:
		c.unexpected("PUT "+key, r, err)
	}
}

func (c *linClient) delete(ctx context.Context, key string) {
	in := linInput(kvhistory.Delete, key, "", false, "")
	u := c.base() + "/" + key
	if c.rng.IntN(2) == 0 {
		u = c.base() + "/v1/kv/" + key
	}
	call := c.now()
	r, err := send(ctx, c.http, http.MethodDelete, u, "")
	switch {
	case err == nil && (r.code == http.StatusNoContent || r.code == http.StatusNotFound):
		c.record(call, in, kvhistory.Output{Found: []bool{r.code == http.StatusNoContent}})
	case indefinite(r, err):
		c.record(call, in, kvhistory.Output{Unknown: true})
	default:
		c.unexpected("DELETE "+key, r, err)
	}
}

// cas reads key, then writes a new value on the condition that the key is
// still at the revision read (or still absent).
func (c *linClient) cas(ctx context.Context, key string) {
	old, rev, ok := c.get(ctx, key)
	if !ok {
		return
	}
	value := c.newValue()
	in := linInput(kvhistory.Put, key, value, true, old)
	cond := []string{"If-None-Match", "*"}
	if old != "" {
		cond = []string{"If-Match", fmt.Sprintf(`"%d"`, rev)}
	}
	call := c.now()
	r, err := send(ctx, c.http, http.MethodPut, c.base()+"/v1/kv/"+key, value, cond...)
	switch {
	case err == nil && r.code == http.StatusNoContent:
		c.revs.see(key, value, r.rev())
		c.record(call, in, kvhistory.Output{})
	case err == nil && r.code == http.StatusPreconditionFailed:
		c.record(call, in, kvhistory.Output{Failed: true})
	case indefinite(r, err):
		c.record(call, in, kvhistory.Output{Unknown: true})
	default:
		c.unexpected("CAS "+key, r, err)
	}
}

// Concurrent clients put, get, delete and compare-and-set a few keys
// through all members while the leader is cut off for a while; the history
// must be linearizable.
func TestLinearizableHistory(t *testing.T) {
	const (
		clients     = 8
		keys        = 4
		runFor      = 3 * time.Second
		opsPerCli   = 400
		checkBudget = 30 * time.Second
	)
	c := newTestCluster(t, 3, nil)
	transport := &http.Transport{MaxIdleConnsPerHost: clients}
	defer transport.CloseIdleConnections()
	httpc := &http.Client{Transport: transport, Timeout: 5 * time.Second}
	revs := &revisionLog{byValue: map[string]uint64{}, byRev: map[string]string{}}
	seed := testSeed(t)
	var nextID atomic.Int32
	nextID.Store(clients)
	start := time.Now()
	deadline := start.Add(runFor)
	cls := make([]*linClient, clients)
	var wg sync.WaitGroup
	for i := range cls {
		cl := &linClient{id: i, rng: rand.New(rand.NewPCG(seed, uint64(i))), members: c.members,
			http: httpc, start: start, revs: revs, nextID: &nextID}
		cls[i] = cl
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for n := 0; n < opsPerCli && time.Now().Before(deadline); n++ {
				key := fmt.Sprintf("lin-%d", cl.rng.IntN(keys))
				switch p := cl.rng.IntN(100); {
				case p < 35:
					cl.get(ctx, key)
				case p < 60:
					cl.put(ctx, key)
				case p < 75:
					cl.delete(ctx, key)
				default:
					cl.cas(ctx, key)
				}
			}
		}()
	}
	// The nemesis: a third of the way in, cut the leader off for a quarter
	// of the run, then heal. The waits are the fault's schedule, not a
	// condition: the clients run throughout.
	time.Sleep(runFor / 3)
	lead := c.waitLeader() // the partition is the point: wait for a leader to cut off, never skip it
	heal := partition(c, c.members[lead-1])
	t.Logf("cut off leader %d at %v", lead, time.Since(start).Round(time.Millisecond))
	time.Sleep(runFor / 4)
	heal()
	t.Logf("healed at %v", time.Since(start).Round(time.Millisecond))
	wg.Wait()

	var history []porcupine.Operation
	counts := map[string]int{}
	for _, cl := range cls {
		for _, e := range cl.errs {
			t.Errorf("client: unexpected answer %s", e)
		}
		for _, op := range cl.ops {
			in, out := op.Input.(kvhistory.Input), op.Output.(kvhistory.Output)
			kind := linKind(in)
			switch {
			case out.Unknown:
				counts[kind+" unknown"]++
			case linOK(in, out):
				counts[kind+" ok"]++
			default:
				counts[kind+" miss"]++
			}
		}
		history = append(history, cl.ops...)
	}
	// Operations without an answer return "never": after every other call
	// and return.
	var horizon int64
	for _, op := range history {
		horizon = max(horizon, op.Call)
		if op.Return != math.MaxInt64 {
			horizon = max(horizon, op.Return)
		}
	}
	for i := range history {
		if history[i].Return == math.MaxInt64 {
			history[i].Return = horizon + 1
		}
	}
	for _, e := range revs.errs {
		t.Errorf("revisions: %s", e)
	}
	t.Logf("%d operations: %v", len(history), counts)
	// Each kind of operation, with each kind of answer, happened often
	// enough for the check to mean something.
	for kind, least := range map[string]int{"get ok": 20, "get miss": 3, "put ok": 20, "delete ok": 5, "delete miss": 3, "cas ok": 10, "cas miss": 2} {
		if counts[kind] < least {
			t.Errorf("only %d operations %q, want at least %d", counts[kind], kind, least)
		}
	}

	checkLinearizable(t, history, checkBudget)
}

// checkLinearizable fails the test unless porcupine finds history
// linearizable within budget.
//
// Operations without an answer are hard on the checker: each may be placed
// anywhere after its call, and the search grows with every subset of them.
// Most never applied, and none of them constrains anything by its output, so
// the check first leaves out those that no read observed (a write whose value
// nobody read, any delete): if the rest is linearizable, so is the whole
// history, with the left-out operations placed last, after every other
// operation, where they change nothing anyone saw. Only if that fails is the
// whole history checked.
func checkLinearizable(t *testing.T, history []porcupine.Operation, budget time.Duration) {
	t.Helper()
	observed := map[string]bool{}
	for _, op := range history {
		if in, out := op.Input.(kvhistory.Input), op.Output.(kvhistory.Output); in.IsRead() && out.Value != "" {
			observed[in.Group+"\x00"+out.Value] = true
		}
	}
	var reduced []porcupine.Operation
	for _, op := range history {
		in, out := op.Input.(kvhistory.Input), op.Output.(kvhistory.Output)
		if out.Unknown && (in.Ops[0].Kind == kvhistory.Delete || !observed[in.Group+"\x00"+in.Ops[0].Value]) {
			continue
		}
		reduced = append(reduced, op)
	}
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(kvhistory.Model(), reduced, budget)
	t.Logf("porcupine: %s in %v, leaving out %d unanswered operations nobody observed",
		res, time.Since(start).Round(time.Millisecond), len(history)-len(reduced))
	if res == porcupine.Ok {
		return
	}
	visualize(t, info)
	start = time.Now()
	res, info = porcupine.CheckOperationsVerbose(kvhistory.Model(), history, budget)
	t.Logf("porcupine on the whole history: %s in %v", res, time.Since(start).Round(time.Millisecond))
	if res == porcupine.Ok {
		return
	}
	visualize(t, info)
	if res == porcupine.Unknown {
		t.Fatalf("porcupine could not decide within %v whether the history is linearizable", budget)
	}
	t.Fatalf("history is not linearizable")
}

// visualize writes porcupine's HTML view of a check to a file that outlives
// the test, and logs its path.
func visualize(t *testing.T, info porcupine.LinearizationInfo) {
	t.Helper()
	path, err := kvhistory.Visualize(info, t.Name())
	if err != nil {
		t.Errorf("cannot write the visualization: %v", err)
		return
	}
	t.Logf("visualization: %s", path)
}

// Many clients increment one counter with read, then compare-and-set on the
// revision read, retrying on 412: no increment is lost or counted twice.
func TestCASCounter(t *testing.T) {
	const (
		clients  = 16
		attempts = 200 // per client
		runFor   = 3 * time.Second
	)
	c := newTestCluster(t, 3, nil)
	expect(t, do(t, http.MethodPut, c.members[0].srv.URL+"/v1/kv/counter", "0"), http.StatusNoContent, "PUT counter=0")
	transport := &http.Transport{MaxIdleConnsPerHost: clients}
	defer transport.CloseIdleConnections()
	httpc := &http.Client{Transport: transport, Timeout: 5 * time.Second}
	type tally struct {
		won       []int // values this client wrote
		conflicts int
		unknown   int
		errs      []string
	}
	tallies := make([]tally, clients)
	deadline := time.Now().Add(runFor)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tl := &tallies[i]
			base := c.members[i%len(c.members)].srv.URL + "/v1/kv/counter"
			for n := 0; n < attempts && time.Now().Before(deadline); n++ {
				r, err := send(context.Background(), httpc, http.MethodGet, base, "")
				if err != nil || r.code != http.StatusOK {
					tl.errs = append(tl.errs, fmt.Sprintf("GET: %v %v", r, err))
					return
				}
				v, err := strconv.Atoi(string(r.body))
				if err != nil {
					tl.errs = append(tl.errs, fmt.Sprintf("counter %q", r.body))
					return
				}
				r, err = send(context.Background(), httpc, http.MethodPut, base, strconv.Itoa(v+1), "If-Match", r.header.Get("ETag"))
				switch {
				case err == nil && r.code == http.StatusNoContent:
					tl.won = append(tl.won, v+1)
				case err == nil && r.code == http.StatusPreconditionFailed:
					tl.conflicts++
				case indefinite(r, err):
					tl.unknown++
				default:
					tl.errs = append(tl.errs, fmt.Sprintf("PUT: %v %v", r, err))
					return
				}
			}
		}()
	}
	wg.Wait()
	var won []int
	conflicts, unknown := 0, 0
	for _, tl := range tallies {
		for _, e := range tl.errs {
			t.Error(e)
		}
		won = append(won, tl.won...)
		conflicts += tl.conflicts
		unknown += tl.unknown
	}
	r := do(t, http.MethodGet, c.members[1].srv.URL+"/v1/kv/counter", "")
	final, err := strconv.Atoi(string(r.body))
	if r.code != http.StatusOK || err != nil {
		t.Fatalf("final GET: %s", r)
	}
	t.Logf("%d increments, %d conflicts, %d without an answer; counter = %d", len(won), conflicts, unknown, final)
	if unknown == 0 && final != len(won) {
		t.Fatalf("counter is %d after %d successful increments", final, len(won))
	}
	if final < len(won) || final > len(won)+unknown {
		t.Fatalf("counter is %d after %d successful increments and %d unanswered", final, len(won), unknown)
	}
	// Each successful write wrote a different number: no two clients won
	// the same round.
	slices.Sort(won)
	for i := 1; i < len(won); i++ {
		if won[i] == won[i-1] {
			t.Fatalf("two clients both set the counter to %d", won[i])
		}
	}
	if len(won) < clients || conflicts == 0 {
		t.Fatalf("%d increments and %d conflicts: too little contention for the test to mean anything", len(won), conflicts)
	}
}
