package e2e

// The fault-injection suite: clusters of the built binary under concurrent
// clients while nemeses kill, pause, partition and replace members; then
// every member is read and the whole history is checked for
// linearizability (fault_history_test.go, internal/kvhistory). CI runs a
// short schedule;
//
//	go test -race ./e2e -run Fault -timeout 2h -soak 10m
//
// runs each schedule for ten minutes instead (go test's default -timeout
// of 10m would end it).

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"raftexample/internal/kvhistory"
	"raftexample/internal/proctest"
)

var soak = flag.Duration("soak", 0, "run each TestFault schedule for this long instead of the short CI schedule")

var seedFlag = flag.Uint64("seed", 0, "seed of the randomised tests (fault schedules, clients); 0 takes one from the clock")

// testSeed returns the seed of a randomised test, from -seed or the clock,
// and logs it so that a failure can be replayed.
func testSeed(t testing.TB) uint64 {
	t.Helper()
	return proctest.Seed(t, *seedFlag, "./e2e")
}

const (
	epochLength     = 5 * time.Second // clients move to new key names this often
	groupsPerEpoch  = 3
	faultReqTimeout = 2 * time.Second // the members' --request-timeout
	clientTimeout   = 4 * time.Second // a client gives up on a request after this
	maxClientOps    = 200000          // per client, however long the test runs
	maxFaults       = 10000           // per schedule
	healTimeout     = 30 * time.Second
)

// scheduleLength is how long a test's nemeses run: short in CI, -soak when set.
func scheduleLength(short time.Duration) time.Duration {
	if *soak > 0 {
		return *soak
	}
	return short
}

// faultMember is one member process of a fault test.
type faultMember struct {
	id      int
	addrs   memberAddrs
	dataDir string
	p       *proctest.Proc

	// Guarded by faultCluster.mu.
	run     *memberRun // the current process
	paused  bool       // SIGSTOPped
	removed bool       // being removed: it must exit 0 and never come back
}

// memberRun is one process of a member, from start to exit.
type memberRun struct {
	expectExit bool // the test killed it, or removed the member
}

// faultCluster is a cluster of the built binary on a peerNet, with the
// history of the clients' operations and the tallies the test reports.
type faultCluster struct {
	t    *testing.T
	net  peerNet
	dir  string
	hist *history
	rng  *rand.Rand // the nemesis's; only the test goroutine uses it
	seed uint64     // of rng and of every client's

	mu         sync.Mutex
	members    map[int]*faultMember // every member ever started
	active     []int                // members currently in the cluster
	nextID     int
	faults     map[string]int
	deadExits  []string // members that exited by themselves
	extraFlags []string
}

func newFaultCluster(t *testing.T, net peerNet, n int, extra ...string) *faultCluster {
	t.Helper()
	seed := testSeed(t)
	c := &faultCluster{
		t: t, net: net, dir: t.TempDir(), hist: newHistory(), seed: seed,
		rng:        rand.New(rand.NewPCG(seed, 5)),
		members:    map[int]*faultMember{},
		nextID:     1,
		faults:     map[string]int{},
		extraFlags: extra,
	}
	var ms []*faultMember
	for range n {
		ms = append(ms, c.allocate())
	}
	for _, m := range ms {
		c.prepare(m, false)
		c.start(m.id)
	}
	c.active = []int{}
	for _, m := range ms {
		c.active = append(c.active, m.id)
	}
	for _, id := range c.active {
		c.waitServing(id)
	}
	c.waitWritable()
	return c
}

