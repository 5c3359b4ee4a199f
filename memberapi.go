package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/etcd/pkg/v3/idutil"
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

// memberAPI serves membership requests: it checks them against the
// replicated membership, proposes them on confChangeC and waits until this
// member has applied them. It also moves leadership on request.
type memberAPI struct {
	rc          *raftNode
	confChangeC chan<- proposal
	ids         *idutil.Generator
	busy        sync.Mutex // one change at a time from this member
	peers       *http.Client
}

func newMemberAPI(rc *raftNode, confChangeC chan<- proposal) *memberAPI {
	return &memberAPI{
		rc:          rc,
		confChangeC: confChangeC,
		ids:         idutil.NewGenerator(uint16(rc.cfg.ID), time.Now()),
		peers:       rc.peerHTTP,
	}
}

var errChangeInProgress = fmt.Errorf("%w: another membership change is in progress; retry", errConflict)

// Members lists the members in ID order.
func (m *memberAPI) Members() []memberInfo {
	members, _ := m.rc.members.snapshot()
	cs, lead := m.rc.confStateNow(), m.rc.leader.current()
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
	if !m.busy.TryLock() {
		return memberInfo{}, errChangeInProgress
	}
	defer m.busy.Unlock()
	if id == 0 {
		id = m.rc.members.nextID()
	}
	if err := m.rc.members.checkAdd(id, peerURL); err != nil {
		return memberInfo{}, err
	}
	if err := m.rc.cfg.checkScheme(peerURL); err != nil {
		return memberInfo{}, err
	}
	kind := raftpb.ConfChangeAddNode
	if learner {
		kind = raftpb.ConfChangeAddLearnerNode
	}
	err := m.propose(ctx, &raftpb.ConfChange{Type: &kind, NodeId: &id, Context: []byte(peerURL)})
	return memberInfo{ID: id, PeerURL: peerURL, Learner: learner}, err
}

// PromoteMember makes learner id a voter, once it has caught up.
func (m *memberAPI) PromoteMember(ctx context.Context, id uint64) error {
	if !m.busy.TryLock() {
		return errChangeInProgress
	}
	defer m.busy.Unlock()
	u := m.rc.members.peerURL(id)
	switch {
	case u == "":
		return fmt.Errorf("%w: member %d is not in the cluster", errNotFound, id)
	case !isLearner(m.rc.confStateNow(), id):
		return fmt.Errorf("%w: member %d is already a voter", errConflict, id)
	}
	if err := m.learnerReady(ctx, id); err != nil {
		return err
	}
	kind := raftpb.ConfChangeAddNode
	return m.propose(ctx, &raftpb.ConfChange{Type: &kind, NodeId: &id, Context: []byte(u)})
}

// RemoveMember removes member id; if it leads, leadership moves first. The
// removed member shuts itself down.
func (m *memberAPI) RemoveMember(ctx context.Context, id uint64) error {
	if id == 0 {
		return fmt.Errorf("%w: member ID 0", errInvalid)
	}
	if !m.busy.TryLock() {
		return errChangeInProgress
	}
	defer m.busy.Unlock()
	cs := m.rc.confStateNow()
	if err := m.rc.members.checkRemove(id, cs); err != nil {
		return err
	}
	if id == m.rc.leader.current() {
		next := otherVoter(cs, id)
		if err := m.TransferLeader(ctx, next); err != nil {
			return fmt.Errorf("move leadership from %d to %d before removing it: %w", id, next, err)
		}
	}
	kind := raftpb.ConfChangeRemoveNode
	return m.propose(ctx, &raftpb.ConfChange{Type: &kind, NodeId: &id})
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
	rc := m.rc
	switch {
	case rc.members.peerURL(id) == "":
		return fmt.Errorf("%w: member %d is not in the cluster", errNotFound, id)
	case isLearner(rc.confStateNow(), id):
		return fmt.Errorf("%w: member %d is a learner and cannot lead", errConflict, id)
	}
	retry := time.NewTicker(rc.cfg.electionTimeout())
	defer retry.Stop()
	for {
		changed := rc.leader.changed()
		lead := rc.leader.current()
		switch lead {
		case id:
			return nil
		case raft.None:
		default:
			rc.node.TransferLeadership(ctx, lead, id)
		}
		select {
		case <-changed:
		case <-retry.C:
		case <-ctx.Done():
			return ctxErr(ctx)
		case <-rc.stopc:
			return errStopping
		}
	}
}

