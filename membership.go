package main

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"

	"go.etcd.io/etcd/client/pkg/v3/types"
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

// validatePeerURL checks a peer URL the way rafthttp will use it and that it
// has a canonical form (clusterid.go), so a bad one is refused before it
// reaches the log.
func validatePeerURL(u string) error {
	if _, err := types.NewURLs([]string{u}); err != nil {
		return fmt.Errorf("%w: peer URL %q: %v", errInvalid, u, err)
	}
	_, err := canonicalPeerURL(u)
	return err
}

// checkAdd tells whether member id with peer URL u may join.
func (c *cluster) checkAdd(id uint64, u string) error {
	if id == 0 {
		return fmt.Errorf("%w: member ID 0", errInvalid)
	}
	if err := validatePeerURL(u); err != nil {
		return err
	}
	cu, _ := canonicalPeerURL(u) // validated above
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.removed[id] {
		return fmt.Errorf("%w: member ID %d was removed and cannot be used again", errConflict, id)
	}
	if _, ok := c.members[id]; ok {
		return fmt.Errorf("%w: member %d already exists", errConflict, id)
	}
	for other, ou := range c.members {
		if co, err := canonicalPeerURL(ou); ou == u || err == nil && co == cu {
			return fmt.Errorf("%w: peer URL %s is already used by member %d (%s)", errConflict, u, other, ou)
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
	case raftpb.ConfChangeAddNode:
		if isLearner(cs, cc.GetNodeId()) {
			return nil // promotion of a learner that is a member
		}
		return c.checkAdd(cc.GetNodeId(), string(cc.GetContext()))
	case raftpb.ConfChangeAddLearnerNode:
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
		if u := string(cc.GetContext()); u != "" || c.members[cc.GetNodeId()] == "" {
			c.members[cc.GetNodeId()] = u
		}
	case raftpb.ConfChangeRemoveNode:
		delete(c.members, cc.GetNodeId())
		c.removed[cc.GetNodeId()] = true
	}
}

func isLearner(cs *raftpb.ConfState, id uint64) bool {
	return slices.Contains(cs.GetLearners(), id)
}

// peerURL returns member id's peer URL, or "" when it is not a member.
func (c *cluster) peerURL(id uint64) string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.members[id]
}

// nextID returns an ID above every ID ever used in the cluster or, once
// the largest ID has been used, the lowest ID never used: an operator's
// choice of a huge ID must not stop later additions.
func (c *cluster) nextID() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	used := func(id uint64) bool { _, ok := c.members[id]; return ok || c.removed[id] }
	var top uint64
	for id := range c.members {
		top = max(top, id)
	}
	for id := range c.removed {
		top = max(top, id)
	}
	if top < math.MaxUint64 {
		return top + 1
	}
	id := uint64(1)
	for used(id) {
		id++
	}
	return id
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