// allocate picks a new member ID, addresses and a data directory.
func (c *faultCluster) allocate() *faultMember {
	c.mu.Lock()
	id := c.nextID
	c.nextID++
	c.mu.Unlock()
	m := &faultMember{id: id, addrs: c.net.add(c.t, id), dataDir: filepath.Join(c.dir, fmt.Sprintf("m%d", id))}
	if err := os.MkdirAll(m.dataDir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.members[id] = m
	c.mu.Unlock()
	return m
}

// prepare makes the command line of an allocated member; a member added
// at run time joins.
func (c *faultCluster) prepare(m *faultMember, join bool) {
	id := m.id
	listen, _ := url.Parse(m.addrs.listenURL)
	extra := append([]string{
		"--request-timeout", faultReqTimeout.String(),
		"--snapshot-count", "300", "--snapshot-catchup-entries", "100",
		"--max-snapshots", "2", "--max-wals", "2",
	}, proctest.FastRaft()...)
	extra = append(extra, c.extraFlags...)
	if join {
		extra = append(extra, "--join")
	}
	argv := append(slices.Clone(m.addrs.wrap), raftexample.Path(c.t))
	argv = append(argv, proctest.MemberArgs(id, c.clusterPeers(), m.addrs.apiPort, m.dataDir, extra...)...)
	m.p = proctest.NewProc(c.t, fmt.Sprintf("member %d", id), m.dataDir, filepath.Join(c.dir, fmt.Sprintf("member-%d.log", id)), argv...)
	m.p.Env = []string{"RAFTEXAMPLE_PEER_LISTEN=" + listen.Host}
}

// clusterPeers is every member's --cluster: the URLs through which the
// members reach each other. All members are given the same list, as they
// must be to agree on the cluster ID; each listens on its own listen URL
// (RAFTEXAMPLE_PEER_LISTEN, set in prepare).
func (c *faultCluster) clusterPeers() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	urls := make([]string, 0, len(c.members))
	for k := 1; k < c.nextID; k++ {
		urls = append(urls, c.members[k].addrs.peerURL)
	}
	return urls
}

// start starts member id and watches for it to exit by itself.
func (c *faultCluster) start(id int) {
	c.t.Helper()
	m := c.member(id)
	m.p.Start()
	done, p, run := m.p.Done(), m.p, &memberRun{}
	c.mu.Lock()
	m.run, m.paused = run, false
	c.mu.Unlock()
	go func() {
		<-done
		c.mu.Lock()
		defer c.mu.Unlock()
		var exitErr *exec.ExitError
		code := 0
		if errors.As(p.Err(), &exitErr) {
			code = exitErr.ExitCode()
		}
		if !run.expectExit || (m.removed && code != 0) {
			c.deadExits = append(c.deadExits, fmt.Sprintf("member %d exited by itself (%v) at %v", id, p.Err(), time.Duration(c.hist.now()).Round(time.Millisecond)))
		}
	}()
}

func (c *faultCluster) member(id int) *faultMember {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[id]
}

// activeIDs returns the members in the cluster, in ID order.
func (c *faultCluster) activeIDs() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(slices.Values(c.active))
}

func (c *faultCluster) api(id int) string { return c.member(id).addrs.apiBase }

func (c *faultCluster) count(fault string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults[fault]++
}

// send makes one request through the network's client, giving up after
// clientTimeout. header holds name, value pairs.
func (c *faultCluster) send(ctx context.Context, method, url, body string, header ...string) (proctest.Reply, error) {
	ctx, cancel := context.WithTimeout(ctx, clientTimeout)
	defer cancel()
	return proctest.Send(ctx, c.net.client(), method, url, body, header...)
}

func (c *faultCluster) waitServing(id int) {
	c.t.Helper()
	proctest.Eventually(c.t, proctest.StartTimeout, func() error {
		_, err := c.send(context.Background(), http.MethodGet, c.api(id)+"/v1/status", "")
		return err
	})
}

// waitWritable waits until a write outside the checked keys commits.
func (c *faultCluster) waitWritable() {
	c.t.Helper()
	ids := c.activeIDs()
	proctest.Eventually(c.t, healTimeout, func() error {
		id := ids[c.rng.IntN(len(ids))]
		r, err := c.send(context.Background(), http.MethodPut, c.api(id)+"/barrier", "x")
		if err != nil {
			return err
		}
		if r.Code != http.StatusNoContent {
			return fmt.Errorf("PUT /barrier via member %d: %d %s", id, r.Code, r.Body)
		}
		return nil
	})
}

// leader asks the members who leads; it waits until one running member
// that leads is named.
func (c *faultCluster) leader() int {
	c.t.Helper()
	var lead int
	proctest.Eventually(c.t, healTimeout, func() error {
		for _, id := range c.activeIDs() {
			r, err := c.send(context.Background(), http.MethodGet, c.api(id)+"/v1/status", "")
			if err != nil || r.Code != http.StatusOK {
				continue
			}
			var st struct {
				Leader    int    `json:"leader"`
				RaftState string `json:"raftState"`
			}
			if json.Unmarshal([]byte(r.Body), &st) == nil && st.RaftState == "StateLeader" {
				lead = id
				return nil
			}
		}
		return errors.New("no member says it leads")
	})
	return lead
}

// hold waits d, the length of one fault.
func hold(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	<-t.C
}

func (c *faultCluster) faultLength() time.Duration {
	return time.Duration(800+c.rng.IntN(2200)) * time.Millisecond
}

