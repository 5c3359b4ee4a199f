package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/pkg/v3/wait"
	"go.etcd.io/etcd/server/v3/etcdserver/api/rafthttp"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	stats "go.etcd.io/etcd/server/v3/etcdserver/api/v2stats"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"raftexample/internal/wire"
)

// errRemoved ends a member whose removal from the cluster was committed.
var errRemoved = errors.New("this member was removed from the cluster")

// raftConfig configures one raft member. Zero durations and counts are not
// defaults: main fills every field from flags.
type raftConfig struct {
	ID            uint64
	Peers         []string // --cluster; entry ID-1 is this member's own URL
	Join          bool
	DataDir       string
	SnapshotCount uint64
	// SnapshotLogRatio also holds a snapshot back until the entries applied
	// since the last one add up to this fraction of its state file's size:
	// rewriting a large state every SnapshotCount entries would keep a core
	// and the disk busy. 0 snapshots every SnapshotCount entries.
	SnapshotLogRatio float64
	CatchupEntries   uint64
	MaxSnapshots     uint
	MaxWALs          uint
	PurgeInterval    time.Duration
	Tick             time.Duration
	ElectionTicks    int
	HeartbeatTicks   int
	ReadTimeout      time.Duration // longest a ReadIndex round may take
	Logger           *zap.Logger
	Metrics          *metrics

	// MaxLogBytes bounds raft's in-memory log in bytes of entry data
	// (--max-log-bytes): a snapshot is due once the entries applied since
	// the last one reach half of it, whatever SnapshotCount and
	// SnapshotLogRatio say; compaction keeps at most half of it for slow
	// followers; uncommitted entries and entries in flight to each
	// follower are bounded by half of it too.
	MaxLogBytes uint64

	// ClusterToken (--initial-cluster-token) is mixed into a new cluster's
	// ID, so clusters bootstrapped from the same --cluster list differ.
	ClusterToken string

	// PeerTLS secures the peer links (https:// URLs in Peers); empty for http.
	PeerTLS transport.TLSInfo
	// Peer bounds the peer listener's connections; rafthttp's streams and
	// snapshot transfers are exempt from its ReadTimeout.
	Peer connLimits

	// Failpoint, when set, crashes the member at a named point (failpoint.go);
	// main sets it from RAFTEXAMPLE_FAILPOINT for crash tests.
	Failpoint *failpoint

	// PeerListener, when set, serves raft peers instead of listening on this
	// member's URL (tests use it to hold a free port without racing).
	PeerListener net.Listener
	// PeerListenAddr, when set, is the host:port to listen on for peers
	// instead of this member's own --cluster URL, which is then only what
	// the others dial: the fault tests put a proxy there, and every member
	// must be given the same --cluster list to agree on the cluster ID. main
	// sets it from RAFTEXAMPLE_PEER_LISTEN.
	PeerListenAddr string
}

// checkScheme requires https:// peer URLs with peer TLS and http:// without.
func (c raftConfig) checkScheme(peerURL string) error {
	want := "http://"
	if !c.PeerTLS.Empty() {
		want = "https://"
	}
	if !strings.HasPrefix(peerURL, want) {
		return fmt.Errorf("%w: peer URL %s must start with %s (peer TLS is %s)", errInvalid, peerURL, want, map[bool]string{true: "off", false: "on"}[c.PeerTLS.Empty()])
	}
	return nil
}

// electionTimeout is how long followers wait for a leader before campaigning.
func (c raftConfig) electionTimeout() time.Duration {
	return time.Duration(c.ElectionTicks) * c.Tick
}

// raftNode drives one raft.Node: it proposes what arrives on proposeC and
// confChangeC, persists raft's log to the WAL and snapshot directory, sends
// messages with rafthttp, and publishes committed entries on commitC.
//
// raft runs with AsyncStorageWrites: the Ready loop only hands work out.
// Messages for peers leave at once; log appends go to the WAL writer
// (writeWAL), which saves everything queued behind one fsync; committed
// entries go to the applier (applyCommits). Neither waits for the other,
// so a commit reaches the kvstore and the followers while the next fsync
// is still running.
type raftNode struct {
	cfg         raftConfig
	logger      *zap.Logger
	proposeC    <-chan proposal // proposed kv operations
	confChangeC <-chan proposal // proposed membership changes
	commitC     chan *commit    // entries committed to the log
	errorC      chan error      // at most one error, then closed

	waldir  string
	snapdir string

	clusterID   uint64 // stamped on every peer message; set by openStorage
	walMetadata []byte // as read from the WAL at start

	getSnapshot func() func(io.Writer) error

	appendC chan *raftpb.Message // MsgStorageAppend: Ready loop -> WAL writer
	applyC  chan applyWork       // committed entries and snapshots -> applier

	leading bool   // raft state is leader; touched only by the Ready loop
	term    uint64 // raft's term as of the newest Ready; Ready loop only

	// Touched only by the applier goroutine (and startup, before it runs).
	confState     *raftpb.ConfState
	snapshotIndex uint64
	appliedIndex  uint64
	logBytes      uint64          // bytes of entries applied since the last snapshot
	snapshotDone  chan struct{}   // closed when the newest snapshot of our own is written
	bootSnapshot  *loadedSnapshot // restored first, before any entry

	applied       atomic.Uint64                    // appliedIndex, for other goroutines
	sharedConf    atomic.Pointer[raftpb.ConfState] // confState, for other goroutines
	lastConfIndex atomic.Uint64                    // newest membership change appended to the log
	lastIndex     atomic.Uint64                    // last index of raft's log, for checkPeerMessage
	snapshotting  atomic.Bool
	stateBytes    atomic.Int64 // size of the newest snapshot's state file
	bootCommit    uint64       // commit index found in the WAL at start
	bootLast      uint64       // last entry index found in the WAL at start

	node        raft.Node
	raftStorage *raft.MemoryStorage
	wal         *wal.WAL
	snapshotter *snap.Snapshotter
	snapMu      sync.Mutex // orders snapshot saves from the WAL writer and the background
	transport   *rafthttp.Transport
	peerServer  *http.Server
	peerHTTP    *http.Client // for requests of our own to peers (not raft messages)
	members     *cluster
	leader      *leaderWatch
	confWaits   wait.Wait                 // membership change request ID -> confApplied
	appliedAt   wait.WaitTime             // appliedIndex reached (membership changes included)
	memberAPI   atomic.Pointer[memberAPI] // serves forwarded membership requests
	removedSelf atomic.Bool               // this member's removal is known
	leaderStart atomic.Uint64             // first entry of this member's current leadership
	leadTerm    atomic.Uint64             // the term this member leads in, or 0
	reads       *readIndexer

	stopc       chan struct{} // closed to stop
	stopOnce    sync.Once
	errOnce     sync.Once
	err         error
	wg          sync.WaitGroup // goroutines other than the Ready loop
	done        chan struct{}  // closed when everything has stopped
	applierDone chan struct{}  // closed when the applier has returned
}

