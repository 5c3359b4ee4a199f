package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"raftexample/internal/freeport"
	"raftexample/internal/proctest"
	"raftexample/internal/wire"
)

// eventually calls f until it returns nil, and fails the test if timeout
// passes first.
func eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	proctest.Eventually(t, timeout, f)
}

// freeListeners binds n loopback listeners on free ports below the
// kernel's ephemeral range (see internal/freeport), so that a member
// restarted on its port does not find it taken by a client's connection.
func freeListeners(t testing.TB, n int) ([]net.Listener, []string) {
	t.Helper()
	lns, err := freeport.Listen("127.0.0.1", n)
	if err != nil {
		t.Fatal(err)
	}
	urls := make([]string, n)
	for i, ln := range lns {
		urls[i] = "http://" + ln.Addr().String()
	}
	return lns, urls
}

func testLogger(t testing.TB) *zap.Logger {
	return zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
}

// testRaftConfig is a fast raft configuration for in-process members.
func testRaftConfig(t testing.TB, id uint64, peers []string, dir string) raftConfig {
	return raftConfig{
		ID:             id,
		Peers:          peers,
		DataDir:        dir,
		SnapshotCount:  10000,
		CatchupEntries: 10000,
		MaxSnapshots:   5,
		MaxWALs:        5,
		PurgeInterval:  time.Second,
		Tick:           10 * time.Millisecond,
		ElectionTicks:  10,
		HeartbeatTicks: 1,
		ReadTimeout:    3 * time.Second,
		MaxLogBytes:    64 << 20,
		Logger:         testLogger(t),
		Metrics:        newMetrics(),
	}
}

// member is one in-process raftexample, assembled by newMember as main
// assembles it, with its HTTP API served by httptest.
type member struct {
	*memberNode
	cfg  raftConfig
	srv  *httptest.Server
	opts memberOptions // kept across restarts
}

// defaultTestHistory is the watch history window of test members, in
// revisions.
const defaultTestHistory = 1000

// memberOptions are a test member's kvstore and HTTP settings (raft's are
// in its raftConfig, which also gives both their Logger and Metrics).
type memberOptions struct {
	kv   kvConfig
	http httpConfig
}

// defaultMemberOptions are the flags' defaults, but for a smaller watch
// history, a 1 MiB request limit and shorter timeouts.
func defaultMemberOptions() memberOptions {
	return memberOptions{
		kv: kvConfig{
			HistoryRevisions:    defaultTestHistory,
			HistoryBytes:        64 << 20,
			WatchQueueRevisions: defaultWatchQueueRevisions,
			WatchQueueBytes:     defaultWatchQueueBytes,
			QuotaBytes:          2 << 30,

			LeaseCheckpointInterval: 5 * time.Second,
		},
		http: httpConfig{
			RequestTimeout:  3 * time.Second,
			MaxRequestBytes: 1 << 20,
			MaxKeyBytes:     8 << 10,
			RetryAfter:      time.Second,
			WatchHeartbeat:  50 * time.Millisecond,
		},
	}
}

// withHistory returns the default options with a watch history of
// historyLimit revisions.
func withHistory(historyLimit int) memberOptions {
	o := defaultMemberOptions()
	o.kv.HistoryRevisions = historyLimit
	return o
}

func startMember(t testing.TB, cfg raftConfig) *member {
	t.Helper()
	return startMemberWith(t, cfg, defaultMemberOptions())
}

// startMemberWith starts a member with the given kvstore and HTTP options.
func startMemberWith(t testing.TB, cfg raftConfig, opts memberOptions) *member {
	t.Helper()
	mc := memberConfig{Raft: cfg, KV: opts.kv, HTTP: opts.http}
	mc.KV.Logger, mc.KV.Metrics, mc.KV.MemberID = cfg.Logger, cfg.Metrics, cfg.ID
	mc.HTTP.Logger, mc.HTTP.Metrics = cfg.Logger, cfg.Metrics
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := newMember(ctx, mc)
	if err != nil {
		t.Fatalf("start member %d: %v", cfg.ID, err)
	}
	m := &member{memberNode: n, cfg: cfg, opts: opts, srv: httptest.NewServer(n.api)}
	t.Cleanup(m.stop)
	return m
}

// stop shuts the member down; it is safe to call twice.
func (m *member) stop() {
	m.srv.Close()
	m.Stop()
}

// testCluster is n in-process members with data under one temp dir.
type testCluster struct {
	t       testing.TB
	dir     string
	peers   []string
	members []*member
}

