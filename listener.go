package main

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.uber.org/zap"
	"golang.org/x/net/netutil"
)

var errListenerStopped = errors.New("listener stopped")

// connLimits bounds what the connections of one listener (client or peer)
// may hold. A zero field is no bound; main sets every field (tests set the
// ones they exercise, and short values).
type connLimits struct {
	// MaxConnections caps the open connections; further clients wait in the
	// kernel's listen backlog until one closes (netutil.LimitListener).
	MaxConnections int
	// ReadHeaderTimeout bounds the reading of a request's headers
	// (a header slowloris).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the reading of a whole request, body included (a
	// slow body). It ends once the body is read: see boundBodyReads.
	ReadTimeout time.Duration
	// WriteTimeout bounds the writing of a response, counted from the end of
	// its request's headers. Watch streams replace it with a deadline per
	// event. 0 on the peer server, whose raft streams write for ever.
	WriteTimeout time.Duration
	// IdleTimeout closes keep-alive connections with no request for this long.
	IdleTimeout time.Duration
}

// newHTTPServer returns a server bounded by lim. longLived names requests
// whose bodies or responses may legitimately take longer than ReadTimeout
// (rafthttp's streams and snapshots): they are exempt from it.
func newHTTPServer(h http.Handler, lim connLimits, longLived func(*http.Request) bool, logger *zap.Logger) *http.Server {
	return &http.Server{
		Handler:           boundBodyReads(h, lim.ReadTimeout > 0, longLived),
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		ErrorLog:          zap.NewStdLog(logger),
	}
}

// boundBodyReads exempts longLived requests from the server's ReadTimeout
// by clearing the connection's read deadline before anything reads their
// body. Other requests need nothing: net/http clears the read deadline
// itself once a body has been read to its end (connReader's background
// read), so ReadTimeout bounds reading a request, not waiting for its
// commit or a watch (TestLongRequestsOutliveReadTimeout keeps it so).
func boundBodyReads(h http.Handler, enabled bool, longLived func(*http.Request) bool) http.Handler {
	if !enabled || longLived == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if longLived(r) {
			http.NewResponseController(w).SetReadDeadline(time.Time{})
		}
		h.ServeHTTP(w, r)
	})
}

