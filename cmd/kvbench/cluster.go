package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"raftexample/internal/freeport"
	"raftexample/internal/proctest"
)

// process is one member (or the bare server) that kvbench started.
type process struct {
	*proctest.Process
	endpoint string // client URL
}

// cluster is the processes kvbench started and the directory they live in.
// close always stops them all and removes the directory.
type cluster struct {
	dir   string
	procs []*process
	log   io.Writer
}

func newCluster(parent, kind string, log io.Writer) (*cluster, error) {
	dir, err := os.MkdirTemp(parent, "kvbench-"+kind+"-")
	if err != nil {
		return nil, err
	}
	return &cluster{dir: dir, log: log}, nil
}

// add starts a process in the cluster's directory: bin with args, extra
// environment env, its output appended to logName there. The kernel kills
// it if kvbench dies without cleaning up (Linux).
func (c *cluster) add(name, bin string, args, env []string, endpoint, logName string) (*process, error) {
	p := &process{
		Process: &proctest.Process{
			Name:          name,
			Argv:          append([]string{bin}, args...),
			Dir:           c.dir,
			Env:           env,
			Log:           filepath.Join(c.dir, logName),
			DieWithParent: true,
		},
		endpoint: endpoint,
	}
	c.procs = append(c.procs, p)
	return p, p.Start()
}

func (c *cluster) endpoints() []string {
	eps := make([]string, len(c.procs))
	for i, p := range c.procs {
		eps[i] = p.endpoint
	}
	return eps
}

