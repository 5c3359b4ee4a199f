package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/btree"
	"go.etcd.io/etcd/pkg/v3/idutil"
	"go.etcd.io/etcd/pkg/v3/wait"
	"go.uber.org/zap"

	"raftexample/internal/wire"
)

// kvstore is the replicated state machine: keys in order with their values
// and revisions, changed only by applying committed raft entries that arrive
// on commitC. Writers propose through proposeC and wait until their own
// entry has been applied here, so a write that returns is committed and
// visible to the next read.
type kvstore struct {
	cfg       kvConfig
	proposeC  chan<- proposal
	logger    *zap.Logger
	ids       *idutil.Generator
	leader    *leaderWatch
	readIndex func(context.Context) (uint64, error)
	metrics   *metrics

	mu        sync.RWMutex
	items     *btree.BTreeG[kvItem]
	applied   uint64 // index of the last entry applied
	histStart uint64 // history holds every event with a revision above this
	history   []event
	histBuf   []event // history's backing array, reused as it slides
	histRevs  int     // revisions in history
	histBytes int64   // history's size, counted by eventBytes
	watchers  map[*watcher]struct{}
	leases    map[uint64]*lease // replicated, but for each lease's local deadline

	// stateBytes is the size of the state, keys plus values; written under
	// mu, read without it by writers checking the quota.
	stateBytes atomic.Int64

	waits     wait.Wait      // request ID -> txnResult
	appliedAt wait.WaitTime  // applied index reached
	stopped   chan struct{}  // closed when commitC is closed
	wg        sync.WaitGroup // readCommits, awaitFresh and the lessor
	fresh     chan struct{}  // closed once the state holds all this member ever acknowledged
}

// kvItem is a stored key with its value, the raft index (revision) of the
// entry that last wrote it, that of the entry that created it, and the lease
// it is attached to (0: none). Its fields are wire.Item's.
type kvItem struct {
	Key       string
	Value     []byte
	Rev       uint64
	CreateRev uint64
	Lease     uint64
}

// newKVTree returns an empty tree of items in key order.
func newKVTree() *btree.BTreeG[kvItem] {
	return btree.NewG(32, func(a, b kvItem) bool { return a.Key < b.Key })
}

// event is one applied change, as watchers see it.
type event struct {
	Type      wire.OpKind
	Key       string
	Value     []byte
	Rev       uint64
	CreateRev uint64 // puts only
}

// txnResult is what the applier tells a waiting writer.
type txnResult struct {
	Rev       uint64   // raft index of the entry: the revision of what it wrote
	Failed    int      // index of the first op whose condition failed, or -1
	Found     []bool   // per op: whether its key existed before the entry
	CreateRev []uint64 // per put: its key's create revision after the entry
	// LeaseErr says why op Failed failed when a lease did, not a
	// condition: errLeaseNotFound or errLeaseExists.
	LeaseErr error
	Lease    uint64 // the lease the entry granted (a grant, or a put's own)
}

// committedEntry is one raft entry ready to apply. data is empty for
// entries that only advance the index (leader no-ops, membership changes).
type committedEntry struct {
	index uint64
	term  uint64 // the term it was appended in, which LeaseExpire checks
	data  []byte
}

// commit is what raftNode publishes on commitC: entries to apply in order,
// or a snapshot to restore (index > 0) before them. The applier closes
// applyDoneC when done, which lets raftNode snapshot a state it knows.
type commit struct {
	snapshot      *kvState
	snapshotIndex uint64
	entries       []committedEntry
	applyDoneC    chan<- struct{}
}

// kvConfig configures a kvstore. Every field is set (main sets them from
// flags); zero is not a default.
type kvConfig struct {
	Logger   *zap.Logger
	Metrics  *metrics
	MemberID uint64
	// HistoryRevisions and HistoryBytes bound the watch history
	// (--watch-history, --watch-history-bytes). The oldest whole revisions
	// are evicted until both hold; the newest revision always stays.
	HistoryRevisions int
	HistoryBytes     int64
	// WatchQueueRevisions and WatchQueueBytes bound how far one watcher may
	// fall behind before it is cut off. A revision larger than
	// WatchQueueBytes is still queued for a watcher that has nothing queued.
	WatchQueueRevisions int
	WatchQueueBytes     int64
	// QuotaBytes bounds the state's keys plus values (--quota-bytes).
	QuotaBytes int64
	// LeaseCheckpointInterval is how often the leader records the remaining
	// TTLs of leases through raft (--lease-checkpoint-interval), so that a
	// restart of the whole cluster resumes them; 0 records none.
	LeaseCheckpointInterval time.Duration
}

