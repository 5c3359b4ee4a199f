// Command raftexample runs one member of a replicated key-value store built
// on etcd's raft library. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/raft/v3"
	"go.uber.org/zap"
)

// version is set at build time with -ldflags "-X main.version=..."; left
// at "dev", memberVersion reads the build's module version and revision.
var version = "dev"

// config is everything the flags set.
type config struct {
	raft            raftConfig
	cluster         string
	port            int
	requestTimeout  time.Duration
	maxRequestBytes int64
	watchHistory    int
	maxConnections  int
	client          connLimits // the client API's connections
	watchHistBytes  int64
	quotaBytes      int64
	leaseCheckpoint time.Duration
	maxKeyBytes     int
	clientTLS       transport.TLSInfo
	gc              gcTuner
	logLevel        string
	showVersion     bool
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("raftexample", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.cluster, "cluster", "http://127.0.0.1:9021", "comma separated cluster peers")
	fs.Uint64Var(&c.raft.ID, "id", 1, "node ID")
	fs.IntVar(&c.port, "port", 9121, "key-value server port")
	fs.BoolVar(&c.raft.Join, "join", false, "join an existing cluster")
	fs.StringVar(&c.raft.DataDir, "data-dir", ".", "directory holding raftexample-<id> (WAL) and raftexample-<id>-snap")
	fs.Uint64Var(&c.raft.SnapshotCount, "snapshot-count", 10000, "applied entries between snapshots")
	fs.Uint64Var(&c.raft.CatchupEntries, "snapshot-catchup-entries", 10000, "entries kept after a snapshot for slow followers")
	fs.UintVar(&c.raft.MaxSnapshots, "max-snapshots", 5, "snapshot files to keep (0 keeps all)")
	fs.UintVar(&c.raft.MaxWALs, "max-wals", 5, "WAL files to keep (0 keeps all)")
	fs.DurationVar(&c.requestTimeout, "request-timeout", 5*time.Second, "longest a request waits for commit")
	fs.Int64Var(&c.maxRequestBytes, "max-request-bytes", 1536*1024, "largest request body accepted")
	fs.IntVar(&c.watchHistory, "watch-history", 10000, "recent revisions (raft entries) kept for watchers to resume from")
	fs.Int64Var(&c.watchHistBytes, "watch-history-bytes", 64<<20, "most bytes of keys and values the watch history keeps")
	fs.Uint64Var(&c.raft.MaxLogBytes, "max-log-bytes", 64<<20, "bound on raft's in-memory log in bytes; half of it applied triggers a snapshot")
	fs.Int64Var(&c.quotaBytes, "quota-bytes", 2<<30, "most bytes of keys and values in the state; writes that add data past it get 507")
	fs.DurationVar(&c.leaseCheckpoint, "lease-checkpoint-interval", 5*time.Second, "how often the leader records leases' remaining TTLs through raft, so a restart of the whole cluster resumes them (0: never)")
	fs.IntVar(&c.maxKeyBytes, "max-key-bytes", 8<<10, "longest key (or prefix) accepted on any route")
	fs.DurationVar(&c.raft.PurgeInterval, "purge-interval", 30*time.Second, "how often WAL and snapshot files beyond --max-wals/--max-snapshots are removed (a failed purge is retried as often)")
	fs.IntVar(&c.maxConnections, "max-connections", 4096, "open connections per listener (client, peer); more wait until one closes")
	fs.DurationVar(&c.raft.Tick, "tick", 100*time.Millisecond, "raft tick interval")
	fs.IntVar(&c.raft.ElectionTicks, "election-ticks", 10, "ticks without a leader before an election")
	fs.IntVar(&c.raft.HeartbeatTicks, "heartbeat-ticks", 1, "ticks between leader heartbeats")
	fs.StringVar(&c.clientTLS.CertFile, "cert-file", "", "TLS certificate for the client API (serve https)")
	fs.StringVar(&c.clientTLS.KeyFile, "key-file", "", "key of --cert-file")
	fs.StringVar(&c.clientTLS.TrustedCAFile, "trusted-ca-file", "", "CA that signs client certificates")
	fs.BoolVar(&c.clientTLS.ClientCertAuth, "client-cert-auth", false, "refuse clients without a certificate from --trusted-ca-file")
	fs.StringVar(&c.raft.PeerTLS.CertFile, "peer-cert-file", "", "TLS certificate for peer links (https:// peer URLs)")
	fs.StringVar(&c.raft.PeerTLS.KeyFile, "peer-key-file", "", "key of --peer-cert-file")
	fs.StringVar(&c.raft.PeerTLS.TrustedCAFile, "peer-trusted-ca-file", "", "CA that signs peer certificates")
	fs.BoolVar(&c.raft.PeerTLS.ClientCertAuth, "peer-client-cert-auth", false, "refuse peers without a certificate from --peer-trusted-ca-file")
	fs.StringVar(&c.raft.ClusterToken, "initial-cluster-token", "raftexample-cluster", "mixed into a new cluster's ID, so clusters from the same --cluster list differ")
	fs.Func("peer-cert-allowed-cn", "with peer TLS and --peer-client-cert-auth: accept only peers whose certificate has this CN (repeat or comma-separate for several)", func(v string) error {
		c.raft.PeerTLS.AllowedCNs = append(c.raft.PeerTLS.AllowedCNs, strings.Split(v, ",")...)
		return nil
	})
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.BoolVar(&c.showVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	c.raft.Peers = strings.Split(c.cluster, ",")
	c.raft.SnapshotLogRatio = 0.1
	c.raft.ReadTimeout = c.requestTimeout
	c.client, c.raft.Peer = connTimeouts(c.maxConnections, c.requestTimeout)
	switch {
	case c.port < 0 || c.port > 65535:
		return c, fmt.Errorf("--port %d is not a TCP port", c.port)
	case c.raft.Tick <= 0:
		return c, errors.New("--tick must be positive")
	case c.raft.HeartbeatTicks <= 0 || c.raft.ElectionTicks <= c.raft.HeartbeatTicks:
		return c, errors.New("--election-ticks must be greater than --heartbeat-ticks, both positive")
	case c.requestTimeout <= 0:
		return c, errors.New("--request-timeout must be positive")
	case c.maxRequestBytes <= 0:
		return c, errors.New("--max-request-bytes must be positive")
	case tlsIncomplete(c.clientTLS):
		return c, errors.New("--cert-file and --key-file go together; --client-cert-auth needs --trusted-ca-file")
	case tlsIncomplete(c.raft.PeerTLS):
		return c, errors.New("--peer-cert-file and --peer-key-file go together; --peer-client-cert-auth needs --peer-trusted-ca-file")
	case c.watchHistory < 1:
		return c, errors.New("--watch-history must be at least 1 (the newest revision is always kept)")
	case c.watchHistBytes < 1:
		return c, errors.New("--watch-history-bytes must be positive")
	case c.raft.MaxLogBytes < 1:
		return c, errors.New("--max-log-bytes must be positive")
	case c.quotaBytes < 1:
		return c, errors.New("--quota-bytes must be positive")
	case c.leaseCheckpoint < 0:
		return c, errors.New("--lease-checkpoint-interval must not be negative")
	case c.maxKeyBytes < 1:
		return c, errors.New("--max-key-bytes must be positive")
	case c.raft.SnapshotCount == 0:
		return c, errors.New("--snapshot-count must be positive")
	case c.raft.PurgeInterval <= 0:
		return c, errors.New("--purge-interval must be positive")
	case c.maxConnections <= 0:
		return c, errors.New("--max-connections must be positive")
	}
	if err := validateClusterFlags(c); err != nil {
		return c, err
	}
	return c, nil
}

// Connection timeouts of both listeners (README, "Connections"). A watch
// stream gets watchWriteTimeout per event instead of WriteTimeout.
const (
	readHeaderTimeout = 10 * time.Second // a request's headers
	readTimeout       = 30 * time.Second // a request's headers and body: 1.5 MiB at 50 KB/s
	idleTimeout       = 60 * time.Second // a keep-alive connection between requests
	watchWriteTimeout = 10 * time.Second // one watch event or heartbeat to be taken by the client
)

// connTimeouts returns the limits of the client and the peer listeners. A
// client's answer may take reading its body, then --request-timeout, then
// writing: WriteTimeout allows all three. The peer server has no
// WriteTimeout: rafthttp's streams write for as long as they live.
func connTimeouts(maxConns int, requestTimeout time.Duration) (client, peer connLimits) {
	peer = connLimits{MaxConnections: maxConns, ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: readTimeout, IdleTimeout: idleTimeout}
	client = peer
	client.WriteTimeout = readTimeout + requestTimeout + 30*time.Second
	return client, peer
}

// kvConfig is the kvstore's part of the flags.
func (c config) kvConfig(logger *zap.Logger) kvConfig {
	return kvConfig{
		Logger:              logger,
		Metrics:             c.raft.Metrics,
		MemberID:            c.raft.ID,
		HistoryRevisions:    c.watchHistory,
		HistoryBytes:        c.watchHistBytes,
		WatchQueueRevisions: defaultWatchQueueRevisions,
		WatchQueueBytes:     defaultWatchQueueBytes,
		QuotaBytes:          c.quotaBytes,

		LeaseCheckpointInterval: c.leaseCheckpoint,
	}
}

// tlsIncomplete reports TLS settings that cannot work.
func tlsIncomplete(t transport.TLSInfo) bool {
	return (t.CertFile == "") != (t.KeyFile == "") || (t.ClientCertAuth && t.TrustedCAFile == "") ||
		(t.CertFile == "" && (t.ClientCertAuth || t.TrustedCAFile != ""))
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole program; it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "raftexample:", err)
		return 2
	}
	if cfg.showVersion {
		printVersion(stdout)
		return 0
	}
	if cfg.raft.Failpoint, err = parseFailpoint(os.Getenv("RAFTEXAMPLE_FAILPOINT")); err != nil {
		fmt.Fprintln(stderr, "raftexample:", err)
		return 2
	}
	cfg.raft.PeerListenAddr = os.Getenv("RAFTEXAMPLE_PEER_LISTEN") // tests only: see raftConfig
	logger, err := newLogger(cfg.logLevel, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "raftexample:", err)
		return 2
	}
	defer logger.Sync()
	cfg.raft.Logger = logger
	cfg.raft.Metrics = newMetrics()
	cfg.gc = newGCTuner(os.Getenv)
	if fp := cfg.raft.Failpoint; fp != nil {
		logger.Warn("failpoint armed: this member will kill itself there (RAFTEXAMPLE_FAILPOINT)", zap.String("failpoint", fp.name), zap.Int64("hit", fp.nth))
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var gc sync.WaitGroup
	gcCtx, stopGC := context.WithCancel(ctx)
	gc.Go(func() { cfg.gc.run(gcCtx) })
	defer func() { stopGC(); gc.Wait() }()
	if err := serve(ctx, cfg, logger); err != nil {
		if errors.Is(err, errRemoved) {
			logger.Info("this member was removed from the cluster; exiting")
			return 0
		}
		logger.Error("raftexample failed", zap.Error(err))
		return 1
	}
	logger.Info("stopped cleanly")
	return 0
}