func (c *faultCluster) logf(format string, args ...any) {
	c.t.Helper()
	c.t.Logf("%8v  %s", time.Duration(c.hist.now()).Round(time.Millisecond), fmt.Sprintf(format, args...))
}

// A nemesis injects one fault, waits, and repairs it.
type nemesis struct {
	name string
	run  func(c *faultCluster)
}

func (c *faultCluster) pickRunning() int {
	ids := c.activeIDs()
	return ids[c.rng.IntN(len(ids))]
}

func (c *faultCluster) killAndRestart(id int, why string) {
	c.t.Helper()
	m := c.member(id)
	c.mu.Lock()
	m.run.expectExit = true
	c.mu.Unlock()
	c.logf("SIGKILL member %d (%s)", id, why)
	m.p.Kill()
	c.count("kill")
	hold(c.faultLength())
	c.logf("restart member %d", id)
	c.start(id)
	c.waitServing(id)
}

func (c *faultCluster) pauseAndResume(id int, why string) {
	c.t.Helper()
	m := c.member(id)
	c.logf("SIGSTOP member %d (%s)", id, why)
	m.p.Signal(syscall.SIGSTOP)
	c.mu.Lock()
	m.paused = true
	c.mu.Unlock()
	c.count("pause")
	hold(c.faultLength() + time.Second) // well past an election timeout
	c.logf("SIGCONT member %d", id)
	m.p.Signal(syscall.SIGCONT)
	c.mu.Lock()
	m.paused = false
	c.mu.Unlock()
}

func (c *faultCluster) isolate(group []int, why string) {
	c.t.Helper()
	var rest []int
	for _, id := range c.activeIDs() {
		if !slices.Contains(group, id) {
			rest = append(rest, id)
		}
	}
	c.logf("partition %v from %v (%s, %s)", group, rest, why, c.net.name())
	c.net.cut(group, rest)
	c.count("partition")
	hold(c.faultLength() + time.Second)
	c.logf("heal the partition")
	c.net.heal()
}

var (
	nemesisKill = nemesis{"kill", func(c *faultCluster) {
		c.killAndRestart(c.pickRunning(), "random member")
	}}
	nemesisKillLeader = nemesis{"kill-leader", func(c *faultCluster) {
		c.killAndRestart(c.leader(), "the leader")
	}}
	nemesisPause = nemesis{"pause", func(c *faultCluster) {
		c.pauseAndResume(c.pickRunning(), "random member")
	}}
	nemesisPauseLeader = nemesis{"pause-leader", func(c *faultCluster) {
		c.pauseAndResume(c.leader(), "the leader: it will find itself stale")
	}}
	nemesisIsolate = nemesis{"isolate", func(c *faultCluster) {
		c.isolate([]int{c.pickRunning()}, "one member")
	}}
	nemesisIsolateLeader = nemesis{"isolate-leader", func(c *faultCluster) {
		c.isolate([]int{c.leader()}, "the leader")
	}}
	// nemesisMinority cuts off as many members as leaves a quorum.
	nemesisMinority = nemesis{"minority", func(c *faultCluster) {
		ids := c.activeIDs()
		c.rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		c.isolate(ids[:(len(ids)-1)/2], "a minority")
	}}
	nemesisChurn = nemesis{"churn", (*faultCluster).churn}
	// nemesisMuteLeader drops everything the leader sends while it still
	// hears the others (proxy network only).
	nemesisMuteLeader = nemesis{"mute-leader", func(c *faultCluster) {
		pn, ok := c.net.(*proxyNet)
		if !ok {
			return
		}
		lead := c.leader()
		rest := slices.DeleteFunc(c.activeIDs(), func(id int) bool { return id == lead })
		c.logf("drop what leader %d sends to %v; it still hears them", lead, rest)
		pn.cutOneWay([]int{lead}, rest)
		c.count("one-way-partition")
		hold(c.faultLength() + time.Second)
		c.logf("heal the partition")
		pn.heal()
	}}
)

// runSchedule runs random nemeses from the list for length, with quiet gaps
// between faults.
func (c *faultCluster) runSchedule(nemeses []nemesis, length time.Duration) {
	c.t.Helper()
	end := time.Now().Add(length)
	for i := 0; i < maxFaults && time.Now().Before(end); i++ {
		n := nemeses[c.rng.IntN(len(nemeses))]
		if i < len(nemeses) {
			n = nemeses[i] // every nemesis at least once, in order
		}
		n.run(c)
		c.waitWritable()
		hold(time.Duration(300+c.rng.IntN(700)) * time.Millisecond)
	}
}