// The watcher queue's defaults: enough for a burst of small writes or a
// few full-size transactions, small enough that thousands of watchers that
// stop reading cost little before they are cut off.
const (
	defaultWatchQueueRevisions = 1024
	defaultWatchQueueBytes     = 8 << 20
)

func newKVStore(cfg kvConfig, proposeC chan<- proposal) *kvstore {
	s := &kvstore{
		cfg:       cfg,
		metrics:   cfg.Metrics,
		proposeC:  proposeC,
		logger:    cfg.Logger,
		ids:       idutil.NewGenerator(uint16(cfg.MemberID), time.Now()),
		items:     newKVTree(),
		watchers:  map[*watcher]struct{}{},
		leases:    map[uint64]*lease{},
		waits:     wait.New(),
		appliedAt: wait.NewTimeList(),
		stopped:   make(chan struct{}),
		fresh:     make(chan struct{}),
	}
	m := cfg.Metrics
	m.gaugeFunc("keys", "Keys in this member's state.", func() float64 { return float64(s.len()) })
	m.gaugeFunc("state_bytes", "Keys plus values in this member's state (bounded by --quota-bytes).",
		func() float64 { return float64(s.stateBytes.Load()) })
	m.gaugeFunc("quota_bytes", "The --quota-bytes limit on keys plus values.", func() float64 { return float64(cfg.QuotaBytes) })
	m.gaugeFunc("watch_history_bytes", "Size of the watch history (bounded by --watch-history-bytes).",
		func() float64 { return float64(s.historyStats().bytes) })
	m.gaugeFunc("watch_history_revisions", "Revisions in the watch history (bounded by --watch-history).",
		func() float64 { return float64(s.historyStats().revs) })
	m.gaugeFunc("watchers", "Open watches on this member.", func() float64 { return float64(s.historyStats().watchers) })
	m.gaugeFunc("leases", "Leases in this member's state.", func() float64 { return float64(s.leaseCount()) })
	return s
}

// historyStats is what the watch metrics report.
type historyStats struct {
	bytes          int64
	revs, watchers int
}

func (s *kvstore) historyStats() historyStats {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return historyStats{bytes: s.histBytes, revs: s.histRevs, watchers: len(s.watchers)}
}

// raftLink is what the kvstore takes from raftNode: the committed entries
// to apply, the leader (to tell writers when waiting is hopeless), read
// indexes for linearizable reads, and what it needs to know when it holds
// everything this member acknowledged before it last stopped.
type raftLink struct {
	commitC   <-chan *commit
	leader    *leaderWatch
	readIndex func(context.Context) (uint64, error)
	bootLast  uint64        // the last entry in the WAL at start
	retry     time.Duration // between ReadIndex rounds while catching up; the election timeout
	leadTerm  func() uint64 // the term this member leads in, or 0
}

// start applies commits until commitC is closed, and runs the lessor, which
// expires leases while this member leads, until then too.
func (s *kvstore) start(l raftLink) {
	s.leader = l.leader
	s.readIndex = l.readIndex
	s.wg.Go(func() { s.readCommits(l.commitC) })
	s.wg.Go(func() { s.awaitFresh(l.bootLast, l.retry) })
	if l.leadTerm != nil {
		s.wg.Go(func() { s.runLessor(l.leadTerm, l.retry) })
	}
}

// wait returns once the goroutines start began have ended: after raftNode
// has stopped and closed commitC.
func (s *kvstore) wait() { s.wg.Wait() }

// appliedIndex is the index of the last entry the store has applied.
func (s *kvstore) appliedIndex() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.applied
}