// newRaftNode opens (or creates) this member's WAL and snapshots, starts raft
// and the peer transport, and returns once the member is running. Errors
// that make the data or configuration unusable are returned, not logged.
func newRaftNode(cfg raftConfig, getSnapshot func() func(io.Writer) error, proposeC, confChangeC <-chan proposal) (*raftNode, error) {
	if cfg.ID == 0 || cfg.ID > uint64(len(cfg.Peers)) {
		return nil, fmt.Errorf("--id %d has no entry in --cluster (%d URLs)", cfg.ID, len(cfg.Peers))
	}
	if _, err := types.NewURLs(cfg.Peers); err != nil {
		return nil, fmt.Errorf("--cluster: %w", err)
	}
	for _, u := range cfg.Peers {
		if err := cfg.checkScheme(u); err != nil {
			return nil, fmt.Errorf("--cluster: %w", err)
		}
	}
	rc := &raftNode{
		cfg:         cfg,
		logger:      cfg.Logger,
		proposeC:    proposeC,
		confChangeC: confChangeC,
		commitC:     make(chan *commit),
		appendC:     make(chan *raftpb.Message, 1024),
		applyC:      make(chan applyWork, 1024),
		errorC:      make(chan error, 1),
		waldir:      filepath.Join(cfg.DataDir, fmt.Sprintf("raftexample-%d", cfg.ID)),
		snapdir:     filepath.Join(cfg.DataDir, fmt.Sprintf("raftexample-%d-snap", cfg.ID)),
		getSnapshot: getSnapshot,
		members:     newCluster(),
		leader:      newLeaderWatch(cfg.electionTimeout()),
		confWaits:   wait.New(),
		appliedAt:   wait.NewTimeList(),
		stopc:       make(chan struct{}),
		done:        make(chan struct{}),
		applierDone: make(chan struct{}),
	}
	rc.setConfState(&raftpb.ConfState{})
	rc.reads = newReadIndexer(rc, cfg.ReadTimeout)
	if err := rc.startRaft(); err != nil {
		rc.leader.stop()
		rc.stop()
		return nil, err
	}
	logBytes := rc.retainedLogBytes
	cfg.Metrics.raftLogBytes.Store(&logBytes)
	rc.wg.Add(5)
	go rc.serveProposals()
	go rc.reads.run()
	go rc.writeWAL()
	go rc.applyCommits()
	go rc.campaignWhenAlone(rc.node.Status().GetCommit())
	rc.startPurging()
	go rc.serveChannels()
	return rc, nil
}

// campaignWhenAlone starts an election as soon as this member has applied
// what was committed when it started, if it is then the only voter: nobody
// else can lead, so waiting out an election timeout would only keep a
// single-member cluster from serving for a second or two after every start.
// (raft refuses to campaign while committed membership changes are not yet
// applied, which includes a new cluster's first entries.)
func (rc *raftNode) campaignWhenAlone(commit uint64) {
	defer rc.wg.Done()
	select {
	case <-rc.appliedAt.Wait(commit):
	case <-rc.stopc:
		return
	}
	st := rc.node.Status()
	voters := st.Config.Voters.IDs()
	if _, ok := voters[rc.cfg.ID]; !ok || len(voters) != 1 || st.RaftState == raft.StateLeader {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), rc.cfg.electionTimeout())
	defer cancel()
	if err := rc.node.Campaign(ctx); err != nil && !errors.Is(err, raft.ErrStopped) {
		rc.logger.Warn("could not start an election", zap.Error(err))
	}
}

// maxSizePerMsg bounds the entries raft sends in one append message, and
// the committed entries it hands out at once for applying.
const maxSizePerMsg = 1 << 20

