package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"sync"
	"time"

	"go.etcd.io/etcd/pkg/v3/idutil"
	"go.etcd.io/raft/v3"
	"go.uber.org/zap"
)

// Linearizable reads use raft's ReadIndex: the leader confirms with a quorum
// that it is still the leader and names its commit index; once this member
// has applied up to that index, its local state is at least as new as any
// write acknowledged before the read began. Concurrent readers share one
// round: while a round is in flight, new readers join the next one.

// readBatch is one ReadIndex round and everyone waiting on it.
type readBatch struct {
	done  chan struct{} // closed when index/err are set
	index uint64
	err   error
}

func newReadBatch() *readBatch { return &readBatch{done: make(chan struct{})} }

// readIndexer runs ReadIndex rounds for a raftNode.
type readIndexer struct {
	rc      *raftNode
	ids     *idutil.Generator
	timeout time.Duration       // longest one round may take
	wanted  chan struct{}       // a reader is waiting for the next round
	states  chan raft.ReadState // from the Ready loop

	mu   sync.Mutex
	next *readBatch
}

func newReadIndexer(rc *raftNode, timeout time.Duration) *readIndexer {
	return &readIndexer{
		rc:      rc,
		ids:     idutil.NewGenerator(uint16(rc.cfg.ID), time.Now()),
		timeout: timeout,
		wanted:  make(chan struct{}, 1),
		states:  make(chan raft.ReadState, 16),
		next:    newReadBatch(),
	}
}

// readIndex returns an index that, once applied here, makes a local read
// linearizable.
func (ri *readIndexer) readIndex(ctx context.Context) (uint64, error) {
	ri.mu.Lock()
	b := ri.next
	ri.mu.Unlock()
	select {
	case ri.wanted <- struct{}{}:
	default: // a round is already wanted
	}
	select {
	case <-b.done:
		return b.index, b.err
	case <-ctx.Done():
		return 0, ctxErr(ctx)
	case <-ri.rc.stopc:
		return 0, errStopping
	}
}

// deliver hands read states from a Ready to the round waiting for them. It
// never blocks the Ready loop: a state nobody waits for is dropped, and a
// round whose state was dropped asks again.
func (ri *readIndexer) deliver(states []raft.ReadState) {
	for _, s := range states {
		select {
		case ri.states <- s:
		default:
		}
	}
}

// run performs rounds until the member stops; one round at a time.
func (ri *readIndexer) run() {
	defer ri.rc.wg.Done()
	for {
		select {
		case <-ri.wanted:
		case <-ri.rc.stopc:
			return
		}
		ri.mu.Lock()
		b := ri.next
		ri.next = newReadBatch()
		ri.mu.Unlock()
		start := time.Now()
		b.index, b.err = ri.round()
		ri.rc.cfg.Metrics.readIndexDuration.Observe(time.Since(start).Seconds())
		close(b.done)
	}
}

// round asks raft for a read index, asking again if the request was lost
// (raft drops it without a word when leadership changes).
func (ri *readIndexer) round() (uint64, error) {
	rc := ri.rc
	rctx := binary.BigEndian.AppendUint64(nil, ri.ids.Next())
	deadline := time.NewTimer(ri.timeout)
	defer deadline.Stop()
	retry := time.NewTicker(rc.cfg.electionTimeout() / 2)
	defer retry.Stop()
	for {
		select {
		case <-rc.leader.lost():
			return 0, errNoLeader
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), ri.timeout)
		err := rc.node.ReadIndex(ctx, rctx)
		cancel()
		if err != nil {
			return 0, proposeErr(err)
		}
	wait:
		for {
			select {
			case s := <-ri.states:
				if bytes.Equal(s.RequestCtx, rctx) {
					return s.Index, nil
				}
			case <-retry.C:
				rc.logger.Debug("read index not answered; asking again", zap.Binary("ctx", rctx))
				break wait
			case <-rc.leader.lost():
				return 0, errNoLeader
			case <-deadline.C:
				return 0, errTimeout
			case <-rc.stopc:
				return 0, errStopping
			}
		}
	}
}