func newTestCluster(t testing.TB, n int, tweak func(*raftConfig)) *testCluster {
	t.Helper()
	return newTestClusterWithHistory(t, n, defaultTestHistory, tweak)
}

// newTestClusterWithHistory is newTestCluster with members that retain
// historyLimit revisions for watches, also across restarts.
func newTestClusterWithHistory(t testing.TB, n, historyLimit int, tweak func(*raftConfig)) *testCluster {
	t.Helper()
	return newTestClusterWith(t, n, withHistory(historyLimit), tweak)
}

// newTestClusterWith is newTestCluster with members started with opts, also
// across restarts.
func newTestClusterWith(t testing.TB, n int, opts memberOptions, tweak func(*raftConfig)) *testCluster {
	t.Helper()
	lns, peers := freeListeners(t, n)
	c := &testCluster{t: t, dir: t.TempDir(), peers: peers}
	for i := range n {
		cfg := testRaftConfig(t, uint64(i+1), peers, c.dir)
		cfg.PeerListener = lns[i]
		if tweak != nil {
			tweak(&cfg)
		}
		c.members = append(c.members, startMemberWith(t, cfg, opts))
	}
	c.waitLeader()
	return c
}

// waitLeader waits until every running member knows the same leader, and
// that leader is one of them.
func (c *testCluster) waitLeader() uint64 {
	c.t.Helper()
	var lead uint64
	eventually(c.t, 10*time.Second, func() error {
		lead = 0
		running := map[uint64]bool{}
		for _, m := range c.members {
			if m == nil {
				continue
			}
			running[m.cfg.ID] = true
			l := m.rc.leader.current()
			if l == 0 || (lead != 0 && l != lead) {
				return fmt.Errorf("member %d sees leader %d", m.cfg.ID, l)
			}
			lead = l
		}
		if !running[lead] {
			return fmt.Errorf("leader %d is not running", lead)
		}
		return nil
	})
	return lead
}

// restart stops member i (0-based) and starts it again on the same data.
func (c *testCluster) restart(i int) *member {
	c.t.Helper()
	old := c.members[i]
	old.stop()
	cfg := old.cfg
	cfg.PeerListener = relisten(c.t, c.peers[i])
	cfg.Metrics = newMetrics() // a new process would start with fresh ones
	c.members[i] = startMemberWith(c.t, cfg, old.opts)
	c.waitLeader()
	return c.members[i]
}

// relisten binds the peer address a stopped member used.
func relisten(t testing.TB, peerURL string) net.Listener {
	t.Helper()
	addr := peerURL[len("http://"):]
	var ln net.Listener
	eventually(t, 5*time.Second, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln
}

// putEntry encodes a one-put request as a raft entry's data.
func putEntry(key string, value []byte) []byte {
	return wire.EncodeRequest(wire.Request{Ops: []wire.Op{{Kind: wire.Put, Key: key, Value: value}}})
}

// roundTripState encodes s's state as a snapshot does and reads it back.
func roundTripState(t testing.TB, s *kvstore) kvState {
	t.Helper()
	var buf bytes.Buffer
	if err := s.getSnapshot()(&buf); err != nil {
		t.Fatal(err)
	}
	st, err := readKV(&buf, int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// testHTTP is the client of the tests' own requests. Its timeout is above
// the members' request timeout (3s), so a member's own answer comes first.
var testHTTP = proctest.Client()

// reply is an HTTP answer read in full.
type reply struct {
	code   int
	body   string
	header http.Header
}

// rev returns the revision in the reply's ETag, or 0 when there is none.
func (r reply) rev() uint64 {
	n, _ := parseETag(r.header.Get("ETag"))
	return n
}

func (r reply) String() string { return fmt.Sprintf("%d %q", r.code, r.body) }

// send makes one request and reads the whole answer; hdr lists header
// names and values in turn. It never fails the test, so any goroutine may
// use it. It is the one request helper of the package's tests; do is send
// for the test goroutine.
func send(ctx context.Context, client *http.Client, method, url, body string, hdr ...string) (reply, error) {
	r, err := proctest.Send(ctx, client, method, url, body, hdr...)
	return reply{code: r.Code, body: r.Body, header: r.Header}, err
}

// do is send with testHTTP; a request that gets no answer fails the test.
func do(t testing.TB, method, url, body string, hdr ...string) reply {
	t.Helper()
	r, err := send(t.Context(), testHTTP, method, url, body, hdr...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return r
}
