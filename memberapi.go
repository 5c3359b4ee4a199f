package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/etcd/pkg/v3/idutil"
	"go.etcd.io/etcd/pkg/v3/wait"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// promoteMaxLag is how far behind the leader's commit index a learner may be
// and still be promoted to voter: a voter that cannot keep up would slow
// every commit, or cost the cluster its quorum.
const promoteMaxLag = 100

// memberInfo describes one member for the API.
type memberInfo struct {
	ID      uint64 `json:"id"`
	PeerURL string `json:"peerURL"`
	Learner bool   `json:"learner"`
	Leader  bool   `json:"leader"`
}

// memberChange is one membership request. Every member accepts them, but
// only the leader carries them out: raft's leader silently turns a change
// proposed while another is unapplied into an empty entry, and only the
// leader's log shows every change in flight. Other members forward the
// request to the leader over the peer port.
type memberChange struct {
	Op      changeOp `json:"op"`
	ID      uint64   `json:"id"` // 0 for add: the leader picks one
	PeerURL string   `json:"peerURL,omitempty"`
	Learner bool     `json:"learner,omitempty"`
}

// changeOp names a membership change on the wire between members.
type changeOp string

const (
	opAddMember    changeOp = "add"
	opPromote      changeOp = "promote"
	opRemoveMember changeOp = "remove"
)

// changeResult tells the requesting member what the leader did.
type changeResult struct {
	ID    uint64 `json:"id"`    // the member changed
	Index uint64 `json:"index"` // raft index of the applied change
}

// memberAPI serves membership requests: the leader checks them against the
// replicated membership, proposes them on confChangeC and waits until it
// has applied them; the member that took the request then waits until it
// has applied them too. It also moves leadership on request.
type memberAPI struct {
	memberLink
	confChangeC chan<- proposal
	ids         *idutil.Generator
	busy        sync.Mutex // one change at a time
}

// memberLink is what the membership API takes from raftNode.
type memberLink struct {
	raft            memberRaft
	membership      *cluster
	leader          *leaderWatch
	confWaits       wait.Wait    // membership change request ID -> confApplied
	peerClient      *http.Client // forwards requests to the leader
	self            uint64       // this member's ID
	electionTimeout time.Duration
	checkScheme     func(peerURL string) error // http:// or https://, as the peers use
}

// memberRaft is what the membership API asks of raftNode while it runs.
type memberRaft interface {
	confStateNow() *raftpb.ConfState // as of the last index published
	publishedIndex() uint64          // the last index handed to the kvstore
	publishedAt(index uint64) <-chan struct{}
	leadingSince() uint64  // the first entry of this member's leadership
	lastConfIndex() uint64 // the newest membership change in the log
	removedSelf() bool     // this member's removal is known
	peerActive(id uint64) bool
	status() raft.Status
	transferLeadership(ctx context.Context, lead, transferee uint64)
	stopped() <-chan struct{}
}

func newMemberAPI(l memberLink, confChangeC chan<- proposal) *memberAPI {
	return &memberAPI{memberLink: l, confChangeC: confChangeC, ids: idutil.NewGenerator(uint16(l.self), time.Now())}
}

var errChangeInProgress = fmt.Errorf("%w: another membership change is in progress; retry", errConflict)

