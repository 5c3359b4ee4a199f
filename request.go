package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/pkg/v3/wait"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// Errors a request can end with. The HTTP layer maps each to a status code
// (see statusFor in httpapi.go).
var (
	errInvalid       = errors.New("invalid request")
	errNotFound      = errors.New("not found")
	errConflict      = errors.New("conflict")
	errCondition     = errors.New("precondition failed")
	errNoLeader      = errors.New("no leader")
	errStopping      = errors.New("member is stopping")
	errCatchingUp    = errors.New("member is catching up after a restart")
	errDropped       = errors.New("proposal dropped by raft (no leader, leadership transfer, or overload)")
	errTimeout       = errors.New("request timed out (a write may still apply)")
	errLeaderLostMid = errors.New("lost the leader while waiting; the write may still apply")
	// errCanceled: the client went away before its answer; nobody reads it.
	errCanceled = errors.New("request canceled by the client")
	errQuota    = errors.New("quota exceeded")
	// errStoppingMid: the member stopped after raft may have taken the
	// proposal, which the rest of the cluster may then commit.
	errStoppingMid = fmt.Errorf("%w; the write may still apply", errStopping)
)

// proposal asks raftNode to append data (or a membership change) to the raft
// log. If raft refuses it, raftNode says so on refused. Acceptance is not
// reported, since it is not commitment: the proposer waits for the entry to
// be applied, and hears of a refusal while it waits. (Reporting acceptance
// too would wake every writer once more for nothing.)
type proposal struct {
	ctx        context.Context
	data       []byte
	confChange *raftpb.ConfChange
	refused    chan<- error // buffered; nil when nobody waits
}

func (p proposal) reply(err error) {
	if err != nil && p.refused != nil {
		p.refused <- err
	}
}

// proposeErr turns raft's answer to a proposal into a request error.
func proposeErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrProposalDropped):
		return errDropped
	case errors.Is(err, raft.ErrStopped):
		return errStopping
	case errors.Is(err, context.DeadlineExceeded):
		return errTimeout
	case errors.Is(err, context.Canceled):
		return errCanceled
	default:
		return fmt.Errorf("propose: %w", err)
	}
}

// leaderKnown waits until this member knows a leader before a request
// proposes anything. raft takes no proposal while it knows no leader:
// node.Propose blocks until one appears, so a write proposed then would
// wait out its whole timeout, be reported as one that may still apply
// though it never entered the log, and hold up every proposal queued
// behind it. A member that has been without a leader for an election
// timeout already refuses at once; otherwise the request waits for an
// election, up to three election timeouts (raft waits up to two before it
// campaigns). Refused before proposing, errNoLeader is a definite answer.
func leaderKnown(ctx context.Context, leader *leaderWatch) error {
	select {
	case <-leader.lost():
		if leader.current() == raft.None {
			return errNoLeader
		}
	default:
	}
	wait := time.NewTimer(3 * leader.grace)
	defer wait.Stop()
	for {
		changed := leader.changed()
		if leader.current() != raft.None {
			return nil
		}
		select {
		case <-changed:
		case <-wait.C:
			return errNoLeader
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return errNoLeader // nothing was proposed
			}
			return ctxErr(ctx)
		}
	}
}

// proposeAndWait hands p to raftNode under request ID id and waits until
// the applier triggers id in waits; on any failure it withdraws the
// registration. It gives up when ctx ends or the member stops.
func proposeAndWait(ctx context.Context, proposeC chan<- proposal, p proposal, waits wait.Wait, id uint64,
	leader *leaderWatch, stopped <-chan struct{}) (any, error) {
	ch := waits.Register(id)
	refused := make(chan error, 1)
	p.ctx, p.refused = ctx, refused
	var err error
	select {
	case proposeC <- p:
		var x any
		if x, err = await(ctx, ch, refused, leader, stopped); err == nil {
			return x, nil
		}
	case <-ctx.Done():
		err = ctxErr(ctx)
	case <-stopped:
		err = errStopping // never handed over
	}
	waits.Trigger(id, nil)
	return nil, err
}

// await waits for the applier to trigger ch, or for raft to refuse the
// proposal. It returns early when the member has had no leader for an
// election timeout while the request waited, so clients of a cluster
// without quorum hear about it quickly rather than at the request timeout.
func await(ctx context.Context, ch <-chan any, refused <-chan error, leader *leaderWatch, stopped <-chan struct{}) (any, error) {
	start := time.Now()
	for {
		lost := leader.lost()
		var recheck <-chan time.Time
		if young := leader.grace - time.Since(start); young > 0 {
			// A leaderless spell that began before this request is not the
			// request's to report yet: raft may have accepted it as leader a
			// moment before the Ready loop announced the new leader.
			t := time.NewTimer(young)
			defer t.Stop()
			lost, recheck = nil, t.C
		}
		select {
		case x := <-ch:
			return x, nil
		case err := <-refused:
			return nil, proposeErr(err)
		case <-ctx.Done():
			return nil, ctxErr(ctx)
		case <-stopped:
			return nil, errStoppingMid // raft may have taken it
		case <-recheck:
		case <-lost:
			if leader.current() == raft.None {
				return nil, errLeaderLostMid
			}
		}
	}
}

// failureReason names err for the proposals_failed_total metric.
func failureReason(err error) string {
	switch {
	case errors.Is(err, errNoLeader), errors.Is(err, errLeaderLostMid):
		return "no_leader"
	case errors.Is(err, errDropped):
		return "dropped"
	case errors.Is(err, errTimeout):
		return "timeout"
	case errors.Is(err, errStopping):
		return "stopping"
	case errors.Is(err, errCanceled):
		return "canceled"
	case errors.Is(err, errQuota):
		return "quota"
	default:
		return "other"
	}
}

func ctxErr(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return errTimeout
	}
	return errCanceled
}

// leaderWatch tracks whether this member knows a leader. lost() returns a
// channel that is closed once the member has been without a leader for the
// grace period (one election timeout); a new channel replaces it when a
// leader appears again. changed() returns a channel closed at the next
// change of leader.
type leaderWatch struct {
	grace time.Duration

	mu       sync.Mutex
	leader   uint64
	lostC    chan struct{}
	changedC chan struct{}
	timer    *time.Timer
}

func newLeaderWatch(grace time.Duration) *leaderWatch {
	w := &leaderWatch{grace: grace, lostC: make(chan struct{}), changedC: make(chan struct{})}
	w.timer = time.AfterFunc(grace, w.expire)
	return w
}

// set records the leader raft reported in a SoftState and reports whether
// it differs from the one before.
func (w *leaderWatch) set(leader uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if leader == w.leader {
		return false
	}
	had := w.leader != raft.None
	w.leader = leader
	close(w.changedC)
	w.changedC = make(chan struct{})
	switch {
	case leader != raft.None && !had:
		w.timer.Stop()
		select {
		case <-w.lostC:
			w.lostC = make(chan struct{})
		default:
		}
	case leader == raft.None:
		w.timer.Reset(w.grace)
	}
	return true
}

func (w *leaderWatch) changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changedC
}

func (w *leaderWatch) expire() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.leader != raft.None {
		return
	}
	select {
	case <-w.lostC:
	default:
		close(w.lostC)
	}
}

func (w *leaderWatch) lost() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lostC
}

// current returns the leader's ID, or raft.None.
func (w *leaderWatch) current() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.leader
}

func (w *leaderWatch) stop() { w.timer.Stop() }