// awaitFresh closes s.fresh once this member's state includes everything it
// acknowledged before it last stopped. The commit index saved in the WAL
// can trail what was applied (raft does not fsync a commit-only change), so
// after a crash the member replays to bootCommit but may have acknowledged
// entries up to bootLast, the last entry in its WAL. Applying up to bootLast,
// or completing one ReadIndex round, proves the state is fresh again.
func (s *kvstore) awaitFresh(bootLast uint64, retry time.Duration) {
	for {
		select {
		case <-s.waitApplied(bootLast):
			close(s.fresh)
			return
		case <-s.stopped:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), retry)
		index, err := s.readIndex(ctx)
		cancel()
		var again <-chan time.Time // ask again after a failed round
		if err == nil {
			bootLast = min(bootLast, index)
		} else {
			again = time.After(retry)
		}
		select {
		case <-s.waitApplied(bootLast):
		case <-again:
		case <-s.stopped:
		}
	}
}

func (s *kvstore) readCommits(commitC <-chan *commit) {
	defer s.closeWatchers()
	defer close(s.stopped)
	for c := range commitC {
		if c.snapshot != nil {
			s.restore(*c.snapshot, c.snapshotIndex)
		}
		s.apply(c.entries)
		close(c.applyDoneC)
	}
}

// Get returns key's item. A linearizable read reflects every write
// acknowledged before it began; a serializable one answers from this
// member's state at once and may be stale, though never older than what
// this member itself acknowledged.
func (s *kvstore) Get(ctx context.Context, key string, serializable bool) (kvItem, bool, error) {
	if err := s.catchUp(ctx, serializable); err != nil {
		return kvItem{}, false, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	it, ok := s.items.Get(kvItem{Key: key})
	return it, ok, nil
}

// listPage is one page of a listing: the items, whether more follow, and
// the revision of the state they were read from (the last applied entry),
// from which a watch sees every change after the listing.
type listPage struct {
	Items []kvItem
	More  bool
	Rev   uint64
}

// List returns up to limit items whose keys start with prefix and sort after
// after, in key order.
func (s *kvstore) List(ctx context.Context, prefix, after string, limit int, serializable bool) (listPage, error) {
	if err := s.catchUp(ctx, serializable); err != nil {
		return listPage{}, err
	}
	from := kvItem{Key: prefix}
	if after >= prefix {
		from.Key = after + "\x00" // the smallest key above after
	}
	var page listPage
	s.mu.RLock()
	defer s.mu.RUnlock()
	page.Rev = s.applied
	s.items.AscendGreaterOrEqual(from, func(it kvItem) bool {
		if !strings.HasPrefix(it.Key, prefix) {
			return false
		}
		if len(page.Items) == limit {
			page.More = true
			return false
		}
		page.Items = append(page.Items, it)
		return true
	})
	return page, nil
}

// catchUp waits, for a linearizable read, until this member has applied
// everything committed before the read began; for a serializable one, until
// it holds everything it acknowledged before its last restart.
func (s *kvstore) catchUp(ctx context.Context, serializable bool) error {
	if serializable {
		select {
		case <-s.fresh:
			return nil
		case <-ctx.Done():
			return errCatchingUp
		case <-s.stopped:
			return errStopping
		}
	}
	index, err := s.readIndex(ctx)
	if err != nil {
		return err
	}
	select {
	case <-s.waitApplied(index):
		return nil
	case <-ctx.Done():
		return ctxErr(ctx)
	case <-s.stopped:
		return errStopping
	}
}

// Txn applies ops atomically, all or none, and returns once the entry is
// applied here. A failed condition is a result, not an error.
func (s *kvstore) Txn(ctx context.Context, ops []wire.Op) (txnResult, error) {
	if err := s.checkQuota(ops); err != nil {
		s.metrics.proposalsFailed.WithLabelValues(failureReason(err)).Inc()
		return txnResult{}, err
	}
	if err := leaderKnown(ctx, s.leader); err != nil {
		return txnResult{}, err
	}
	s.metrics.proposalsPending.Inc()
	defer s.metrics.proposalsPending.Dec()
	r := wire.Request{ID: s.ids.Next(), Ops: ops}
	x, err := proposeAndWait(ctx, s.proposeC, proposal{data: wire.EncodeRequest(r)}, s.waits, r.ID, s.leader, s.stopped)
	if err != nil {
		s.metrics.proposalsFailed.WithLabelValues(failureReason(err)).Inc()
		return txnResult{}, err
	}
	res, _ := x.(txnResult) // zero only if Trigger raced our cleanup
	return res, nil
}

// checkQuota refuses ops that would add data to a state at or past
// --quota-bytes. It runs on the proposing member only, before proposing:
// applying must stay the same on every member whatever their flags, so a
// committed entry is never refused. Writes in flight together are each
// checked against the state before any of them, so they may go over the
// quota by what they carry.
func (s *kvstore) checkQuota(ops []wire.Op) error {
	quota, have := s.cfg.QuotaBytes, s.stateBytes.Load()
	var most int64 // what ops add if every key is new
	for _, o := range ops {
		if o.Kind == wire.Put {
			most += int64(len(o.Key) + len(o.Value))
		}
	}
	if have+most <= quota {
		return nil
	}
	add := s.growth(ops)
	if add <= 0 || have+add <= quota {
		return nil
	}
	return fmt.Errorf("%w: the state holds %d bytes of keys and values and this write adds %d, over --quota-bytes %d; delete keys or write smaller values to free space",
		errQuota, have, add, quota)
}

// growth returns how many bytes ops would add to the state as it is now
// (negative when they free space), following each key through the ops.
func (s *kvstore) growth(ops []wire.Op) int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	size := make(map[string]int64, len(ops)) // each key's size so far
	var add int64
	for _, o := range ops {
		before, seen := size[o.Key]
		if !seen {
			if it, ok := s.items.Get(kvItem{Key: o.Key}); ok {
				before = itemBytes(it.Key, it.Value)
			}
		}
		var after int64
		if o.Kind == wire.Put {
			after = itemBytes(o.Key, o.Value)
		}
		add += after - before
		size[o.Key] = after
	}
	return add
}

