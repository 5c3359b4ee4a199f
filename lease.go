package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"go.uber.org/zap"

	"raftexample/internal/wire"
)

// Leases: keys that go away unless someone keeps them alive.
//
// A lease is part of the replicated state: its TTL, the TTL it had left as
// of its last grant, keepalive or checkpoint (Remaining), and the index of
// its last grant or keepalive (RefreshIndex). Applying stays deterministic:
// the state holds durations, never wall-clock times. Each member also keeps
// a local deadline per lease on its own monotonic clock, set when it applies
// a grant, keepalive or checkpoint to now+Remaining.
//
// Only the leader decides that a lease ran out: its lessor (runLessor)
// proposes LeaseExpire with the lease's RefreshIndex and its own term. Every
// member applies the expiry only if the lease still exists, was not kept
// alive since (same RefreshIndex), and the entry was appended in the term
// the op names, by the leader that decided it: a deposed leader's expiry,
// forwarded and appended in a later term, is ignored. So a lease expires at
// most once and never by a member that no longer leads. A member that
// becomes leader first moves every deadline an election timeout later (the
// old leader's keepalives may not have reached it), and the leader records
// remaining TTLs through raft every LeaseCheckpointInterval, so a restart of
// the whole cluster resumes a lease from its checkpoint, not from its full
// TTL.

var (
	errLeaseNotFound = fmt.Errorf("%w: no such lease (it expired, was revoked, or never existed)", errNotFound)
	errLeaseExists   = fmt.Errorf("%w: a lease with this ID exists", errConflict)
)

// Bounds on a lease's TTL. Under a second, a keepalive's round trip through
// raft is a large part of it; the upper bound keeps durations far from
// overflowing when deadlines are extended.
const (
	minLeaseTTL = time.Second
	maxLeaseTTL = 365 * 24 * time.Hour
)

// lessorTick is how often the lessor looks for leases past their deadline,
// which bounds how late a lease expires besides the commit of its expiry.
const lessorTick = 100 * time.Millisecond

// lease is one lease of the state. The exported fields are replicated;
// keys is derived from the items that name it; deadline is this member's.
type lease struct {
	wire.Lease
	keys     map[string]struct{}
	deadline time.Time
}

// leaseInfo is what a read of a lease returns.
type leaseInfo struct {
	ID        uint64
	TTL       time.Duration
	Remaining time.Duration // as this member's deadline says
	Keys      []string      // in key order; only when asked for
}

// validTTL refuses TTLs outside [minLeaseTTL, maxLeaseTTL].
func validTTL(ttl time.Duration) error {
	if ttl < minLeaseTTL || ttl > maxLeaseTTL {
		return fmt.Errorf("%w: ttl %v: want between %v and %v", errInvalid, ttl, minLeaseTTL, maxLeaseTTL)
	}
	return nil
}

// needsLeaseCheck reports whether an op can fail because of a lease.
func needsLeaseCheck(o wire.Op) bool {
	switch o.Kind {
	case wire.Put:
		return o.Lease != 0
	case wire.LeaseGrant:
		return o.Lease != 0
	case wire.LeaseKeepalive, wire.LeaseRevoke:
		return true
	}
	return false
}

// checkLease refuses an op whose lease is missing (or, for a grant under a
// chosen ID, present); the caller holds s.mu.
func (s *kvstore) checkLease(o wire.Op) error {
	if !needsLeaseCheck(o) {
		return nil
	}
	_, ok := s.leases[o.Lease]
	creates := o.Kind == wire.LeaseGrant || (o.Kind == wire.Put && o.TTL > 0)
	switch {
	case creates && ok:
		return errLeaseExists
	case !creates && !ok:
		return errLeaseNotFound
	}
	return nil
}