// serve runs a member until ctx ends or the member stops by itself.
func serve(ctx context.Context, cfg config, logger *zap.Logger) error {
	warnLowFileLimit(logger, cfg.maxConnections)
	ln, err := listenClients(fmt.Sprintf(":%d", cfg.port), &cfg.clientTLS, cfg.client.MaxConnections, cfg.raft.Metrics, logger)
	if err != nil {
		return fmt.Errorf("listen for clients: %w", err)
	}
	defer ln.Close()

	scheme := "http"
	if !cfg.clientTLS.Empty() {
		scheme = "https"
	}
	m, err := newMember(ctx, memberConfig{Raft: cfg.raft, KV: cfg.kvConfig(logger), HTTP: httpConfig{
		RequestTimeout:    cfg.requestTimeout,
		MaxRequestBytes:   cfg.maxRequestBytes,
		MaxKeyBytes:       cfg.maxKeyBytes,
		RetryAfter:        cfg.raft.electionTimeout(),
		WatchHeartbeat:    10 * time.Second,
		WatchWriteTimeout: watchWriteTimeout,
		RequireClientCert: clientCertRequired(&cfg.clientTLS),
		Logger:            logger,
		Metrics:           cfg.raft.Metrics,
		ClientURL:         clientURLOf(cfg.raft.Peers[cfg.raft.ID-1], scheme, cfg.port),
	}})
	if errors.Is(err, context.Canceled) {
		return nil // a signal while it replayed its log
	}
	if err != nil {
		return err
	}
	defer m.Stop()
	rc, api := m.rc, m.api
	srv := newHTTPServer(api, cfg.client, nil, logger)
	srv.RegisterOnShutdown(api.closeStreams)
	// The client server and the ready announcement run beside this
	// goroutine, which waits for both before it returns.
	var running sync.WaitGroup
	defer running.Wait()
	serveErr := make(chan error, 1)
	running.Go(func() { serveErr <- srv.Serve(ln) })
	readyCtx, stopReady := context.WithCancel(ctx)
	defer stopReady()
	running.Go(func() { announceReady(readyCtx, rc, m.memberAdmin, cfg, scheme, logger) })

	var runErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down on signal")
	case runErr = <-rc.errorC:
	case err := <-serveErr:
		runErr = fmt.Errorf("serve clients: %w", err)
	}
	// Let in-flight requests finish (each is bounded by --request-timeout).
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.requestTimeout+time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		srv.Close()
	}
	rc.Stop()
	if err, ok := <-rc.errorC; ok && runErr == nil {
		runErr = err
	}
	return runErr
}

