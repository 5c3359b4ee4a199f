package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/pkg/v3/idutil"
	"go.etcd.io/raft/v3/raftpb"
)

// cluster is the replicated membership: every member's peer URL and every ID
// ever removed. It changes only when raftNode applies a committed membership
// change or restores a snapshot, so all members agree on it.
type cluster struct {
	mu      sync.RWMutex
	members map[uint64]string
	removed map[uint64]bool
}

func newCluster() *cluster {
	return &cluster{members: map[uint64]string{}, removed: map[uint64]bool{}}
}

// validatePeerURL checks a peer URL the way rafthttp will use it, so a bad
// one is refused before it reaches the log.
func validatePeerURL(u string) error {
	if _, err := types.NewURLs([]string{u}); err != nil {
		return fmt.Errorf("%w: peer URL %q: %v", errInvalid, u, err)
	}
	return nil
}

// checkAdd tells whether member id with peer URL u may join.
func (c *cluster) checkAdd(id uint64, u string) error {
	if id == 0 {
		return fmt.Errorf("%w: member ID 0", errInvalid)
	}
	if err := validatePeerURL(u); err != nil {
		return err
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.removed[id] {
		return fmt.Errorf("%w: member ID %d was removed and cannot be used again", errConflict, id)
	}
	if _, ok := c.members[id]; ok {
		return fmt.Errorf("%w: member %d already exists", errConflict, id)
	}
	for other, ou := range c.members {
		if ou == u {
			return fmt.Errorf("%w: peer URL %s is already used by member %d", errConflict, u, other)
		}
	}
	return nil
}

// checkRemove tells whether member id may be removed from a cluster whose
// raft configuration is cs.
func (c *cluster) checkRemove(id uint64, cs *raftpb.ConfState) error {
	c.mu.RLock()
	_, ok := c.members[id]
	c.mu.RUnlock()
	if !ok {
		return fmt.Errorf("%w: member %d is not in the cluster", errNotFound, id)
	}
	if voters := cs.GetVoters(); len(voters) == 1 && voters[0] == id {
		return fmt.Errorf("%w: member %d is the last voter", errConflict, id)
	}
	return nil
}

// checkApply validates a committed change. It depends only on replicated
// state, so every member reaches the same verdict.
func (c *cluster) checkApply(cc *raftpb.ConfChange, cs *raftpb.ConfState) error {
	switch cc.GetType() {
	case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
		return c.checkAdd(cc.GetNodeId(), string(cc.GetContext()))
	case raftpb.ConfChangeRemoveNode:
		return c.checkRemove(cc.GetNodeId(), cs)
	default:
		return fmt.Errorf("%w: unsupported membership change %s", errInvalid, cc.GetType())
	}
}

func (c *cluster) apply(cc *raftpb.ConfChange) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch cc.GetType() {
	case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
		c.members[cc.GetNodeId()] = string(cc.GetContext())
	case raftpb.ConfChangeRemoveNode:
		delete(c.members, cc.GetNodeId())
		c.removed[cc.GetNodeId()] = true
	}
}

func (c *cluster) isRemoved(id uint64) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.removed[id]
}

// snapshot returns copies of the members and the removed IDs (sorted).
func (c *cluster) snapshot() (map[uint64]string, []uint64) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return maps.Clone(c.members), slices.Sorted(maps.Keys(c.removed))
}

func (c *cluster) restore(members map[uint64]string, removed []uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.members = maps.Clone(members)
	c.removed = map[uint64]bool{}
	for _, id := range removed {
		c.removed[id] = true
	}
}

// memberAPI serves membership requests: it checks them against the
// replicated membership, proposes them on confChangeC and waits until this
// member has applied them.
type memberAPI struct {
	rc          *raftNode
	confChangeC chan<- proposal
	ids         *idutil.Generator
	busy        sync.Mutex // one change at a time from this member
}

func newMemberAPI(rc *raftNode, confChangeC chan<- proposal) *memberAPI {
	return &memberAPI{rc: rc, confChangeC: confChangeC, ids: idutil.NewGenerator(uint16(rc.cfg.ID), time.Now())}
}

// AddMember adds member id reachable at peerURL as a voter.
func (m *memberAPI) AddMember(ctx context.Context, id uint64, peerURL string) error {
	if err := m.rc.members.checkAdd(id, peerURL); err != nil {
		return err
	}
	nodeType := raftpb.ConfChangeAddNode
	return m.propose(ctx, &raftpb.ConfChange{Type: &nodeType, NodeId: &id, Context: []byte(peerURL)})
}

// RemoveMember removes member id. The removed member shuts itself down.
func (m *memberAPI) RemoveMember(ctx context.Context, id uint64) error {
	if id == 0 {
		return fmt.Errorf("%w: member ID 0", errInvalid)
	}
	if err := m.rc.members.checkRemove(id, m.rc.confStateNow()); err != nil {
		return err
	}
	nodeType := raftpb.ConfChangeRemoveNode
	return m.propose(ctx, &raftpb.ConfChange{Type: &nodeType, NodeId: &id})
}

var errChangeInProgress = fmt.Errorf("%w: another membership change is in progress; retry", errConflict)

func (m *memberAPI) propose(ctx context.Context, cc *raftpb.ConfChange) error {
	rc := m.rc
	if !m.busy.TryLock() {
		return errChangeInProgress
	}
	defer m.busy.Unlock()
	// raft turns a second unapplied change into a no-op; refuse it here.
	if rc.lastConfIndex.Load() > rc.applied.Load() {
		return errChangeInProgress
	}
	select {
	case <-rc.leader.lost():
		return errNoLeader
	default:
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