// itemBytes is what one key counts towards --quota-bytes.
func itemBytes(key string, value []byte) int64 { return int64(len(key) + len(value)) }

// Put sets key to value.
func (s *kvstore) Put(ctx context.Context, key string, value []byte) error {
	_, err := s.Txn(ctx, []wire.Op{{Kind: wire.Put, Key: key, Value: value}})
	return err
}

// waitApplied returns a channel closed once entries up to index are applied.
func (s *kvstore) waitApplied(index uint64) <-chan struct{} {
	return s.appliedAt.Wait(index)
}

func (s *kvstore) apply(ents []committedEntry) {
	if len(ents) == 0 {
		return
	}
	type done struct {
		id  uint64
		res txnResult
	}
	var results []done
	start := time.Now()
	s.mu.Lock()
	for _, e := range ents {
		if len(e.data) == 0 {
			continue
		}
		r, err := wire.DecodeRequest(e.data)
		if err != nil {
			// Every member decodes the same bytes, so every member skips it.
			s.logger.Warn("skipping malformed entry", zap.Uint64("index", e.index), zap.Error(err))
			continue
		}
		results = append(results, done{r.ID, s.applyTxn(r.Ops, e.index, e.term)})
	}
	s.applied = ents[len(ents)-1].index
	applied := s.applied
	s.mu.Unlock()
	s.metrics.applyDuration.Observe(time.Since(start).Seconds())
	s.metrics.proposalsCommitted.Add(float64(len(results)))
	for _, d := range results {
		s.waits.Trigger(d.id, d.res)
	}
	s.appliedAt.Trigger(applied)
}

