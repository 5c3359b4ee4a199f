package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"raftexample/internal/freeport"
)

// process is one member (or the bare server) that kvbench started.
type process struct {
	name     string
	bin      string
	args     []string
	env      []string // added to kvbench's own environment
	endpoint string   // client URL
	logPath  string

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error // set before exited is closed
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

func (c *cluster) endpoints() []string {
	eps := make([]string, len(c.procs))
	for i, p := range c.procs {
		eps[i] = p.endpoint
	}
	return eps
}

// pids lists the running processes (none for a nil cluster).
func (c *cluster) pids() []int {
	if c == nil {
		return nil
	}
	var pids []int
	for _, p := range c.procs {
		if p.cmd != nil {
			pids = append(pids, p.cmd.Process.Pid)
		}
	}
	return pids
}

// start runs p with its output appended to its log file.
func (c *cluster) start(p *process) error {
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Dir = c.dir
	if len(p.env) > 0 {
		cmd.Env = append(os.Environ(), p.env...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	setChildAttrs(cmd) // dies with kvbench where the OS allows
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	p.cmd, p.exited = cmd, make(chan struct{})
	go func() {
		p.waitErr = cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	return nil
}

// stop signals p and waits for it, killing it after grace.
func (c *cluster) stop(p *process, sig syscall.Signal, grace time.Duration) {
	if p.cmd == nil {
		return
	}
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// close stops every process and removes the directory.
func (c *cluster) close() {
	var wg sync.WaitGroup
	for _, p := range c.procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.stop(p, syscall.SIGTERM, 10*time.Second)
		}()
	}
	wg.Wait()
	if err := os.RemoveAll(c.dir); err != nil {
		fmt.Fprintf(c.log, "kvbench: removing %s: %v\n", c.dir, err)
	}
}

// exitedErr reports a process that has stopped, with the end of its log.
func (c *cluster) exitedErr() error {
	for _, p := range c.procs {
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited (%v); end of its log:\n%s", p.name, p.waitErr, tail(p.logPath, 15))
		default:
		}
	}
	return nil
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// waitReady polls ready until it succeeds, a process exits, or limit passes.
func (c *cluster) waitReady(ctx context.Context, limit time.Duration, ready func(context.Context) error) error {
	deadline := time.Now().Add(limit)
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		if perr := c.exitedErr(); perr != nil {
			return perr
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %v: %w", limit, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// buildRaftexample builds the module kvbench is run in (its go.mod
// directory) into dir.
func buildRaftexample(ctx context.Context, dir string, log io.Writer) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module: run kvbench from the raftexample module or give -binary")
	}
	bin := filepath.Join(dir, "raftexample")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = filepath.Dir(gomod)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build in %s: %w\n%s", cmd.Dir, err, stderr.String())
	}
	fmt.Fprintf(log, "kvbench: built raftexample from %s\n", cmd.Dir)
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
	ports, err := freeport.Ports(2 * n)
	if err != nil {
		return nil, err
	}
	peers := make([]string, n)
	for i := range peers {
		peers[i] = "http://127.0.0.1:" + strconv.Itoa(ports[n+i])
	}
	for i := range n {
		args := []string{
			"--id", strconv.Itoa(i + 1),
			"--cluster", strings.Join(peers, ","),
			"--port", strconv.Itoa(ports[i]),
			"--data-dir", filepath.Join(c.dir, fmt.Sprintf("member-%d", i+1)),
			"--log-level", "warn",
		}
		p := &process{
			name:     fmt.Sprintf("raftexample member %d", i+1),
			bin:      bin,
			args:     append(args, o.memberFlags...),
			env:      o.memberEnv,
			endpoint: "http://127.0.0.1:" + strconv.Itoa(ports[i]),
			logPath:  filepath.Join(c.dir, fmt.Sprintf("member-%d.log", i+1)),
		}
		if err := os.MkdirAll(filepath.Join(c.dir, fmt.Sprintf("member-%d", i+1)), 0o755); err != nil {
			return nil, err
		}
		c.procs = append(c.procs, p)
		if err := c.start(p); err != nil {
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
		p := &process{
			name:     fmt.Sprintf("etcd member %d", i+1),
			bin:      etcdBin,
			args:     append(etcdMemberArgs(c.dir, i, ports[:n], ports[n:]), o.memberFlags...),
			env:      o.memberEnv,
			endpoint: "http://127.0.0.1:" + strconv.Itoa(ports[i]),
			logPath:  filepath.Join(c.dir, fmt.Sprintf("m%d.log", i+1)),
		}
		c.procs = append(c.procs, p)
		if err := c.start(p); err != nil {
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
	p := &process{
		name:     "bare server",
		bin:      self,
		args:     []string{"-serve-bare", addr, "-value", strconv.Itoa(o.valueSize)},
		endpoint: "http://" + addr,
		logPath:  filepath.Join(c.dir, "bare.log"),
	}
	c.procs = append(c.procs, p)
	if err := c.start(p); err != nil {
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
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
	}
	return nil
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
		rss, hwm, err := memoryOf(p.cmd.Process.Pid)
		if err != nil {
			fmt.Fprintf(w, "kvbench: memory of %s: %v\n", p.name, err)
			continue
		}
		mib := func(metric string) string {
			if v, err := fetchMetric(ctx, http.DefaultClient, p.endpoint, metric, 5*time.Second); err == nil {
				return fmt.Sprintf("%.1f", v/(1<<20))
			}
			return "-"
		}
		fmt.Fprintf(w, "kvbench: memory when=%s target=%s member=%d pid=%d rss_mb=%.1f hwm_mb=%.1f heap_inuse_mb=%s",
			when, target, i+1, p.cmd.Process.Pid, float64(rss)/(1<<20), float64(hwm)/(1<<20), mib("go_memstats_heap_inuse_bytes"))
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
	c.stop(p, sig, 30*time.Second)
	if err := c.start(p); err != nil {
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
		case <-p.exited:
			return fmt.Errorf("%s exited while restarting (%v):\n%s", p.name, p.waitErr, tail(p.logPath, 15))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Since(begin) > 5*time.Minute {
			return fmt.Errorf("%s did not serve within 5 minutes of restarting", p.name)
		}
	}
	took := time.Since(begin)
	after := -1
	if st, err := fetchStatus(ctx, p.endpoint); err == nil {
		after = st.Keys
	}
	fmt.Fprintf(w, "kvbench: restart target=raftexample member=%s signal=%s keys_before=%d keys_after=%d restart_s=%.3f\n",
		strings.TrimPrefix(p.name, "raftexample member "), sigName(sig), keys, after, took.Seconds())
	return nil
}

func sigName(sig syscall.Signal) string {
	if sig == syscall.SIGKILL {
		return "kill"
	}
	return "term"
}