func (rc *raftNode) startRaft() error {
	if err := rc.checkNotRemoved(); err != nil {
		return err
	}
	restart, err := rc.openStorage()
	if err != nil {
		return err
	}
	rc.lastIndex.Store(rc.bootLast)
	c := &raft.Config{
		ID:                        rc.cfg.ID,
		ElectionTick:              rc.cfg.ElectionTicks,
		HeartbeatTick:             rc.cfg.HeartbeatTicks,
		Storage:                   rc.raftStorage,
		Applied:                   rc.bootSnapshot.index(), // what the snapshot already holds
		MaxSizePerMsg:             maxSizePerMsg,
		MaxInflightMsgs:           256,
		MaxUncommittedEntriesSize: max(rc.cfg.MaxLogBytes/2, 1),
		MaxInflightBytes:          max(rc.cfg.MaxLogBytes/2, maxSizePerMsg),
		CheckQuorum:               true,
		PreVote:                   true,
		StepDownOnRemoval:         true,
		ReadOnlyOption:            raft.ReadOnlySafe,
		AsyncStorageWrites:        true,
		Logger:                    raftLogger{libLogger(rc.logger).Named("raft").Sugar()},
	}
	switch {
	case restart, rc.cfg.Join:
		// A joining member starts empty and learns the membership from the
		// leader's log or snapshot.
		rc.node = raft.RestartNode(c)
	default:
		peers := make([]raft.Peer, len(rc.cfg.Peers))
		for i, u := range rc.cfg.Peers {
			peers[i] = raft.Peer{ID: uint64(i + 1), Context: []byte(u)}
		}
		rc.node = raft.StartNode(c, peers)
	}
	if err := rc.startTransport(restart); err != nil {
		rc.node.Stop()
		rc.wal.Close()
		return err
	}
	if restart && !rc.cfg.Join {
		rc.wg.Add(1)
		go rc.warnIfClusterDiffers(rc.bootCommit)
	}
	return nil
}

// startTransport starts rafthttp and the peer server. A member restarting
// from its data dials only the members stored there (added as its log and
// snapshot are applied): --cluster may name another cluster's members.
func (rc *raftNode) startTransport(restart bool) error {
	rc.transport = &rafthttp.Transport{
		Logger:      quietClusterMismatch(libLogger(rc.logger)).Named("rafthttp"),
		ID:          types.ID(rc.cfg.ID),
		ClusterID:   types.ID(rc.clusterID), // rafthttp refuses, and logs, other clusters' messages
		Raft:        rc,
		ServerStats: stats.NewServerStats("", ""),
		LeaderStats: stats.NewLeaderStats(libLogger(rc.logger), strconv.FormatUint(rc.cfg.ID, 10)),
		ErrorC:      make(chan error, 1),
		TLSInfo:     rc.cfg.PeerTLS,
		Snapshotter: rc.snapshotter, // saves snapshots sent to us as .snap.db files
	}
	if err := rc.transport.Start(); err != nil {
		return fmt.Errorf("start peer transport: %w", err)
	}
	var err error
	if rc.peerHTTP, err = rc.newPeerClient(); err != nil {
		rc.transport.Stop()
		return err
	}
	// A new or joining member dials the peers --cluster names first;
	// members added at run time come from the snapshot and the log.
	for i, u := range rc.cfg.Peers {
		if id := uint64(i + 1); !restart && id != rc.cfg.ID && !rc.members.isRemoved(id) {
			rc.transport.AddPeer(types.ID(id), []string{u})
		}
	}
	rc.syncTransport()

	var sl *stoppableListener
	if rc.cfg.PeerListener != nil {
		tl, ok := rc.cfg.PeerListener.(*net.TCPListener)
		if !ok {
			rc.transport.Stop()
			return fmt.Errorf("peer listener: a %T, not a TCP listener", rc.cfg.PeerListener)
		}
		sl = wrapStoppable(tl, rc.stopc)
	} else {
		u, _ := url.Parse(rc.cfg.Peers[rc.cfg.ID-1]) // validated above
		addr := u.Host
		if rc.cfg.PeerListenAddr != "" {
			addr = rc.cfg.PeerListenAddr
		}
		if sl, err = newStoppableListener(addr, rc.stopc); err != nil {
			rc.transport.Stop()
			return fmt.Errorf("listen for peers on %s: %w", addr, err)
		}
	}
	ln := guardListener(sl, "peer", rc.cfg.Peer.MaxConnections, rc.cfg.Metrics, rc.logger)
	if !rc.cfg.PeerTLS.Empty() {
		if ln, err = transport.NewTLSListener(ln, &rc.cfg.PeerTLS); err != nil {
			sl.Close()
			rc.transport.Stop()
			return fmt.Errorf("peer TLS: %w", err)
		}
	}
	mux := http.NewServeMux()
	raftHandler := rc.refuseOtherClusters(rc.transport.Handler())
	mux.Handle(rafthttp.RaftPrefix, raftHandler)
	mux.Handle(rafthttp.RaftPrefix+"/", raftHandler)
	mux.HandleFunc(membersPath, rc.serveMembers)
	mux.HandleFunc(clusterIDPath, rc.serveClusterID)
	rc.peerServer = newHTTPServer(mux, rc.cfg.Peer, isRaftStreamOrSnapshot, rc.logger)
	rc.wg.Add(1)
	go func() {
		defer rc.wg.Done()
		// Serve ends only when the listener closes: guardListener retries
		// every other accept error (such as running out of descriptors).
		err := rc.peerServer.Serve(ln)
		select {
		case <-rc.stopc: // stopping closed the listener
		default:
			rc.fail(fmt.Errorf("serve raft peers: %w", err))
		}
	}()
	return nil
}

