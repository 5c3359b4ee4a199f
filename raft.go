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
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
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
// raft runs with AsyncStorageWrites: the Ready loop (serveChannels, this
// file) only hands work out. Messages for peers leave at once; log appends
// go to the WAL writer (walWriter, walwriter.go), which saves everything
// queued behind one fsync; committed entries go to the applier (applier,
// applier.go). Neither waits for the other, so a commit reaches the kvstore
// and the followers while the next fsync is still running. Each of the
// three owns its own state; what others read is in raftShared.
type raftNode struct {
	cfg         raftConfig
	logger      *zap.Logger
	proposeC    <-chan proposal // proposed kv operations
	confChangeC <-chan proposal // proposed membership changes
	commitC     chan *commit    // entries committed to the log
	errorC      chan error      // at most one error, then closed

	clusterID  uint64 // stamped on every peer message; set by openStorage
	bootCommit uint64 // commit index found in the WAL at start
	bootLast   uint64 // last entry index found in the WAL at start

	node        raft.Node
	raftStorage *raft.MemoryStorage // raft's in-memory log
	disk        *diskStore          // the WAL and snapshot files
	transport   *rafthttp.Transport
	peerServer  *http.Server
	peerRoutes  peerRoutes   // what the peer port serves besides raft's messages
	peerHTTP    *http.Client // for requests of our own to peers (not raft messages)
	membership  *cluster     // the replicated membership; the applier changes it
	leader      *leaderWatch
	confWaits   wait.Wait // membership change request ID -> confApplied
	shared      raftShared
	appendC     chan<- *raftpb.Message // MsgStorageAppend: Ready loop -> WAL writer
	applyC      chan<- applyWork       // committed entries: Ready loop -> applier

	// The goroutines besides the Ready loop, each with the state it owns.
	walWriter *walWriter
	applier   *applier
	reads     *readIndexer

	// Touched only by the Ready loop.
	leading bool   // raft state is leader
	term    uint64 // raft's term as of the newest Ready

	stopc    chan struct{} // closed to stop
	stopOnce sync.Once
	errOnce  sync.Once
	err      error
	applying sync.WaitGroup // the applier
	wg       sync.WaitGroup // every other goroutine but the Ready loop
	done     chan struct{}  // closed when everything has stopped
}

// raftShared is what one of raftNode's goroutines writes and others read;
// each field names its writer.
type raftShared struct {
	published     atomic.Uint64                    // applier: the last index handed to the kvstore
	publishedAt   wait.WaitTime                    // applier: published reached (membership changes included)
	confState     atomic.Pointer[raftpb.ConfState] // applier: raft's configuration as of published
	lastConfIndex atomic.Uint64                    // Ready loop: newest membership change appended to the log
	lastIndex     atomic.Uint64                    // Ready loop: last index of raft's log, for checkPeerMessage
	leaderStart   atomic.Uint64                    // Ready loop: first entry of this member's current leadership
	leadTerm      atomic.Uint64                    // Ready loop: the term this member leads in, or 0
	removedSelf   atomic.Bool                      // fail: this member's removal is known
}

// peerRoutes mounts on the peer port's mux what members ask each other
// besides raft's messages; it runs once the cluster ID is known, before
// the port serves anything. newMember supplies it (member.go).
type peerRoutes func(mux *http.ServeMux, clusterID uint64)

// newRaftNode opens (or creates) this member's WAL and snapshots, starts raft
// and the peer transport, and returns once the member is running. Errors
// that make the data or configuration unusable are returned, not logged.
func newRaftNode(cfg raftConfig, getSnapshot func() func(io.Writer) error, proposeC, confChangeC <-chan proposal, routes peerRoutes) (*raftNode, error) {
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
		errorC:      make(chan error, 1),
		raftStorage: raft.NewMemoryStorage(),
		disk:        newDiskStore(cfg),
		peerRoutes:  routes,
		membership:  newCluster(),
		leader:      newLeaderWatch(cfg.electionTimeout()),
		confWaits:   wait.New(),
		stopc:       make(chan struct{}),
		done:        make(chan struct{}),
	}
	rc.shared.publishedAt = wait.NewTimeList()
	rc.shared.confState.Store(&raftpb.ConfState{})
	applyC := make(chan applyWork, 1024) // committed entries and snapshots -> applier
	rc.applyC = applyC
	rc.applier = &applier{cfg: cfg, logger: rc.logger, metrics: cfg.Metrics, applyC: applyC, commitC: rc.commitC,
		stopc: rc.stopc, raft: rc, log: rc.raftStorage, disk: rc.disk, membership: rc.membership,
		confWaits: rc.confWaits, shared: &rc.shared, getSnapshot: getSnapshot, fail: rc.fail,
		confState: &raftpb.ConfState{}}
	appendC := make(chan *raftpb.Message, 1024)
	rc.appendC = appendC
	rc.walWriter = &walWriter{appendC: appendC, applyC: applyC, disk: rc.disk,
		log: rc.raftStorage, deliver: rc.deliver, stopc: rc.stopc}
	rc.reads = newReadIndexer(rc.readLink(), cfg.ReadTimeout)
	if err := rc.startRaft(); err != nil {
		rc.leader.stop()
		rc.stop()
		rc.wg.Wait() // the peer listener's closer
		return nil, err
	}
	logBytes := rc.retainedLogBytes
	cfg.Metrics.raftLogBytes.Store(&logBytes)
	rc.wg.Go(rc.serveProposals)
	rc.wg.Go(rc.reads.run)
	rc.wg.Go(func() { rc.failOn(rc.walWriter.run()) })
	rc.applying.Go(func() { rc.failOn(rc.applier.run()) })
	rc.wg.Go(func() { rc.campaignWhenAlone(rc.node.Status().GetCommit()) })
	rc.startPurging()
	go rc.serveChannels() // the Ready loop; it closes done when everything has stopped
	return rc, nil
}