// grantLease creates a lease and returns its ID: id, or when id is 0 the
// entry's index (or the first unused ID above it, if a client took it);
// the caller holds s.mu and has checked that a chosen id was unused before
// the entry. (An entry that grants the same ID twice grants it once.)
func (s *kvstore) grantLease(id uint64, ttl time.Duration, index uint64, own bool) uint64 {
	if s.leases[id] != nil && id != 0 {
		return id
	}
	if id == 0 {
		for id = index; s.leases[id] != nil; id++ {
		}
	}
	s.leases[id] = &lease{
		Lease:    wire.Lease{ID: id, TTL: ttl, Remaining: ttl, RefreshIndex: index, Own: own},
		keys:     map[string]struct{}{},
		deadline: time.Now().Add(ttl),
	}
	return id
}

// attach adds key to lease id (0: none); the caller holds s.mu.
func (s *kvstore) attach(id uint64, key string) {
	if l := s.leases[id]; l != nil {
		l.keys[key] = struct{}{}
	}
}

// detach removes key from lease id (0: none). A key's own lease (PUT ?ttl=)
// ends with its last key, so that overwriting or deleting such keys leaves
// no leases behind. The caller holds s.mu.
func (s *kvstore) detach(id uint64, key string) {
	l := s.leases[id]
	if l == nil {
		return
	}
	delete(l.keys, key)
	if l.Own && len(l.keys) == 0 {
		delete(s.leases, id)
	}
}

// applyLeaseOp applies one lease operation; the caller holds s.mu and has
// checked it. It returns the bytes of keys and values it deleted, and the
// delete events, all of revision index.
func (s *kvstore) applyLeaseOp(o wire.Op, index, term uint64, res *txnResult) (int64, []event) {
	switch o.Kind {
	case wire.LeaseGrant:
		res.Lease = s.grantLease(o.Lease, o.TTL, index, false)
	case wire.LeaseKeepalive:
		if l := s.leases[o.Lease]; l != nil { // revoked earlier in the same entry
			l.Remaining, l.RefreshIndex, l.deadline = l.TTL, index, time.Now().Add(l.TTL)
			res.Lease = l.ID
		}
	case wire.LeaseRevoke:
		return s.revoke(o.Lease, index)
	case wire.LeaseExpire:
		l := s.leases[o.Lease]
		if l == nil || l.RefreshIndex != o.RefreshIndex || term != o.Term {
			return 0, nil // kept alive since, gone already, or decided by a deposed leader
		}
		s.metrics.leasesExpired.Inc()
		return s.revoke(o.Lease, index)
	case wire.LeaseCheckpoint:
		now := time.Now()
		for _, c := range o.Checkpoints {
			if l := s.leases[c.Lease]; l != nil && l.RefreshIndex == c.RefreshIndex {
				l.Remaining, l.deadline = c.Remaining, now.Add(c.Remaining)
			}
		}
	}
	return 0, nil
}

// revoke ends lease id and deletes its keys, in key order, at revision
// index; the caller holds s.mu.
func (s *kvstore) revoke(id, index uint64) (int64, []event) {
	l := s.leases[id]
	if l == nil {
		return 0, nil
	}
	delete(s.leases, id)
	var freed int64
	var evs []event
	for _, key := range slices.Sorted(maps.Keys(l.keys)) {
		if it, ok := s.items.Delete(kvItem{Key: key}); ok {
			freed += itemBytes(it.Key, it.Value)
			evs = append(evs, event{Type: wire.Delete, Key: key, Rev: index})
		}
	}
	return freed, evs
}

// leaseRecords returns the leases as a snapshot keeps them, in ID order;
// the caller holds s.mu.
func (s *kvstore) leaseRecords() []wire.Lease {
	out := make([]wire.Lease, 0, len(s.leases))
	for _, id := range slices.Sorted(maps.Keys(s.leases)) {
		out = append(out, s.leases[id].Lease)
	}
	return out
}

// restoreLeases replaces the leases with a snapshot's, whose items are
// already in s.items, and gives each a local deadline of now plus its
// remaining TTL; the caller holds s.mu.
func (s *kvstore) restoreLeases(recs []wire.Lease) {
	now := time.Now()
	s.leases = make(map[uint64]*lease, len(recs))
	for _, r := range recs {
		s.leases[r.ID] = &lease{Lease: r, keys: map[string]struct{}{}, deadline: now.Add(r.Remaining)}
	}
	if len(s.leases) == 0 {
		return
	}
	s.items.Ascend(func(it kvItem) bool {
		s.attach(it.Lease, it.Key)
		return true
	})
}