// isRaftStreamOrSnapshot names rafthttp's long-lived requests: a stream
// lasts as long as the link, and a snapshot's body may be hundreds of MB.
func isRaftStreamOrSnapshot(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, rafthttp.RaftStreamPrefix+"/") || r.URL.Path == rafthttp.RaftSnapshotPrefix
}

// newPeerClient returns a client for requests to other members' peer URLs.
func (rc *raftNode) newPeerClient() (*http.Client, error) {
	tr, err := transport.NewTransport(rc.cfg.PeerTLS, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("peer client: %w", err)
	}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}, nil
}

// syncTransport makes the transport's peers match the replicated membership.
func (rc *raftNode) syncTransport() {
	members, removed := rc.members.snapshot()
	for id, u := range members {
		if id != rc.cfg.ID {
			rc.transport.AddPeer(types.ID(id), []string{u})
		}
	}
	for _, id := range removed {
		if rc.transport.Get(types.ID(id)) != nil {
			rc.transport.RemovePeer(types.ID(id))
		}
	}
}

// serveProposals hands proposals to raft and tells each proposer whether raft
// took it. Closing proposeC or confChangeC shuts the member down, as in the
// original raftexample.
func (rc *raftNode) serveProposals() {
	defer rc.wg.Done()
	for rc.proposeC != nil && rc.confChangeC != nil {
		select {
		case p, ok := <-rc.proposeC:
			if !ok {
				rc.proposeC = nil
				continue
			}
			rc.proposeBatch(rc.takeQueued(p))
		case p, ok := <-rc.confChangeC:
			if !ok {
				rc.confChangeC = nil
				continue
			}
			p.reply(rc.node.ProposeConfChange(ctxOrTODO(p.ctx), p.confChange))
		case <-rc.stopc:
			return
		}
	}
	rc.stop()
}

// maxProposalBatch bounds how many queued proposals go to raft in one step.
const maxProposalBatch = 256

// takeQueued returns p and the proposals already queued behind it.
func (rc *raftNode) takeQueued(p proposal) []proposal {
	batch := []proposal{p}
	for len(batch) < maxProposalBatch {
		select {
		case q, ok := <-rc.proposeC:
			if !ok {
				rc.proposeC = nil
				return batch
			}
			batch = append(batch, q)
		default:
			return batch
		}
	}
	return batch
}

// proposeBatch hands a batch of proposals to raft, so that raft appends
// them together and sends them to each follower in one MsgApp instead of
// one message per entry. node.Propose takes one entry and gives raft's
// verdict; node.Step takes many and gives none. The first goes through
// Propose: if raft refuses it (no leader, leadership transfer), the whole
// batch is refused with that error; if raft takes it, the rest follow in
// one MsgProp at once; raft may still drop those silently if it lost its
// leader in between, and they then end as timeouts ("may still apply"), as
// proposals forwarded by a follower always could.
func (rc *raftNode) proposeBatch(batch []proposal) {
	first := batch[0]
	err := rc.node.Propose(ctxOrTODO(first.ctx), first.data)
	first.reply(err)
	rest := batch[1:]
	if len(rest) == 0 {
		return
	}
	if err == nil {
		ents := make([]*raftpb.Entry, len(rest))
		for i, p := range rest {
			ents[i] = &raftpb.Entry{Data: p.data}
		}
		// Step blocks while raft knows no leader; then the batch was never taken.
		ctx, cancel := context.WithTimeout(context.Background(), rc.cfg.electionTimeout())
		err = rc.node.Step(ctx, &raftpb.Message{Type: raftpb.MsgProp.Enum(), Entries: ents})
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			err = raft.ErrProposalDropped
		}
	}
	for _, p := range rest {
		p.reply(err)
	}
}

func ctxOrTODO(ctx context.Context) context.Context {
	if ctx == nil {
		return context.TODO()
	}
	return ctx
}

// serveChannels is the Ready loop: the one goroutine that takes Readys from
// raft.Node and ticks its clock.
func (rc *raftNode) serveChannels() {
	defer rc.shutdown()
	ticker := time.NewTicker(rc.cfg.Tick)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			rc.node.Tick()
		case rd := <-rc.node.Ready():
			if err := rc.handleReady(rd); err != nil {
				rc.fail(err)
				return
			}
		case err := <-rc.transport.ErrorC:
			// rafthttp reports one critical error: peers refuse this member
			// because its removal was committed while it was away.
			rc.fail(fmt.Errorf("%w (peers said: %v)", errRemoved, err))
			return
		case <-rc.stopc:
			return
		}
	}
}

