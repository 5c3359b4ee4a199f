package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"
)

// options is everything the command line sets.
type options struct {
	target      string   // raftexample, etcd or bare
	endpoints   []string // client URLs of a running system; empty when kvbench starts one
	cluster     int      // members to start (0: use endpoints)
	binary      string   // raftexample binary; empty builds it from the module root
	etcdBinary  string   // etcd binary for -target etcd -cluster N
	memberFlags []string // extra flags for every member kvbench starts
	memberEnv   []string // NAME=value added to every member's environment
	dataDir     string   // parent of the temporary directories of started members
	sendTo      string   // all, leader or follower

	op           string  // put, get, mixed, cas or load
	putRatio     float64 // share of puts in the mixed op
	conc         int
	valueSize    int
	keys         int
	duration     time.Duration
	warmup       time.Duration
	timeout      time.Duration
	consistency  string // linearizable or serializable (GETs, and the read of a cas)
	runs         int
	preload      bool
	verify       bool
	verifySample int // keys to verify after a run; 0 verifies every key written
	load         int // -load N: first write keys 0..N-1 once each
	loadLimit    time.Duration
	restart      string
	restarts     int
	rss          bool
	seed         uint64
	// snapshotSplit splits each run's latencies by whether a member was
	// writing a snapshot (raftexample only: it polls the members' gauge).
	snapshotSplit bool

	serveBare string // internal: serve the bare HTTP handler on this address
}