// ListMembers lists the members in ID order.
func (m *memberAPI) ListMembers() []memberInfo {
	members, _ := m.membership.snapshot()
	cs, lead := m.raft.confStateNow(), m.leader.current()
	out := make([]memberInfo, 0, len(members))
	for id, u := range members {
		out = append(out, memberInfo{ID: id, PeerURL: u, Learner: isLearner(cs, id), Leader: id == lead})
	}
	slices.SortFunc(out, func(a, b memberInfo) int { return cmpUint(a.ID, b.ID) })
	return out
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// AddMember adds a member reachable at peerURL, as a learner or a voter. An
// id of 0 picks one above every ID the cluster ever used.
func (m *memberAPI) AddMember(ctx context.Context, id uint64, peerURL string, learner bool) (memberInfo, error) {
	if err := validatePeerURL(peerURL); err != nil {
		return memberInfo{}, err
	}
	res, err := m.change(ctx, memberChange{Op: opAddMember, ID: id, PeerURL: peerURL, Learner: learner})
	return memberInfo{ID: res.ID, PeerURL: peerURL, Learner: learner}, err
}

// PromoteMember makes learner id a voter, once it has caught up.
func (m *memberAPI) PromoteMember(ctx context.Context, id uint64) error {
	_, err := m.change(ctx, memberChange{Op: opPromote, ID: id})
	return err
}

// RemoveMember removes member id; if it leads, leadership moves first. The
// removed member shuts itself down.
func (m *memberAPI) RemoveMember(ctx context.Context, id uint64) error {
	if id == 0 {
		return fmt.Errorf("%w: member ID 0", errInvalid)
	}
	_, err := m.change(ctx, memberChange{Op: opRemoveMember, ID: id})
	return err
}

// change has the leader carry out mc, then waits until this member has
// applied it as well.
func (m *memberAPI) change(ctx context.Context, mc memberChange) (changeResult, error) {
	var res changeResult
	var err error
	switch lead := m.leader.current(); lead {
	case raft.None:
		return res, errNoLeader
	case m.self:
		res, err = m.changeAsLeader(ctx, mc)
	default:
		res, err = m.forward(ctx, lead, mc)
		var re remoteError
		if err != nil && mc.Op == opRemoveMember && !errors.As(err, &re) {
			// The leader may have removed itself and stopped before it
			// could answer; the membership will tell.
			err = nil
		}
	}
	if err != nil {
		return res, err
	}
	return res, m.waitApplied(ctx, mc, res.Index)
}

// waitApplied waits until this member has applied mc, which the leader
// applied at index. A removal is known to have applied when the member is
// gone: the leader cannot name the index when it removed itself.
func (m *memberAPI) waitApplied(ctx context.Context, mc memberChange, index uint64) error {
	for {
		published := m.raft.publishedIndex()
		if mc.Op == opRemoveMember && m.membership.isRemoved(mc.ID) || mc.Op != opRemoveMember && published >= index {
			return nil
		}
		select {
		case <-m.raft.publishedAt(published + 1):
		case <-m.raft.stopped():
			if m.removedItself(mc) {
				return nil
			}
			return errStopping
		case <-ctx.Done():
			return ctxErr(ctx)
		}
	}
}

// removedItself reports whether mc removed this member, which then learned
// of it, possibly from its peers before it applied the change itself.
func (m *memberAPI) removedItself(mc memberChange) bool {
	return mc.Op == opRemoveMember && mc.ID == m.self && m.raft.removedSelf()
}

// changeAsLeader checks and proposes mc on the leader.
func (m *memberAPI) changeAsLeader(ctx context.Context, mc memberChange) (changeResult, error) {
	if !m.busy.TryLock() {
		return changeResult{}, errChangeInProgress
	}
	defer m.busy.Unlock()
	// A new leader ignores membership changes until it has applied an entry
	// of its own term, and raft turns a change proposed while another is
	// unapplied into a no-op: wait for the first, refuse the second.
	select {
	case <-m.raft.publishedAt(m.raft.leadingSince()):
	case <-ctx.Done():
		return changeResult{}, ctxErr(ctx)
	}
	if m.raft.lastConfIndex() > m.raft.publishedIndex() {
		return changeResult{}, errChangeInProgress
	}
	if mc.Op == opRemoveMember && mc.ID == m.self {
		return m.removeLeader(ctx, mc)
	}
	cc, err := m.confChangeFor(&mc)
	if err != nil {
		return changeResult{}, err
	}
	index, err := m.propose(ctx, cc)
	return changeResult{ID: mc.ID, Index: index}, err
}

// removeLeader removes this member, the leader: it hands leadership to
// another voter and asks that one to carry out the removal.
func (m *memberAPI) removeLeader(ctx context.Context, mc memberChange) (changeResult, error) {
	cs := m.raft.confStateNow()
	if err := m.membership.checkRemove(mc.ID, cs); err != nil {
		return changeResult{}, err
	}
	next := otherVoter(cs, mc.ID)
	if err := m.TransferLeader(ctx, next); err != nil {
		return changeResult{}, fmt.Errorf("move leadership from %d to %d before removing it: %w", mc.ID, next, err)
	}
	res, err := m.forward(ctx, next, mc)
	var re remoteError
	if err != nil && !errors.As(err, &re) && m.removedItself(mc) {
		err = nil // removed, and stopped before the answer came
	}
	return res, err
}

// confChangeFor validates mc against the membership and returns the raft
// change that carries it out.
func (m *memberAPI) confChangeFor(mc *memberChange) (*raftpb.ConfChange, error) {
	cs := m.raft.confStateNow()
	id := mc.ID
	switch mc.Op {
	case opAddMember:
		if id == 0 {
			id = m.membership.nextID()
			mc.ID = id
		}
		if err := m.membership.checkAdd(id, mc.PeerURL); err != nil {
			return nil, err
		}
		if err := m.checkScheme(mc.PeerURL); err != nil {
			return nil, err
		}
		if !mc.Learner {
			if err := m.checkStrictReconfig(cs, *mc); err != nil {
				return nil, err
			}
		}
		kind := raftpb.ConfChangeAddNode
		if mc.Learner {
			kind = raftpb.ConfChangeAddLearnerNode
		}
		return &raftpb.ConfChange{Type: &kind, NodeId: &id, Context: []byte(mc.PeerURL)}, nil
	case opPromote:
		u := m.membership.peerURL(id)
		switch {
		case u == "":
			return nil, fmt.Errorf("%w: member %d is not in the cluster", errNotFound, id)
		case !isLearner(cs, id):
			return nil, fmt.Errorf("%w: member %d is already a voter", errConflict, id)
		}
		if err := m.learnerReady(id); err != nil {
			return nil, err
		}
		if err := m.checkStrictReconfig(cs, *mc); err != nil {
			return nil, err
		}
		kind := raftpb.ConfChangeAddNode
		return &raftpb.ConfChange{Type: &kind, NodeId: &id, Context: []byte(u)}, nil
	case opRemoveMember:
		if err := m.membership.checkRemove(id, cs); err != nil {
			return nil, err
		}
		if !isLearner(cs, id) {
			if err := m.checkStrictReconfig(cs, *mc); err != nil {
				return nil, err
			}
		}
		kind := raftpb.ConfChangeRemoveNode
		return &raftpb.ConfChange{Type: &kind, NodeId: &id}, nil
	default:
		return nil, fmt.Errorf("%w: unknown membership change %q", errInvalid, mc.Op)
	}
}

// checkStrictReconfig refuses a change of voters (adding one, promoting a
// learner, removing one) after which the voters that are up now would not
// be a quorum of the new configuration: raft would then lose its leader
// until the missing voters come up, and no further change could be made to
// bring them back. A voter is up when it is this member (the leader) or its
// rafthttp stream is active. A new member counts as down until it has
// started, which is why adding it as a learner first always works. Removing
// a member that is down never lowers the count of voters up.
func (m *memberAPI) checkStrictReconfig(cs *raftpb.ConfState, mc memberChange) error {
	next := map[uint64]bool{}
	for _, v := range cs.GetVoters() {
		next[v] = true
	}
	if mc.Op == opRemoveMember {
		delete(next, mc.ID)
	} else {
		next[mc.ID] = true
	}
	up := 0
	for v := range next {
		if v == m.self || m.raft.peerActive(v) {
			up++
		}
	}
	quorum := len(next)/2 + 1
	if up >= quorum {
		return nil
	}
	switch mc.Op {
	case opRemoveMember:
		return fmt.Errorf("%w: removing member %d would leave %d of %d voters up, fewer than the %d needed for a quorum; start the members that are down first",
			errConflict, mc.ID, up, len(next), quorum)
	default:
		return fmt.Errorf("%w: with member %d as a voter only %d of %d voters would be up, fewer than the %d needed for a quorum; add it as a learner first (\"learner\": true), start it, then promote it",
			errConflict, mc.ID, up, len(next), quorum)
	}
}

// otherVoter picks the lowest voter ID other than id.
func otherVoter(cs *raftpb.ConfState, id uint64) uint64 {
	var pick uint64
	for _, v := range cs.GetVoters() {
		if v != id && (pick == 0 || v < pick) {
			pick = v
		}
	}
	return pick
}

// TransferLeader makes voter id the leader and returns once this member sees
// it lead. raft abandons a transfer that does not finish within an election
// timeout, so it is asked again until ctx ends.
func (m *memberAPI) TransferLeader(ctx context.Context, id uint64) error {
	switch {
	case m.membership.peerURL(id) == "":
		return fmt.Errorf("%w: member %d is not in the cluster", errNotFound, id)
	case isLearner(m.raft.confStateNow(), id):
		return fmt.Errorf("%w: member %d is a learner and cannot lead", errConflict, id)
	}
	retry := time.NewTicker(m.electionTimeout)
	defer retry.Stop()
	for {
		changed := m.leader.changed()
		lead := m.leader.current()
		switch lead {
		case id:
			return nil
		case raft.None:
		default:
			m.raft.transferLeadership(ctx, lead, id)
		}
		select {
		case <-changed:
		case <-retry.C:
		case <-ctx.Done():
			return ctxErr(ctx)
		case <-m.raft.stopped():
			return errStopping
		}
	}
}

// propose submits cc and waits until this member has applied it; it returns
// the raft index of the change.
func (m *memberAPI) propose(ctx context.Context, cc *raftpb.ConfChange) (uint64, error) {
	if err := leaderKnown(ctx, m.leader); err != nil {
		return 0, err
	}
	id := m.ids.Next()
	cc.Id = &id
	x, err := proposeAndWait(ctx, m.confChangeC, proposal{confChange: cc}, m.confWaits, id, m.leader, m.raft.stopped())
	if err != nil {
		return 0, err
	}
	r, _ := x.(confApplied)
	return r.index, r.err
}

// confApplied is what raftNode tells a waiting membership request.
type confApplied struct {
	index uint64
	err   error // why the change was skipped, or nil
}

// learnerReady tells whether learner id is close enough to the leader to
// become a voter; it runs on the leader, the only member tracking others'
// logs.
func (m *memberAPI) learnerReady(id uint64) error {
	st := m.raft.status()
	if st.RaftState != raft.StateLeader {
		return fmt.Errorf("%w: member %d no longer leads", errNoLeader, m.self)
	}
	pr, ok := st.Progress[id]
	if !ok {
		return fmt.Errorf("%w: member %d is not in the cluster", errNotFound, id)
	}
	if pr.State != tracker.StateReplicate || pr.Match+promoteMaxLag < st.GetCommit() {
		return fmt.Errorf("%w: learner %d is behind the leader (has %d of %d entries); retry when it has caught up",
			errConflict, id, pr.Match, st.GetCommit())
	}
	return nil
}

// membersPath is served on the peer port: the leader carries out membership
// requests forwarded by other members.
const membersPath = "/raftexample/members"

func (m *memberAPI) forward(ctx context.Context, lead uint64, mc memberChange) (changeResult, error) {
	var res changeResult
	body, _ := json.Marshal(mc)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.membership.peerURL(lead)+membersPath, bytes.NewReader(body))
	if err != nil {
		return res, err
	}
	resp, err := m.peerClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return res, ctxErr(ctx)
		}
		return res, fmt.Errorf("%w: forward to leader %d: %v", errNoLeader, lead, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var je jsonError
		if err := json.NewDecoder(resp.Body).Decode(&je); err != nil || je.Code == 0 {
			return res, fmt.Errorf("%w: leader %d answered %s", errNoLeader, lead, resp.Status)
		}
		return res, remoteError{msg: je.Error, code: je.Code}
	}
	err = json.NewDecoder(resp.Body).Decode(&res)
	return res, err
}