func (s *kvstore) leaseCount() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.leases)
}

// GrantLease creates a lease of ttl under id (0: the server picks) and
// returns its ID.
func (s *kvstore) GrantLease(ctx context.Context, id uint64, ttl time.Duration) (uint64, error) {
	if err := validTTL(ttl); err != nil {
		return 0, err
	}
	res, err := s.leaseTxn(ctx, wire.Op{Kind: wire.LeaseGrant, Lease: id, TTL: ttl})
	return res.Lease, err
}

// KeepAlive restarts lease id's TTL and returns the TTL. It goes through
// raft like a write, so it works on any member and counts only once
// committed.
func (s *kvstore) KeepAlive(ctx context.Context, id uint64) (time.Duration, error) {
	if _, err := s.leaseTxn(ctx, wire.Op{Kind: wire.LeaseKeepalive, Lease: id}); err != nil {
		return 0, err
	}
	// The keepalive is applied here: the lease exists unless an entry
	// after it already ended it.
	s.mu.RLock()
	defer s.mu.RUnlock()
	if l := s.leases[id]; l != nil {
		return l.TTL, nil
	}
	return 0, fmt.Errorf("lease %d: %w", id, errLeaseNotFound)
}

// RevokeLease ends lease id and deletes its keys in one revision, which it
// returns.
func (s *kvstore) RevokeLease(ctx context.Context, id uint64) (uint64, error) {
	res, err := s.leaseTxn(ctx, wire.Op{Kind: wire.LeaseRevoke, Lease: id})
	return res.Rev, err
}

// leaseTxn proposes one lease op and turns a lease failure into its error.
func (s *kvstore) leaseTxn(ctx context.Context, o wire.Op) (txnResult, error) {
	res, err := s.Txn(ctx, []wire.Op{o})
	if err == nil && res.LeaseErr != nil {
		err = fmt.Errorf("lease %d: %w", o.Lease, res.LeaseErr)
	}
	return res, err
}