// applyTxn checks every condition against the state before the entry, then
// applies all ops or none; the caller holds s.mu. Applying the same entry
// twice leaves the same state, which makes replay after a crash safe. term
// is the term the entry was appended in.
func (s *kvstore) applyTxn(ops []wire.Op, index, term uint64) txnResult {
	res := txnResult{Rev: index, Failed: -1, Found: make([]bool, len(ops))}
	// A lone unconditional op (a plain PUT or DELETE) needs no look-up
	// first: applying it tells whether its key existed.
	lone := len(ops) == 1 && ops[0].Cond == wire.CondNone && !needsLeaseCheck(ops[0])
	if !lone {
		for i, o := range ops {
			if err := s.checkLease(o); err != nil {
				res.Failed, res.LeaseErr = i, err
				return res
			}
			if o.Kind.IsLease() {
				continue
			}
			cur, ok := s.items.Get(kvItem{Key: o.Key})
			res.Found[i] = ok
			if !condHolds(o, cur, ok) {
				res.Failed = i
				return res
			}
		}
	}
	var evs []event
	var grew int64
	for i, o := range ops {
		var existed bool
		var prev kvItem
		switch o.Kind {
		case wire.Put:
			var it kvItem
			it, prev, existed = s.applyPut(o, index, lone, &res, i)
			grew += itemBytes(it.Key, it.Value)
			evs = append(evs, event{Type: wire.Put, Key: it.Key, Value: it.Value, Rev: index, CreateRev: it.CreateRev})
		case wire.Delete:
			if prev, existed = s.items.Delete(kvItem{Key: o.Key}); existed {
				s.detach(prev.Lease, prev.Key)
				evs = append(evs, event{Type: wire.Delete, Key: o.Key, Rev: index})
			}
		default:
			freed, dels := s.applyLeaseOp(o, index, term, &res)
			grew -= freed
			evs = append(evs, dels...)
		}
		if existed {
			grew -= itemBytes(prev.Key, prev.Value)
		}
		if lone {
			res.Found[i] = existed
		}
	}
	s.stateBytes.Add(grew)
	s.record(evs)
	return res
}

// applyPut writes a put's key, granting it a lease of its own if it asks,
// and moves the key between leases; the caller holds s.mu. It returns the
// item it wrote and the one it replaced, if any.
func (s *kvstore) applyPut(o wire.Op, index uint64, lone bool, res *txnResult, i int) (it, prev kvItem, existed bool) {
	// o.Value points into the raft entry. A lone put's entry is little
	// more than its value: keeping it saves a copy, and the state, the
	// watch history and raft's log then share one buffer (with 1 MiB
	// values that is half the memory). A txn's value is copied, so that a
	// key left from a large txn does not keep the whole entry alive.
	v := o.Value[:len(o.Value):len(o.Value)]
	if !lone {
		v = bytes.Clone(v)
	}
	leaseID := o.Lease
	if o.TTL > 0 {
		leaseID = s.grantLease(o.Lease, o.TTL, index, true)
		res.Lease = leaseID
	} else if s.leases[leaseID] == nil {
		leaseID = 0 // its lease was revoked earlier in the same entry: written unattached
	}
	it = kvItem{Key: o.Key, Value: v, Rev: index, CreateRev: index, Lease: leaseID}
	prev, existed = s.items.ReplaceOrInsert(it)
	if existed {
		it.CreateRev = prev.CreateRev
		s.items.ReplaceOrInsert(it)
	}
	if !existed || prev.Lease != leaseID {
		if existed {
			s.detach(prev.Lease, o.Key)
		}
		s.attach(leaseID, o.Key)
	}
	if res.CreateRev == nil {
		res.CreateRev = make([]uint64, len(res.Found))
	}
	res.CreateRev[i] = it.CreateRev
	return it, prev, existed
}

func condHolds(o wire.Op, cur kvItem, exists bool) bool {
	switch o.Cond {
	case wire.CondRev:
		return exists && cur.Rev == o.CondRev
	case wire.CondAbsent:
		return !exists
	case wire.CondExists:
		return exists
	default:
		return true
	}
}

// eventOverhead is what one history event costs beyond its key and value:
// the event itself and its slot in the buffer, about.
const eventOverhead = 64

// eventBytes is what one event counts towards --watch-history-bytes.
func eventBytes(e event) int64 { return int64(len(e.Key)+len(e.Value)) + eventOverhead }

