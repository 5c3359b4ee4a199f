package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
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

// diskStore is a member's files: the WAL and the snapshots. raftNode opens
// it at startup (openStorage); then the WAL writer appends to the WAL, and
// the WAL writer and the applier's snapshot writer both save snapshots,
// which mu orders. raftNode closes the WAL once both have stopped.
type diskStore struct {
	waldir, snapdir string
	logger          *zap.Logger
	fp              *failpoint // crashes the process at a named point, for tests

	wal         *wal.WAL
	walMetadata []byte // as read from the WAL at start
	snapshotter *snap.Snapshotter
	mu          sync.Mutex // orders snapshot saves
}

func newDiskStore(cfg raftConfig) *diskStore {
	return &diskStore{
		waldir:  filepath.Join(cfg.DataDir, fmt.Sprintf("raftexample-%d", cfg.ID)),
		snapdir: filepath.Join(cfg.DataDir, fmt.Sprintf("raftexample-%d-snap", cfg.ID)),
		logger:  cfg.Logger,
		fp:      cfg.Failpoint,
	}
}

// removedMarker is written next to the data directories once this member's
// removal is committed; a removed member must not rejoin with its old ID.
func (rc *raftNode) removedMarker() string {
	return filepath.Join(rc.cfg.DataDir, fmt.Sprintf("raftexample-%d-removed", rc.cfg.ID))
}