// churn removes a random member and adds a new one (new ID, empty data
// directory) as a learner, starts it, and promotes it once it caught up.
func (c *faultCluster) churn() {
	c.t.Helper()
	ids := c.activeIDs()
	victim := ids[c.rng.IntN(len(ids))]
	var via int
	for via == 0 || via == victim {
		via = ids[c.rng.IntN(len(ids))]
	}
	c.mu.Lock()
	c.members[victim].run.expectExit = true
	c.members[victim].removed = true
	c.mu.Unlock()
	c.logf("remove member %d (through member %d)", victim, via)
	c.memberRequest(http.MethodDelete, via, fmt.Sprintf("/v1/members/%d", victim), "", http.StatusNoContent, "is not in the cluster")
	if code := c.member(victim).p.WaitExit(healTimeout); code != 0 {
		c.t.Errorf("removed member %d exited with code %d, want 0", victim, code)
	}
	c.mu.Lock()
	c.active = slices.DeleteFunc(c.active, func(id int) bool { return id == victim })
	c.mu.Unlock()
	c.count("remove")

	m := c.allocate()
	c.prepare(m, true)
	c.logf("add member %d as a learner (through member %d)", m.id, via)
	body := fmt.Sprintf(`{"peerURL":%q,"id":%d,"learner":true}`, m.addrs.peerURL, m.id)
	c.memberRequest(http.MethodPost, via, "/v1/members", body, http.StatusCreated, "already exists")
	c.start(m.id)
	c.waitServing(m.id)
	c.mu.Lock()
	c.active = append(c.active, m.id)
	c.mu.Unlock()
	c.logf("promote member %d", m.id)
	c.memberRequest(http.MethodPost, via, fmt.Sprintf("/v1/members/%d/promote", m.id), "", http.StatusNoContent, "already a voter")
	c.count("add")
}

// memberRequest sends a membership request until it succeeds. A retry may
// find the earlier try applied (it timed out, but took effect); an answer
// containing doneText says so.
func (c *faultCluster) memberRequest(method string, via int, path, body string, want int, doneText string) {
	c.t.Helper()
	proctest.Eventually(c.t, healTimeout, func() error {
		r, err := c.send(context.Background(), method, c.api(via)+path, body)
		switch {
		case err != nil:
			return err
		case r.Code == want, doneText != "" && strings.Contains(r.Body, doneText):
			return nil
		case r.Code == http.StatusConflict || r.Code == http.StatusServiceUnavailable || r.Code == http.StatusGatewayTimeout:
			return fmt.Errorf("%s %s: %d %s", method, path, r.Code, r.Body) // retry
		default:
			c.t.Fatalf("%s %s via member %d: %d %s, want %d", method, path, via, r.Code, r.Body, want)
			return nil
		}
	})
}

// A client's knowledge of a key: a revision and the value written at it.
type seenRev struct {
	rev   uint64
	value string
}

// faultClient runs operations against random members and records them.
type faultClient struct {
	c    *faultCluster
	id   int
	rng  *rand.Rand
	seq  int
	seen map[string]seenRev
}

func groupKey(group string, slot int) string { return fmt.Sprintf("%s-s%d", group, slot) }

func (fc *faultClient) value() string {
	fc.seq++
	return fmt.Sprintf("c%d-%d", fc.id, fc.seq)
}

// run performs operations until ctx ends.
func (fc *faultClient) run(ctx context.Context) {
	for i := 0; i < maxClientOps && ctx.Err() == nil; i++ {
		epoch := int(time.Duration(fc.c.hist.now()) / epochLength)
		group := fmt.Sprintf("e%d-g%d", epoch, fc.rng.IntN(groupsPerEpoch))
		ids := fc.c.activeIDs()
		base := fc.c.api(ids[fc.rng.IntN(len(ids))])
		slot := fc.rng.IntN(kvhistory.GroupSize)
		key := groupKey(group, slot)
		switch r := fc.rng.IntN(100); {
		case r < 20:
			fc.getRoot(ctx, base, group, slot)
		case r < 35:
			fc.getV1(ctx, base, group, slot)
		case r < 50:
			fc.put(ctx, base, group, slot, "/", nil)
		case r < 58:
			fc.put(ctx, base, group, slot, "/v1/kv/", nil)
		case r < 66:
			fc.deleteRoot(ctx, base, group, slot)
		case r < 78:
			if s, ok := fc.seen[key]; ok && fc.rng.IntN(4) > 0 {
				fc.put(ctx, base, group, slot, "/v1/kv/", &kvhistory.Op{Cond: kvhistory.CondValue, Expect: s.value})
			} else {
				fc.put(ctx, base, group, slot, "/v1/kv/", &kvhistory.Op{Cond: kvhistory.CondAbsent})
			}
		case r < 84:
			if s, ok := fc.seen[key]; ok {
				fc.casDelete(ctx, base, group, slot, s)
			} else {
				fc.deleteRoot(ctx, base, group, slot)
			}
		default:
			fc.txn(ctx, base, group)
		}
		fc.pause(ctx, 5+fc.rng.IntN(15)) // keeps the history small enough to check
	}
}