// remoteError is an error the leader answered a forwarded request with. It
// is the one request error that its status code stands for (remoteKind),
// so it is answered here the way the leader answered it.
type remoteError struct {
	msg  string
	code int
}

func (e remoteError) Error() string { return e.msg }

func (e remoteError) Is(target error) bool {
	kind := remoteKind(e.code)
	return kind != nil && target == kind
}

// remoteKind maps a status a leader answers a membership request with to
// the request error it stands for; nil for any other status, which then
// answers 500 like an unexpected error.
func remoteKind(code int) error {
	switch code {
	case http.StatusBadRequest:
		return errInvalid
	case http.StatusNotFound:
		return errNotFound
	case http.StatusConflict:
		return errConflict
	case http.StatusServiceUnavailable:
		return errNoLeader // the leader could not serve it: ask again
	case http.StatusGatewayTimeout:
		return errTimeout
	}
	return nil
}

// serveForwarded carries out a membership request another member
// forwarded, if this member still leads. m is nil while the member starts.
func serveForwarded(w http.ResponseWriter, r *http.Request, m *memberAPI, self uint64, retryAfter time.Duration) {
	var mc memberChange
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err == nil {
		err = decodeStrictJSON(body, &mc)
	}
	var res changeResult
	switch {
	case r.Method != http.MethodPost:
		err = fmt.Errorf("%w: POST only", errInvalid)
	case err != nil:
		err = fmt.Errorf("%w: %v", errInvalid, err)
	case m == nil:
		err = fmt.Errorf("%w: member %d is starting", errStopping, self)
	case m.leader.current() != self:
		err = fmt.Errorf("%w: member %d does not lead", errNoLeader, self)
	default:
		res, err = m.changeAsLeader(r.Context(), mc)
	}
	if err != nil {
		code := statusFor(err)
		if code == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(retryAfter.Round(time.Second)/time.Second))))
		}
		writeJSON(w, code, jsonError{Error: err.Error(), Code: code})
		return
	}
	writeJSON(w, http.StatusOK, res)
}
