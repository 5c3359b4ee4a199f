package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/fileutil"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"raftexample/internal/wire"
)

// This file holds raftNode's persistence: the WAL in raftexample-<id> and
// snapshot files in raftexample-<id>-snap, both written with etcd's packages.

// removedMarker is written next to the data directories once this member's
// removal is committed; a removed member must not rejoin with its old ID.
func (rc *raftNode) removedMarker() string {
	return filepath.Join(rc.cfg.DataDir, fmt.Sprintf("raftexample-%d-removed", rc.cfg.ID))
}

func (rc *raftNode) checkNotRemoved() error {
	if fileutil.Exist(rc.removedMarker()) {
		return fmt.Errorf("member %d was removed from the cluster and cannot start from %s again (%s exists); start a new member with a new ID and an empty data dir",
			rc.cfg.ID, rc.waldir, rc.removedMarker())
	}
	return nil
}

func (rc *raftNode) markRemoved() error {
	f, err := os.Create(rc.removedMarker())
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "member %d was removed from the cluster\n", rc.cfg.ID); err != nil {
		return err
	}
	return fileutil.Fsync(f)
}

// openStorage loads the newest usable snapshot and the WAL after it into
// raft's MemoryStorage. It reports whether there was state to restart from.
func (rc *raftNode) openStorage() (restart bool, err error) {
	lg := libLogger(rc.logger)
	if err := os.MkdirAll(rc.cfg.DataDir, 0o755); err != nil {
		return false, fmt.Errorf("create data dir %s: %w", rc.cfg.DataDir, err)
	}
	if err := fileutil.TouchDirAll(lg, rc.snapdir); err != nil {
		return false, fmt.Errorf("create snapshot dir %s: %w", rc.snapdir, err)
	}
	rc.snapshotter = snap.New(lg, rc.snapdir)
	if err := rc.removeTempStateFiles(); err != nil {
		return false, err
	}
	rc.raftStorage = raft.NewMemoryStorage()

	// wal.Exist says "no WAL" for a path it cannot read, and wal.Create then
	// deletes whatever is there: a WAL directory that exists but is unusable
	// must stop the member, not start it over with an empty state.
	if _, err := os.ReadDir(rc.waldir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("WAL dir %s is unusable: %w", rc.waldir, err)
	}
	if !wal.Exist(rc.waldir) {
		return false, rc.createWAL()
	}

	loaded, st, ents, err := rc.loadState()
	if err != nil {
		return false, err
	}
	if rc.clusterID, err = decodeWALMetadata(rc.walMetadata, rc.cfg.ID); err != nil {
		rc.wal.Close()
		return false, fmt.Errorf("WAL %s: %w", rc.waldir, err)
	}
	snapshot := loaded.snapshot()
	if snapshot != nil {
		if err := rc.raftStorage.ApplySnapshot(snapshot); err != nil {
			rc.wal.Close()
			return false, fmt.Errorf("apply snapshot: %w", err)
		}
		rc.bootSnapshot = loaded
		rc.setConfState(raftpb.EnsureConfState(proto.Clone(snapshot.GetMetadata().GetConfState()).(*raftpb.ConfState)))
	}
	if err := rc.raftStorage.SetHardState(st); err != nil {
		rc.wal.Close()
		return false, fmt.Errorf("restore raft state from WAL %s: %w", rc.waldir, err)
	}
	if err := rc.raftStorage.Append(ents); err != nil {
		rc.wal.Close()
		return false, fmt.Errorf("restore raft log from WAL %s: %w", rc.waldir, err)
	}
	rc.noteConfChanges(ents)
	rc.bootCommit = st.GetCommit()
	rc.bootLast = max(rc.bootCommit, snapshot.GetMetadata().GetIndex())
	if n := len(ents); n > 0 {
		rc.bootLast = max(rc.bootLast, ents[n-1].GetIndex())
	}
	// A WAL created by a start that died before writing anything holds no
	// state at all; bootstrap again rather than restart into an empty cluster.
	empty := snapshot == nil && len(ents) == 0 && raft.IsEmptyHardState(st)
	if empty {
		// Its metadata may name a cluster from other flags: start it over.
		rc.wal.Close()
		if err := os.RemoveAll(rc.waldir); err != nil {
			return false, fmt.Errorf("remove empty WAL %s: %w", rc.waldir, err)
		}
		return false, rc.createWAL()
	}
	rc.logger.Info("loaded data", zap.String("wal", rc.waldir), zap.Uint64("snapshot-index", snapshot.GetMetadata().GetIndex()),
		zap.Uint64("commit", rc.bootCommit), zap.Int("wal-entries", len(ents)),
		zap.Stringer("cluster-id", types.ID(rc.clusterID)))
	return true, nil
}

