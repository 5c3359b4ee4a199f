package main

// Operating a cluster through the HTTP API (docs/API.md), on in-process members:
// learners and promotion, leader transfer, removing the leader, concurrent
// membership changes, ID reuse, /health, /metrics and /v1/status.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/raft/v3/tracker"
)

// opTimeout bounds the waits of these tests for a cluster to converge.
const opTimeout = 15 * time.Second

// mustJSON decodes body into v or fails the test.
func mustJSON(t testing.TB, what, body string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("%s: body %q is not the JSON expected: %v", what, body, err)
	}
}

// listMembers asks base for GET /v1/members.
func listMembers(base string) ([]memberInfo, error) {
	r, err := send(context.Background(), testHTTP, http.MethodGet, base+"/v1/members", "")
	if err != nil {
		return nil, err
	}
	if r.code != http.StatusOK {
		return nil, fmt.Errorf("GET %s/v1/members = %d %q", base, r.code, r.body)
	}
	var out struct {
		Members []memberInfo `json:"members"`
	}
	if err := json.Unmarshal([]byte(r.body), &out); err != nil {
		return nil, fmt.Errorf("GET %s/v1/members: %v in %q", base, err, r.body)
	}
	return out.Members, nil
}

func mustMembers(t *testing.T, base string) []memberInfo {
	t.Helper()
	ms, err := listMembers(base)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func mustStatus(t *testing.T, base string) memberStatus {
	t.Helper()
	r := do(t, http.MethodGet, base+"/v1/status", "")
	if r.code != http.StatusOK {
		t.Fatalf("GET %s/v1/status = %d %q", base, r.code, r.body)
	}
	var st memberStatus
	mustJSON(t, "GET /v1/status", r.body, &st)
	return st
}

// postMember sends POST /v1/members; id 0 leaves the ID to the cluster.
func postMember(t *testing.T, base string, id uint64, peerURL string, learner bool) reply {
	t.Helper()
	body := map[string]any{"peerURL": peerURL, "learner": learner}
	if id != 0 {
		body["id"] = id
	}
	b, _ := json.Marshal(body)
	return do(t, http.MethodPost, base+"/v1/members", string(b))
}

// addLearner adds a learner through base and returns its ID.
func addLearner(t *testing.T, base, peerURL string) uint64 {
	t.Helper()
	r := postMember(t, base, 0, peerURL, true)
	if r.code != http.StatusCreated {
		t.Fatalf("POST /v1/members learner %s = %d %q, want 201", peerURL, r.code, r.body)
	}
	var m memberInfo
	mustJSON(t, "POST /v1/members", r.body, &m)
	if m.ID == 0 || m.PeerURL != peerURL || !m.Learner {
		t.Fatalf("POST /v1/members answered %+v, want a learner at %s with an ID", m, peerURL)
	}
	return m.ID
}

// closeAtEnd closes listeners held for members that never start.
func closeAtEnd(t *testing.T, lns ...net.Listener) {
	t.Cleanup(func() {
		for _, ln := range lns {
			ln.Close()
		}
	})
}

// join starts member id, already added to the cluster, on ln.
func (c *testCluster) join(t *testing.T, id uint64, ln net.Listener) *member {
	t.Helper()
	if int(id) != len(c.peers)+1 {
		t.Fatalf("member %d cannot join a cluster with %d peer URLs", id, len(c.peers))
	}
	c.peers = append(c.peers, "http://"+ln.Addr().String())
	cfg := testRaftConfig(t, id, slices.Clone(c.peers), c.dir)
	cfg.Join = true
	cfg.PeerListener = ln
	m := startMember(t, cfg)
	c.members = append(c.members, m)
	return m
}

// byID returns the running member with that ID.
func (c *testCluster) byID(id uint64) *member {
	for _, m := range c.members {
		if m != nil && m.cfg.ID == id {
			return m
		}
	}
	c.t.Fatalf("member %d is not running", id)
	return nil
}

// index returns the position of member id in c.members.
func (c *testCluster) index(id uint64) int {
	for i, m := range c.members {
		if m != nil && m.cfg.ID == id {
			return i
		}
	}
	c.t.Fatalf("member %d is not running", id)
	return -1
}

// running returns the members that have not been stopped on purpose.
func (c *testCluster) running() []*member {
	var out []*member
	for _, m := range c.members {
		if m != nil {
			out = append(out, m)
		}
	}
	return out
}

// tryPut writes key=value through base. A 503 (no leader, a dropped
// proposal) or 504 (a proposal lost in an election) is retried, a bounded
// number of times: writing the same value again is harmless.
func tryPut(base, key, value string) error {
	deadline := time.Now().Add(opTimeout)
	var last string
	for try := 0; try < 100 && time.Now().Before(deadline); try++ {
		r, err := send(context.Background(), testHTTP, http.MethodPut, base+"/"+key, value)
		switch {
		case err != nil:
			return err
		case r.code == http.StatusNoContent:
			return nil
		case r.code != http.StatusServiceUnavailable && r.code != http.StatusGatewayTimeout:
			return fmt.Errorf("PUT %s/%s = %d %q", base, key, r.code, r.body)
		}
		last = fmt.Sprintf("%d %s", r.code, strings.TrimSpace(r.body))
		time.Sleep(20 * time.Millisecond) // back off before asking again
	}
	return fmt.Errorf("PUT %s/%s still failing: %s", base, key, last)
}

// putMany writes n keys prefix-0.. through the bases in turn, eight at a
// time, and returns what it wrote.
func putMany(t *testing.T, bases []string, prefix string, n int) map[string]string {
	t.Helper()
	kv := map[string]string{}
	for i := range n {
		kv[fmt.Sprintf("%s-%d", prefix, i)] = strconv.Itoa(i)
	}
	keys := make(chan string, n)
	for _, k := range slices.Sorted(maps.Keys(kv)) {
		keys <- k
	}
	close(keys)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for k := range keys {
				if err := tryPut(bases[w%len(bases)], k, kv[k]); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return kv
}

// getLinearizable requires GET base/key (linearizable by default) to answer
// 200 value. A 503 or 504 (an election under way) is asked again.
func getLinearizable(t *testing.T, base, key, value string) {
	t.Helper()
	eventually(t, opTimeout, func() error {
		r := do(t, http.MethodGet, base+"/"+key, "")
		switch {
		case r.code == http.StatusServiceUnavailable || r.code == http.StatusGatewayTimeout:
			return fmt.Errorf("GET %s/%s = %d %q", base, key, r.code, r.body)
		case r.code != http.StatusOK || r.body != value:
			t.Fatalf("GET %s/%s = %d %q, want 200 %q", base, key, r.code, r.body, value)
		}
		return nil
	})
}

// promoteWhenReady retries POST /v1/members/{id}/promote through base while
// the learner is behind (409) or the cluster is electing (503).
func promoteWhenReady(t *testing.T, base string, id uint64) (refusals int) {
	t.Helper()
	eventually(t, opTimeout, func() error {
		r := do(t, http.MethodPost, fmt.Sprintf("%s/v1/members/%d/promote", base, id), "")
		switch r.code {
		case http.StatusNoContent:
			return nil
		case http.StatusConflict, http.StatusServiceUnavailable:
			refusals++
			return fmt.Errorf("promote %d: %d %q", id, r.code, r.body)
		}
		t.Fatalf("promote %d = %d %q, want 204, or 409/503 while it catches up", id, r.code, r.body)
		return nil
	})
	return refusals
}

// membersMatch checks a GET /v1/members answer against want (ID -> learner).
func membersMatch(got []memberInfo, want map[uint64]bool) error {
	ids := map[uint64]bool{}
	for _, m := range got {
		ids[m.ID] = m.Learner
	}
	if !maps.Equal(ids, want) {
		return fmt.Errorf("members (ID: learner) %v, want %v", ids, want)
	}
	if !slices.IsSortedFunc(got, func(a, b memberInfo) int { return cmpUint(a.ID, b.ID) }) {
		return fmt.Errorf("members not sorted by ID: %+v", got)
	}
	return nil
}

// waitMembers waits until every running member lists exactly want.
func (c *testCluster) waitMembers(t *testing.T, want map[uint64]bool) {
	t.Helper()
	waitMembersOn(t, c.running(), want)
}

// waitMembersOn waits until each of ms lists exactly want.
func waitMembersOn(t *testing.T, ms []*member, want map[uint64]bool) {
	t.Helper()
	for _, m := range ms {
		eventually(t, opTimeout, func() error {
			got, err := listMembers(m.srv.URL)
			if err != nil {
				return err
			}
			if err := membersMatch(got, want); err != nil {
				return fmt.Errorf("member %d: %w", m.cfg.ID, err)
			}
			return nil
		})
	}
}

// waitAllSeeLeader waits until every running member reports lead as leader,
// in raft and in GET /v1/members.
func (c *testCluster) waitAllSeeLeader(t *testing.T, lead uint64) {
	t.Helper()
	for _, m := range c.running() {
		eventually(t, opTimeout, func() error {
			if l := m.rc.leader.current(); l != lead {
				return fmt.Errorf("member %d sees leader %d, want %d", m.cfg.ID, l, lead)
			}
			ms, err := listMembers(m.srv.URL)
			if err != nil {
				return err
			}
			for _, x := range ms {
				if x.Leader != (x.ID == lead) {
					return fmt.Errorf("member %d lists %+v while %d leads", m.cfg.ID, x, lead)
				}
			}
			return nil
		})
	}
}

// waitRemoved waits for m to stop because it was removed.
func waitRemoved(t *testing.T, m *member) {
	t.Helper()
	select {
	case err := <-m.rc.errorC:
		if !errors.Is(err, errRemoved) {
			t.Fatalf("member %d stopped with %v, want errRemoved", m.cfg.ID, err)
		}
		t.Logf("member %d stopped: %v", m.cfg.ID, err)
	case <-time.After(opTimeout):
		t.Fatalf("member %d did not stop after its removal", m.cfg.ID)
	}
}

// 1. A learner joins, catches up, is promoted, and then serves as a voter.
func TestLearnerCatchesUpAndIsPromoted(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	kv := map[string]string{}
	for i := range 10 {
		k, v := fmt.Sprintf("early-%d", i), strconv.Itoa(i)
		putOK(t, c.members[i%3].srv.URL, k, v)
		kv[k] = v
	}

	lns, urls := freeListeners(t, 1)
	id := addLearner(t, c.members[1].srv.URL, urls[0])
	if id != 4 {
		t.Fatalf("new member got ID %d, want 4 (above every ID used)", id)
	}
	c.waitMembers(t, map[uint64]bool{1: false, 2: false, 3: false, 4: true})
	for _, m := range mustMembers(t, c.members[0].srv.URL) {
		if want := append(slices.Clone(c.peers), urls[0])[m.ID-1]; m.PeerURL != want {
			t.Errorf("member %d listed with peer URL %s, want %s", m.ID, m.PeerURL, want)
		}
	}

	m4 := c.join(t, id, lns[0])
	for k, v := range putMany(t, []string{c.members[0].srv.URL, c.members[2].srv.URL}, "catchup", 30) {
		kv[k] = v
	}

	// Ask a member that does not lead: it must ask the leader about the
	// learner's progress over the peer port.
	lead := c.waitLeader()
	via := c.members[0]
	if via.cfg.ID == lead {
		via = c.members[1]
	}
	refused := promoteWhenReady(t, via.srv.URL, id)
	t.Logf("promotion through member %d (leader %d) succeeded after %d refusals", via.cfg.ID, lead, refused)

	c.waitMembers(t, map[uint64]bool{1: false, 2: false, 3: false, 4: false})
	if cs := m4.rc.confStateNow(); !slices.Contains(cs.GetVoters(), 4) || slices.Contains(cs.GetLearners(), 4) {
		t.Fatalf("member 4's own configuration after promotion: %v", cs)
	}
	for _, k := range slices.Sorted(maps.Keys(kv)) {
		getLinearizable(t, m4.srv.URL, k, kv[k])
	}
	putOK(t, m4.srv.URL, "from-4", "yes")
	getLinearizable(t, c.members[1].srv.URL, "from-4", "yes")

	if r := do(t, http.MethodPost, via.srv.URL+"/v1/members/4/promote", ""); r.code != http.StatusConflict {
		t.Errorf("promoting voter 4 again = %d %q, want 409", r.code, r.body)
	}
	if r := do(t, http.MethodPost, via.srv.URL+"/v1/members/9/promote", ""); r.code != http.StatusNotFound {
		t.Errorf("promoting unknown member 9 = %d %q, want 404", r.code, r.body)
	}
}

// 2. A learner more than promoteMaxLag entries behind, or never started, is
// not promoted; once it catches up it is.
func TestPromoteRefusedWhileLearnerFarBehind(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lns, urls := freeListeners(t, 2)
	closeAtEnd(t, lns[1]) // learner 5 never starts
	voters := c.members[:3]
	bases := []string{voters[0].srv.URL, voters[1].srv.URL, voters[2].srv.URL}

	id4 := addLearner(t, bases[0], urls[0])
	m4 := c.join(t, id4, lns[0])
	putOK(t, bases[0], "warm", "up")
	eventually(t, opTimeout, func() error {
		lead := c.byID(c.waitLeader())
		st := lead.rc.node.Status()
		if pr := st.Progress[id4]; pr.State != tracker.StateReplicate || pr.Match < st.GetCommit() {
			return fmt.Errorf("learner %d seen by leader %d: %v at %d of %d", id4, lead.cfg.ID, pr.State, pr.Match, st.GetCommit())
		}
		return nil
	})

	// Learner 4 no longer hears from anyone, nor they from it.
	for _, m := range voters {
		m.rc.transport.CutPeer(types.ID(id4))
		m4.rc.transport.CutPeer(types.ID(m.cfg.ID))
	}
	id5 := addLearner(t, bases[1], urls[1])
	kv := putMany(t, bases, "lag", promoteMaxLag+20)
	waitMembersOn(t, voters, map[uint64]bool{1: false, 2: false, 3: false, id4: true, id5: true})

	for _, m := range voters { // the leader answers itself; the others ask it
		r := do(t, http.MethodPost, fmt.Sprintf("%s/v1/members/%d/promote", m.srv.URL, id4), "")
		var e jsonError
		mustJSON(t, "promote", r.body, &e)
		if r.code != http.StatusConflict || e.Code != http.StatusConflict || !strings.Contains(e.Error, "behind") {
			t.Errorf("promoting learner %d, %d entries behind, through member %d = %d %q, want 409 saying it is behind",
				id4, promoteMaxLag+20, m.cfg.ID, r.code, r.body)
		}
	}
	if r := do(t, http.MethodPost, fmt.Sprintf("%s/v1/members/%d/promote", bases[2], id5), ""); r.code != http.StatusConflict || !strings.Contains(r.body, "behind") {
		t.Errorf("promoting learner %d that never started = %d %q, want 409 saying it is behind", id5, r.code, r.body)
	}
	for _, b := range bases {
		if err := membersMatch(mustMembers(t, b), map[uint64]bool{1: false, 2: false, 3: false, id4: true, id5: true}); err != nil {
			t.Fatalf("after refused promotions, %s: %v", b, err)
		}
	}

	// The voters still work.
	for i, b := range bases {
		putOK(t, b, fmt.Sprintf("after-%d", i), "ok")
		getLinearizable(t, bases[(i+1)%3], fmt.Sprintf("after-%d", i), "ok")
	}

	// Reconnected, learner 4 catches up and can be promoted.
	for _, m := range voters {
		m.rc.transport.MendPeer(types.ID(id4))
		m4.rc.transport.MendPeer(types.ID(m.cfg.ID))
	}
	promoteWhenReady(t, bases[1], id4)
	c.waitMembers(t, map[uint64]bool{1: false, 2: false, 3: false, id4: false, id5: true})
	last := fmt.Sprintf("lag-%d", promoteMaxLag+19)
	getLinearizable(t, m4.srv.URL, last, kv[last])
}

// 3. POST /v1/leader moves leadership to the member named, through any member.
func TestTransferLeadership(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lead := c.waitLeader()
	var others []uint64
	for _, m := range c.members {
		if m.cfg.ID != lead {
			others = append(others, m.cfg.ID)
		}
	}
	transfer := func(via *member, to uint64) reply {
		t.Helper()
		return do(t, http.MethodPost, via.srv.URL+"/v1/leader", fmt.Sprintf(`{"id":%d}`, to))
	}

	// Through the leader.
	if r := transfer(c.byID(lead), others[0]); r.code != http.StatusNoContent {
		t.Fatalf("transfer %d -> %d through the leader = %d %q, want 204", lead, others[0], r.code, r.body)
	}
	c.waitAllSeeLeader(t, others[0])

	// Through a member that neither leads nor is the target.
	if r := transfer(c.byID(others[1]), lead); r.code != http.StatusNoContent {
		t.Fatalf("transfer %d -> %d through member %d = %d %q, want 204", others[0], lead, others[1], r.code, r.body)
	}
	c.waitAllSeeLeader(t, lead)
	// To the leader itself: nothing to do.
	if r := transfer(c.byID(others[0]), lead); r.code != http.StatusNoContent {
		t.Fatalf("transfer to the current leader %d = %d %q, want 204", lead, r.code, r.body)
	}

	// Refusals.
	lns, urls := freeListeners(t, 1)
	closeAtEnd(t, lns...)
	learner := addLearner(t, c.members[0].srv.URL, urls[0])
	c.waitMembers(t, map[uint64]bool{1: false, 2: false, 3: false, learner: true})
	for _, m := range c.members {
		for _, tc := range []struct {
			body string
			want int
		}{
			{fmt.Sprintf(`{"id":%d}`, learner), http.StatusConflict},
			{`{"id":99}`, http.StatusNotFound},
			{`{"id":0}`, http.StatusBadRequest},
			{`{}`, http.StatusBadRequest},
			{`{"id":"two"}`, http.StatusBadRequest},
			{`{"id":2,"force":true}`, http.StatusBadRequest},
		} {
			r := do(t, http.MethodPost, m.srv.URL+"/v1/leader", tc.body)
			var e jsonError
			mustJSON(t, "POST /v1/leader "+tc.body, r.body, &e)
			if r.code != tc.want || e.Code != tc.want || e.Error == "" {
				t.Errorf("POST /v1/leader %s through member %d = %d %q, want %d with a message", tc.body, m.cfg.ID, r.code, r.body, tc.want)
			}
		}
		if r := do(t, http.MethodGet, m.srv.URL+"/v1/leader", ""); r.code != http.StatusMethodNotAllowed {
			t.Errorf("GET /v1/leader = %d, want 405", r.code)
		}
	}
	putOK(t, c.members[2].srv.URL, "after", "transfers")
	getLinearizable(t, c.members[0].srv.URL, "after", "transfers")
}

// 4. Removing the leader moves leadership first; the old leader stops and
// the rest go on. Done twice: through the leader, then through a follower.
func TestRemoveLeader(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	putOK(t, c.members[0].srv.URL, "before", "1")
	want := map[uint64]bool{1: false, 2: false, 3: false}

	// Through the leader itself.
	lead := c.waitLeader()
	old := c.byID(lead)
	// The member answering is the one removed: it must still say 204.
	r := do(t, http.MethodDelete, fmt.Sprintf("%s/v1/members/%d", old.srv.URL, lead), "")
	if r.code != http.StatusNoContent {
		t.Errorf("DELETE /v1/members/%d through the leader = %d %q, want 204", lead, r.code, r.body)
	}
	waitRemoved(t, old)
	c.members[c.index(lead)] = nil
	delete(want, lead)
	lead2 := c.waitLeader()
	if lead2 == lead {
		t.Fatalf("removed member %d still leads", lead)
	}
	c.waitMembers(t, want)
	for i, m := range c.running() {
		putOK(t, m.srv.URL, fmt.Sprintf("two-%d", i), "ok")
	}

	// Through the follower, of a two-member cluster's leader.
	var follower *member
	for _, m := range c.running() {
		if m.cfg.ID != lead2 {
			follower = m
		}
	}
	old = c.byID(lead2)
	if r = do(t, http.MethodDelete, fmt.Sprintf("%s/v1/members/%d", follower.srv.URL, lead2), ""); r.code != http.StatusNoContent {
		t.Fatalf("DELETE /v1/members/%d through follower %d = %d %q, want 204", lead2, follower.cfg.ID, r.code, r.body)
	}
	waitRemoved(t, old)
	c.members[c.index(lead2)] = nil
	delete(want, lead2)
	if got := c.waitLeader(); got != follower.cfg.ID {
		t.Fatalf("the last member %d sees leader %d", follower.cfg.ID, got)
	}
	c.waitMembers(t, want)
	putOK(t, follower.srv.URL, "one", "ok")
	for k, v := range map[string]string{"before": "1", "two-0": "ok", "two-1": "ok", "one": "ok"} {
		getLinearizable(t, follower.srv.URL, k, v)
	}
	if r := do(t, http.MethodDelete, fmt.Sprintf("%s/v1/members/%d", follower.srv.URL, follower.cfg.ID), ""); r.code != http.StatusConflict {
		t.Errorf("removing the last voter = %d %q, want 409", r.code, r.body)
	}
}

// 5a. Membership changes sent to two members at once: raft takes one change
// at a time, so at least one succeeds, every other answer is 409, and the
// membership that results is exactly the successful changes.
func TestConcurrentMembershipChangesOnTwoMembers(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lns, urls := freeListeners(t, 3) // for the learners added; none starts
	closeAtEnd(t, lns...)
	want := map[uint64]bool{1: false, 2: false, 3: false}
	nextID, nextURL := uint64(10), 0
	type change struct {
		via          *member
		method, path string
		body         string
		apply        func() // what success does to want
	}
	add := func(via *member) change {
		id, u := nextID, urls[nextURL]
		nextID++
		nextURL++
		return change{via, http.MethodPost, "/v1/members", fmt.Sprintf(`{"id":%d,"peerURL":%q,"learner":true}`, id, u),
			func() { want[id] = true }}
	}
	remove := func(via *member, id uint64) change {
		return change{via, http.MethodDelete, fmt.Sprintf("/v1/members/%d", id), "", func() { delete(want, id) }}
	}

	for round := range 2 {
		var pair [2]change
		switch round {
		case 0:
			pair = [2]change{add(c.members[0]), add(c.members[1])}
		default: // remove a learner through one member, add through another
			var learner uint64
			for id, l := range want {
				if l && (learner == 0 || id < learner) {
					learner = id
				}
			}
			if learner == 0 {
				t.Fatalf("round %d: no learner to remove", round)
			}
			pair = [2]change{remove(c.members[2], learner), add(c.members[1])}
		}
		var replies [2]reply
		var errs [2]error
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, ch := range pair {
			wg.Go(func() {
				<-start
				replies[i], errs[i] = send(context.Background(), testHTTP, ch.method, ch.via.srv.URL+ch.path, ch.body)
			})
		}
		close(start)
		wg.Wait()
		ok := 0
		for i, ch := range pair {
			r := replies[i]
			switch {
			case errs[i] != nil:
				t.Fatalf("round %d: %s %s through member %d: %v", round, ch.method, ch.path, ch.via.cfg.ID, errs[i])
			case r.code == http.StatusCreated || r.code == http.StatusNoContent:
				ok++
				ch.apply()
			case r.code == http.StatusConflict:
				t.Logf("round %d: %s %s %s through member %d: 409 %s", round, ch.method, ch.path, ch.body, ch.via.cfg.ID, strings.TrimSpace(r.body))
			default:
				t.Errorf("round %d: %s %s %s through member %d = %d %q, want success or 409",
					round, ch.method, ch.path, ch.body, ch.via.cfg.ID, r.code, r.body)
			}
		}
		if ok == 0 {
			t.Errorf("round %d: both concurrent changes failed", round)
		}
		c.waitMembers(t, want)
	}
	putOK(t, c.members[0].srv.URL, "still", "works")
}

// 5b. A removed member's ID is never used again, whichever way it is asked
// for, and assigned IDs are above every ID ever used.
func TestRemovedMemberIDsAreNotReused(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lns, urls := freeListeners(t, 4)
	closeAtEnd(t, lns...)
	base := c.members[0].srv.URL

	id := addLearner(t, base, urls[0])
	c.waitMembers(t, map[uint64]bool{1: false, 2: false, 3: false, id: true})
	if r := do(t, http.MethodDelete, fmt.Sprintf("%s/v1/members/%d", c.members[1].srv.URL, id), ""); r.code != http.StatusNoContent {
		t.Fatalf("DELETE /v1/members/%d = %d %q, want 204", id, r.code, r.body)
	}
	c.waitMembers(t, map[uint64]bool{1: false, 2: false, 3: false})

	for _, m := range c.members {
		for _, learner := range []bool{true, false} {
			r := postMember(t, m.srv.URL, id, urls[1], learner)
			if r.code != http.StatusConflict || !strings.Contains(r.body, "removed") {
				t.Errorf("POST /v1/members id %d (removed) learner=%v through member %d = %d %q, want 409 saying it was removed",
					id, learner, m.cfg.ID, r.code, r.body)
			}
		}
		if r := do(t, http.MethodPost, fmt.Sprintf("%s/%d", m.srv.URL, id), urls[1]); r.code != http.StatusConflict {
			t.Errorf("POST /%d (removed) through member %d = %d %q, want 409", id, m.cfg.ID, r.code, r.body)
		}
	}
	if r := do(t, http.MethodDelete, fmt.Sprintf("%s/v1/members/%d", base, id), ""); r.code != http.StatusNotFound {
		t.Errorf("DELETE /v1/members/%d again = %d %q, want 404", id, r.code, r.body)
	}
	// In use: ID or URL.
	if r := postMember(t, base, 2, urls[1], true); r.code != http.StatusConflict {
		t.Errorf("POST /v1/members with member 2's ID = %d %q, want 409", r.code, r.body)
	}
	if r := postMember(t, base, 0, c.peers[2], true); r.code != http.StatusConflict {
		t.Errorf("POST /v1/members with member 3's peer URL = %d %q, want 409", r.code, r.body)
	}
	// Refused requests changed nothing.
	c.waitMembers(t, map[uint64]bool{1: false, 2: false, 3: false})

	next := addLearner(t, c.members[2].srv.URL, urls[2])
	if next <= id {
		t.Errorf("ID assigned after removing %d is %d, want one above it", id, next)
	}
	c.waitMembers(t, map[uint64]bool{1: false, 2: false, 3: false, next: true})
}

// 6. /health follows quorum: 200 with one, 503 with a reason without, 200
// again once it is back.
func TestHealthFollowsQuorum(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	type health struct {
		Health string `json:"health"`
		Reason string `json:"reason"`
	}
	check := func(m *member, query string) (reply, health) {
		t.Helper()
		r := do(t, http.MethodGet, m.srv.URL+"/health"+query, "")
		var h health
		mustJSON(t, "GET /health"+query, r.body, &h)
		return r, h
	}
	healthy := func(m *member, query string) error {
		r, h := check(m, query)
		if r.code != http.StatusOK || h.Health != "true" || h.Reason != "" {
			return fmt.Errorf("member %d: GET /health%s = %d %q, want 200 {\"health\":\"true\"}", m.cfg.ID, query, r.code, r.body)
		}
		return nil
	}
	unhealthy := func(m *member, query string) error {
		r, h := check(m, query)
		if r.code != http.StatusServiceUnavailable || h.Health != "false" || h.Reason == "" {
			return fmt.Errorf("member %d: GET /health%s = %d %q, want 503 {\"health\":\"false\"} with a reason", m.cfg.ID, query, r.code, r.body)
		}
		if secs, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || secs < 1 {
			t.Errorf("503 from /health has Retry-After %q, want seconds", r.header.Get("Retry-After"))
		}
		return nil
	}
	for _, m := range c.members {
		for _, q := range []string{"", "?serializable"} {
			if err := healthy(m, q); err != nil {
				t.Fatal(err)
			}
		}
		if r := do(t, http.MethodPost, m.srv.URL+"/health", ""); r.code != http.StatusMethodNotAllowed {
			t.Errorf("POST /health = %d, want 405", r.code)
		}
	}

	survivor := c.members[0]
	stopped := []int{1, 2}
	for _, i := range stopped {
		c.members[i].stop()
	}
	lost := time.Now()
	eventually(t, opTimeout, func() error { return unhealthy(survivor, "") })
	eventually(t, opTimeout, func() error { return unhealthy(survivor, "?serializable") })
	took, bound := time.Since(lost), 20*survivor.cfg.electionTimeout()
	t.Logf("/health and /health?serializable turned 503 within %v (election timeout %v)",
		took.Round(time.Millisecond), survivor.cfg.electionTimeout())
	if took > bound {
		t.Errorf("/health took %v to notice the lost quorum, want under %v", took, bound)
	}
	if err := unhealthy(survivor, ""); err != nil {
		t.Fatalf("without quorum, after ?serializable went 503: %v", err)
	}

	for _, i := range stopped {
		cfg := c.members[i].cfg
		c.members[i] = nil
		cfg.PeerListener = relisten(t, c.peers[i])
		cfg.Metrics = newMetrics()
		c.members[i] = startMember(t, cfg)
	}
	c.waitLeader()
	for _, m := range c.members {
		for _, q := range []string{"", "?serializable"} {
			eventually(t, opTimeout, func() error { return healthy(m, q) })
		}
	}
}

// scrape fetches and parses base/metrics.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	r := do(t, http.MethodGet, base+"/metrics", "")
	if r.code != http.StatusOK {
		t.Fatalf("GET %s/metrics = %d %q", base, r.code, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("GET /metrics Content-Type %q, want the text format", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(r.body))
	if err != nil {
		t.Fatalf("GET %s/metrics is not Prometheus text: %v", base, err)
	}
	return fams
}

// metricValue returns the value of the series of family name with the given
// labels (a counter, gauge or untyped value; a histogram's sample count),
// and whether that series exists.
func metricValue(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		if !maps.Equal(have, labels) {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		case m.GetUntyped() != nil:
			return m.GetUntyped().GetValue(), true
		case m.GetHistogram() != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// 7. /metrics is Prometheus text with our metrics and etcd's, and they move.
func TestMetrics(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	base := c.members[0].srv.URL
	before := scrape(t, base)
	kvBefore, _ := metricValue(before, "raftexample_http_requests_total", map[string]string{"route": "kv", "code": "204"})
	committedBefore := map[uint64]float64{}
	for _, m := range c.members {
		committedBefore[m.cfg.ID], _ = metricValue(scrape(t, m.srv.URL), "raftexample_proposals_committed_total", nil)
	}

	const n = 12
	for i := range n {
		if err := tryPut(base, fmt.Sprintf("m-%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	getLinearizable(t, base, "m-0", "v") // one ReadIndex round

	for _, m := range c.members {
		var fams map[string]*dto.MetricFamily
		eventually(t, opTimeout, func() error { // followers apply a moment later
			fams = scrape(t, m.srv.URL)
			if keys, _ := metricValue(fams, "raftexample_keys", nil); keys != n {
				return fmt.Errorf("member %d: raftexample_keys = %v, want %d", m.cfg.ID, keys, n)
			}
			return nil
		})
		for name, typ := range map[string]dto.MetricType{
			"raftexample_proposals_pending":             dto.MetricType_GAUGE,
			"raftexample_proposals_committed_total":     dto.MetricType_COUNTER,
			"raftexample_apply_duration_seconds":        dto.MetricType_HISTOGRAM,
			"raftexample_read_index_duration_seconds":   dto.MetricType_HISTOGRAM,
			"raftexample_snapshot_duration_seconds":     dto.MetricType_HISTOGRAM,
			"raftexample_leader_changes_total":          dto.MetricType_COUNTER,
			"raftexample_has_leader":                    dto.MetricType_GAUGE,
			"raftexample_is_leader":                     dto.MetricType_GAUGE,
			"raftexample_keys":                          dto.MetricType_GAUGE,
			"raftexample_http_requests_total":           dto.MetricType_COUNTER,
			"raftexample_http_request_duration_seconds": dto.MetricType_HISTOGRAM,
			// etcd's own, from the default registry.
			"etcd_disk_wal_fsync_duration_seconds":   dto.MetricType_HISTOGRAM,
			"etcd_disk_wal_write_bytes_total":        dto.MetricType_GAUGE,
			"etcd_network_peer_sent_bytes_total":     dto.MetricType_COUNTER,
			"etcd_network_peer_received_bytes_total": dto.MetricType_COUNTER,
			"etcd_network_active_peers":              dto.MetricType_GAUGE,
			"go_goroutines":                          dto.MetricType_GAUGE,
		} {
			if f := fams[name]; f == nil || f.GetType() != typ {
				t.Errorf("member %d: /metrics has no %s %s (got %v)", m.cfg.ID, typ, name, f.GetType())
			}
		}
		if f := fams["raftexample_proposals_failed_total"]; f != nil {
			for _, s := range f.GetMetric() {
				if len(s.GetLabel()) != 1 || s.GetLabel()[0].GetName() != "reason" {
					t.Errorf("proposals_failed_total series with labels %v, want just reason", s.GetLabel())
				}
			}
		}
		committed, _ := metricValue(fams, "raftexample_proposals_committed_total", nil)
		if committed < committedBefore[m.cfg.ID]+n {
			t.Errorf("member %d: proposals_committed_total went from %v to %v after %d writes", m.cfg.ID, committedBefore[m.cfg.ID], committed, n)
		}
		if changes, _ := metricValue(fams, "raftexample_leader_changes_total", nil); changes < 1 {
			t.Errorf("member %d: leader_changes_total = %v, want at least 1", m.cfg.ID, changes)
		}
		if has, _ := metricValue(fams, "raftexample_has_leader", nil); has != 1 {
			t.Errorf("member %d: has_leader = %v, want 1", m.cfg.ID, has)
		}
		if v, _ := metricValue(fams, "raftexample_proposals_pending", nil); v != 0 {
			t.Errorf("member %d: proposals_pending = %v with nothing in flight", m.cfg.ID, v)
		}
		if fsyncs, _ := metricValue(fams, "etcd_disk_wal_fsync_duration_seconds", nil); fsyncs == 0 {
			t.Errorf("member %d: no WAL fsyncs counted", m.cfg.ID)
		}
		var rafthttp bool
		for name := range fams {
			rafthttp = rafthttp || strings.HasPrefix(name, "etcd_network_peer_")
		}
		if !rafthttp {
			t.Errorf("member %d: no etcd_network_peer_* (rafthttp) metrics", m.cfg.ID)
		}
	}

	after := scrape(t, base)
	if kv, _ := metricValue(after, "raftexample_http_requests_total", map[string]string{"route": "kv", "code": "204"}); kv != kvBefore+n {
		t.Errorf(`http_requests_total{route="kv",code="204"} went from %v to %v after %d PUTs`, kvBefore, kv, n)
	}
	if v, _ := metricValue(after, "raftexample_http_requests_total", map[string]string{"route": "kv", "code": "200"}); v < 1 {
		t.Errorf(`http_requests_total{route="kv",code="200"} = %v after a GET`, v)
	}
	if v, _ := metricValue(after, "raftexample_http_requests_total", map[string]string{"route": "metrics", "code": "200"}); v < 1 {
		t.Errorf(`http_requests_total{route="metrics",code="200"} = %v after scrapes`, v)
	}
	if v, _ := metricValue(after, "raftexample_http_request_duration_seconds", map[string]string{"route": "kv"}); v < n+1 {
		t.Errorf(`http_request_duration_seconds{route="kv"} counted %v requests, want at least %d`, v, n+1)
	}
	if v, _ := metricValue(after, "raftexample_read_index_duration_seconds", nil); v < 1 {
		t.Errorf("read_index_duration_seconds counted %v rounds after a linearizable GET", v)
	}
	if v, _ := metricValue(after, "raftexample_apply_duration_seconds", nil); v < 1 {
		t.Errorf("apply_duration_seconds counted %v batches", v)
	}
	// Exactly one member says it leads, the one they all follow. (Asked
	// again should an election slip in between.)
	eventually(t, opTimeout, func() error {
		lead := c.waitLeader()
		var leaders []uint64
		for _, m := range c.members {
			v, ok := metricValue(scrape(t, m.srv.URL), "raftexample_is_leader", nil)
			if !ok || (v != 0 && v != 1) {
				return fmt.Errorf("member %d: is_leader %v (present %v)", m.cfg.ID, v, ok)
			}
			if v == 1 {
				leaders = append(leaders, m.cfg.ID)
			}
		}
		if len(leaders) != 1 || leaders[0] != lead {
			return fmt.Errorf("members %v say is_leader 1; the leader is %d", leaders, lead)
		}
		return nil
	})
}

// 8. GET /v1/status agrees with the cluster and the writes made.
func TestStatusIsConsistent(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *raftConfig) { cfg.SnapshotCount = 5 })
	base := c.members[1].srv.URL
	const n = 10
	var lastRev uint64
	for i := range n {
		eventually(t, opTimeout, func() error {
			r := do(t, http.MethodPut, fmt.Sprintf("%s/v1/kv/s-%d", base, i), "v")
			if r.code != http.StatusNoContent {
				return fmt.Errorf("PUT /v1/kv/s-%d = %d %q", i, r.code, r.body)
			}
			rev, err := strconv.ParseUint(strings.Trim(r.header.Get("ETag"), `"`), 10, 64)
			if err != nil || rev <= lastRev {
				t.Fatalf("PUT /v1/kv/s-%d: ETag %q after revision %d", i, r.header.Get("ETag"), lastRev)
			}
			lastRev = rev
			return nil
		})
	}

	// Every member has applied the writes and a snapshot (saved in the
	// background), and all agree on the leader and term. Asked again should
	// an election slip in between.
	var lead uint64
	statuses := map[uint64]memberStatus{}
	eventually(t, opTimeout, func() error {
		lead = c.waitLeader()
		for _, m := range c.members {
			st := mustStatus(t, m.srv.URL)
			statuses[m.cfg.ID] = st
			wantState := "StateFollower"
			if m.cfg.ID == lead {
				wantState = "StateLeader"
			}
			switch {
			case st.AppliedIndex < lastRev || st.CommitIndex < lastRev || st.Keys != n:
				return fmt.Errorf("member %d: applied %d, commit %d, keys %d; want index %d and %d keys",
					m.cfg.ID, st.AppliedIndex, st.CommitIndex, st.Keys, lastRev, n)
			case st.SnapshotIndex == 0 || st.SnapshotBytes == 0:
				return fmt.Errorf("member %d: no snapshot yet with snapshot count 5 and %d applied", m.cfg.ID, st.AppliedIndex)
			case st.Leader != lead || st.RaftState != wantState:
				return fmt.Errorf("member %d reports leader %d as %s; want leader %d, %s", m.cfg.ID, st.Leader, st.RaftState, lead, wantState)
			case st.Term != statuses[lead].Term && statuses[lead].Term != 0:
				return fmt.Errorf("member %d at term %d, the leader at %d", m.cfg.ID, st.Term, statuses[lead].Term)
			}
		}
		return nil
	})

	for id, st := range statuses {
		if st.ID != id {
			t.Errorf("member %d reports id %d", id, st.ID)
		}
		if st.Term == 0 {
			t.Errorf("member %d reports term 0", id)
		}
		if st.AppliedIndex > st.CommitIndex {
			t.Errorf("member %d: applied %d beyond commit %d", id, st.AppliedIndex, st.CommitIndex)
		}
		if st.SnapshotIndex > st.AppliedIndex {
			t.Errorf("member %d: snapshot index %d beyond applied %d", id, st.SnapshotIndex, st.AppliedIndex)
		}
		if st.WALBytes <= 0 {
			t.Errorf("member %d: walBytes %d", id, st.WALBytes)
		}
		if st.Version != memberVersion() {
			t.Errorf("member %d: version %q, want %q", id, st.Version, memberVersion())
		}
		if st.UptimeSeconds <= 0 {
			t.Errorf("member %d: uptimeSeconds %v", id, st.UptimeSeconds)
		}
		if err := membersMatch(st.Members, map[uint64]bool{1: false, 2: false, 3: false}); err != nil {
			t.Errorf("member %d status: %v", id, err)
		}
		for _, x := range st.Members {
			if x.PeerURL != c.peers[x.ID-1] || x.Leader != (x.ID == lead) {
				t.Errorf("member %d status lists %+v; peer URL %s, leader %d", id, x, c.peers[x.ID-1], lead)
			}
		}
	}
	if r := do(t, http.MethodPost, base+"/v1/status", ""); r.code != http.StatusMethodNotAllowed {
		t.Errorf("POST /v1/status = %d, want 405", r.code)
	}
}