func (rc *raftNode) checkNotRemoved() error {
	if fileutil.Exist(rc.removedMarker()) {
		return fmt.Errorf("member %d was removed from the cluster and cannot start from %s again (%s exists); start a new member with a new ID and an empty data dir",
			rc.cfg.ID, rc.disk.waldir, rc.removedMarker())
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
	if err := fileutil.TouchDirAll(lg, rc.disk.snapdir); err != nil {
		return false, fmt.Errorf("create snapshot dir %s: %w", rc.disk.snapdir, err)
	}
	rc.disk.snapshotter = snap.New(lg, rc.disk.snapdir)
	if err := rc.disk.removeTempStateFiles(); err != nil {
		return false, err
	}

	// wal.Exist says "no WAL" for a path it cannot read, and wal.Create then
	// deletes whatever is there: a WAL directory that exists but is unusable
	// must stop the member, not start it over with an empty state.
	if _, err := os.ReadDir(rc.disk.waldir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("WAL dir %s is unusable: %w", rc.disk.waldir, err)
	}
	if !wal.Exist(rc.disk.waldir) {
		return false, rc.createWAL()
	}

	loaded, st, ents, err := rc.disk.loadState()
	if err != nil {
		return false, err
	}
	if rc.clusterID, err = decodeWALMetadata(rc.disk.walMetadata, rc.cfg.ID); err != nil {
		rc.disk.wal.Close()
		return false, fmt.Errorf("WAL %s: %w", rc.disk.waldir, err)
	}
	snapshot := loaded.snapshot()
	if snapshot != nil {
		if err := rc.raftStorage.ApplySnapshot(snapshot); err != nil {
			rc.disk.wal.Close()
			return false, fmt.Errorf("apply snapshot: %w", err)
		}
		rc.applier.bootFrom(loaded)
	}
	if err := rc.raftStorage.SetHardState(st); err != nil {
		rc.disk.wal.Close()
		return false, fmt.Errorf("restore raft state from WAL %s: %w", rc.disk.waldir, err)
	}
	if err := rc.raftStorage.Append(ents); err != nil {
		rc.disk.wal.Close()
		return false, fmt.Errorf("restore raft log from WAL %s: %w", rc.disk.waldir, err)
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
		rc.disk.wal.Close()
		if err := os.RemoveAll(rc.disk.waldir); err != nil {
			return false, fmt.Errorf("remove empty WAL %s: %w", rc.disk.waldir, err)
		}
		return false, rc.createWAL()
	}
	rc.logger.Info("loaded data", zap.String("wal", rc.disk.waldir), zap.Uint64("snapshot-index", snapshot.GetMetadata().GetIndex()),
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
	w, err := wal.Create(libLogger(rc.logger), rc.disk.waldir, encodeWALMetadata(rc.clusterID, rc.cfg.ID))
	if err != nil {
		return fmt.Errorf("create WAL %s: %w", rc.disk.waldir, err)
	}
	rc.disk.wal = w
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
func (d *diskStore) loadState() (*loadedSnapshot, *raftpb.HardState, []*raftpb.Entry, error) {
	if s, err := d.snapshotter.Load(); err == nil {
		ls, st, ents, err := d.loadNewest(s)
		if err == nil {
			return ls, st, ents, nil
		}
		d.logger.Warn("newest snapshot cannot be used with the WAL, checking the snapshots the WAL lists",
			zap.Uint64("index", s.GetMetadata().GetIndex()), zap.Error(err))
	}
	ls, err := d.loadSnapshot()
	if err != nil {
		return nil, nil, nil, err
	}
	st, ents, err := d.openWAL(ls.snapshot())
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
func (d *diskStore) loadNewest(s *raftpb.Snapshot) (*loadedSnapshot, *raftpb.HardState, []*raftpb.Entry, error) {
	type result struct {
		ls  *loadedSnapshot
		err error
	}
	read := make(chan result, 1)
	go func() {
		ls, err := d.readSnapshot(s)
		read <- result{ls, err}
	}()
	st, ents, werr := d.openWAL(s)
	r := <-read
	if err := errors.Join(r.err, werr); err != nil {
		if werr == nil {
			d.wal.Close()
			d.wal = nil
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
func (d *diskStore) loadSnapshot() (*loadedSnapshot, error) {
	walSnaps, err := wal.ValidSnapshotEntries(libLogger(d.logger), d.waldir)
	if err != nil {
		return nil, fmt.Errorf("list snapshots in WAL %s: %w", d.waldir, err)
	}
	for {
		s, err := d.snapshotter.LoadNewestAvailable(walSnaps)
		if errors.Is(err, snap.ErrNoSnapshot) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("load snapshot from %s: %w", d.snapdir, err)
		}
		ls, err := d.readSnapshot(s)
		if err == nil {
			return ls, nil
		}
		index := s.GetMetadata().GetIndex()
		d.logger.Warn("snapshot unusable, trying an older one", zap.Uint64("index", index), zap.Error(err))
		walSnaps = slices.DeleteFunc(walSnaps, func(w *walpb.Snapshot) bool { return w.GetIndex() >= index })
	}
}

// readSnapshot reads the membership from a raft snapshot and the key-value
// state from its .snap.db file, checking both.
func (d *diskStore) readSnapshot(s *raftpb.Snapshot) (*loadedSnapshot, error) {
	index := s.GetMetadata().GetIndex()
	members, err := wire.DecodeMembership(s.GetData())
	if err != nil {
		return nil, fmt.Errorf("snapshot %d in %s: %w", index, d.snapdir, err)
	}
	f, size, err := d.openStateFile(index)
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
func (d *diskStore) openStateFile(index uint64) (*os.File, int64, error) {
	path, err := d.snapshotter.DBFilePath(index)
	if err != nil {
		return nil, 0, fmt.Errorf("state file of snapshot %d in %s: %w", index, d.snapdir, err)
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
func (d *diskStore) saveStateFile(index uint64, encode func(io.Writer) error) (int64, error) {
	f, err := os.CreateTemp(d.snapdir, "tmp")
	if err != nil {
		return 0, &snapFileError{fmt.Errorf("create snapshot state in %s: %w", d.snapdir, err)}
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
		err = os.Rename(f.Name(), filepath.Join(d.snapdir, fmt.Sprintf("%016x.snap.db", index)))
	}
	if err == nil {
		err = fsyncDir(d.snapdir)
	}
	if err != nil {
		os.Remove(f.Name())
		return w.n, &snapFileError{fmt.Errorf("save snapshot state %d to %s: %w", index, d.snapdir, err)}
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
func (d *diskStore) removeTempStateFiles() error {
	tmps, err := filepath.Glob(filepath.Join(d.snapdir, "tmp*"))
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
func (d *diskStore) openWAL(snapshot *raftpb.Snapshot) (*raftpb.HardState, []*raftpb.Entry, error) {
	walsnap := &walpb.Snapshot{Index: proto.Uint64(0), Term: proto.Uint64(0)}
	if snapshot != nil {
		walsnap.Index = proto.Uint64(snapshot.GetMetadata().GetIndex())
		walsnap.Term = proto.Uint64(snapshot.GetMetadata().GetTerm())
	}
	repaired := false
	for {
		w, err := wal.Open(libLogger(d.logger), d.waldir, walsnap)
		if err != nil {
			return nil, nil, fmt.Errorf("open WAL %s: %w", d.waldir, err)
		}
		md, st, ents, err := w.ReadAll()
		if err == nil {
			d.wal, d.walMetadata = w, md
			return st, ents, nil
		}
		w.Close()
		if repaired || !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil, fmt.Errorf("read WAL %s: %w", d.waldir, err)
		}
		if !wal.Repair(libLogger(d.logger), d.waldir) {
			return nil, nil, fmt.Errorf("repair torn WAL %s: %w", d.waldir, err)
		}
		d.logger.Warn("repaired torn WAL tail", zap.String("wal", d.waldir))
		repaired = true
	}
}

// saveSnap writes a snapshot file, then records it in the WAL, then lets the
// WAL release files older than it.
func (d *diskStore) saveSnap(s *raftpb.Snapshot) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	md := s.GetMetadata()
	walSnap := &walpb.Snapshot{
		Index:     proto.Uint64(md.GetIndex()),
		Term:      proto.Uint64(md.GetTerm()),
		ConfState: md.GetConfState(),
	}
	if err := d.snapshotter.SaveSnap(s); err != nil {
		return &snapFileError{fmt.Errorf("save snapshot %d to %s: %w", md.GetIndex(), d.snapdir, err)}
	}
	d.fp.reach("after-snapshot-file", d.logger)
	if err := d.wal.SaveSnapshot(walSnap); err != nil {
		return fmt.Errorf("record snapshot %d in WAL: %w", md.GetIndex(), err)
	}
	d.fp.reach("after-wal-snapshot-record", d.logger)
	if err := d.wal.ReleaseLockTo(md.GetIndex()); err != nil {
		return fmt.Errorf("release WAL files before %d: %w", md.GetIndex(), err)
	}
	d.fp.reach("after-wal-release", d.logger)
	return nil
}

// startPurging removes old WAL and snapshot files beyond --max-wals and
// --max-snapshots (0 keeps them all).
func (rc *raftNode) startPurging() {
	purge := func(dir, suffix string, max uint) {
		if max == 0 {
			return
		}
		rc.wg.Go(func() { rc.purgeLoop(dir, suffix, max) })
	}
	purge(rc.disk.waldir, ".wal", rc.cfg.MaxWALs)
	purge(rc.disk.snapdir, ".snap", rc.cfg.MaxSnapshots)
	purge(rc.disk.snapdir, ".snap.db", rc.cfg.MaxSnapshots)
}

// purgeLoop runs fileutil's purger until the member stops. The purger gives
// up on its first error (out of file descriptors, a file it cannot
// remove); a purge that failed only leaves files for the next pass, so it
// is logged and the purger started again after PurgeInterval.
func (rc *raftNode) purgeLoop(dir, suffix string, max uint) {
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
func (d *diskStore) postponeSnapshot(index uint64, err error) bool {
	var sfe *snapFileError
	if !errors.As(err, &sfe) || !fdExhausted(err) {
		return false
	}
	os.Remove(filepath.Join(d.snapdir, fmt.Sprintf("%016x.snap.db", index)))
	d.logger.Warn("snapshot postponed: out of file descriptors; the next one is taken after --snapshot-count more entries",
		zap.Uint64("index", index), zap.Error(err))
	return true
}