// handleReady hands one Ready out: read states to the readers, messages to
// peers, the log append to the WAL writer and committed entries to the
// applier. It does no I/O of its own, so raft is never held up by an fsync.
func (rc *raftNode) handleReady(rd raft.Ready) error {
	becameLeader := false
	if rd.SoftState != nil {
		becameLeader = !rc.leading && rd.SoftState.RaftState == raft.StateLeader
		rc.leading = rd.SoftState.RaftState == raft.StateLeader
		if lead := rd.SoftState.Lead; lead != rc.leader.current() {
			rc.logLeader(lead, readyTerm(rd, rc.term)) // before set wakes those waiting for a leader
		}
		if rc.leader.set(rd.SoftState.Lead) {
			rc.cfg.Metrics.leaderChanged(rc.cfg.ID, rd.SoftState.Lead)
		}
	}
	if n := len(rd.Entries); becameLeader && n > 0 {
		// Its first entry, the empty one raft appends, is in this Ready.
		rc.leaderStart.Store(rd.Entries[n-1].GetIndex())
	}
	if n := len(rd.Entries); n > 0 {
		rc.lastIndex.Store(rd.Entries[n-1].GetIndex()) // before any MsgApp for them leaves
	} else if !raft.IsEmptySnap(rd.Snapshot) {
		rc.lastIndex.Store(rd.Snapshot.GetMetadata().GetIndex())
	}
	rc.reads.deliver(rd.ReadStates)
	rc.noteConfChanges(rd.Entries)
	var peers []*raftpb.Message
	for _, m := range rd.Messages {
		switch m.GetTo() {
		case raft.LocalAppendThread:
			if m.Term != nil { // a new HardState
				rc.term = m.GetTerm()
			}
			// Votes and append acknowledgements ride in its Responses:
			// they leave only once the WAL holds what they promise.
			select {
			case rc.appendC <- m:
			case <-rc.stopc:
				return errStopping
			}
		case raft.LocalApplyThread:
			select {
			case rc.applyC <- applyWork{entries: m.GetEntries(), responses: m.GetResponses()}:
			case <-rc.stopc:
				return errStopping
			}
		default:
			// A leader's appends leave before its own WAL write (raft
			// thesis §10.2.1): raft counts the leader towards a quorum
			// only once its write is done.
			peers = append(peers, m)
		}
	}
	rc.send(peers)
	if rc.leading {
		rc.leadTerm.Store(rc.term)
	} else {
		rc.leadTerm.Store(0)
	}
	return nil
}

// logLeader logs a change of leader; raft's own election lines are debug.
func (rc *raftNode) logLeader(lead, term uint64) {
	if lead == raft.None {
		rc.logger.Info("no leader: an election is under way", zap.Uint64("term", term))
		return
	}
	rc.logger.Info("leader elected", zap.Uint64("leader", lead), zap.Uint64("term", term))
}

// readyTerm is raft's term as of rd: that of its new HardState, if any.
func readyTerm(rd raft.Ready, term uint64) uint64 {
	for _, m := range rd.Messages {
		if m.GetTo() == raft.LocalAppendThread && m.Term != nil {
			term = m.GetTerm()
		}
	}
	return term
}

// deliver hands the responses of a finished storage write to their
// targets: raft itself, or peers.
func (rc *raftNode) deliver(responses []*raftpb.Message) error {
	var peers []*raftpb.Message
	for _, m := range responses {
		if m.GetTo() != rc.cfg.ID {
			peers = append(peers, m)
			continue
		}
		if err := rc.node.Step(context.TODO(), m); err != nil {
			return proposeErr(err)
		}
	}
	rc.send(peers)
	return nil
}

// applyWork is one job for the applier: committed entries, or a snapshot
// the WAL writer has saved.
type applyWork struct {
	entries   []*raftpb.Entry
	responses []*raftpb.Message // for raft, once entries are handed to the kvstore
	snapshot  *loadedSnapshot
}

// applyCommits is the applier: it restores snapshots and publishes
// committed entries to the kvstore in log order, and triggers snapshots.
func (rc *raftNode) applyCommits() {
	defer rc.wg.Done()
	defer close(rc.applierDone)
	if rc.bootSnapshot != nil {
		if err := rc.publishSnapshot(rc.bootSnapshot); err != nil {
			rc.fail(err)
			return
		}
		rc.bootSnapshot = nil
	}
	for {
		select {
		case w := <-rc.applyC:
			if err := rc.apply(w); err != nil {
				rc.fail(err)
				return
			}
		case <-rc.stopc:
			return
		}
	}
}

func (rc *raftNode) apply(w applyWork) error {
	if w.snapshot != nil {
		return rc.publishSnapshot(w.snapshot)
	}
	ents, err := rc.entriesToApply(w.entries)
	if err != nil {
		return err
	}
	applyDoneC, err := rc.publishEntries(ents)
	if err != nil {
		return err
	}
	if err := rc.deliver(w.responses); err != nil {
		return err
	}
	rc.maybeTriggerSnapshot(applyDoneC)
	return nil
}

// noteConfChanges remembers the newest membership change in the log, so a
// second change can be refused while one is still unapplied.
func (rc *raftNode) noteConfChanges(ents []*raftpb.Entry) {
	for _, e := range ents {
		if e.GetType() == raftpb.EntryConfChange {
			rc.lastConfIndex.Store(e.GetIndex())
		}
	}
}

// send hands messages to the peer transport. A snapshot goes on its own
// stream, its .snap.db file following the raft message, and is stamped with
// the current ConfState, so a follower restored from it knows the membership
// it is joining.
func (rc *raftNode) send(ms []*raftpb.Message) {
	n := 0
	for _, m := range ms {
		if m.GetType() != raftpb.MsgSnap || m.Snapshot == nil {
			ms[n] = m
			n++
			continue
		}
		rc.sendSnapshot(withConfState(m, rc.confStateNow()))
	}
	rc.transport.Send(ms[:n])
}