// Lease returns lease id with its keys, as of a linearizable (or, with
// serializable, a local) read. Remaining is this member's estimate: on the
// leader, what decides expiry; elsewhere, close to it.
func (s *kvstore) Lease(ctx context.Context, id uint64, serializable bool) (leaseInfo, error) {
	if err := s.catchUp(ctx, serializable); err != nil {
		return leaseInfo{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	l := s.leases[id]
	if l == nil {
		return leaseInfo{}, fmt.Errorf("lease %d: %w", id, errLeaseNotFound)
	}
	info := l.info(time.Now())
	info.Keys = slices.Sorted(maps.Keys(l.keys))
	return info, nil
}

// Leases returns every lease, in ID order, without their keys.
func (s *kvstore) Leases(ctx context.Context, serializable bool) ([]leaseInfo, error) {
	if err := s.catchUp(ctx, serializable); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	now := time.Now()
	out := make([]leaseInfo, 0, len(s.leases))
	for _, id := range slices.Sorted(maps.Keys(s.leases)) {
		out = append(out, s.leases[id].info(now))
	}
	return out, nil
}

func (l *lease) info(now time.Time) leaseInfo {
	return leaseInfo{ID: l.ID, TTL: l.TTL, Remaining: max(l.deadline.Sub(now), 0)}
}

// runLessor runs until the member stops. While this member leads, it
// proposes the expiry of every lease past its deadline and, every
// LeaseCheckpointInterval, the remaining TTLs. On gaining leadership it
// first extends every deadline by electionTimeout.
func (s *kvstore) runLessor(leadTerm func() uint64, electionTimeout time.Duration) {
	tick := time.NewTicker(lessorTick)
	defer tick.Stop()
	var extended uint64                // the term whose leadership began with an extension
	proposed := map[uint64]time.Time{} // expiries proposed, by lease, not yet applied
	var lastCheckpoint time.Time
	for {
		select {
		case <-tick.C:
		case <-s.stopped:
			return
		}
		term := leadTerm()
		switch {
		case term == 0:
			extended = 0
			clear(proposed)
		case term != extended:
			s.extendDeadlines(electionTimeout)
			extended, lastCheckpoint = term, time.Now()
		default:
			s.proposeExpiries(term, proposed, electionTimeout)
			if iv := s.cfg.LeaseCheckpointInterval; iv > 0 && time.Since(lastCheckpoint) >= iv {
				s.proposeCheckpoint(iv, electionTimeout)
				lastCheckpoint = time.Now()
			}
		}
	}
}

// extendDeadlines moves every lease's deadline to an election timeout past
// the later of now and where it was: a new leader cannot know which
// keepalives the old one saw last.
func (s *kvstore) extendDeadlines(by time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for _, l := range s.leases {
		if l.deadline.Before(now) {
			l.deadline = now
		}
		l.deadline = l.deadline.Add(by)
	}
}

// maxExpiriesPerEntry bounds the expiries proposed in one entry.
const maxExpiriesPerEntry = 1000

// proposeExpiries proposes, in one entry, the expiry of the leases past
// their deadline, skipping those proposed less than retry ago.
func (s *kvstore) proposeExpiries(term uint64, proposed map[uint64]time.Time, retry time.Duration) {
	now := time.Now()
	var ops []wire.Op
	s.mu.RLock()
	for id, l := range s.leases {
		if len(ops) == maxExpiriesPerEntry {
			break
		}
		if now.Before(l.deadline) || now.Sub(proposed[id]) < retry {
			continue
		}
		ops = append(ops, wire.Op{Kind: wire.LeaseExpire, Lease: id, RefreshIndex: l.RefreshIndex, Term: term})
	}
	s.mu.RUnlock()
	for id, at := range proposed {
		if now.Sub(at) >= retry {
			delete(proposed, id)
		}
	}
	if len(ops) == 0 {
		return
	}
	for _, o := range ops {
		proposed[o.Lease] = now
	}
	s.proposeQuietly(ops, retry)
}

// proposeCheckpoint proposes the remaining TTL of each lease that has run
// down by at least half an interval since its last grant, keepalive or
// checkpoint: a lease kept alive more often never needs one.
func (s *kvstore) proposeCheckpoint(interval, timeout time.Duration) {
	now := time.Now()
	var cps []wire.Checkpoint
	s.mu.RLock()
	for _, l := range s.leases {
		left := max(l.deadline.Sub(now), 0)
		if l.Remaining-left >= interval/2 {
			cps = append(cps, wire.Checkpoint{Lease: l.ID, RefreshIndex: l.RefreshIndex, Remaining: left})
		}
	}
	s.mu.RUnlock()
	for len(cps) > 0 {
		n := min(len(cps), maxExpiriesPerEntry)
		s.proposeQuietly([]wire.Op{{Kind: wire.LeaseCheckpoint, Checkpoints: cps[:n]}}, timeout)
		cps = cps[n:]
	}
}

// proposeQuietly proposes ops without waiting for them to apply: the lessor
// finds out from the state whether they did. It gives up after timeout or
// when the member stops.
func (s *kvstore) proposeQuietly(ops []wire.Op, timeout time.Duration) {
	// raft reads the proposal's context when it takes it, after this
	// returns: the context ends by its timeout, not here.
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	time.AfterFunc(timeout, cancel)
	p := proposal{ctx: ctx, data: wire.EncodeRequest(wire.Request{ID: s.ids.Next(), Ops: ops})}
	select {
	case s.proposeC <- p:
	case <-ctx.Done():
		s.logger.Warn("lease proposal not taken", zap.Stringer("op", ops[0].Kind), zap.Int("ops", len(ops)))
	case <-s.stopped:
	}
}