// failedWrite records a write that got no success or condition answer. A
// 503 that does not say "the write may still apply" is a refusal: the write
// never entered the log (README: API errors), so it is left out of the
// history, and if it took effect after all, the checker finds a value that
// no operation wrote; so is a request that could not connect. Anything else without a definite answer (no answer,
// 504, a 503 that says it may still apply) is indeterminate. Other codes
// are recorded as unexpected. The client then backs off, as a client
// honouring Retry-After would.
func (fc *faultClient) failedWrite(ctx context.Context, in kvhistory.Input, call int64, r proctest.Reply, err error) {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED): // never sent: the member is down
		fc.c.hist.refused()
	case err == nil && r.Code == http.StatusServiceUnavailable && !strings.Contains(r.Body, "may still apply"):
		fc.c.hist.refused()
	default:
		if err == nil && r.Code != http.StatusServiceUnavailable && r.Code != http.StatusGatewayTimeout {
			fc.c.hist.unexpectedAnswer("%s: %d %s", in.Desc, r.Code, strings.TrimSpace(r.Body))
		}
		fc.c.hist.add(fc.id, in, call, &kvhistory.Output{Unknown: true})
	}
	fc.pause(ctx, 100+fc.rng.IntN(200))
}

// pause waits ms milliseconds or until ctx ends.
func (fc *faultClient) pause(ctx context.Context, ms int) {
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func (fc *faultClient) getRoot(ctx context.Context, base, group string, slot int) {
	in := kvhistory.Input{Group: group, Ops: []kvhistory.Op{{Slot: slot, Kind: kvhistory.Get}}, Desc: fmt.Sprintf("GET /%s", groupKey(group, slot))}
	call := fc.c.hist.now()
	r, err := fc.c.send(ctx, http.MethodGet, base+"/"+groupKey(group, slot), "")
	fc.c.hist.add(fc.id, in, call, fc.readOutcome(in.Desc, r, err))
}

func (fc *faultClient) getV1(ctx context.Context, base, group string, slot int) {
	key := groupKey(group, slot)
	in := kvhistory.Input{Group: group, Ops: []kvhistory.Op{{Slot: slot, Kind: kvhistory.Get}}, Desc: fmt.Sprintf("GET /v1/kv/%s", key)}
	call := fc.c.hist.now()
	r, err := fc.c.send(ctx, http.MethodGet, base+"/v1/kv/"+key, "")
	out := fc.readOutcome(in.Desc, r, err)
	if out != nil && out.Value != "" {
		if rev, ok := faultParseETag(r.Header.Get("ETag")); ok {
			fc.seen[key] = seenRev{rev, out.Value}
		} else {
			fc.c.hist.unexpectedAnswer("%s: 200 without a valid ETag (%q)", in.Desc, r.Header.Get("ETag"))
		}
	}
	fc.c.hist.add(fc.id, in, call, out)
}

// readOutcome turns a read's answer into an output, or nil when it had none.
func (fc *faultClient) readOutcome(what string, r proctest.Reply, err error) *kvhistory.Output {
	switch {
	case err != nil:
		return nil
	case r.Code == http.StatusOK:
		return &kvhistory.Output{Value: r.Body}
	case r.Code == http.StatusNotFound:
		return &kvhistory.Output{}
	case r.Code == http.StatusServiceUnavailable || r.Code == http.StatusGatewayTimeout:
		return nil
	}
	fc.c.hist.unexpectedAnswer("%s: %d %s", what, r.Code, strings.TrimSpace(r.Body))
	return nil
}

// etag is the ETag of revision rev (docs/API.md: a quoted decimal).
func etag(rev uint64) string { return strconv.Quote(strconv.FormatUint(rev, 10)) }

func faultParseETag(s string) (uint64, bool) {
	rev, err := strconv.ParseUint(strings.Trim(s, `"`), 10, 64)
	return rev, err == nil && rev > 0
}

// put writes a fresh value through prefix ("/" or "/v1/kv/"), with the
// condition of cond if given.
func (fc *faultClient) put(ctx context.Context, base, group string, slot int, prefix string, cond *kvhistory.Op) {
	key := groupKey(group, slot)
	op := kvhistory.Op{Slot: slot, Kind: kvhistory.Put, Value: fc.value()}
	var hdr []string
	desc := fmt.Sprintf("PUT %s%s=%s", prefix, key, op.Value)
	if cond != nil {
		op.Cond, op.Expect = cond.Cond, cond.Expect
		if op.Cond == kvhistory.CondValue {
			hdr = []string{"If-Match", etag(fc.seen[key].rev)}
			desc += fmt.Sprintf(" if=%s", op.Expect)
		} else {
			hdr = []string{"If-None-Match", "*"}
			desc += " if-absent"
		}
	}
	in := kvhistory.Input{Group: group, Ops: []kvhistory.Op{op}, Desc: desc}
	call := fc.c.hist.now()
	r, err := fc.c.send(ctx, http.MethodPut, base+prefix+key, op.Value, hdr...)
	out := &kvhistory.Output{}
	switch {
	case err == nil && r.Code == http.StatusNoContent:
		if prefix != "/" {
			if rev, ok := faultParseETag(r.Header.Get("ETag")); ok {
				fc.seen[key] = seenRev{rev, op.Value}
			} else {
				fc.c.hist.unexpectedAnswer("%s: 204 without a valid ETag (%q)", desc, r.Header.Get("ETag"))
			}
		}
	case err == nil && r.Code == http.StatusPreconditionFailed && cond != nil:
		out.Failed, out.FailedOp = true, 0
	default:
		fc.failedWrite(ctx, in, call, r, err)
		return
	}
	fc.c.hist.add(fc.id, in, call, out)
}

func (fc *faultClient) deleteRoot(ctx context.Context, base, group string, slot int) {
	key := groupKey(group, slot)
	in := kvhistory.Input{Group: group, Ops: []kvhistory.Op{{Slot: slot, Kind: kvhistory.Delete}}, Desc: "DELETE /" + key}
	call := fc.c.hist.now()
	r, err := fc.c.send(ctx, http.MethodDelete, base+"/"+key, "")
	out := &kvhistory.Output{}
	switch {
	case err == nil && r.Code == http.StatusNoContent:
		out.Found = []bool{true}
	case err == nil && r.Code == http.StatusNotFound:
		out.Found = []bool{false}
	default:
		fc.failedWrite(ctx, in, call, r, err)
		return
	}
	fc.c.hist.add(fc.id, in, call, out)
}

func (fc *faultClient) casDelete(ctx context.Context, base, group string, slot int, s seenRev) {
	key := groupKey(group, slot)
	in := kvhistory.Input{Group: group, Ops: []kvhistory.Op{{Slot: slot, Kind: kvhistory.Delete, Cond: kvhistory.CondValue, Expect: s.value}},
		Desc: fmt.Sprintf("DELETE /v1/kv/%s if=%s", key, s.value)}
	call := fc.c.hist.now()
	r, err := fc.c.send(ctx, http.MethodDelete, base+"/v1/kv/"+key, "", "If-Match", etag(s.rev))
	out := &kvhistory.Output{}
	switch {
	case err == nil && r.Code == http.StatusNoContent:
		out.Found = []bool{true}
		delete(fc.seen, key)
	case err == nil && r.Code == http.StatusPreconditionFailed:
		out.Failed, out.FailedOp = true, 0
	case err == nil && r.Code == http.StatusNotFound:
		out.Found = []bool{false} // the model rejects this: the condition needs the key
	default:
		fc.failedWrite(ctx, in, call, r, err)
		return
	}
	fc.c.hist.add(fc.id, in, call, out)
}

// txn sends a transaction over two or three keys of one group, each op a
// put or a delete, some conditional.
func (fc *faultClient) txn(ctx context.Context, base, group string) {
	slots := fc.rng.Perm(kvhistory.GroupSize)[:2+fc.rng.IntN(kvhistory.GroupSize-1)]
	var ops []kvhistory.Op
	var body []map[string]any
	var desc []string
	for _, slot := range slots {
		key := groupKey(group, slot)
		o := kvhistory.Op{Slot: slot, Kind: kvhistory.Delete}
		jo := map[string]any{"op": "delete", "key": key}
		if fc.rng.IntN(3) > 0 {
			o.Kind, o.Value = kvhistory.Put, fc.value()
			jo["op"], jo["value"] = "put", o.Value
		}
		d := fmt.Sprintf("%s %s", jo["op"], key)
		if o.Kind == kvhistory.Put {
			d += "=" + o.Value
		}
		s, ok := fc.seen[key]
		switch r := fc.rng.IntN(3); {
		case r == 0 && ok:
			o.Cond, o.Expect = kvhistory.CondValue, s.value
			jo["ifRev"] = s.rev
			d += " if=" + s.value
		case r == 1:
			o.Cond = kvhistory.CondAbsent
			jo["ifAbsent"] = true
			d += " if-absent"
		}
		ops, body, desc = append(ops, o), append(body, jo), append(desc, d)
	}
	payload, _ := json.Marshal(body)
	in := kvhistory.Input{Group: group, Ops: ops, Desc: "TXN [" + strings.Join(desc, "; ") + "]"}
	call := fc.c.hist.now()
	r, err := fc.c.send(ctx, http.MethodPost, base+"/v1/txn", string(payload))
	out := &kvhistory.Output{}
	switch {
	case err == nil && r.Code == http.StatusOK:
		var res struct {
			Succeeded bool   `json:"succeeded"`
			Rev       uint64 `json:"rev"`
			Results   []struct {
				Found bool `json:"found"`
			} `json:"results"`
		}
		if json.Unmarshal([]byte(r.Body), &res) != nil || !res.Succeeded || len(res.Results) != len(ops) {
			fc.c.hist.unexpectedAnswer("%s: 200 %s", in.Desc, r.Body)
			out.Unknown = true
			break
		}
		for i, o := range ops {
			out.Found = append(out.Found, res.Results[i].Found)
			key := groupKey(group, o.Slot)
			if o.Kind == kvhistory.Put {
				fc.seen[key] = seenRev{res.Rev, o.Value}
			} else {
				delete(fc.seen, key)
			}
		}
	case err == nil && r.Code == http.StatusPreconditionFailed:
		var res struct {
			Failed *int `json:"failed"`
		}
		if json.Unmarshal([]byte(r.Body), &res) != nil || res.Failed == nil {
			fc.c.hist.unexpectedAnswer("%s: 412 %s", in.Desc, r.Body)
			out.Unknown = true
			break
		}
		out.Failed, out.FailedOp = true, *res.Failed
	default:
		fc.failedWrite(ctx, in, call, r, err)
		return
	}
	fc.c.hist.add(fc.id, in, call, out)
}

// startClients runs n clients until the returned stop function is called.
func (c *faultCluster) startClients(n int) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range n {
		fc := &faultClient{c: c, id: i, rng: rand.New(rand.NewPCG(c.seed, uint64(100+i))), seen: map[string]seenRev{}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			fc.run(ctx)
		}()
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// finish heals everything, waits for the members to converge, reads every
// key from every member into the history, checks it, and reports.
func (c *faultCluster) finish() {
	c.t.Helper()
	c.net.heal()
	c.mu.Lock()
	for _, m := range c.members {
		if m.paused {
			m.p.Process.Signal(syscall.SIGCONT) // it may have exited since
			m.paused = false
		}
	}
	c.mu.Unlock()
	c.waitWritable()
	ids := c.activeIDs()

	// Converge: every member applies as far as the leader committed.
	var applied map[int]uint64
	proctest.Eventually(c.t, healTimeout, func() error {
		applied = map[int]uint64{}
		for _, id := range ids {
			r, err := c.send(context.Background(), http.MethodGet, c.api(id)+"/v1/status", "")
			if err != nil {
				return err
			}
			var st struct {
				Commit  uint64 `json:"commitIndex"`
				Applied uint64 `json:"appliedIndex"`
			}
			if err := json.Unmarshal([]byte(r.Body), &st); err != nil {
				return err
			}
			applied[id] = st.Applied
		}
		if vals := slices.Collect(maps.Values(applied)); slices.Min(vals) != slices.Max(vals) {
			return fmt.Errorf("applied indexes differ: %v", applied)
		}
		return nil
	})
	// Every member holds the same keys at the same revisions.
	var first string
	for _, id := range ids {
		r, err := c.send(context.Background(), http.MethodGet, c.api(id)+"/v1/kv?consistency=serializable&limit=10000", "")
		if err != nil || r.Code != http.StatusOK {
			c.t.Fatalf("list keys on member %d: %v %d %s", id, err, r.Code, r.Body)
		}
		if first == "" {
			first = r.Body
		} else if r.Body != first {
			c.t.Errorf("member %d's keys differ from member %d's after healing:\n%s\nvs\n%s", id, ids[0], r.Body, first)
		}
	}
	// Read every key ever used from every member, into the history.
	epochs := int(time.Duration(c.hist.now())/epochLength) + 1
	for _, id := range ids {
		fc := &faultClient{c: c, id: 1000 + id, seen: map[string]seenRev{}}
		for e := range epochs {
			for g := range groupsPerEpoch {
				for s := range kvhistory.GroupSize {
					fc.getV1(context.Background(), c.api(id), fmt.Sprintf("e%d-g%d", e, g), s)
				}
			}
		}
	}
	c.report()
}

// report logs the tallies, checks the history, and fails the test on any
// violation, unexpected answer or member that died by itself.
func (c *faultCluster) report() {
	c.t.Helper()
	timeout := time.Minute
	if *soak > 0 {
		timeout = 10 * time.Minute
	}
	res := c.hist.check(c.t, timeout)
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.hist
	h.mu.Lock()
	defer h.mu.Unlock()
	faults := 0
	var kinds []string
	for _, k := range slices.Sorted(maps.Keys(c.faults)) {
		faults += c.faults[k]
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, c.faults[k]))
	}
	verdict := map[porcupine.CheckResult]string{porcupine.Ok: "linearizable", porcupine.Illegal: "NOT linearizable", porcupine.Unknown: "unknown (check timed out)"}[res]
	c.t.Logf("RESULT %s: network=%s ops=%d acked-writes=%d indeterminate=%d refused-writes=%d reads-without-answer=%d faults=%d (%s) unexpected-exits=%d unexpected-answers=%d verdict=%s",
		c.t.Name(), c.net.name(), len(h.ops), h.ackedWrites, h.indeterminate, h.refusedWrites, h.failedReads, faults, strings.Join(kinds, " "),
		len(c.deadExits), len(h.unexpected), verdict)
	for _, e := range c.deadExits {
		c.t.Errorf("unexpected exit: %s", e)
	}
	for i, u := range h.unexpected {
		if i == 20 {
			c.t.Errorf("... and %d more unexpected answers", len(h.unexpected)-20)
			break
		}
		c.t.Errorf("unexpected answer: %s", u)
	}
	if res != porcupine.Ok {
		c.t.Errorf("the history is %s", verdict)
	}
}