// createWAL creates this member's WAL, recording in its metadata the
// cluster it belongs to: a new cluster's ID is derived from --cluster and
// --initial-cluster-token; a joining member asks its peers.
func (rc *raftNode) createWAL() error {
	if rc.cfg.Join {
		id, err := rc.fetchClusterID()
		if err != nil {
			return err
		}
		rc.clusterID = id
	} else {
		rc.clusterID = computeClusterID(rc.cfg.Peers, rc.cfg.ClusterToken)
	}
	w, err := wal.Create(libLogger(rc.logger), rc.waldir, encodeWALMetadata(rc.clusterID, rc.cfg.ID))
	if err != nil {
		return fmt.Errorf("create WAL %s: %w", rc.waldir, err)
	}
	rc.wal = w
	return nil
}

// loadedSnapshot is a snapshot read back in full: raft's metadata, the
// membership, and the key-value state from its .snap.db file.
type loadedSnapshot struct {
	raft    *raftpb.Snapshot
	members wire.Membership
	kv      kvState
	size    int64 // of the state file
}

func (ls *loadedSnapshot) snapshot() *raftpb.Snapshot {
	if ls == nil {
		return nil
	}
	return ls.raft
}

func (ls *loadedSnapshot) index() uint64 { return ls.snapshot().GetMetadata().GetIndex() }

// loadState loads the newest snapshot and the WAL after it, reading both at
// once instead of first scanning every WAL file for the snapshots it
// records (wal.ValidSnapshotEntries decodes all of them, ~300 MB at 1 M
// keys). The newest snapshot need not be recorded in the WAL: a crash
// between writing a snapshot and recording it leaves a complete snapshot
// of committed entries, and the WAL still holds every entry after it,
// since files are released only up to a recorded snapshot. Only when the
// newest snapshot cannot be read, or the WAL records a different one at its
// index, does loadState fall back to the scan and the older snapshots.
func (rc *raftNode) loadState() (*loadedSnapshot, *raftpb.HardState, []*raftpb.Entry, error) {
	if s, err := rc.snapshotter.Load(); err == nil {
		ls, st, ents, err := rc.loadNewest(s)
		if err == nil {
			return ls, st, ents, nil
		}
		rc.logger.Warn("newest snapshot cannot be used with the WAL, checking the snapshots the WAL lists",
			zap.Uint64("index", s.GetMetadata().GetIndex()), zap.Error(err))
	}
	ls, err := rc.loadSnapshot()
	if err != nil {
		return nil, nil, nil, err
	}
	st, ents, err := rc.openWAL(ls.snapshot())
	if err != nil {
		return nil, nil, nil, err
	}
	return ls, st, ents, nil
}

// loadNewest reads snapshot s and its state file while it opens the WAL at
// s. It fails, with the WAL closed, if either cannot be read. (wal.ReadAll
// reports a snapshot record of another term at s's index, but not a missing
// record once the WAL is open for writing, which is why loadState's doc
// argues that a missing one is safe.)
func (rc *raftNode) loadNewest(s *raftpb.Snapshot) (*loadedSnapshot, *raftpb.HardState, []*raftpb.Entry, error) {
	type result struct {
		ls  *loadedSnapshot
		err error
	}
	read := make(chan result, 1)
	go func() {
		ls, err := rc.readSnapshot(s)
		read <- result{ls, err}
	}()
	st, ents, werr := rc.openWAL(s)
	r := <-read
	if err := errors.Join(r.err, werr); err != nil {
		if werr == nil {
			rc.wal.Close()
			rc.wal = nil
		}
		return nil, nil, nil, err
	}
	// The applier may snapshot entries before the WAL writer has saved the
	// HardState that commits them (raft applies only entries already in the
	// WAL, but saves the commit index with the next append), and a crash may
	// come before a received snapshot's HardState is saved. A snapshot holds
	// only committed entries, so its index is a commit index too.
	if index := s.GetMetadata().GetIndex(); st.GetCommit() < index {
		st.Commit = proto.Uint64(index)
	}
	return r.ls, st, ents, nil
}