// withConfState returns a copy of a snapshot message that carries cs; raft's
// storage owns the original.
func withConfState(m *raftpb.Message, cs *raftpb.ConfState) *raftpb.Message {
	s := proto.Clone(m.Snapshot).(*raftpb.Snapshot)
	s.Metadata = raftpb.EnsureSnapshotMetadata(s.Metadata)
	s.Metadata.ConfState = proto.Clone(cs).(*raftpb.ConfState)
	m = proto.Clone(m).(*raftpb.Message)
	m.Snapshot = s
	return m
}

// sendSnapshot streams the snapshot's state file after the message; the
// transport reports to raft when it is done.
func (rc *raftNode) sendSnapshot(m *raftpb.Message) {
	index := m.GetSnapshot().GetMetadata().GetIndex()
	f, size, err := rc.openStateFile(index)
	if err != nil {
		rc.logger.Warn("cannot send snapshot", zap.Uint64("to", m.GetTo()), zap.Uint64("index", index), zap.Error(err))
		rc.node.ReportSnapshot(m.GetTo(), raft.SnapshotFailure)
		return
	}
	rc.transport.SendSnapshot(snap.NewMessage(m, f, size))
}

func (rc *raftNode) entriesToApply(ents []*raftpb.Entry) ([]*raftpb.Entry, error) {
	if len(ents) == 0 {
		return nil, nil
	}
	first := ents[0].GetIndex()
	if first > rc.appliedIndex+1 {
		return nil, fmt.Errorf("first committed entry %d is beyond applied index %d + 1", first, rc.appliedIndex)
	}
	if rc.appliedIndex-first+1 < uint64(len(ents)) {
		return ents[rc.appliedIndex-first+1:], nil
	}
	return nil, nil
}

// publishEntries applies membership changes to raft and the transport, then
// hands the batch to the kvstore. It returns a channel closed once the
// kvstore has applied the batch.
func (rc *raftNode) publishEntries(ents []*raftpb.Entry) (<-chan struct{}, error) {
	if len(ents) == 0 {
		return nil, nil
	}
	batch := make([]committedEntry, len(ents))
	removed := false
	for i, e := range ents {
		batch[i].index = e.GetIndex()
		switch e.GetType() {
		case raftpb.EntryNormal:
			batch[i].data = e.Data
			rc.logBytes += entryBytes(e)
		case raftpb.EntryConfChange:
			removed = rc.applyConfChange(e) || removed
		default:
			rc.logger.Warn("skipping unsupported entry type", zap.Uint64("index", e.GetIndex()), zap.Stringer("type", e.GetType()))
		}
	}
	applyDoneC := make(chan struct{})
	select {
	case rc.commitC <- &commit{entries: batch, applyDoneC: applyDoneC}:
	case <-rc.stopc:
		return nil, errStopping
	}
	rc.setApplied(batch[len(batch)-1].index)
	if removed {
		select { // let the kvstore finish, so nothing acknowledged is cut short
		case <-applyDoneC:
		case <-rc.stopc:
		}
		return nil, errRemoved
	}
	return applyDoneC, nil
}

// applyConfChange applies one committed membership change, or skips it the
// same way on every member when it is invalid. It reports whether the change
// removed this member.
func (rc *raftNode) applyConfChange(e *raftpb.Entry) bool {
	cc := &raftpb.ConfChange{}
	if err := proto.Unmarshal(e.Data, cc); err != nil {
		rc.logger.Warn("skipping malformed membership change", zap.Uint64("index", e.GetIndex()), zap.Error(err))
		return false
	}
	err := rc.members.checkApply(cc, rc.confState)
	if err != nil {
		rc.logger.Warn("skipping membership change", zap.Uint64("index", e.GetIndex()), zap.Error(err))
	} else {
		rc.setConfState(rc.node.ApplyConfChange(cc))
		rc.members.apply(cc)
		rc.updateTransport(cc)
		rc.logger.Info("applied membership change", zap.Uint64("index", e.GetIndex()),
			zap.Stringer("type", cc.GetType()), zap.Uint64("member", cc.GetNodeId()))
	}
	rc.confWaits.Trigger(cc.GetId(), confApplied{index: e.GetIndex(), err: err})
	return err == nil && cc.GetType() == raftpb.ConfChangeRemoveNode && cc.GetNodeId() == rc.cfg.ID
}

func (rc *raftNode) updateTransport(cc *raftpb.ConfChange) {
	id := types.ID(cc.GetNodeId())
	if cc.GetNodeId() == rc.cfg.ID {
		return
	}
	switch cc.GetType() {
	case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
		rc.transport.AddPeer(id, []string{string(cc.GetContext())})
	case raftpb.ConfChangeRemoveNode:
		if rc.transport.Get(id) != nil {
			rc.transport.RemovePeer(id)
		}
	}
}

// publishSnapshot restores the membership and the kvstore from a snapshot
// that is already saved to disk.
func (rc *raftNode) publishSnapshot(ls *loadedSnapshot) error {
	md := ls.raft.GetMetadata()
	if md.GetIndex() <= rc.appliedIndex && rc.appliedIndex != 0 {
		return fmt.Errorf("snapshot index %d is not beyond applied index %d", md.GetIndex(), rc.appliedIndex)
	}
	rc.setConfState(raftpb.EnsureConfState(proto.Clone(md.GetConfState()).(*raftpb.ConfState)))
	rc.members.restore(ls.members.Members, ls.members.Removed)
	if rc.transport != nil {
		rc.syncTransport()
	}
	select {
	case rc.commitC <- &commit{snapshot: &ls.kv, snapshotIndex: md.GetIndex(), applyDoneC: make(chan struct{})}:
	case <-rc.stopc:
		return errStopping
	}
	rc.snapshotIndex = md.GetIndex()
	rc.logBytes = 0
	rc.stateBytes.Store(ls.size)
	rc.setApplied(md.GetIndex())
	return nil
}

