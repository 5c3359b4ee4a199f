package main

// Cluster identity and reconfiguration (README, "Cluster identity"): peer URLs compared
// canonically, member IDs, strict reconfiguration, the cluster ID and what
// a member does with a peer message it must not trust.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// peerURLForms are the forms of a peer URL that the issue found accepted as
// new members beside the member at http://127.0.0.1:<port>, and what each
// must be now: an alias of that member (409) or refused as malformed (400).
func peerURLForms(port string) []struct {
	url  string
	want error
} {
	return []struct {
		url  string
		want error
	}{
		{"http://localhost:" + port, errConflict},
		{"http://LOCALHOST:" + port, errConflict},
		{"http://localhost.:" + port, errConflict},
		{"http://127.0.0.1:0" + port, errConflict},
		{"http://[::ffff:127.0.0.1]:" + port, errConflict},
		{"HTTP://127.0.0.1:" + port, errConflict},
		{"http://127.1:" + port, errInvalid},
		{"http://0x7f000001:" + port, errInvalid},
		{"http://2130706433:" + port, errInvalid},
		{"http://127.0.0.01:" + port, errInvalid},
		{"http://x:y@127.0.0.1:" + port, errInvalid},
		{"http://127.0.0.1:" + port + "#frag", errInvalid},
		{"http://127.0.0.1:" + port + "?x", errInvalid},
		{"http://127.0.0.1:" + port + "/path", errInvalid},
		{"http://:" + port, errInvalid},
		{"http://127.0.0.1:0", errInvalid},
		{"http://127.0.0.1:65536", errInvalid},
		{"http://127.0.0.1", errInvalid},
	}
}

func TestCanonicalPeerURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"http://127.0.0.1:9021", "http://127.0.0.1:9021"},
		{"HTTP://LocalHost:09021", "http://127.0.0.1:9021"},
		{"https://[::ffff:127.0.0.1]:1", "https://127.0.0.1:1"},
		{"http://[::1]:2", "http://[::1]:2"},
		{"http://[0:0:0:0:0:0:0:1]:2", "http://[::1]:2"},
		{"http://Node-1.Example.com:3", "http://node-1.example.com:3"},
		{"http://10.0.0.7:4", "http://10.0.0.7:4"},
	} {
		if got, err := canonicalPeerURL(tc.in); err != nil || got != tc.want {
			t.Errorf("canonicalPeerURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range peerURLForms("9021") {
		_, err := canonicalPeerURL(tc.url)
		if tc.want == errInvalid && !errors.Is(err, errInvalid) {
			t.Errorf("canonicalPeerURL(%q) = %v, want it refused", tc.url, err)
		}
		if tc.want == errConflict && err != nil {
			t.Errorf("canonicalPeerURL(%q) = %v, want an alias of 127.0.0.1:9021", tc.url, err)
		}
	}
}

// The apply-time check (the same on every member) refuses every form too.
func TestMembershipCheckCanonical(t *testing.T) {
	c := newCluster()
	c.apply(addConfChange(1, "http://127.0.0.1:9021", false))
	for _, tc := range peerURLForms("9021") {
		cc := addConfChange(2, tc.url, true)
		if err := c.checkApply(cc, &raftpb.ConfState{Voters: []uint64{1}}); !errors.Is(err, tc.want) {
			t.Errorf("checkApply(add learner 2 at %q) = %v, want %v", tc.url, err, tc.want)
		}
	}
	if err := c.checkAdd(2, "http://127.0.0.1:9022"); err != nil {
		t.Errorf("checkAdd of another port = %v, want nil", err)
	}
}

func addConfChange(id uint64, u string, learner bool) *raftpb.ConfChange {
	kind := raftpb.ConfChangeAddNode
	if learner {
		kind = raftpb.ConfChangeAddLearnerNode
	}
	return &raftpb.ConfChange{Type: &kind, NodeId: proto.Uint64(id), Context: []byte(u)}
}

// Every form is refused at the API too, through both routes, and nothing
// enters the membership.
func TestPeerURLFormsRefusedAtAPI(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	base := c.members[0].srv.URL
	port := c.peers[0][strings.LastIndex(c.peers[0], ":")+1:]
	code := map[error]int{errConflict: http.StatusConflict, errInvalid: http.StatusBadRequest}
	for _, tc := range peerURLForms(port) {
		if r := postMember(t, base, 0, tc.url, true); r.code != code[tc.want] {
			t.Errorf("POST /v1/members learner %q = %d %q, want %d", tc.url, r.code, r.body, code[tc.want])
		}
		if r := do(t, http.MethodPost, base+"/7", tc.url); r.code != code[tc.want] {
			t.Errorf("POST /7 %q = %d %q, want %d", tc.url, r.code, r.body, code[tc.want])
		}
	}
	if ms := mustMembers(t, base); len(ms) != 1 {
		t.Errorf("members after refused adds: %+v, want only member 1", ms)
	}
	putOK(t, base, "still", "serving")
}

// {"id":0} is a bad ID like any other; a missing ID still means "pick one".
// Adding and removing the largest ID does not stop later assignments.
func TestMemberIDZeroAndLargestID(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lns, urls := freeListeners(t, 3)
	closeAtEnd(t, lns...)
	base := c.members[0].srv.URL

	r := do(t, http.MethodPost, base+"/v1/members", fmt.Sprintf(`{"id":0,"peerURL":%q,"learner":true}`, urls[0]))
	if r.code != http.StatusBadRequest || !strings.Contains(r.body, "member ID 0") {
		t.Errorf(`POST /v1/members {"id":0} = %d %q, want 400 member ID 0`, r.code, r.body)
	}
	top := fmt.Sprint(uint64(math.MaxUint64))
	// Three voters up of four: allowed (strict reconfiguration).
	if r := do(t, http.MethodPost, base+"/"+top, urls[1]); r.code != http.StatusNoContent {
		t.Fatalf("POST /%s = %d %q, want 204", top, r.code, r.body)
	}
	if r := do(t, http.MethodDelete, base+"/"+top, ""); r.code != http.StatusNoContent {
		t.Fatalf("DELETE /%s = %d %q, want 204", top, r.code, r.body)
	}
	id := addLearner(t, base, urls[2])
	if id != 4 {
		t.Errorf("ID picked after %s was used = %d, want 4 (the lowest never used)", top, id)
	}
}

func TestNextIDAfterLargest(t *testing.T) {
	c := newCluster()
	c.apply(addConfChange(1, "http://127.0.0.1:1", false))
	c.apply(addConfChange(math.MaxUint64, "http://127.0.0.1:2", false))
	rm := raftpb.ConfChangeRemoveNode
	c.apply(&raftpb.ConfChange{Type: &rm, NodeId: proto.Uint64(math.MaxUint64)})
	if got := c.nextID(); got != 2 {
		t.Errorf("nextID = %d, want 2", got)
	}
	c.apply(addConfChange(2, "http://127.0.0.1:3", false))
	if got := c.nextID(); got != 3 {
		t.Errorf("nextID = %d, want 3", got)
	}
}

// A one-member cluster asked to add a voter that never starts used to lose
// its leader for good; now the add is refused with the learner hint, the
// member keeps serving, and a learner can be added and removed.
func TestStrictReconfigurationOneMember(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	lns, urls := freeListeners(t, 1)
	closeAtEnd(t, lns...)
	base := c.members[0].srv.URL
	r := do(t, http.MethodPost, base+"/2", urls[0])
	if r.code != http.StatusConflict || !strings.Contains(r.body, "learner") {
		t.Fatalf("POST /2 (never started) = %d %q, want 409 with the learner hint", r.code, r.body)
	}
	if r := postMember(t, base, 2, urls[0], false); r.code != http.StatusConflict {
		t.Errorf("POST /v1/members voter 2 = %d %q, want 409", r.code, r.body)
	}
	putOK(t, base, "after-refused-add", "1")
	if r := do(t, http.MethodGet, base+"/health", ""); r.code != http.StatusOK {
		t.Errorf("/health = %d %q, want 200", r.code, r.body)
	}
	id := addLearner(t, base, urls[0])
	if r := do(t, http.MethodDelete, fmt.Sprintf("%s/v1/members/%d", base, id), ""); r.code != http.StatusNoContent {
		t.Errorf("DELETE learner %d = %d %q, want 204", id, r.code, r.body)
	}
	putOK(t, base, "after-learner", "1")
}

// Three voters up may add a fourth that never starts (3 of 4 is a quorum)
// and remove it again. With one voter down, removing an up voter would
// leave one of two up: refused; removing the down one is allowed.
func TestStrictReconfigurationThreeMembers(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lns, urls := freeListeners(t, 1)
	closeAtEnd(t, lns...)
	lead := c.waitLeader()
	via := c.byID(lead).srv.URL
	if r := do(t, http.MethodPost, via+"/4", urls[0]); r.code != http.StatusNoContent {
		t.Fatalf("POST /4 with three voters up = %d %q, want 204", r.code, r.body)
	}
	if r := do(t, http.MethodDelete, via+"/4", ""); r.code != http.StatusNoContent {
		t.Fatalf("DELETE /4 (never started) = %d %q, want 204", r.code, r.body)
	}
	putOK(t, via, "after-4", "1")

	var down, other uint64
	for _, m := range c.members {
		if m.cfg.ID != lead {
			if down == 0 {
				down = m.cfg.ID
			} else {
				other = m.cfg.ID
			}
		}
	}
	c.byID(down).stop()
	eventually(t, 10*time.Second, func() error {
		if !c.byID(lead).rc.transport.ActiveSince(types.ID(down)).IsZero() {
			return fmt.Errorf("the leader still sees member %d up", down)
		}
		return nil
	})
	r := do(t, http.MethodDelete, fmt.Sprintf("%s/%d", via, other), "")
	if r.code != http.StatusConflict || !strings.Contains(r.body, "quorum") {
		t.Errorf("DELETE /%d with member %d down = %d %q, want 409 (quorum)", other, down, r.code, r.body)
	}
	if r := do(t, http.MethodDelete, fmt.Sprintf("%s/%d", via, down), ""); r.code != http.StatusNoContent {
		t.Errorf("DELETE /%d (down) = %d %q, want 204", down, r.code, r.body)
	}
	putOK(t, via, "after-removal", "1")
}

// A joining member learns the cluster ID from its peers and reports it; with
// no peer answering it gives up with a clear error within its bound.
func TestJoinLearnsClusterID(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	want := mustStatus(t, c.members[0].srv.URL).ClusterID
	if want == "" || want == types.ID(legacyClusterID).String() {
		t.Fatalf("clusterID in /v1/status = %q, want a derived one", want)
	}
	lns, urls := freeListeners(t, 1)
	id := addLearner(t, c.members[1].srv.URL, urls[0])
	m := c.join(t, id, lns[0])
	if got := mustStatus(t, m.srv.URL).ClusterID; got != want {
		t.Errorf("the joined member reports cluster %q, want %q", got, want)
	}
	waitMembersOn(t, []*member{m}, map[uint64]bool{1: false, 2: false, 3: false, id: true})

	// Restarted, it reads the ID back from its WAL (no peer asked).
	m.stop()
	cfg := m.cfg
	cfg.PeerListener = relisten(t, urls[0])
	cfg.Metrics = newMetrics()
	m = startMember(t, cfg)
	if got := mustStatus(t, m.srv.URL).ClusterID; got != want {
		t.Errorf("after a restart the joined member reports cluster %q, want %q", got, want)
	}
}

func TestJoinWithoutPeersFails(t *testing.T) {
	lns, urls := freeListeners(t, 2)
	lns[0].Close() // nobody answers at member 1's URL
	cfg := testRaftConfig(t, 2, urls, t.TempDir())
	cfg.Join = true
	cfg.PeerListener = lns[1]
	start := time.Now()
	_, err := newRaftNode(cfg, func() func(w io.Writer) error { return nil }, make(chan proposal), make(chan proposal), nil)
	if err == nil || !strings.Contains(err.Error(), "cluster ID") {
		t.Fatalf("joining with no peer up: %v, want an error about the cluster ID", err)
	}
	if took := time.Since(start); took > 2*joinLookupTimeouts*cfg.electionTimeout() {
		t.Errorf("gave up after %v, want about %v", took, joinLookupTimeouts*cfg.electionTimeout())
	}
}

// A data dir written by an earlier version (empty WAL metadata) keeps the ID
// every earlier version used, so an upgraded cluster keeps talking.
func TestLegacyWALKeepsLegacyClusterID(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	putOK(t, c.members[0].srv.URL, "old", "data")
	m := c.members[0]
	m.stop()
	walDir := filepath.Join(c.dir, "raftexample-1")
	rewriteWALWithoutMetadata(t, walDir)

	cfg := m.cfg
	cfg.PeerListener = relisten(t, c.peers[0])
	cfg.Metrics = newMetrics()
	m = startMember(t, cfg)
	if got := mustStatus(t, m.srv.URL).ClusterID; got != types.ID(legacyClusterID).String() {
		t.Errorf("clusterID of a legacy data dir = %q, want %q", got, types.ID(legacyClusterID).String())
	}
	waitKeys(t, m.srv.URL, present(map[string]string{"old": "data"}))
	putOK(t, m.srv.URL, "new", "data")
}

// rewriteWALWithoutMetadata makes walDir look as earlier versions wrote it.
func rewriteWALWithoutMetadata(t *testing.T, walDir string) {
	t.Helper()
	lg := testLogger(t)
	w, err := wal.Open(lg, walDir, &walpb.Snapshot{Index: proto.Uint64(0), Term: proto.Uint64(0)})
	if err != nil {
		t.Fatal(err)
	}
	md, st, ents, err := w.ReadAll()
	w.Close()
	if err != nil || len(md) == 0 {
		t.Fatalf("read WAL: %v (metadata %q)", err, md)
	}
	if err := os.RemoveAll(walDir); err != nil {
		t.Fatal(err)
	}
	w, err = wal.Create(lg, walDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Save(st, ents); err != nil {
		t.Fatal(err)
	}
	w.Close()
}

func TestWALMetadata(t *testing.T) {
	b := encodeWALMetadata(0xabc, 3)
	if id, err := decodeWALMetadata(b, 3); err != nil || id != 0xabc {
		t.Errorf("decode(encode(0xabc, 3)) = %x, %v", id, err)
	}
	if _, err := decodeWALMetadata(b, 4); err == nil {
		t.Errorf("metadata of member 3 accepted for member 4")
	}
	if id, err := decodeWALMetadata(nil, 1); err != nil || id != legacyClusterID {
		t.Errorf("empty metadata = %x, %v; want the legacy ID", id, err)
	}
	for _, bad := range []string{"{", `{"format":2,"clusterID":"1","memberID":1}`, `{"format":1,"clusterID":"zz","memberID":1}`} {
		if _, err := decodeWALMetadata([]byte(bad), 1); err == nil {
			t.Errorf("metadata %s accepted", bad)
		}
	}
	one := computeClusterID([]string{"http://127.0.0.1:1"}, "raftexample-cluster")
	three := computeClusterID([]string{"http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"}, "raftexample-cluster")
	other := computeClusterID([]string{"http://127.0.0.1:1"}, "other")
	alias := computeClusterID([]string{"http://localhost:01"}, "raftexample-cluster")
	if one == three || one == other || one != alias || one == legacyClusterID {
		t.Errorf("cluster IDs: one=%x three=%x other-token=%x alias=%x", one, three, other, alias)
	}
}

// No message from a peer can make raft trust something it must not.
func TestCheckPeerMessage(t *testing.T) {
	rc := &raftNode{cfg: raftConfig{ID: 1}, membership: newCluster()}
	rc.membership.apply(addConfChange(1, "http://127.0.0.1:1", false))
	rc.membership.apply(addConfChange(5, "http://127.0.0.1:5", false))
	rm := raftpb.ConfChangeRemoveNode
	rc.membership.apply(&raftpb.ConfChange{Type: &rm, NodeId: proto.Uint64(5)})
	rc.shared.lastIndex.Store(10)
	msg := func(typ raftpb.MessageType, from, to, index uint64, reject bool) *raftpb.Message {
		return &raftpb.Message{Type: &typ, From: &from, To: &to, Index: &index, Reject: &reject, Term: proto.Uint64(1)}
	}
	for _, tc := range []struct {
		name string
		m    *raftpb.Message
		ok   bool
	}{
		{"append ack within the log", msg(raftpb.MsgAppResp, 2, 1, 10, false), true},
		{"append ack beyond the log", msg(raftpb.MsgAppResp, 2, 1, 11, false), false},
		{"append rejection with a high index", msg(raftpb.MsgAppResp, 2, 1, 99, true), true},
		{"heartbeat from a peer not yet known", msg(raftpb.MsgHeartbeat, 7, 1, 0, false), true},
		{"addressed to another member", msg(raftpb.MsgHeartbeat, 2, 3, 0, false), false},
		{"claims to come from this member", msg(raftpb.MsgVote, 1, 1, 0, false), false},
		{"from no member", msg(raftpb.MsgVote, 0, 1, 0, false), false},
		{"from a removed member", msg(raftpb.MsgVote, 5, 1, 0, false), false},
	} {
		if err := rc.checkPeerMessage(tc.m); (err == nil) != tc.ok {
			t.Errorf("%s: checkPeerMessage = %v, want accepted=%v", tc.name, err, tc.ok)
		}
	}

	rc.logger = testLogger(t)
	hb := msg(raftpb.MsgHeartbeat, 2, 1, 0, false)
	for _, tc := range []struct{ commit, want uint64 }{{0, 0}, {10, 10}, {11, 10}, {math.MaxUint64, 10}} {
		hb.Commit = proto.Uint64(tc.commit)
		if rc.clampHeartbeatCommit(hb); hb.GetCommit() != tc.want {
			t.Errorf("heartbeat commit %d with last index 10 became %d, want %d", tc.commit, hb.GetCommit(), tc.want)
		}
	}
}

// --cluster entries are checked at start: bad URLs, one address twice and
// an --id outside the list are flag errors (exit 2).
func TestClusterFlagValidation(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--cluster", "http://127.0.0.1:1,http://localhost:1"}, "same address"},
		{[]string{"--cluster", "http://127.0.0.1:1,http://127.0.0.1:01"}, "same address"},
		{[]string{"--cluster", "http://127.0.0.1:1,http://127.0.0.1:1"}, "same address"},
		{[]string{"--cluster", "http://127.0.0.1:1,http://x@127.0.0.1:2"}, "user info"},
		{[]string{"--cluster", "http://127.1:1"}, "four decimal numbers"},
		{[]string{"--cluster", "http://127.0.0.1:0"}, "port"},
		{[]string{"--id", "5", "--cluster", "http://127.0.0.1:1,http://127.0.0.1:2,http://127.0.0.1:3,http://127.0.0.1:4"}, "no entry in --cluster"},
		{[]string{"--id", "0"}, "no entry in --cluster"},
		{[]string{"--peer-cert-allowed-cn", "peer"}, "--peer-client-cert-auth"},
		{[]string{"--cluster", "https://127.0.0.1:1"}, "must start with http://"},
	} {
		var out, errOut bytes.Buffer
		if code := run(append(tc.args, "--data-dir", t.TempDir(), "--port", "0"), &out, &errOut); code != 2 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 mentioning %q", tc.args, code, errOut.String(), tc.want)
		}
	}
}