// campaignWhenAlone starts an election as soon as this member has applied
// what was committed when it started, if it is then the only voter: nobody
// else can lead, so waiting out an election timeout would only keep a
// single-member cluster from serving for a second or two after every start.
// (raft refuses to campaign while committed membership changes are not yet
// applied, which includes a new cluster's first entries.)
func (rc *raftNode) campaignWhenAlone(commit uint64) {
	select {
	case <-rc.shared.publishedAt.Wait(commit):
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
	rc.shared.lastIndex.Store(rc.bootLast)
	c := &raft.Config{
		ID:                        rc.cfg.ID,
		ElectionTick:              rc.cfg.ElectionTicks,
		HeartbeatTick:             rc.cfg.HeartbeatTicks,
		Storage:                   rc.raftStorage,
		Applied:                   rc.applier.bootSnapshot.index(), // what the snapshot already holds
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
		rc.disk.wal.Close()
		return err
	}
	if restart && !rc.cfg.Join {
		rc.wg.Go(func() { rc.warnIfClusterDiffers(rc.bootCommit) })
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
		Snapshotter: rc.disk.snapshotter, // saves snapshots sent to us as .snap.db files
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
		if id := uint64(i + 1); !restart && id != rc.cfg.ID && !rc.membership.isRemoved(id) {
			rc.transport.AddPeer(types.ID(id), []string{u})
		}
	}
	rc.syncPeers()

	var sl *stoppableListener
	if rc.cfg.PeerListener != nil {
		tl, ok := rc.cfg.PeerListener.(*net.TCPListener)
		if !ok {
			rc.transport.Stop()
			return fmt.Errorf("peer listener: a %T, not a TCP listener", rc.cfg.PeerListener)
		}
		sl = wrapStoppable(tl, rc.stopc, &rc.wg)
	} else {
		u, _ := url.Parse(rc.cfg.Peers[rc.cfg.ID-1]) // validated above
		addr := u.Host
		if rc.cfg.PeerListenAddr != "" {
			addr = rc.cfg.PeerListenAddr
		}
		if sl, err = newStoppableListener(addr, rc.stopc, &rc.wg); err != nil {
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
	if rc.peerRoutes != nil {
		rc.peerRoutes(mux, rc.clusterID)
	}
	rc.peerServer = newHTTPServer(mux, rc.cfg.Peer, isRaftStreamOrSnapshot, rc.logger)
	rc.wg.Go(func() {
		// Serve ends only when the listener closes: guardListener retries
		// every other accept error (such as running out of descriptors).
		err := rc.peerServer.Serve(ln)
		select {
		case <-rc.stopc: // stopping closed the listener
		default:
			rc.fail(fmt.Errorf("serve raft peers: %w", err))
		}
	})
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

// syncPeers makes the transport's peers match the replicated membership.
func (rc *raftNode) syncPeers() {
	members, removed := rc.membership.snapshot()
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
		rc.shared.leaderStart.Store(rd.Entries[n-1].GetIndex())
	}
	if n := len(rd.Entries); n > 0 {
		rc.shared.lastIndex.Store(rd.Entries[n-1].GetIndex()) // before any MsgApp for them leaves
	} else if !raft.IsEmptySnap(rd.Snapshot) {
		rc.shared.lastIndex.Store(rd.Snapshot.GetMetadata().GetIndex())
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
		rc.shared.leadTerm.Store(rc.term)
	} else {
		rc.shared.leadTerm.Store(0)
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

// noteConfChanges remembers the newest membership change in the log, so a
// second change can be refused while one is still unapplied.
func (rc *raftNode) noteConfChanges(ents []*raftpb.Entry) {
	for _, e := range ents {
		if e.GetType() == raftpb.EntryConfChange {
			rc.shared.lastConfIndex.Store(e.GetIndex())
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
	f, size, err := rc.disk.openStateFile(index)
	if err != nil {
		rc.logger.Warn("cannot send snapshot", zap.Uint64("to", m.GetTo()), zap.Uint64("index", index), zap.Error(err))
		rc.node.ReportSnapshot(m.GetTo(), raft.SnapshotFailure)
		return
	}
	rc.transport.SendSnapshot(snap.NewMessage(m, f, size))
}

// The applierRaft interface: what the applier does to raft and the transport.

// applyConfChange applies a committed membership change to raft and returns
// raft's new configuration.
func (rc *raftNode) applyConfChange(cc *raftpb.ConfChange) *raftpb.ConfState {
	return rc.node.ApplyConfChange(cc)
}

// updatePeers adds or removes the transport's peer a membership change names.
func (rc *raftNode) updatePeers(cc *raftpb.ConfChange) {
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

// retainedLogBytes returns the bytes of the entries in raft's in-memory log
// up to the applied index. Entries beyond it may be replaced by the leader's
// at any moment (and asking MemoryStorage for entries beyond its end
// panics); they are bounded by MaxUncommittedEntriesSize and
// MaxInflightBytes.
func (rc *raftNode) retainedLogBytes() uint64 {
	first, _ := rc.raftStorage.FirstIndex()
	last, _ := rc.raftStorage.LastIndex()
	last = min(last, rc.shared.published.Load())
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

// confStateNow returns the raft configuration as of the last applied entry.
func (rc *raftNode) confStateNow() *raftpb.ConfState { return rc.shared.confState.Load() }

// fail records the first fatal error and stops the member. errStopping is
// not an error: it is how the loops notice a stop already under way.
func (rc *raftNode) fail(err error) {
	if errors.Is(err, errRemoved) {
		rc.shared.removedSelf.Store(true)
	}
	if !errors.Is(err, errStopping) {
		rc.errOnce.Do(func() { rc.err = err })
	}
	rc.stop()
}

// failOn stops the member with err, if it is one.
func (rc *raftNode) failOn(err error) {
	if err != nil {
		rc.fail(err)
	}
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
	rc.applying.Wait()
	rc.transport.Stop() // ends the peers' streams
	// Let forwarded requests in flight be answered, briefly.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	if rc.peerServer.Shutdown(ctx) != nil {
		rc.peerServer.Close()
	}
	cancel()
	rc.node.Stop()
	rc.wg.Wait()      // proposer, reader, WAL writer, campaigner, peer server and its listener's closer, purgers
	rc.applier.wait() // its snapshot writer
	rc.leader.stop()
	if err := rc.disk.wal.Close(); err != nil {
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

// readLink is the readIndexer's view of this member.
func (rc *raftNode) readLink() readLink {
	return readLink{
		id:        rc.cfg.ID,
		leader:    rc.leader,
		leadTerm:  rc.shared.leadTerm.Load,
		readIndex: func(ctx context.Context, rctx []byte) error { return rc.node.ReadIndex(ctx, rctx) },
		send:      func(ms []*raftpb.Message) { rc.transport.Send(ms) },
		retry:     rc.cfg.electionTimeout() / 2,
		stopc:     rc.stopc,
		metrics:   rc.cfg.Metrics,
		logger:    rc.logger,
	}
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
		snapshotIndex: snap.GetMetadata().GetIndex(), walDir: rc.disk.waldir, snapDir: rc.disk.snapdir}
}

// leaderID is the leader this member knows, or raft.None.
func (rc *raftNode) leaderID() uint64 { return rc.leader.current() }

// memberLink is the membership API's view of this member (memberapi.go).
func (rc *raftNode) memberLink() memberLink {
	return memberLink{raft: rc, membership: rc.membership, leader: rc.leader, confWaits: rc.confWaits,
		peerClient: rc.peerHTTP, self: rc.cfg.ID, electionTimeout: rc.cfg.electionTimeout(), checkScheme: rc.cfg.checkScheme}
}

// The memberRaft interface: what the membership API asks while it runs.

func (rc *raftNode) publishedIndex() uint64 { return rc.shared.published.Load() }
func (rc *raftNode) publishedAt(index uint64) <-chan struct{} {
	return rc.shared.publishedAt.Wait(index)
}
func (rc *raftNode) leadingSince() uint64  { return rc.shared.leaderStart.Load() }
func (rc *raftNode) lastConfIndex() uint64 { return rc.shared.lastConfIndex.Load() }
func (rc *raftNode) removedSelf() bool     { return rc.shared.removedSelf.Load() }
func (rc *raftNode) peerActive(id uint64) bool {
	return !rc.transport.ActiveSince(types.ID(id)).IsZero()
}
func (rc *raftNode) status() raft.Status      { return rc.node.Status() }
func (rc *raftNode) stopped() <-chan struct{} { return rc.stopc }
func (rc *raftNode) transferLeadership(ctx context.Context, lead, transferee uint64) {
	rc.node.TransferLeadership(ctx, lead, transferee)
}

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
func (rc *raftNode) IsIDRemoved(id uint64) bool  { return rc.membership.isRemoved(id) }
func (rc *raftNode) ReportUnreachable(id uint64) { rc.node.ReportUnreachable(id) }
func (rc *raftNode) ReportSnapshot(id uint64, status raft.SnapshotStatus) {
	rc.node.ReportSnapshot(id, status)
}

// raftLogger adapts zap to raft.Logger, which spells Warn as Warning.
type raftLogger struct{ *zap.SugaredLogger }

func (l raftLogger) Warning(v ...any)                 { l.Warn(v...) }
func (l raftLogger) Warningf(format string, v ...any) { l.Warnf(format, v...) }