// maybeTriggerSnapshot snapshots once enough entries have been applied. The
// state is captured on this goroutine after the kvstore has applied
// everything published, so the snapshot matches appliedIndex exactly; the
// slow parts (encoding, writing files) run in the background.
func (rc *raftNode) maybeTriggerSnapshot(applyDoneC <-chan struct{}) {
	if rc.snapshotting.Load() && rc.logBytes >= rc.cfg.MaxLogBytes {
		// The log reached its bound while the last snapshot is still being
		// written: wait for it, so that the next one can start and the log
		// cannot grow past the bound.
		select {
		case <-rc.snapshotDone:
		case <-rc.stopc:
			return
		}
	}
	if !rc.snapshotDue() {
		return
	}
	if applyDoneC != nil {
		select {
		case <-applyDoneC:
		case <-rc.stopc:
			return
		}
	}
	encodeKV := rc.getSnapshot()
	members, removed := rc.members.snapshot()
	cs := proto.Clone(rc.confState).(*raftpb.ConfState)
	index := rc.appliedIndex
	rc.snapshotIndex = index
	rc.logBytes = 0
	rc.snapshotting.Store(true)
	done := make(chan struct{})
	rc.snapshotDone = done
	rc.wg.Add(1)
	go func() {
		defer rc.wg.Done()
		defer close(done) // after snapshotting is false again
		defer rc.snapshotting.Store(false)
		rc.cfg.Metrics.snapshotInProgress.Set(1)
		defer rc.cfg.Metrics.snapshotInProgress.Set(0)
		start := time.Now()
		size, err := rc.saveStateFile(index, encodeKV)
		if err == nil {
			rc.stateBytes.Store(size)
			data := wire.EncodeMembership(wire.Membership{Members: members, Removed: removed})
			err = rc.createSnapshot(index, cs, data)
		}
		if err != nil {
			if !rc.postponeSnapshot(index, err) {
				rc.fail(err)
			}
			return
		}
		rc.cfg.Metrics.snapshotDuration.Observe(time.Since(start).Seconds())
		rc.logger.Info("saved snapshot", zap.Uint64("index", index), zap.Int64("state-bytes", size),
			zap.Duration("took", time.Since(start)))
	}()
}

// snapshotDue reports whether enough has been applied since the last
// snapshot, by count and by size, and none is being written. Half of
// MaxLogBytes applied makes a snapshot due whatever the count and the
// state's size say: only a snapshot lets raft's log be compacted.
func (rc *raftNode) snapshotDue() bool {
	switch {
	case rc.snapshotting.Load():
		return false
	case rc.logBytes >= rc.cfg.MaxLogBytes/2:
		return true
	case rc.appliedIndex-rc.snapshotIndex <= rc.cfg.SnapshotCount:
		return false
	}
	return float64(rc.logBytes) >= rc.cfg.SnapshotLogRatio*float64(rc.stateBytes.Load())
}

// createSnapshot saves a snapshot of the state at index and compacts the
// in-memory log, keeping up to CatchupEntries entries and MaxLogBytes/2
// bytes of them for slow followers.
func (rc *raftNode) createSnapshot(index uint64, cs *raftpb.ConfState, data []byte) error {
	s, err := rc.raftStorage.CreateSnapshot(index, cs, data)
	if errors.Is(err, raft.ErrSnapOutOfDate) {
		return nil // a newer snapshot from the leader got there first
	}
	if err != nil {
		return fmt.Errorf("create snapshot %d: %w", index, err)
	}
	rc.failpoint("before-snapshot-save")
	if err := rc.saveSnap(s); err != nil {
		return err
	}
	compactIndex := rc.compactIndex(index)
	rc.failpoint("before-compact")
	if err := rc.raftStorage.Compact(compactIndex); err != nil && !errors.Is(err, raft.ErrCompacted) {
		return fmt.Errorf("compact log to %d: %w", compactIndex, err)
	}
	rc.failpoint("after-compact")
	return nil
}

// compactIndex returns the index to compact raft's log to after a snapshot
// at index: the entries after it, up to index, are at most CatchupEntries
// and, walking back from index, at most MaxLogBytes/2 bytes.
func (rc *raftNode) compactIndex(index uint64) uint64 {
	compact := uint64(1)
	if index > rc.cfg.CatchupEntries {
		compact = index - rc.cfg.CatchupEntries
	}
	first, err := rc.raftStorage.FirstIndex()
	if err != nil || max(compact+1, first) > index {
		return compact
	}
	ents, err := rc.raftStorage.Entries(max(compact+1, first), index+1, math.MaxUint64)
	if err != nil {
		return compact // compacted meanwhile by a snapshot from the leader
	}
	var kept uint64
	for i := len(ents) - 1; i >= 0; i-- {
		if kept += entryBytes(ents[i]); kept > rc.cfg.MaxLogBytes/2 {
			return ents[i].GetIndex()
		}
	}
	return compact
}

// entryBytes is what one entry counts towards --max-log-bytes: its data,
// as raft counts it for MaxUncommittedEntriesSize.
func entryBytes(e *raftpb.Entry) uint64 { return uint64(len(e.GetData())) }