// loadSnapshot returns the newest snapshot that the WAL also records and
// that reads back whole, or nil. A damaged .snap file is set aside by the
// snapshotter; a missing or damaged state file also makes it try an older
// snapshot.
func (rc *raftNode) loadSnapshot() (*loadedSnapshot, error) {
	walSnaps, err := wal.ValidSnapshotEntries(libLogger(rc.logger), rc.waldir)
	if err != nil {
		return nil, fmt.Errorf("list snapshots in WAL %s: %w", rc.waldir, err)
	}
	for {
		s, err := rc.snapshotter.LoadNewestAvailable(walSnaps)
		if errors.Is(err, snap.ErrNoSnapshot) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("load snapshot from %s: %w", rc.snapdir, err)
		}
		ls, err := rc.readSnapshot(s)
		if err == nil {
			return ls, nil
		}
		index := s.GetMetadata().GetIndex()
		rc.logger.Warn("snapshot unusable, trying an older one", zap.Uint64("index", index), zap.Error(err))
		walSnaps = slices.DeleteFunc(walSnaps, func(w *walpb.Snapshot) bool { return w.GetIndex() >= index })
	}
}

// readSnapshot reads the membership from a raft snapshot and the key-value
// state from its .snap.db file, checking both.
func (rc *raftNode) readSnapshot(s *raftpb.Snapshot) (*loadedSnapshot, error) {
	index := s.GetMetadata().GetIndex()
	members, err := wire.DecodeMembership(s.GetData())
	if err != nil {
		return nil, fmt.Errorf("snapshot %d in %s: %w", index, rc.snapdir, err)
	}
	f, size, err := rc.openStateFile(index)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	kv, err := readKV(f, size)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	return &loadedSnapshot{raft: s, members: members, kv: kv, size: size}, nil
}

// openStateFile opens the .snap.db file of the snapshot at index.
func (rc *raftNode) openStateFile(index uint64) (*os.File, int64, error) {
	path, err := rc.snapshotter.DBFilePath(index)
	if err != nil {
		return nil, 0, fmt.Errorf("state file of snapshot %d in %s: %w", index, rc.snapdir, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("open snapshot state: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("stat snapshot state: %w", err)
	}
	return f, fi.Size(), nil
}

// saveStateFile streams the key-value state at index into its .snap.db
// file, named as snap.Snapshotter names the ones it receives from the leader
// so that DBFilePath finds both. Unlike Snapshotter.SaveDBFrom it syncs as
// it writes: one fsync of hundreds of megabytes at the end would hold up
// the WAL's fdatasyncs on the same disk until all of it reached the disk.
func (rc *raftNode) saveStateFile(index uint64, encode func(io.Writer) error) (int64, error) {
	f, err := os.CreateTemp(rc.snapdir, "tmp")
	if err != nil {
		return 0, &snapFileError{fmt.Errorf("create snapshot state in %s: %w", rc.snapdir, err)}
	}
	w := &syncingWriter{f: f, every: stateSyncBytes, rate: stateWriteRate}
	err = encode(w)
	if err == nil {
		err = fileutil.Fsync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(rc.snapdir, fmt.Sprintf("%016x.snap.db", index)))
	}
	if err == nil {
		err = fsyncDir(rc.snapdir)
	}
	if err != nil {
		os.Remove(f.Name())
		return w.n, &snapFileError{fmt.Errorf("save snapshot state %d to %s: %w", index, rc.snapdir, err)}
	}
	return w.n, nil
}

// stateSyncBytes is how much of a state file may be written before it is
// synced; it bounds the data one sync has to write out. stateWriteRate
// paces the writing so a snapshot of a large state leaves the disk and the
// cores room for the WAL and the clients: 280 MB take at least ~2 s.
const (
	stateSyncBytes = 8 << 20
	stateWriteRate = 128 << 20 // bytes per second
)

// syncingWriter writes to f, fdatasyncs it every `every` bytes, and waits
// as needed to stay under rate bytes per second.
type syncingWriter struct {
	f         *os.File
	every     int64
	rate      int64
	n, synced int64
	chunk     time.Time // when the bytes since the last sync began
}

func (w *syncingWriter) Write(p []byte) (int, error) {
	if w.chunk.IsZero() {
		w.chunk = time.Now()
	}
	n, err := w.f.Write(p)
	w.n += int64(n)
	if err == nil && w.n-w.synced >= w.every {
		err = fileutil.Fdatasync(w.f)
		if w.rate > 0 {
			due := time.Duration((w.n - w.synced) * int64(time.Second) / w.rate)
			time.Sleep(due - time.Since(w.chunk))
		}
		w.synced, w.chunk = w.n, time.Now()
	}
	return n, err
}

// fsyncDir makes a rename in dir durable.
func fsyncDir(dir string) error {
	d, err := fileutil.OpenDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return fileutil.Fsync(d)
}

// removeTempStateFiles deletes state files that a crash left half written
// (saveStateFile and the snapshotter write them as tmp* and rename them
// when complete).
func (rc *raftNode) removeTempStateFiles() error {
	tmps, err := filepath.Glob(filepath.Join(rc.snapdir, "tmp*"))
	if err != nil {
		return err
	}
	for _, p := range tmps {
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("remove unfinished snapshot state: %w", err)
		}
	}
	return nil
}