// pids lists the started processes (none for a nil cluster).
func (c *cluster) pids() []int {
	if c == nil {
		return nil
	}
	var pids []int
	for _, p := range c.procs {
		if pid := p.Pid(); pid != 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// close stops every process and removes the directory.
func (c *cluster) close() {
	var wg sync.WaitGroup
	for _, p := range c.procs {
		wg.Go(func() {
			if err := p.Stop(syscall.SIGTERM, 10*time.Second); err != nil {
				fmt.Fprintf(c.log, "kvbench: stopping %s: %v\n", p.Name, err)
			}
		})
	}
	wg.Wait()
	if err := os.RemoveAll(c.dir); err != nil {
		fmt.Fprintf(c.log, "kvbench: removing %s: %v\n", c.dir, err)
	}
}

// waitReady polls ready until it succeeds, a process exits, or limit passes.
func (c *cluster) waitReady(ctx context.Context, limit time.Duration, ready func(context.Context) error) error {
	procs := make([]*proctest.Process, len(c.procs))
	for i, p := range c.procs {
		procs[i] = p.Process
	}
	return proctest.WaitReady(ctx, limit, ready, procs...)
}

// buildRaftexample builds the module kvbench is run in (its go.mod
// directory) into dir.
func buildRaftexample(ctx context.Context, dir string, log io.Writer) (string, error) {
	root, err := proctest.ModuleRoot(ctx)
	if err != nil {
		return "", fmt.Errorf("%w: run kvbench from the raftexample module or give -binary", err)
	}
	bin, err := proctest.Build(ctx, root, dir)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(log, "kvbench: built raftexample from %s\n", root)
	return bin, nil
}

// startRaftexample starts n members on free loopback ports and waits until
// they agree on a leader that passes its health check.
func startRaftexample(ctx context.Context, o *options, log io.Writer) (_ *cluster, err error) {
	c, err := newCluster(o.dataDir, "raftexample", log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil { // c, not the nil result: every return below is (nil, err)
			c.close()
		}
	}()
	bin := o.binary
	if bin == "" {
		if bin, err = buildRaftexample(ctx, c.dir, log); err != nil {
			return nil, err
		}
	} else if bin, err = filepath.Abs(bin); err != nil { // members run in their own directories
		return nil, err
	}
	n := o.cluster
	layout, err := proctest.NewLayout(n)
	if err != nil {
		return nil, err
	}
	for id := 1; id <= n; id++ {
		dataDir := filepath.Join(c.dir, fmt.Sprintf("member-%d", id))
		if err := os.MkdirAll(dataDir, 0o755); err != nil {
			return nil, err
		}
		args := layout.Args(id, dataDir, append([]string{"--log-level", "warn"}, o.memberFlags...)...)
		if _, err := c.add(fmt.Sprintf("raftexample member %d", id), bin, args, o.memberEnv,
			layout.URL(id), fmt.Sprintf("member-%d.log", id)); err != nil {
			return nil, err
		}
	}
	err = c.waitReady(ctx, time.Minute, func(ctx context.Context) error {
		roles, err := raftexampleRoles(ctx, c.endpoints())
		if err != nil {
			return err
		}
		eps, err := pickEndpoints(roles, "leader")
		if err != nil {
			return err
		}
		return httpOK(ctx, eps[0]+"/health")
	})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "kvbench: %d raftexample members ready in %s (%s)\n", n, c.dir, strings.Join(c.endpoints(), " "))
	return c, nil
}

// startEtcd starts an n-member etcd cluster on free loopback ports.
func startEtcd(ctx context.Context, o *options, log io.Writer) (_ *cluster, err error) {
	c, err := newCluster(o.dataDir, "etcd", log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil { // c, not the nil result: every return below is (nil, err)
			c.close()
		}
	}()
	etcdBin, err := filepath.Abs(o.etcdBinary) // members run in their own directories
	if err != nil {
		return nil, err
	}
	n := o.cluster
	ports, err := freeport.Ports(2 * n)
	if err != nil {
		return nil, err
	}
	for i := range n {
		args := append(etcdMemberArgs(c.dir, i, ports[:n], ports[n:]), o.memberFlags...)
		if _, err := c.add(fmt.Sprintf("etcd member %d", i+1), etcdBin, args, o.memberEnv,
			"http://127.0.0.1:"+strconv.Itoa(ports[i]), fmt.Sprintf("m%d.log", i+1)); err != nil {
			return nil, err
		}
	}
	err = c.waitReady(ctx, time.Minute, func(ctx context.Context) error {
		roles, err := etcdRoles(ctx, c.endpoints())
		if err != nil {
			return err
		}
		_, err = pickEndpoints(roles, "leader")
		return err
	})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "kvbench: %d etcd members ready in %s (%s)\n", n, c.dir, strings.Join(c.endpoints(), " "))
	return c, nil
}

// startBare runs this program's bare handler as a process of its own, so
// that, like a member, it does not share a Go runtime with the clients.
func startBare(ctx context.Context, o *options, log io.Writer) (_ *cluster, err error) {
	c, err := newCluster(o.dataDir, "bare", log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil { // c, not the nil result: every return below is (nil, err)
			c.close()
		}
	}()
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	ports, err := freeport.Ports(1)
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	p, err := c.add("bare server", self, []string{"-serve-bare", addr, "-value", strconv.Itoa(o.valueSize)}, nil,
		"http://"+addr, "bare.log")
	if err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx, 10*time.Second, func(ctx context.Context) error {
		return httpOK(ctx, p.endpoint+"/ready")
	}); err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "kvbench: bare server ready at %s\n", p.endpoint)
	return c, nil
}

// httpOK GETs url and wants 200.
func httpOK(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return proctest.GetOK(ctx, http.DefaultClient, url)
}

// memoryOf reads a process's resident and peak resident memory (Linux).
func memoryOf(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			rss = kb * 1024
		case "VmHWM:":
			hwm = kb * 1024
		}
	}
	return rss, hwm, sc.Err()
}