const usageText = `kvbench drives a raftexample-compatible key-value cluster (or etcd, or a bare
net/http handler) with concurrent clients and reports throughput, latency and
whether every acknowledged write can be read back.

  # start 3 raftexample members (built from this module) and PUT for 10 s
  kvbench -cluster 3
  # the same load against an etcd cluster kvbench starts itself
  kvbench -target etcd -cluster 3 -etcd-binary /tmp/etcdbin/etcd
  # linearizable reads against running members
  kvbench -endpoints http://127.0.0.1:12380,http://127.0.0.1:22380 -op get
  # the HTTP ceiling: the same client code against a trivial handler
  kvbench -target bare -op get
  # memory and restart time with 1M keys, then PUTs on that state
  kvbench -cluster 3 -load 1000000 -verify-sample 20000 -rss -restart kill
  kvbench -cluster 3 -load 1000000 -verify-sample 20000 -op put -runs 3
  # PUT latency while members write snapshots of 1M keys, against the rest
  kvbench -cluster 3 -load 1000000 -verify-sample 20000 -op put -snapshot-split

Each run prints one summary line on stdout:
  kvbench: target=... op=... conc=... value=... ops_s=... p50_ms=... p90_ms=... p99_ms=... max_ms=... errors=... applied=... ...
With -snapshot-split it ends with the latencies of operations that overlapped
a snapshot and of the others:
  ... snap_ops=... snap_p50_ms=... snap_p99_ms=... steady_ops=... steady_p50_ms=... steady_p99_ms=... snap_p99_ratio=... snap_secs=...

Flags:
`

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("kvbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	var endpoints, memberFlags, memberEnv string
	fs.StringVar(&o.target, "target", "raftexample", "system under test: raftexample, etcd or bare (a trivial net/http handler)")
	fs.StringVar(&endpoints, "endpoints", "", "comma-separated client URLs of running members (loopback only)")
	fs.IntVar(&o.cluster, "cluster", 0, "start this many members in temporary directories (0: use -endpoints)")
	fs.StringVar(&o.binary, "binary", "", "raftexample binary for -cluster (default: go build the module kvbench runs in)")
	fs.StringVar(&o.etcdBinary, "etcd-binary", "", "etcd binary for -target etcd -cluster N")
	fs.StringVar(&memberFlags, "member-flags", "", "extra space-separated flags for every member kvbench starts")
	fs.StringVar(&memberEnv, "member-env", "", "space-separated NAME=value settings added to the environment of every member kvbench starts, of either target (e.g. GOMAXPROCS=1)")
	fs.StringVar(&o.dataDir, "data-dir", "", "parent of the temporary member directories (default: the system's temp dir)")
	fs.StringVar(&o.sendTo, "send-to", "all", "members that get the load: all (workers spread over them), leader, or follower")
	fs.StringVar(&o.op, "op", "put", "operation: put, get, mixed (puts and gets), cas (read the revision, then a conditional put)")
	fs.Float64Var(&o.putRatio, "put-ratio", 0.5, "share of puts in -op mixed")
	fs.IntVar(&o.conc, "conc", 64, "concurrent clients, each with its own keep-alive connection")
	fs.IntVar(&o.valueSize, "value", 256, "value size in bytes")
	fs.IntVar(&o.keys, "keys", 10000, "key space (keys are 16 bytes: k000000000000042)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time of one run")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "load before the measured time starts")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "per-request timeout")
	fs.StringVar(&o.consistency, "consistency", "linearizable", "GET consistency: linearizable or serializable")
	fs.IntVar(&o.runs, "runs", 1, "measured runs against the same members, one summary line each")
	fs.BoolVar(&o.preload, "preload", true, "before get, mixed and cas runs, write every key once")
	fs.BoolVar(&o.verify, "verify", true, "after runs that write, read back the last acknowledged value of every key written")
	fs.IntVar(&o.verifySample, "verify-sample", 0, "verify only this many randomly chosen keys (0: all)")
	fs.IntVar(&o.load, "load", 0, "first write keys 0..N-1 once each with -conc clients and report it (op=load); the key space becomes N. Without -op nothing else runs")
	fs.DurationVar(&o.loadLimit, "load-limit", 10*time.Minute, "longest -load may take")
	fs.StringVar(&o.restart, "restart", "", "with -cluster: afterwards stop a follower with SIGKILL (kill) or SIGTERM (term), start it again and time it until it serves a GET")
	fs.IntVar(&o.restarts, "restart-count", 1, "how many times -restart restarts a follower (one line each)")
	fs.BoolVar(&o.rss, "rss", false, "with -cluster: report each member's resident memory before and after the runs (raftexample: also what its byte bounds hold)")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the clients' random key choice")
	fs.BoolVar(&o.snapshotSplit, "snapshot-split", false, "-target raftexample: poll every member's /metrics every 20 ms during the measured time and report, besides the totals,"+
		" the latencies of operations that overlapped a snapshot (some member's raftexample_snapshot_in_progress was 1) and of the others")
	fs.StringVar(&o.serveBare, "serve-bare", "", "internal: serve the bare handler on this loopback address and wait for SIGTERM")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.endpoints = splitList(endpoints, ",")
	o.memberFlags = strings.Fields(memberFlags)
	o.memberEnv = strings.Fields(memberEnv)
	if o.load > 0 && !isSet(fs, "op") {
		o.op = "load"
	}
	if err := o.check(); err != nil {
		return nil, err
	}
	return o, nil
}