// faultTest runs one fault schedule against an n-member cluster.
func faultTest(t *testing.T, net peerNet, members, clients int, nemeses []nemesis, short time.Duration) {
	c := newFaultCluster(t, net, members)
	stop := c.startClients(clients)
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()
	c.runSchedule(nemeses, scheduleLength(short))
	stop()
	stopped = true
	c.finish()
}

// skipFaultScheduleIfShort keeps the fault schedules, each half a minute or
// more, out of the fast loop (go test -short); ./test.sh runs them.
func skipFaultScheduleIfShort(t *testing.T) {
	if testing.Short() {
		t.Skip("a fault schedule runs for half a minute or more; ./test.sh runs it")
	}
}

var allNemeses = []nemesis{
	nemesisKill, nemesisKillLeader, nemesisPause, nemesisPauseLeader,
	nemesisIsolate, nemesisIsolateLeader, nemesisMuteLeader, nemesisChurn,
}

// Three members through the proxies, every nemesis, mixed.
func TestFaultMixedThree(t *testing.T) {
	skipFaultScheduleIfShort(t)
	faultTest(t, newProxyNet(t), 3, 6, allNemeses, 40*time.Second)
}

// Five members: minority partitions, the leader cut off, kills and pauses.
func TestFaultFive(t *testing.T) {
	skipFaultScheduleIfShort(t)
	faultTest(t, newProxyNet(t), 5, 8, []nemesis{
		nemesisMinority, nemesisIsolateLeader, nemesisMuteLeader, nemesisKillLeader, nemesisPauseLeader, nemesisKill,
	}, 25*time.Second)
}

// Three members in network namespaces: real links go down.
func TestFaultNetns(t *testing.T) {
	skipFaultScheduleIfShort(t)
	faultTest(t, newNetnsNet(t), 3, 6, []nemesis{
		nemesisIsolateLeader, nemesisIsolate, nemesisKill, nemesisPauseLeader,
	}, 25*time.Second)
}