func (m *memberAPI) propose(ctx context.Context, cc *raftpb.ConfChange) error {
	rc := m.rc
	// raft turns a second unapplied change into a no-op; refuse it here.
	if rc.lastConfIndex.Load() > rc.applied.Load() {
		return errChangeInProgress
	}
	if err := leaderKnown(ctx, rc.leader); err != nil {
		return err
	}
	id := m.ids.Next()
	cc.Id = &id
	ch := rc.confWaits.Register(id)
	if err := submit(ctx, m.confChangeC, proposal{confChange: cc}, rc.stopc); err != nil {
		rc.confWaits.Trigger(id, nil)
		return err
	}
	x, err := await(ctx, ch, rc.leader, rc.stopc)
	if err != nil {
		rc.confWaits.Trigger(id, nil)
		return err
	}
	if err, _ := x.(error); err != nil {
		return err
	}
	return nil
}

// learnerProgress is how the leader sees a learner's log.
type learnerProgress struct {
	Match       uint64 `json:"match"`
	Commit      uint64 `json:"commit"`
	Replicating bool   `json:"replicating"`
}

// learnerReady tells whether learner id is close enough to the leader to
// become a voter. Only the leader tracks followers' logs, so a member that
// does not lead asks the leader over the peer connection.
func (m *memberAPI) learnerReady(ctx context.Context, id uint64) error {
	var p learnerProgress
	var err error
	switch lead := m.rc.leader.current(); lead {
	case raft.None:
		return errNoLeader
	case m.rc.cfg.ID:
		p, err = m.rc.learnerProgress(id)
	default:
		p, err = m.askLeader(ctx, lead, id)
	}
	if err != nil {
		return err
	}
	if !p.Replicating || p.Match+promoteMaxLag < p.Commit {
		return fmt.Errorf("%w: learner %d is behind the leader (has %d of %d entries); retry when it has caught up",
			errConflict, id, p.Match, p.Commit)
	}
	return nil
}

func (m *memberAPI) askLeader(ctx context.Context, lead, id uint64) (learnerProgress, error) {
	var p learnerProgress
	u := m.rc.members.peerURL(lead)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+progressPath+strconv.FormatUint(id, 10), nil)
	if err != nil {
		return p, err
	}
	resp, err := m.peers.Do(req)
	if err != nil {
		return p, fmt.Errorf("%w: ask leader %d about learner %d: %v", errNoLeader, lead, id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return p, fmt.Errorf("%w: leader %d answered %s about learner %d", errNoLeader, lead, resp.Status, id)
	}
	return p, json.NewDecoder(resp.Body).Decode(&p)
}

// progressPath is served on the peer port: the leader's view of a learner.
const progressPath = "/raftexample/progress/"

func (rc *raftNode) learnerProgress(id uint64) (learnerProgress, error) {
	st := rc.node.Status()
	if st.RaftState != raft.StateLeader {
		return learnerProgress{}, fmt.Errorf("%w: member %d no longer leads", errNoLeader, rc.cfg.ID)
	}
	pr, ok := st.Progress[id]
	if !ok {
		return learnerProgress{}, fmt.Errorf("%w: member %d is not in the cluster", errNotFound, id)
	}
	return learnerProgress{Match: pr.Match, Commit: st.GetCommit(), Replicating: pr.State == tracker.StateReplicate}, nil
}

func (rc *raftNode) serveProgress(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.URL.Path[len(progressPath):], 10, 64)
	if err != nil {
		http.Error(w, "bad member ID", http.StatusBadRequest)
		return
	}
	p, err := rc.learnerProgress(id)
	if err != nil {
		http.Error(w, err.Error(), statusFor(err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(p)
}