// The warning about a foreign cluster's peer is rate-limited per peer.
func TestForeignPeerWarningRateLimited(t *testing.T) {
	f := &foreignPeers{last: map[string]time.Time{}}
	now := time.Now()
	if !f.due("2/abc", now) || f.due("2/abc", now.Add(foreignWarnEvery/2)) || !f.due("3/abc", now) {
		t.Fatal("first report of each peer must be due, a repeat within the interval not")
	}
	if !f.due("2/abc", now.Add(foreignWarnEvery)) {
		t.Error("a repeat after the interval must be due")
	}
}

// An error the leader answered a forwarded membership request with is the
// one request error its status stands for, and nothing else: a remote 500
// is not errRemoved, a remote 503 is not errStopping.
func TestRemoteErrorIsExplicit(t *testing.T) {
	for code, kind := range map[int]error{400: errInvalid, 404: errNotFound, 409: errConflict, 503: errNoLeader, 504: errTimeout} {
		re := remoteError{msg: "from the leader", code: code}
		if !errors.Is(re, kind) || statusFor(re) != code {
			t.Errorf("remote %d: Is(%v) = %v, answered %d", code, kind, errors.Is(re, kind), statusFor(re))
		}
		for _, other := range []error{errInvalid, errNotFound, errConflict, errNoLeader, errTimeout, errStopping, errDropped, errRemoved, errCanceled} {
			if other != kind && errors.Is(re, other) {
				t.Errorf("remote %d Is %v too", code, other)
			}
		}
	}
	re := remoteError{msg: "boom", code: 500}
	for _, other := range []error{errRemoved, errStopping, errors.New("unrelated")} {
		if errors.Is(re, other) {
			t.Errorf("remote 500 Is %v", other)
		}
	}
	if statusFor(re) != 500 {
		t.Errorf("remote 500 answered %d", statusFor(re))
	}
}
