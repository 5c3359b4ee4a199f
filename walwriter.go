package main

import (
	"fmt"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// walWriter is the goroutine that makes raft's log durable. raft runs with
// AsyncStorageWrites: the Ready loop hands each MsgStorageAppend to the WAL
// writer on appendC and goes on; the WAL writer saves it to the WAL and to
// raft's in-memory log, then delivers the responses raft attached to it.
// A snapshot received from the leader is saved here too, in log order, and
// then handed to the applier.
type walWriter struct {
	appendC chan *raftpb.Message // MsgStorageAppend, from the Ready loop
	applyC  chan<- applyWork     // received snapshots, to the applier
	disk    *diskStore
	log     *raft.MemoryStorage // raft's in-memory log, appended after the WAL
	// deliver hands responses to raft or to peers, once what they promise
	// is on disk.
	deliver func([]*raftpb.Message) error
	stopc   <-chan struct{}
}

// run saves raft's log appends in order and then delivers their responses
// (append acknowledgements, votes), which promise that the data is on
// disk. Appends that queued up during one fsync are saved together, behind
// the next one: group commit. It returns when stopc closes, or with the
// first error, which must stop the member.
func (w *walWriter) run() error {
	for {
		var batch []*raftpb.Message
		select {
		case m := <-w.appendC:
			batch = append(batch, m)
		case <-w.stopc:
			return nil
		}
	more:
		for len(batch) < cap(w.appendC) {
			select {
			case m := <-w.appendC:
				batch = append(batch, m)
			default:
				break more
			}
		}
		if err := w.persist(batch); err != nil {
			return err
		}
	}
}

// persist makes a batch of MsgStorageAppend durable, then delivers their
// responses in order. A snapshot in the batch is saved and handed to the
// applier after everything queued before it, and before what follows it.
func (w *walWriter) persist(batch []*raftpb.Message) error {
	start := 0
	for i, m := range batch {
		if raft.IsEmptySnap(m.GetSnapshot()) {
			continue
		}
		if err := w.saveAppends(batch[start:i]); err != nil {
			return err
		}
		if err := w.installSnapshot(m.GetSnapshot()); err != nil {
			return err
		}
		start = i
	}
	if err := w.saveAppends(batch[start:]); err != nil {
		return err
	}
	var responses []*raftpb.Message
	for _, m := range batch {
		responses = append(responses, m.GetResponses()...)
	}
	return w.deliver(coalesceAcks(responses))
}

// coalesceAcks drops each accepting MsgAppResp that a later one in msgs
// implies: one to the same member, in the same term, for an index at least
// as high. raft acknowledges every MsgApp it appends, so a batch saved with
// one fsync holds an acknowledgement per MsgApp; the leader needs only the
// last, and each one it steps may commit a little more and send every
// follower a MsgApp of its own. Dropping them loses nothing: the later one
// says more, and raft copes with acknowledgements lost in the network
// anyway. The order of what remains is kept.
func coalesceAcks(msgs []*raftpb.Message) []*raftpb.Message {
	type target struct{ to, term uint64 }
	highest := map[target]uint64{} // by later acknowledgements
	keep := make([]bool, len(msgs))
	n := 0
	for i := len(msgs) - 1; i >= 0; i-- {
		m := msgs[i]
		keep[i] = true
		if m.GetType() == raftpb.MsgAppResp && !m.GetReject() {
			t := target{m.GetTo(), m.GetTerm()}
			if h, ok := highest[t]; ok && h >= m.GetIndex() {
				keep[i] = false
				continue
			}
			highest[t] = m.GetIndex()
		}
		n++
	}
	if n == len(msgs) {
		return msgs
	}
	kept := make([]*raftpb.Message, 0, n)
	for i, m := range msgs {
		if keep[i] {
			kept = append(kept, m)
		}
	}
	return kept
}

// saveAppends writes the entries and newest HardState of msgs to the WAL
// with one fsync, then to raft's in-memory log.
func (w *walWriter) saveAppends(msgs []*raftpb.Message) error {
	hs := &raftpb.HardState{}
	var ents []*raftpb.Entry
	for _, m := range msgs {
		if m.Term != nil { // raft sets Term, Vote and Commit only with a HardState
			hs = &raftpb.HardState{Term: m.Term, Vote: m.Vote, Commit: m.Commit}
		}
		ents = append(ents, m.GetEntries()...)
	}
	if len(ents) > 0 {
		w.disk.fp.reach("before-wal-save", w.disk.logger)
	}
	if err := w.disk.wal.Save(hs, ents); err != nil {
		return fmt.Errorf("save to WAL %s: %w", w.disk.waldir, err)
	}
	if len(ents) > 0 {
		w.disk.fp.reach("after-wal-save-before-apply", w.disk.logger)
	}
	for _, m := range msgs { // in order: a later append may replace a suffix
		if err := w.log.Append(m.GetEntries()); err != nil {
			return fmt.Errorf("append to raft storage: %w", err)
		}
	}
	return nil
}

// installSnapshot saves a snapshot received from the leader and queues it
// for the applier. The transport saved the state file before raft saw the
// message; it is checked before anything names it. The snapshot file goes
// before the WAL record: the WAL must never name a snapshot not on disk.
func (w *walWriter) installSnapshot(s *raftpb.Snapshot) error {
	loaded, err := w.disk.readSnapshot(s)
	if err != nil {
		return err
	}
	if err := w.disk.saveSnap(s); err != nil {
		return err
	}
	if err := w.log.ApplySnapshot(s); err != nil {
		return fmt.Errorf("apply snapshot %d: %w", s.GetMetadata().GetIndex(), err)
	}
	select {
	case w.applyC <- applyWork{snapshot: loaded}:
		return nil
	case <-w.stopc:
		return errStopping
	}
}