// listenClients listens for the client API on addr: TCP keep-alives, accept
// errors retried, at most lim.MaxConnections open connections, then TLS
// when tlsInfo is set. The cap sits below TLS so that connections still in
// their handshake count too; the handshake runs on the server's connection
// goroutine, bounded by its ReadHeaderTimeout.
func listenClients(addr string, tlsInfo *transport.TLSInfo, maxConns int, m *metrics, logger *zap.Logger) (net.Listener, error) {
	tcp, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	ka, err := transport.NewKeepAliveListener(tcp, "tcp", nil)
	if err != nil {
		tcp.Close()
		return nil, err
	}
	ln := guardListener(ka, "client", maxConns, m, logger)
	if tlsInfo.Empty() {
		return ln, nil
	}
	tlsCfg, err := tlsInfo.ServerConfig()
	if err != nil {
		ln.Close()
		return nil, err
	}
	if clientCertRequired(tlsInfo) {
		// Verify a certificate when one is given, but let a client without
		// one finish the handshake: clientAPI answers it 403, except on
		// /health, which container probes call without a certificate.
		tlsCfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return tls.NewListener(ln, tlsCfg), nil
}

// clientCertRequired reports whether clients must show a certificate from
// the trusted CA (--client-cert-auth, or a --trusted-ca-file, as etcd's
// TLSInfo.ServerConfig has it).
func clientCertRequired(info *transport.TLSInfo) bool {
	return !info.Empty() && (info.ClientCertAuth || info.TrustedCAFile != "")
}

// guardListener wraps ln so that its accept errors are logged and retried
// rather than returned, its open connections are counted in the
// open_connections metric, and at most maxConns (if positive) are open.
func guardListener(ln net.Listener, name string, maxConns int, m *metrics, logger *zap.Logger) net.Listener {
	var l net.Listener = &countingListener{
		Listener: &retryingListener{Listener: ln, name: name, m: m, logger: logger, done: make(chan struct{})},
		open:     m.openConnections.WithLabelValues(name),
	}
	if maxConns > 0 {
		l = netutil.LimitListener(l, maxConns)
	}
	return l
}

// retryingListener retries failed accepts until the listener is closed.
// net/http's Serve retries only the errors it deems temporary, and the TLS
// listener of etcd's transport package stops for good on the first one;
// running out of file descriptors (EMFILE, ENFILE) must do neither: the
// connection waits in the backlog until a descriptor is free.
type retryingListener struct {
	net.Listener
	name      string
	m         *metrics
	logger    *zap.Logger
	done      chan struct{}
	closeOnce sync.Once
}

// Accept pauses 5 ms after a failure, doubling up to 1 s.
func (l *retryingListener) Accept() (net.Conn, error) {
	var failures int
	var pause time.Duration
	var logged time.Time
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			if failures > 0 {
				l.logger.Info("accepting connections again", zap.String("listener", l.name), zap.Int("failed-accepts", failures))
			}
			return c, nil
		}
		if errors.Is(err, net.ErrClosed) || errors.Is(err, errListenerStopped) {
			return nil, err
		}
		failures++
		l.m.acceptErrors.WithLabelValues(l.name).Inc()
		if time.Since(logged) >= 10*time.Second {
			l.logger.Warn("accept failed; retrying", zap.String("listener", l.name), zap.Int("failed-accepts", failures),
				zap.Bool("out-of-file-descriptors", fdExhausted(err)), zap.Error(err))
			logged = time.Now()
		}
		pause = min(max(2*pause, 5*time.Millisecond), time.Second)
		select {
		case <-time.After(pause):
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
}

func (l *retryingListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// fdExhausted reports a failure for want of a file descriptor: a condition
// to wait out, unlike a full disk.
func fdExhausted(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// countingListener keeps a gauge of its open connections.
type countingListener struct {
	net.Listener
	open prometheus.Gauge
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.open.Add(1)
	return &countedConn{Conn: c, open: l.open}, nil
}

// countedConn leaves the gauge once, however often it is closed.
type countedConn struct {
	net.Conn
	open   prometheus.Gauge
	closed atomic.Bool
}

func (c *countedConn) Close() error {
	if !c.closed.Swap(true) {
		c.open.Add(-1)
	}
	return c.Conn.Close()
}

// warnLowFileLimit warns when the process may run out of file descriptors
// before its listeners reach --max-connections: both listeners full, plus
// room for the WAL, snapshots and peer links. Running out is survived
// (accepts and snapshots wait, purges retry) but a WAL segment that cannot
// be created still stops the member.
func warnLowFileLimit(logger *zap.Logger, maxConns int) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	need := uint64(2*maxConns) + fileReserve
	if lim.Cur < need {
		logger.Warn("the open-file limit is below what --max-connections needs; raise it (ulimit -n) or lower --max-connections",
			zap.Uint64("limit", lim.Cur), zap.Int("max-connections", maxConns), zap.Uint64("needed", need))
	}
}

// fileReserve is the descriptors a member needs besides client and peer
// connections: WAL segments, snapshots, outgoing peer links, the runtime.
const fileReserve = 256

// stoppableListener is the raft peer listener: Accept fails once stopc is
// closed, which ends the peer HTTP server's Serve loop. Accepted connections
// get TCP keep-alives so dead peers are noticed.
type stoppableListener struct {
	*net.TCPListener
	stopc <-chan struct{}
}

func newStoppableListener(addr string, stopc <-chan struct{}, wg *sync.WaitGroup) (*stoppableListener, error) {
	tcpAddr, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, err
	}
	ln, err := net.ListenTCP("tcp", tcpAddr)
	if err != nil {
		return nil, err
	}
	return wrapStoppable(ln, stopc, wg), nil
}

// wrapStoppable makes ln stoppable: closing stopc closes ln, from a
// goroutine that wg counts, so that whoever owns stopc can wait for it.
func wrapStoppable(ln *net.TCPListener, stopc <-chan struct{}, wg *sync.WaitGroup) *stoppableListener {
	wg.Go(func() {
		<-stopc
		ln.Close()
	})
	return &stoppableListener{TCPListener: ln, stopc: stopc}
}

func (ln *stoppableListener) Accept() (net.Conn, error) {
	tc, err := ln.AcceptTCP()
	if err != nil {
		select {
		case <-ln.stopc:
			return nil, errListenerStopped
		default:
			return nil, err
		}
	}
	tc.SetKeepAlive(true)
	tc.SetKeepAlivePeriod(3 * time.Minute)
	return tc, nil
}