// retainedLogBytes returns the bytes of the entries in raft's in-memory log
// up to the applied index. Entries beyond it may be replaced by the leader's
// at any moment (and asking MemoryStorage for entries beyond its end
// panics); they are bounded by MaxUncommittedEntriesSize and
// MaxInflightBytes.
func (rc *raftNode) retainedLogBytes() uint64 {
	first, _ := rc.raftStorage.FirstIndex()
	last, _ := rc.raftStorage.LastIndex()
	last = min(last, rc.applied.Load())
	if last < first {
		return 0
	}
	ents, err := rc.raftStorage.Entries(first, last+1, math.MaxUint64)
	if err != nil {
		return 0 // compacted between the calls; the next scrape tells
	}
	var n uint64
	for _, e := range ents {
		n += entryBytes(e)
	}
	return n
}

func (rc *raftNode) setApplied(index uint64) {
	rc.appliedIndex = index
	rc.applied.Store(index)
	rc.appliedAt.Trigger(index)
}

func (rc *raftNode) setConfState(cs *raftpb.ConfState) {
	rc.confState = cs
	rc.sharedConf.Store(cs)
}

// confStateNow returns the raft configuration as of the last applied entry.
func (rc *raftNode) confStateNow() *raftpb.ConfState { return rc.sharedConf.Load() }

// fail records the first fatal error and stops the member. errStopping is
// not an error: it is how the loops notice a stop already under way.
func (rc *raftNode) fail(err error) {
	if errors.Is(err, errRemoved) {
		rc.removedSelf.Store(true)
	}
	if !errors.Is(err, errStopping) {
		rc.errOnce.Do(func() { rc.err = err })
	}
	rc.stop()
}

func (rc *raftNode) stop() { rc.stopOnce.Do(func() { close(rc.stopc) }) }

// Stop shuts the member down and waits until the WAL is closed.
func (rc *raftNode) Stop() {
	rc.stop()
	<-rc.done
}

// shutdown runs when the Ready loop exits: it stops everything the member
// started, closes the WAL, and reports the first error on errorC.
func (rc *raftNode) shutdown() {
	rc.stop()
	// The applier adds peers for the membership changes it applies, and
	// rafthttp panics on an AddPeer after Stop: let it finish first.
	<-rc.applierDone
	rc.transport.Stop() // ends the peers' streams
	// Let forwarded requests in flight be answered, briefly.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	if rc.peerServer.Shutdown(ctx) != nil {
		rc.peerServer.Close()
	}
	cancel()
	rc.node.Stop()
	rc.wg.Wait() // proposer, reader, WAL writer, applier, campaigner, peer server, purgers, background snapshot
	rc.leader.stop()
	if err := rc.wal.Close(); err != nil {
		rc.errOnce.Do(func() { rc.err = fmt.Errorf("close WAL: %w", err) })
	}
	if errors.Is(rc.err, errRemoved) {
		if err := rc.markRemoved(); err != nil {
			rc.logger.Error("cannot record removal", zap.Error(err))
		}
	}
	close(rc.commitC)
	if rc.err != nil {
		rc.errorC <- rc.err
	}
	close(rc.errorC)
	close(rc.done)
}

// readIndex returns an index that, once applied here, makes a local read
// linearizable (see read.go).
func (rc *raftNode) readIndex(ctx context.Context) (uint64, error) {
	return rc.reads.readIndex(ctx)
}

// report is raftNode's part of the member's status (raftReporter).
func (rc *raftNode) report() raftReport {
	snap, _ := rc.raftStorage.Snapshot()
	return raftReport{id: rc.cfg.ID, clusterID: rc.clusterID, status: rc.node.Status(),
		snapshotIndex: snap.GetMetadata().GetIndex(), walDir: rc.waldir, snapDir: rc.snapdir}
}

// leaderID is the leader this member knows, or raft.None.
func (rc *raftNode) leaderID() uint64 { return rc.leader.current() }

// The rafthttp.Raft interface: how the transport hands messages to raft.

func (rc *raftNode) Process(ctx context.Context, m *raftpb.Message) error {
	if err := rc.checkPeerMessage(m); err != nil {
		rc.logger.Warn("dropping a peer message", zap.Uint64("from", m.GetFrom()), zap.Uint64("to", m.GetTo()),
			zap.Stringer("type", m.GetType()), zap.Uint64("term", m.GetTerm()), zap.Error(err))
		return nil // not an error for rafthttp: it would report the peer unreachable
	}
	rc.clampHeartbeatCommit(m)
	if m.GetType() == raftpb.MsgReadIndex && rc.reads.answerFollower(m) {
		return nil
	}
	return rc.node.Step(ctx, m)
}
func (rc *raftNode) IsIDRemoved(id uint64) bool  { return rc.members.isRemoved(id) }
func (rc *raftNode) ReportUnreachable(id uint64) { rc.node.ReportUnreachable(id) }
func (rc *raftNode) ReportSnapshot(id uint64, status raft.SnapshotStatus) {
	rc.node.ReportSnapshot(id, status)
}

// raftLogger adapts zap to raft.Logger, which spells Warn as Warning.
type raftLogger struct{ *zap.SugaredLogger }

func (l raftLogger) Warning(v ...any)                 { l.Warn(v...) }
func (l raftLogger) Warningf(format string, v ...any) { l.Warnf(format, v...) }
