package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// fakeMemberRaft is the raft a memberAPI sees, set by hand.
type fakeMemberRaft struct {
	cs                             *raftpb.ConfState
	published, leaderStart, lastCC uint64
	active                         map[uint64]bool
	stopc                          chan struct{}
}

func (f *fakeMemberRaft) confStateNow() *raftpb.ConfState { return f.cs }
func (f *fakeMemberRaft) publishedIndex() uint64          { return f.published }
func (f *fakeMemberRaft) publishedAt(index uint64) <-chan struct{} {
	if index <= f.published {
		return closedChan()
	}
	return make(chan struct{})
}
func (f *fakeMemberRaft) leadingSince() uint64                               { return f.leaderStart }
func (f *fakeMemberRaft) lastConfIndex() uint64                              { return f.lastCC }
func (f *fakeMemberRaft) removedSelf() bool                                  { return false }
func (f *fakeMemberRaft) peerActive(id uint64) bool                          { return f.active[id] }
func (f *fakeMemberRaft) status() raft.Status                                { return raft.Status{} }
func (f *fakeMemberRaft) transferLeadership(context.Context, uint64, uint64) {}
func (f *fakeMemberRaft) stopped() <-chan struct{}                           { return f.stopc }

func closedChan() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// The membership API alone, as the leader of voters 1, 2 and 3: it refuses
// a change while another is unapplied, and a new voter or a removal that
// would leave fewer voters up than a quorum.
func TestMemberAPIRefusesUnsafeChanges(t *testing.T) {
	fake := &fakeMemberRaft{cs: &raftpb.ConfState{Voters: []uint64{1, 2, 3}}, published: 10, leaderStart: 5,
		lastCC: 11, active: map[uint64]bool{2: true}, stopc: make(chan struct{})}
	membership := newCluster()
	for id := uint64(1); id <= 3; id++ {
		membership.apply(addConfChange(id, "http://127.0.0.1:"+string(rune('0'+id)), false))
	}
	leader := newLeaderWatch(time.Second)
	defer leader.stop()
	leader.set(1)
	m := newMemberAPI(memberLink{raft: fake, membership: membership, leader: leader, self: 1,
		electionTimeout: time.Second, checkScheme: raftConfig{}.checkScheme}, make(chan proposal))

	add := memberChange{Op: opAddMember, ID: 4, PeerURL: "http://127.0.0.1:4"}
	if _, err := m.changeAsLeader(t.Context(), add); !errors.Is(err, errChangeInProgress) {
		t.Fatalf("with change 11 unapplied at 10: %v, want errChangeInProgress", err)
	}
	fake.lastCC = 10
	// Up: 1 (itself) and 2 of voters 1..4; a quorum of four is three.
	if _, err := m.confChangeFor(&add); !errors.Is(err, errConflict) {
		t.Fatalf("adding voter 4 with 2 of 4 up: %v, want errConflict", err)
	}
	learner := add
	learner.Learner = true
	if _, err := m.confChangeFor(&learner); err != nil {
		t.Fatalf("adding learner 4: %v", err)
	}
	// Removing 3, which is down, leaves 1 and 2 of 1..2 up: allowed; removing
	// 2, which is up, leaves 1 of 1 and 3: refused.
	if _, err := m.confChangeFor(&memberChange{Op: opRemoveMember, ID: 3}); err != nil {
		t.Fatalf("removing member 3, which is down: %v", err)
	}
	if _, err := m.confChangeFor(&memberChange{Op: opRemoveMember, ID: 2}); !errors.Is(err, errConflict) {
		t.Fatalf("removing member 2, which is up, with 3 down: %v, want errConflict", err)
	}
}