// reportMemory prints each member's memory: resident, peak resident, and
// the Go heap in use that its /metrics reports; for raftexample also what
// its byte bounds hold (state, raft's log, watch history, in MiB) and the
// size of its newest snapshot state file. when labels the moment.
func (c *cluster) reportMemory(ctx context.Context, target, when string, w io.Writer) {
	for i, p := range c.procs {
		rss, hwm, err := memoryOf(p.Pid())
		if err != nil {
			fmt.Fprintf(w, "kvbench: memory of %s: %v\n", p.Name, err)
			continue
		}
		mib := func(metric string) string {
			if v, err := fetchMetric(ctx, http.DefaultClient, p.endpoint, metric, 5*time.Second); err == nil {
				return fmt.Sprintf("%.1f", v/(1<<20))
			}
			return "-"
		}
		fmt.Fprintf(w, "kvbench: memory when=%s target=%s member=%d pid=%d rss_mb=%.1f hwm_mb=%.1f heap_inuse_mb=%s",
			when, target, i+1, p.Pid(), float64(rss)/(1<<20), float64(hwm)/(1<<20), mib("go_memstats_heap_inuse_bytes"))
		if target == "raftexample" {
			snapDir := filepath.Join(c.dir, fmt.Sprintf("member-%d", i+1), fmt.Sprintf("raftexample-%d-snap", i+1))
			fmt.Fprintf(w, " state_mb=%s raft_log_mb=%s watch_history_mb=%s snap_db_mb=%.1f",
				mib("raftexample_state_bytes"), mib("raftexample_raft_log_bytes"), mib("raftexample_watch_history_bytes"),
				float64(newestFileSize(snapDir, ".snap.db"))/(1<<20))
		}
		fmt.Fprintln(w)
	}
}

// newestFileSize returns the size of the newest file in dir whose name ends
// in suffix, or 0.
func newestFileSize(dir, suffix string) int64 {
	paths, _ := filepath.Glob(filepath.Join(dir, "*"+suffix))
	var newest os.FileInfo
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && (newest == nil || fi.ModTime().After(newest.ModTime())) {
			newest = fi
		}
	}
	if newest == nil {
		return 0
	}
	return newest.Size()
}

// restartFollower stops a follower with sig, starts it again on the same
// data, and times how long it takes until its port answers a GET.
func (c *cluster) restartFollower(ctx context.Context, sig syscall.Signal, w io.Writer) error {
	var eps []string
	err := c.waitReady(ctx, time.Minute, func(ctx context.Context) error {
		roles, err := raftexampleRoles(ctx, c.endpoints())
		if err == nil {
			eps, err = pickEndpoints(roles, "follower")
		}
		return err
	})
	if err != nil {
		return err
	}
	var p *process
	var keys int
	for _, q := range c.procs {
		if q.endpoint == eps[0] {
			p = q
		}
	}
	if st, err := fetchStatus(ctx, p.endpoint); err == nil {
		keys = st.Keys
	}
	if err := p.Stop(sig, 30*time.Second); err != nil {
		return err
	}
	if err := p.Start(); err != nil {
		return err
	}
	begin := time.Now()
	probe := newHTTPClient(p.endpoint, time.Second)
	defer probe.Close()
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := probe.Get(rctx, keyName(0), true)
		cancel()
		if err == nil || errors.Is(err, errNotFound) {
			break
		}
		select {
		case <-p.Done():
			return fmt.Errorf("%s exited while restarting (%v):\n%s", p.Name, p.Err(), p.Tail(15))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Since(begin) > 5*time.Minute {
			return fmt.Errorf("%s did not serve within 5 minutes of restarting", p.Name)
		}
	}
	took := time.Since(begin)
	after := -1
	if st, err := fetchStatus(ctx, p.endpoint); err == nil {
		after = st.Keys
	}
	fmt.Fprintf(w, "kvbench: restart target=raftexample member=%s signal=%s keys_before=%d keys_after=%d restart_s=%.3f\n",
		strings.TrimPrefix(p.Name, "raftexample member "), sigName(sig), keys, after, took.Seconds())
	return nil
}

func sigName(sig syscall.Signal) string {
	if sig == syscall.SIGKILL {
		return "kill"
	}
	return "term"
}