// revisionBytes is what the events of one revision count, by eventBytes.
func revisionBytes(evs []event) int64 {
	var n int64
	for _, e := range evs {
		n += eventBytes(e)
	}
	return n
}

// record appends one entry's events, one revision, to the history, trims
// the history to its bounds, and tells the watchers; the caller holds s.mu.
func (s *kvstore) record(evs []event) {
	if len(evs) == 0 {
		return
	}
	if len(s.history)+len(evs) > cap(s.history) {
		s.slideHistory(len(evs))
	}
	s.history = append(s.history, evs...)
	s.histRevs++
	s.histBytes += revisionBytes(evs)
	s.trimHistory()
	s.notify(evs)
}

// trimHistory evicts the oldest whole revisions until the history holds at
// most HistoryRevisions revisions and HistoryBytes bytes, but always keeps
// the newest revision: a revision larger than the byte bound evicts every
// older one, and nothing more. The caller holds s.mu.
func (s *kvstore) trimHistory() {
	n := 0 // events evicted
	for s.histRevs > 1 && (s.histRevs > s.cfg.HistoryRevisions || s.histBytes > s.cfg.HistoryBytes) {
		rev := s.history[n].Rev
		for ; s.history[n].Rev == rev; n++ { // another revision follows
			s.histBytes -= eventBytes(s.history[n])
		}
		s.histRevs--
		s.histStart = rev
	}
	if n > 0 {
		clear(s.history[:n]) // let go of the evicted values now
		s.history = s.history[n:]
	}
}

// slideHistory moves the history to the front of histBuf, which has room
// for as many events again as the history holds, and n more, behind it.
// Trimming the front of the history then frees nothing and appends
// allocate nothing until the next slide, which copies the history once per
// as many appends: letting append grow it instead copied the whole history
// into a new array at every few appends. The buffer is replaced when the
// history outgrows it or shrinks to a small part of it.
func (s *kvstore) slideHistory(n int) {
	const minSize = 64
	size := 2*len(s.history) + n + minSize
	if c := cap(s.histBuf); c < size || c > 4*size {
		s.histBuf = make([]event, 0, size)
	}
	k := copy(s.histBuf[:cap(s.histBuf)], s.history)
	clear(s.histBuf[k:cap(s.histBuf)]) // let go of the values trimmed away
	s.history = s.histBuf[:k]
}

// getSnapshot captures the state as of the last applied entry. The capture
// is cheap (a copy-on-write clone of the tree and a copy of the history);
// encoding it, the slow part, happens in the returned function, off the
// applier.
func (s *kvstore) getSnapshot() func(io.Writer) error {
	s.mu.Lock() // Clone updates the tree's copy-on-write bookkeeping
	st := kvState{Items: s.items.Clone(), HistStart: s.histStart, History: slices.Clone(s.history), Leases: s.leaseRecords()}
	s.mu.Unlock()
	return func(w io.Writer) error { return writeKV(w, st) }
}

// restore replaces the state with a snapshot's, which raftNode has read
// and checked.
func (s *kvstore) restore(st kvState, index uint64) {
	var size int64
	st.Items.Ascend(func(it kvItem) bool {
		size += itemBytes(it.Key, it.Value)
		return true
	})
	s.mu.Lock()
	s.items, s.histStart, s.history = st.Items, st.HistStart, st.History
	s.restoreLeases(st.Leases)
	s.histBuf = nil // let go of the old history's values
	s.stateBytes.Store(size)
	s.histRevs, s.histBytes = 0, 0
	for i, e := range s.history {
		if i == 0 || e.Rev != s.history[i-1].Rev {
			s.histRevs++
		}
		s.histBytes += eventBytes(e)
	}
	s.trimHistory() // this member's bounds may be smaller than the sender's
	s.applied = index
	s.cutOffWatchers() // they may have missed events the snapshot skips over
	s.mu.Unlock()
	s.appliedAt.Trigger(index)
}

// stateSize is the bytes of keys and values in the state.
func (s *kvstore) stateSize() int64 { return s.stateBytes.Load() }

// len returns the number of keys.
func (s *kvstore) len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.items.Len()
}