// openWAL opens the WAL after snapshot and reads it out. A torn last record,
// left by a crash in the middle of a write, is cut off with wal.Repair.
func (rc *raftNode) openWAL(snapshot *raftpb.Snapshot) (*raftpb.HardState, []*raftpb.Entry, error) {
	walsnap := &walpb.Snapshot{Index: proto.Uint64(0), Term: proto.Uint64(0)}
	if snapshot != nil {
		walsnap.Index = proto.Uint64(snapshot.GetMetadata().GetIndex())
		walsnap.Term = proto.Uint64(snapshot.GetMetadata().GetTerm())
	}
	repaired := false
	for {
		w, err := wal.Open(libLogger(rc.logger), rc.waldir, walsnap)
		if err != nil {
			return nil, nil, fmt.Errorf("open WAL %s: %w", rc.waldir, err)
		}
		md, st, ents, err := w.ReadAll()
		if err == nil {
			rc.wal, rc.walMetadata = w, md
			return st, ents, nil
		}
		w.Close()
		if repaired || !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil, fmt.Errorf("read WAL %s: %w", rc.waldir, err)
		}
		if !wal.Repair(libLogger(rc.logger), rc.waldir) {
			return nil, nil, fmt.Errorf("repair torn WAL %s: %w", rc.waldir, err)
		}
		rc.logger.Warn("repaired torn WAL tail", zap.String("wal", rc.waldir))
		repaired = true
	}
}

// saveSnap writes a snapshot file, then records it in the WAL, then lets the
// WAL release files older than it.
func (rc *raftNode) saveSnap(s *raftpb.Snapshot) error {
	rc.snapMu.Lock()
	defer rc.snapMu.Unlock()
	md := s.GetMetadata()
	walSnap := &walpb.Snapshot{
		Index:     proto.Uint64(md.GetIndex()),
		Term:      proto.Uint64(md.GetTerm()),
		ConfState: md.GetConfState(),
	}
	if err := rc.snapshotter.SaveSnap(s); err != nil {
		return &snapFileError{fmt.Errorf("save snapshot %d to %s: %w", md.GetIndex(), rc.snapdir, err)}
	}
	rc.failpoint("after-snapshot-file")
	if err := rc.wal.SaveSnapshot(walSnap); err != nil {
		return fmt.Errorf("record snapshot %d in WAL: %w", md.GetIndex(), err)
	}
	rc.failpoint("after-wal-snapshot-record")
	if err := rc.wal.ReleaseLockTo(md.GetIndex()); err != nil {
		return fmt.Errorf("release WAL files before %d: %w", md.GetIndex(), err)
	}
	rc.failpoint("after-wal-release")
	return nil
}

// startPurging removes old WAL and snapshot files beyond --max-wals and
// --max-snapshots (0 keeps them all).
func (rc *raftNode) startPurging() {
	purge := func(dir, suffix string, max uint) {
		if max == 0 {
			return
		}
		rc.wg.Add(1)
		go rc.purgeLoop(dir, suffix, max)
	}
	purge(rc.waldir, ".wal", rc.cfg.MaxWALs)
	purge(rc.snapdir, ".snap", rc.cfg.MaxSnapshots)
	purge(rc.snapdir, ".snap.db", rc.cfg.MaxSnapshots)
}

// purgeLoop runs fileutil's purger until the member stops. The purger gives
// up on its first error (out of file descriptors, a file it cannot
// remove); a purge that failed only leaves files for the next pass, so it
// is logged and the purger started again after PurgeInterval.
func (rc *raftNode) purgeLoop(dir, suffix string, max uint) {
	defer rc.wg.Done()
	for {
		donec, errc := fileutil.PurgeFileWithDoneNotify(libLogger(rc.logger), dir, suffix, max, rc.cfg.PurgeInterval, rc.stopc)
		<-donec
		var err error
		select {
		case err = <-errc:
		default: // stopc was closed
			return
		}
		rc.logger.Warn("purge failed; retrying", zap.String("dir", dir), zap.String("suffix", suffix),
			zap.Duration("retry-in", rc.cfg.PurgeInterval), zap.Error(err))
		select {
		case <-time.After(rc.cfg.PurgeInterval):
		case <-rc.stopc:
			return
		}
	}
}

