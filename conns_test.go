package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"raftexample/internal/proctest"
	"raftexample/internal/wire"
)

// serveLimited serves h on a loopback port the way main serves the client
// API (listenClients, newHTTPServer) and returns the listener's address.
func serveLimited(t testing.TB, h http.Handler, lim connLimits, m *metrics) string {
	t.Helper()
	ln, err := listenClients("127.0.0.1:0", &transport.TLSInfo{}, lim.MaxConnections, m, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	srv := newHTTPServer(h, lim, nil, zap.NewNop())
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

// startLimitedMember starts a one-member cluster and serves its client API
// with lim and a watch write timeout of watchWrite.
func startLimitedMember(t testing.TB, lim connLimits, watchWrite time.Duration) (*member, string) {
	t.Helper()
	opts := defaultMemberOptions()
	opts.http.WatchWriteTimeout = watchWrite
	m := newTestClusterWith(t, 1, opts, nil).members[0]
	return m, serveLimited(t, m.api, lim, m.cfg.Metrics)
}

// openConns reads the open_connections gauge of a listener.
func openConns(m *metrics, listener string) int {
	var d dto.Metric
	if err := m.openConnections.WithLabelValues(listener).Write(&d); err != nil {
		panic(err)
	}
	return int(d.GetGauge().GetValue())
}

// 2000 idle keep-alive connections are all closed within IdleTimeout.
func TestIdleConnectionsClosed(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 2000 connections")
	}
	const n, idle = 2000, time.Second
	m, addr := startLimitedMember(t, connLimits{IdleTimeout: idle}, 0)
	conns := make([]*proctest.RawConn, n)
	for i := range conns {
		conns[i] = proctest.DialRaw(t, addr)
		if code, _, err := conns[i].Do(http.MethodGet, "/health", "", 5*time.Second); err != nil || code != http.StatusOK {
			t.Fatalf("connection %d: GET /health: %d %v", i, code, err)
		}
	}
	if got := openConns(m.cfg.Metrics, "client"); got > n {
		t.Fatalf("open_connections = %d, want at most %d", got, n)
	}
	// Each was served before now, so each must be closed by now + idle.
	var wg sync.WaitGroup
	var late atomic.Int64
	deadline := time.Now().Add(idle + time.Second) // scheduling slack for 2000 closes
	for _, c := range conns {
		wg.Go(func() {
			c.SetReadDeadline(deadline)
			if _, err := io.Copy(io.Discard, c.R); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					late.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if late.Load() > 0 {
		t.Fatalf("%d of %d idle connections still open %v after their last answer (IdleTimeout %v)", late.Load(), n, idle+time.Second, idle)
	}
	eventually(t, 5*time.Second, func() error {
		if got := openConns(m.cfg.Metrics, "client"); got != 0 {
			return fmt.Errorf("open_connections = %d", got)
		}
		return nil
	})
	if r := do(t, http.MethodPut, "http://"+addr+"/after", "v"); r.code != http.StatusNoContent {
		t.Fatalf("PUT after the idle connections: %d", r.code)
	}
}

// A body sent at 1 byte per 100 ms is cut off at ReadTimeout; the member
// keeps serving and the write is not applied.
func TestSlowBodyClosed(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a read timeout")
	}
	const readTimeout = 500 * time.Millisecond
	_, addr := startLimitedMember(t, connLimits{ReadHeaderTimeout: readTimeout, ReadTimeout: readTimeout}, 0)
	c := proctest.DialRaw(t, addr)
	start := time.Now()
	if _, err := io.WriteString(c, "PUT /slow HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		code int // of the answer read before the connection closed
		err  error
	}
	closed := make(chan answer, 1)
	go func() {
		var a answer
		c.SetReadDeadline(time.Now().Add(10 * readTimeout))
		if resp, err := http.ReadResponse(c.R, nil); err == nil {
			a.code = resp.StatusCode
			resp.Body.Close()
		}
		_, a.err = c.WaitClosed(10 * readTimeout)
		closed <- a
	}()
	sent, code := 0, 0
	for done := false; !done; {
		select {
		case a := <-closed:
			if a.err != nil {
				t.Fatal(a.err)
			}
			code, done = a.code, true
		case <-time.After(100 * time.Millisecond):
			if _, err := c.Write([]byte("x")); err == nil {
				sent++
			}
		}
	}
	took := time.Since(start)
	if took > readTimeout+time.Second {
		t.Fatalf("slow body closed after %v, want about ReadTimeout %v", took, readTimeout)
	}
	if sent >= 1000 {
		t.Fatalf("the whole body went through (%d bytes)", sent)
	}
	if code != http.StatusRequestTimeout {
		t.Errorf("the slow body was answered %d, want 408 Request Timeout", code)
	}
	base := "http://" + addr
	if r := do(t, http.MethodPut, base+"/fast", "v"); r.code != http.StatusNoContent {
		t.Fatalf("PUT after the slow body: %d", r.code)
	}
	if r := do(t, http.MethodGet, base+"/slow", ""); r.code != http.StatusNotFound {
		t.Fatalf("GET /slow: %d, want 404 (the slow write must not be applied)", r.code)
	}
}

// blockingTxnStore is a fakeStore whose writes wait until released.
type blockingTxnStore struct {
	*fakeStore
	entered chan struct{}
	release chan struct{}
}

func (b *blockingTxnStore) Txn(ctx context.Context, ops []wire.Op) (txnResult, error) {
	close(b.entered)
	select {
	case <-b.release:
		return b.fakeStore.Txn(ctx, ops)
	case <-ctx.Done():
		return txnResult{}, ctx.Err()
	}
}

// ReadTimeout bounds reading a request, not waiting for its commit: a write
// whose commit takes several ReadTimeouts is answered 204, and a watch
// outlives ReadTimeout and delivers what is written later.
func TestLongRequestsOutliveReadTimeout(t *testing.T) {
	const readTimeout = 200 * time.Millisecond
	lim := connLimits{ReadHeaderTimeout: readTimeout, ReadTimeout: readTimeout, WriteTimeout: 10 * time.Second}
	t.Run("write waiting for commit", func(t *testing.T) {
		store := &blockingTxnStore{fakeStore: newFakeStore(), entered: make(chan struct{}), release: make(chan struct{})}
		h := newClientAPI(store, store, store, httpConfig{RequestTimeout: 10 * time.Second, MaxRequestBytes: 64,
			RetryAfter: time.Second, Logger: zap.NewNop(), Metrics: newMetrics()})
		addr := serveLimited(t, h, lim, newMetrics())
		answer := make(chan int, 1)
		c := proctest.DialRaw(t, addr) // here: it may fail the test, which a goroutine must not
		go func() {
			code, _, err := c.Do(http.MethodPut, "/k", "v", 10*time.Second)
			if err != nil {
				t.Error(err)
			}
			answer <- code
		}()
		<-store.entered
		select {
		case code := <-answer:
			t.Fatalf("answered %d before the commit", code)
		case <-time.After(3 * readTimeout):
		}
		close(store.release)
		if code := <-answer; code != http.StatusNoContent {
			t.Fatalf("PUT committed after 3 × ReadTimeout answered %d, want 204", code)
		}
	})
	t.Run("watch", func(t *testing.T) {
		_, addr := startLimitedMember(t, lim, time.Second)
		c := proctest.DialRaw(t, addr)
		io.WriteString(c, "GET /v1/watch?key=later HTTP/1.1\r\nHost: test\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(c.R, nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("watch: %v %v", resp, err)
		}
		time.Sleep(3 * readTimeout) // the stream must outlive ReadTimeout: that is what is tested
		if r := do(t, http.MethodPut, "http://"+addr+"/later", "v"); r.code != http.StatusNoContent {
			t.Fatalf("PUT: %d", r.code)
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data:") && strings.Contains(sc.Text(), `"later"`) {
				return
			}
		}
		t.Fatalf("watch ended before the event: %v", sc.Err())
	})
}

// Watchers that never read are closed while events flow: their streams'
// writes time out and their connections are freed.
func TestWatchersThatNeverReadAreFreed(t *testing.T) {
	if testing.Short() {
		t.Skip("streams megabytes to a few hundred watchers")
	}
	const watchers = 300
	m, addr := startLimitedMember(t, connLimits{}, 300*time.Millisecond)
	dialer := net.Dialer{Timeout: 5 * time.Second}
	for i := range watchers {
		c, err := dialer.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).SetReadBuffer(4096) // and never read
		t.Cleanup(func() { c.Close() })
		if _, err := fmt.Fprintf(c, "GET /v1/watch?prefix=big HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
			t.Fatalf("watcher %d: %v", i, err)
		}
	}
	watching := func() int {
		m.kvs.mu.Lock()
		defer m.kvs.mu.Unlock()
		return len(m.kvs.watchers)
	}
	eventually(t, 10*time.Second, func() error {
		if n := watching(); n != watchers {
			return fmt.Errorf("%d watchers registered", n)
		}
		return nil
	})
	value := strings.Repeat("v", 16<<10)
	writer := proctest.DialRaw(t, addr) // the one connection expected to stay open
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; ; i++ {
		open := openConns(m.cfg.Metrics, "client") - 1
		if open == 0 && watching() == 0 {
			t.Logf("all %d watchers freed after %d events of %d bytes", watchers, i, len(value))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d events: %d connections open, %d watchers registered", i, open, watching())
		}
		if code, _, err := writer.Do(http.MethodPut, fmt.Sprintf("/big%d", i%100), value, 10*time.Second); err != nil || code != http.StatusNoContent {
			t.Fatalf("PUT %d: %d %v", i, code, err)
		}
	}
	if code, _, err := writer.Do(http.MethodGet, "/big0", "", 10*time.Second); err != nil || code != http.StatusOK {
		t.Fatalf("GET after the watchers were freed: %d %v", code, err)
	}
}

// At --max-connections N, N connections are served and connection N+1
// waits, unanswered, until one of them closes; then it is served.
func TestConnectionCapAtTheBound(t *testing.T) {
	const max = 5
	t.Run("client", func(t *testing.T) {
		m, addr := startLimitedMember(t, connLimits{MaxConnections: max}, 0)
		checkCap(t, addr, max, "/health", http.MethodPut, "/over", func() int { return openConns(m.cfg.Metrics, "client") })
	})
	t.Run("peer", func(t *testing.T) {
		c := newTestCluster(t, 1, func(cfg *raftConfig) { cfg.Peer = connLimits{MaxConnections: max} })
		m := c.members[0]
		checkCap(t, strings.TrimPrefix(c.peers[0], "http://"), max, "/raft/probing", http.MethodGet, "/raft/probing",
			func() int { return openConns(m.cfg.Metrics, "peer") })
		if r := do(t, http.MethodPut, m.srv.URL+"/after", "v"); r.code != http.StatusNoContent {
			t.Fatalf("PUT after the peer port was full: %d", r.code)
		}
	})
}

// checkCap fills addr's max connections (each answers GET probe), shows
// that one more is not answered while they are open, and that it is once
// one closes; overMethod overPath is the request it waits with.
func checkCap(t *testing.T, addr string, max int, probe, overMethod, overPath string, open func() int) {
	t.Helper()
	var conns []*proctest.RawConn
	for i := range max {
		c := proctest.DialRaw(t, addr)
		if code, _, err := c.Do(http.MethodGet, probe, "", 5*time.Second); err != nil || code != http.StatusOK {
			t.Fatalf("connection %d of %d: %d %v", i+1, max, code, err)
		}
		conns = append(conns, c)
	}
	if got := open(); got != max {
		t.Fatalf("open_connections = %d, want %d", got, max)
	}
	extra := proctest.DialRaw(t, addr) // the kernel completes the handshake; the member does not accept it
	answered := make(chan error, 1)
	go func() {
		body := ""
		if overMethod == http.MethodPut {
			body = "v"
		}
		code, _, err := extra.Do(overMethod, overPath, body, 10*time.Second)
		if err == nil && code/100 != 2 {
			err = fmt.Errorf("status %d", code)
		}
		answered <- err
	}()
	select {
	case err := <-answered:
		t.Fatalf("connection %d was served at the cap: %v", max+1, err)
	case <-time.After(500 * time.Millisecond):
	}
	// The member still serves the connections it holds.
	if code, _, err := conns[1].Do(http.MethodGet, probe, "", 5*time.Second); err != nil || code != http.StatusOK {
		t.Fatalf("held connection at the cap: %d %v", code, err)
	}
	conns[0].Close()
	if err := <-answered; err != nil {
		t.Fatalf("connection %d after one closed: %v", max+1, err)
	}
	if got := open(); got != max {
		t.Fatalf("open_connections = %d, want %d", got, max)
	}
}

// The peer port closes a header slowloris within ReadHeaderTimeout.
func TestPeerHeaderSlowloris(t *testing.T) {
	const headerTimeout = 300 * time.Millisecond
	c := newTestCluster(t, 1, func(cfg *raftConfig) {
		cfg.Peer = connLimits{ReadHeaderTimeout: headerTimeout, ReadTimeout: time.Second, IdleTimeout: time.Second}
	})
	conn := proctest.DialRaw(t, strings.TrimPrefix(c.peers[0], "http://"))
	start := time.Now()
	io.WriteString(conn, "GET "+rafthttpStreamPath+" HTTP/1.1\r\nHost: test\r\n")
	closed := make(chan error, 1)
	go func() {
		_, err := conn.WaitClosed(10 * headerTimeout)
		closed <- err
	}()
	for done := false; !done; {
		select {
		case err := <-closed:
			if err != nil {
				t.Fatal(err)
			}
			done = true
		case <-time.After(50 * time.Millisecond):
			io.WriteString(conn, "X")
		}
	}
	if took := time.Since(start); took > headerTimeout+time.Second {
		t.Fatalf("peer header slowloris closed after %v, want about %v", took, headerTimeout)
	}
}

// rafthttpStreamPath is a stream route (RaftStreamPrefix) of member 1.
const rafthttpStreamPath = "/raft/stream/message/1"

// Peer timeouts far shorter than the test do not touch rafthttp's streams:
// no stream is lost, the leader stays, and writes commit.
func TestPeerStreamsOutliveTimeouts(t *testing.T) {
	if testing.Short() {
		t.Skip("watches a cluster for 2 s")
	}
	const short = 100 * time.Millisecond
	core, logs := observer.New(zapcore.WarnLevel)
	c := newTestCluster(t, 3, func(cfg *raftConfig) {
		cfg.Peer = connLimits{ReadHeaderTimeout: short, ReadTimeout: short, IdleTimeout: short, MaxConnections: 64}
		cfg.Logger = zap.New(zapcore.NewTee(cfg.Logger.Core(), core))
	})
	lead := c.waitLeader()
	start := logs.Len()
	for end := time.Now().Add(20 * short); time.Now().Before(end); {
		for _, m := range c.members {
			if l := m.rc.leader.current(); l != lead {
				t.Fatalf("member %d sees leader %d, was %d", m.cfg.ID, l, lead)
			}
		}
		if r := do(t, http.MethodPut, c.members[lead-1].srv.URL+"/k", "v"); r.code != http.StatusNoContent {
			t.Fatalf("PUT: %d", r.code)
		}
	}
	for _, e := range logs.All()[start:] {
		if strings.Contains(e.Message, "lost TCP streaming connection") || strings.Contains(e.Message, "peer became inactive") {
			t.Fatalf("a peer stream was cut: %s %v", e.Message, e.ContextMap())
		}
	}
}

// A snapshot transfer longer than the peer ReadTimeout still completes: the
// snapshot route is exempt, so a follower catches up from a 32 MB state
// with a 50 ms peer ReadTimeout.
func TestPeerSnapshotOutlivesReadTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("streams a 32 MB snapshot")
	}
	c := newTestCluster(t, 3, func(cfg *raftConfig) {
		cfg.Peer = connLimits{ReadHeaderTimeout: time.Second, ReadTimeout: 50 * time.Millisecond, IdleTimeout: time.Second}
		cfg.SnapshotCount, cfg.CatchupEntries = 5, 1
	})
	lead := c.waitLeader()
	behind := int(lead % 3) // a follower's index
	c.members[behind].stop()
	leader := c.members[c.waitLeader()-1]
	value := []byte(strings.Repeat("s", 1<<20))
	for i := range 32 {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		err := leader.kvs.Put(ctx, fmt.Sprintf("s%02d", i), value)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	m := c.restart(behind)
	eventually(t, 30*time.Second, func() error {
		for i := range 32 {
			if it, ok, err := m.kvs.Get(t.Context(), fmt.Sprintf("s%02d", i), true); err != nil || !ok || len(it.Value) != len(value) {
				return fmt.Errorf("member %d lacks s%02d (%v)", m.cfg.ID, i, err)
			}
		}
		return nil
	})
}

