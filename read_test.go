package main

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// The readIndexer alone, on a fake raft: a local reader gets the index raft
// names, and a follower's MsgReadIndex taken by the leader is answered with
// its round's index in the term this member leads in. Two readers asking
// while no round has finished take at most two rounds.
func TestReadIndexerAnswersReadersAndFollowers(t *testing.T) {
	leader := newLeaderWatch(time.Second)
	defer leader.stop()
	leader.set(1)
	var ri *readIndexer
	var rounds atomic.Int32
	started := make(chan struct{}) // holds the rounds until both readers have asked
	sent := make(chan []*raftpb.Message, 1)
	stopc := make(chan struct{})
	ri = newReadIndexer(readLink{
		id:       1,
		leader:   leader,
		leadTerm: func() uint64 { return 3 },
		readIndex: func(_ context.Context, rctx []byte) error {
			<-started
			rounds.Add(1)
			ri.deliver([]raft.ReadState{{Index: 42, RequestCtx: rctx}})
			return nil
		},
		send:    func(ms []*raftpb.Message) { sent <- ms },
		retry:   time.Minute,
		stopc:   stopc,
		metrics: newMetrics(),
		logger:  testLogger(t),
	}, 10*time.Second)
	var running sync.WaitGroup
	running.Go(ri.run)
	defer func() { close(stopc); running.Wait() }()

	req := &raftpb.Message{Type: raftpb.MsgReadIndex.Enum(), From: new(uint64(2)), To: new(uint64(1)),
		Entries: []*raftpb.Entry{{Data: []byte("follower-ctx")}}}
	if !ri.answerFollower(req) {
		t.Fatal("the leader's readIndexer did not take a follower's MsgReadIndex")
	}
	got := make(chan uint64, 1)
	go func() {
		index, err := ri.readIndex(t.Context())
		if err != nil {
			t.Error(err)
		}
		got <- index
	}()
	close(started)
	select {
	case index := <-got:
		if index != 42 {
			t.Fatalf("read index %d, want 42", index)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no read index")
	}
	select {
	case ms := <-sent:
		if len(ms) != 1 || ms[0].GetType() != raftpb.MsgReadIndexResp || ms[0].GetTo() != 2 ||
			ms[0].GetIndex() != 42 || ms[0].GetTerm() != 3 || string(ms[0].GetEntries()[0].GetData()) != "follower-ctx" {
			t.Fatalf("answered the follower with %v", ms)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the follower got no answer")
	}
	if n := rounds.Load(); n > 2 {
		t.Errorf("%d rounds for two readers who asked together", n)
	}
}