// snapFileError is a snapshot of this member's own that could not be
// written before anything recorded it in the WAL.
type snapFileError struct{ err error }

func (e *snapFileError) Error() string { return e.err.Error() }
func (e *snapFileError) Unwrap() error { return e.err }

// postponeSnapshot reports whether a snapshot at index that failed with err
// may simply be taken later, and cleans up after it. It may when the files
// could not be created for want of a file descriptor: the WAL still holds
// every entry since the last snapshot, so nothing is lost, and the next
// trigger tries again. Anything else (a full disk, a WAL error) stops the
// member. The snapshot's state file, if it was written, is removed: with
// no .snap naming it, it would only push a good one out of --max-snapshots.
func (rc *raftNode) postponeSnapshot(index uint64, err error) bool {
	var sfe *snapFileError
	if !errors.As(err, &sfe) || !fdExhausted(err) {
		return false
	}
	os.Remove(filepath.Join(rc.snapdir, fmt.Sprintf("%016x.snap.db", index)))
	rc.logger.Warn("snapshot postponed: out of file descriptors; the next one is taken after --snapshot-count more entries",
		zap.Uint64("index", index), zap.Error(err))
	return true
}

// writeWAL is the WAL writer: it saves raft's log appends in order and then
// delivers their responses (append acknowledgements, votes), which promise
// that the data is on disk. Appends that queued up during one fsync are
// saved together, behind the next one: group commit.
func (rc *raftNode) writeWAL() {
	defer rc.wg.Done()
	for {
		var batch []*raftpb.Message
		select {
		case m := <-rc.appendC:
			batch = append(batch, m)
		case <-rc.stopc:
			return
		}
	more:
		for len(batch) < cap(rc.appendC) {
			select {
			case m := <-rc.appendC:
				batch = append(batch, m)
			default:
				break more
			}
		}
		if err := rc.persist(batch); err != nil {
			rc.fail(err)
			return
		}
	}
}

// persist makes a batch of MsgStorageAppend durable, then delivers their
// responses in order. A snapshot in the batch is saved and handed to the
// applier after everything queued before it, and before what follows it.
func (rc *raftNode) persist(batch []*raftpb.Message) error {
	start := 0
	for i, m := range batch {
		if raft.IsEmptySnap(m.GetSnapshot()) {
			continue
		}
		if err := rc.saveAppends(batch[start:i]); err != nil {
			return err
		}
		if err := rc.installSnapshot(m.GetSnapshot()); err != nil {
			return err
		}
		start = i
	}
	if err := rc.saveAppends(batch[start:]); err != nil {
		return err
	}
	var responses []*raftpb.Message
	for _, m := range batch {
		responses = append(responses, m.GetResponses()...)
	}
	return rc.deliver(coalesceAcks(responses))
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
func (rc *raftNode) saveAppends(msgs []*raftpb.Message) error {
	hs := &raftpb.HardState{}
	var ents []*raftpb.Entry
	for _, m := range msgs {
		if m.Term != nil { // raft sets Term, Vote and Commit only with a HardState
			hs = &raftpb.HardState{Term: m.Term, Vote: m.Vote, Commit: m.Commit}
		}
		ents = append(ents, m.GetEntries()...)
	}
	if len(ents) > 0 {
		rc.failpoint("before-wal-save")
	}
	if err := rc.wal.Save(hs, ents); err != nil {
		return fmt.Errorf("save to WAL %s: %w", rc.waldir, err)
	}
	if len(ents) > 0 {
		rc.failpoint("after-wal-save-before-apply")
	}
	for _, m := range msgs { // in order: a later append may replace a suffix
		if err := rc.raftStorage.Append(m.GetEntries()); err != nil {
			return fmt.Errorf("append to raft storage: %w", err)
		}
	}
	return nil
}

// installSnapshot saves a snapshot received from the leader and queues it
// for the applier. The transport saved the state file before raft saw the
// message; it is checked before anything names it. The snapshot file goes
// before the WAL record: the WAL must never name a snapshot not on disk.
func (rc *raftNode) installSnapshot(s *raftpb.Snapshot) error {
	loaded, err := rc.readSnapshot(s)
	if err != nil {
		return err
	}
	if err := rc.saveSnap(s); err != nil {
		return err
	}
	if err := rc.raftStorage.ApplySnapshot(s); err != nil {
		return fmt.Errorf("apply snapshot %d: %w", s.GetMetadata().GetIndex(), err)
	}
	select {
	case rc.applyC <- applyWork{snapshot: loaded}:
		return nil
	case <-rc.stopc:
		return errStopping
	}
}