func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func splitList(s, sep string) []string {
	var out []string
	for _, p := range strings.Split(s, sep) {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// check validates the options and fills in what follows from them.
func (o *options) check() error {
	if o.serveBare != "" {
		if err := checkLoopbackHost(o.serveBare); err != nil {
			return fmt.Errorf("-serve-bare: %w", err)
		}
		return nil
	}
	for _, kv := range o.memberEnv {
		if name, _, ok := strings.Cut(kv, "="); !ok || name == "" {
			return fmt.Errorf("-member-env: %q is not NAME=value", kv)
		}
	}
	switch o.target {
	case "raftexample", "etcd", "bare":
	default:
		return fmt.Errorf("-target %q: want raftexample, etcd or bare", o.target)
	}
	switch o.op {
	case "put", "get", "mixed", "cas":
	case "load":
		if o.load <= 0 {
			return errors.New("-op load needs -load N")
		}
	default:
		return fmt.Errorf("-op %q: want put, get, mixed or cas", o.op)
	}
	if o.load < 0 {
		return errors.New("-load must not be negative")
	}
	if o.load > 0 {
		o.keys = o.load
	}
	switch o.sendTo {
	case "all", "leader", "follower":
	default:
		return fmt.Errorf("-send-to %q: want all, leader or follower", o.sendTo)
	}
	switch o.consistency {
	case "linearizable", "serializable":
	default:
		return fmt.Errorf("-consistency %q: want linearizable or serializable", o.consistency)
	}
	switch o.restart {
	case "", "kill", "term":
	default:
		return fmt.Errorf("-restart %q: want kill or term", o.restart)
	}
	switch {
	case o.conc < 1:
		return errors.New("-conc must be at least 1")
	case o.valueSize < 1:
		return errors.New("-value must be at least 1 byte")
	case o.keys < 1:
		return errors.New("-keys must be at least 1")
	case o.writes() && o.keys < o.conc:
		return fmt.Errorf("-keys %d is below -conc %d: every writing client owns its own keys", o.keys, o.conc)
	case o.duration <= 0:
		return errors.New("-duration must be positive")
	case o.loadLimit <= 0:
		return errors.New("-load-limit must be positive")
	case o.warmup < 0:
		return errors.New("-warmup must not be negative")
	case o.timeout <= 0:
		return errors.New("-timeout must be positive")
	case o.runs < 1:
		return errors.New("-runs must be at least 1")
	case o.restarts < 1:
		return errors.New("-restart-count must be at least 1")
	case o.putRatio < 0 || o.putRatio > 1:
		return errors.New("-put-ratio must be between 0 and 1")
	case o.verifySample < 0:
		return errors.New("-verify-sample must not be negative")
	case o.cluster < 0 || o.cluster > 9:
		return errors.New("-cluster must be between 0 and 9")
	case o.cluster > 0 && len(o.endpoints) > 0:
		return errors.New("use -cluster or -endpoints, not both")
	case o.cluster == 0 && len(o.endpoints) == 0 && o.target != "bare":
		return errors.New("give -endpoints of running members, or -cluster N to start N members")
	case o.target == "etcd" && o.cluster > 0 && o.etcdBinary == "":
		return errors.New("-target etcd -cluster N needs -etcd-binary")
	case o.target == "bare" && o.cluster > 1:
		return errors.New("-target bare runs one server")
	case o.target == "bare" && o.sendTo != "all":
		return errors.New("-target bare has no leader or followers: use -send-to all")
	case (o.restart != "" || o.rss) && o.cluster == 0:
		return errors.New("-restart and -rss need members started by kvbench (-cluster N)")
	case o.restart != "" && (o.target != "raftexample" || o.cluster < 2):
		return errors.New("-restart needs -target raftexample with -cluster 2 or more")
	case o.snapshotSplit && o.target != "raftexample":
		return errors.New("-snapshot-split needs -target raftexample: only its members report snapshots")
	}
	if o.target == "bare" && len(o.endpoints) == 0 {
		o.cluster = 1
	}
	for i, ep := range o.endpoints {
		norm, err := normalizeEndpoint(ep)
		if err != nil {
			return err
		}
		o.endpoints[i] = norm
	}
	return nil
}

// writes reports whether the op writes keys whose values are tracked.
func (o *options) writes() bool {
	return o.op == "put" || o.op == "mixed" || o.op == "cas" || o.op == "load"
}

func (o *options) serializable() bool { return o.consistency == "serializable" }

// normalizeEndpoint gives an endpoint a scheme and refuses anything but
// plain http on a loopback address: kvbench only loads this machine.
func normalizeEndpoint(ep string) (string, error) {
	if !strings.Contains(ep, "://") {
		ep = "http://" + ep
	}
	u, err := url.Parse(ep)
	if err != nil {
		return "", fmt.Errorf("endpoint %q: %w", ep, err)
	}
	if u.Scheme != "http" {
		return "", fmt.Errorf("endpoint %q: only http:// is supported", ep)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		return "", fmt.Errorf("endpoint %q: give scheme, host and port only", ep)
	}
	if err := checkLoopbackHost(u.Host); err != nil {
		return "", fmt.Errorf("endpoint %q: %w", ep, err)
	}
	return "http://" + u.Host, nil
}

// checkLoopbackHost accepts host:port where host is localhost or a loopback IP.
func checkLoopbackHost(hostport string) error {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return err
	}
	if port == "" {
		return errors.New("no port")
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%q is not a loopback address: kvbench only sends load to this machine", host)
}