// clientURLOf is the client URL a member reports in its status: it listens
// for clients on --port on every interface, so the host its peers reach it
// at (that of its own peer URL) reaches its client port too.
func clientURLOf(peerURL, scheme string, port int) string {
	host := "127.0.0.1"
	if u, err := url.Parse(peerURL); err == nil && u.Hostname() != "" {
		host = u.Hostname()
	}
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port))
}

// announceReady logs the line that ends start-up, once the member serves
// clients and knows a leader.
func announceReady(ctx context.Context, rc *raftNode, admin *memberAPI, cfg config, scheme string, logger *zap.Logger) {
	for {
		changed := rc.leader.changed()
		if lead := rc.leader.current(); lead != raft.None {
			logger.Info("ready", zap.Uint64("id", cfg.raft.ID), zap.Int("members", len(admin.ListMembers())),
				zap.Uint64("leader", lead), zap.String("client-url", fmt.Sprintf("%s://127.0.0.1:%d", scheme, cfg.port)),
				zap.String("peer-url", cfg.raft.Peers[cfg.raft.ID-1]))
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

// memberVersion is the version this binary reports: the one -ldflags set,
// else what the Go toolchain stamped into the build: the module version
// (from the VCS, like v0.0.0-20261204163000-9f4c64d1a2b3+dirty) or, without
// one, the VCS revision.
func memberVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if version != "dev" || !ok {
		return version
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", ""
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision":
			rev = s.Value
		case s.Key == "vcs.modified" && s.Value == "true":
			dirty = "+dirty"
		}
	}
	if rev == "" {
		return version
	}
	return "dev-" + rev[:min(12, len(rev))] + dirty
}

func printVersion(w io.Writer) {
	fmt.Fprintf(w, "raftexample %s\n", memberVersion())
	fmt.Fprintf(w, "go %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == "go.etcd.io/raft/v3" || strings.HasPrefix(m.Path, "go.etcd.io/etcd/") {
				fmt.Fprintf(w, "%s %s\n", m.Path, m.Version)
			}
		}
	}
}