// --max-connections and --purge-interval must be positive; by default every
// connection bound is set on both listeners.
func TestConnectionFlags(t *testing.T) {
	for _, args := range [][]string{{"--max-connections", "0"}, {"--max-connections", "-1"}, {"--purge-interval", "0s"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	c, err := parseFlags([]string{"--max-connections", "1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for name, lim := range map[string]connLimits{"client": c.client, "peer": c.raft.Peer} {
		if lim.MaxConnections != 1 || lim.ReadHeaderTimeout <= 0 || lim.ReadTimeout <= 0 || lim.IdleTimeout <= 0 {
			t.Errorf("%s limits %+v", name, lim)
		}
	}
	if c.client.WriteTimeout <= c.client.ReadTimeout+c.requestTimeout || c.raft.Peer.WriteTimeout != 0 {
		t.Errorf("write timeouts: client %v (must exceed ReadTimeout + --request-timeout), peer %v (must be none)",
			c.client.WriteTimeout, c.raft.Peer.WriteTimeout)
	}
}

// failingListener fails its first accepts as a process out of descriptors.
type failingListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// Accept errors are retried under TLS too: etcd's TLS listener stops for
// good on the first error its inner listener returns, so the client port
// would stay dead (without exiting) after a moment without descriptors.
func TestAcceptErrorsRetriedUnderTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	cert := ca.issue(t, dir, "server")
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	inner := &failingListener{Listener: tcp}
	inner.fails.Store(3)
	m := newMetrics()
	ln, err := transport.NewTLSListener(guardListener(inner, "client", 10, m, zap.NewNop()), &transport.TLSInfo{CertFile: cert.certFile, KeyFile: cert.keyFile})
	if err != nil {
		t.Fatal(err)
	}
	srv := newHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }),
		connLimits{ReadHeaderTimeout: time.Second}, nil, zap.NewNop())
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	resp, err := ca.httpsClient(t, nil).Get("https://" + tcp.Addr().String() + "/")
	if err != nil {
		t.Fatalf("after 3 failed accepts: %v", err)
	}
	resp.Body.Close()
	var d dto.Metric
	m.acceptErrors.WithLabelValues("client").Write(&d)
	if got := d.GetCounter().GetValue(); got != 3 {
		t.Fatalf("accept_errors_total = %v, want 3", got)
	}
}
