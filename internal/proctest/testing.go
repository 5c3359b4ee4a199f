package proctest

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"raftexample/internal/freeport"
)

// TB is what the test helpers need of a *testing.T. It is declared here so
// that kvbench, which uses the rest of the package, does not link package
// testing.
type TB interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Failed() bool
	TempDir() string
	Name() string
}

const (
	StartTimeout = 20 * time.Second // a member serves, a leader is elected
	ExitTimeout  = 15 * time.Second // a signalled member exits
)

var (
	// client makes the requests of Call and the helpers built on it.
	client = &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 16},
	}
	// probeClient asks whether a member serves yet: a starting member
	// accepts connections before it answers them.
	probeClient = &http.Client{Timeout: time.Second}
)

// Client is the HTTP client of Call, for tests that send their own
// requests to the members (Send).
func Client() *http.Client { return client }

// Proc is a Process that a test owns: its methods fail the test, the
// process is killed when the test ends, and the end of its log is shown if
// the test failed. It runs in its own process group.
type Proc struct {
	*Process
	t TB
}

// NewProc prepares (but does not start) argv. Create the directories it
// uses before calling NewProc, so they are removed only after it is dead.
func NewProc(t TB, name, dir, logPath string, argv ...string) *Proc {
	p := &Proc{Process: &Process{Name: name, Argv: argv, Dir: dir, Log: logPath, OwnGroup: true}, t: t}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("last output of %s (%s):\n%s", name, logPath, p.Tail(40))
		}
	})
	return p
}

// Start starts the process.
func (p *Proc) Start() {
	p.t.Helper()
	if err := p.Process.Start(); err != nil {
		p.t.Fatalf("%v", err)
	}
}

// Kill sends SIGKILL to the whole process group and waits for the exit.
func (p *Proc) Kill() {
	p.t.Helper()
	if err := p.Process.Kill(ExitTimeout); err != nil {
		p.t.Errorf("kill: %v", err)
	}
}

// Signal sends sig to the process group (SIGSTOP, SIGCONT).
func (p *Proc) Signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.Process.Signal(sig); err != nil {
		p.t.Fatalf("%v", err)
	}
}

// WaitExit waits for the process to end by itself and returns its exit
// code (-1 if a signal ended it).
func (p *Proc) WaitExit(timeout time.Duration) int {
	p.t.Helper()
	code, err := p.Wait(timeout)
	if err != nil {
		p.t.Fatalf("%v", err)
	}
	return code
}

// Terminate sends SIGTERM to pid (the process itself when 0) and requires
// a clean exit: code 0.
func (p *Proc) Terminate(pid int) {
	p.t.Helper()
	if pid == 0 {
		pid = p.Pid()
	}
	proc, err := os.FindProcess(pid)
	if err == nil {
		err = proc.Signal(syscall.SIGTERM)
	}
	if err != nil {
		p.t.Fatalf("SIGTERM %s: %v", p.Name, err)
	}
	if code := p.WaitExit(ExitTimeout); code != 0 {
		p.t.Fatalf("%s exited with code %d after SIGTERM (%v), want 0", p.Name, code, p.Err())
	}
}

// Cluster is n members of one binary sharing a data directory, as the
// Procfile runs them.
type Cluster struct {
	Layout
	DataDir string
	Members []*Proc

	t TB
}

// NewCluster prepares (but does not start) n members of bin with FastRaft
// timing; extra flags are appended to every member's command line.
func NewCluster(t TB, bin string, n int, extra ...string) *Cluster {
	t.Helper()
	l, err := NewLayout(n)
	if err != nil {
		t.Fatalf("%v", err)
	}
	c := &Cluster{Layout: l, DataDir: t.TempDir(), t: t}
	for id := 1; id <= n; id++ {
		argv := append([]string{bin}, l.Args(id, c.DataDir, append(FastRaft(), extra...)...)...)
		logPath := filepath.Join(c.DataDir, fmt.Sprintf("member-%d.log", id))
		c.Members = append(c.Members, NewProc(t, fmt.Sprintf("member %d", id), c.DataDir, logPath, argv...))
	}
	return c
}

// Member is member id (from 1).
func (c *Cluster) Member(id int) *Proc { return c.Members[id-1] }

// Start starts every member and waits until member 1 commits a write.
func (c *Cluster) Start() {
	c.t.Helper()
	for _, m := range c.Members {
		m.Start()
	}
	WaitWritable(c.t, c.URL(1))
}

// StopAll stops every member with SIGTERM; each must exit 0.
func (c *Cluster) StopAll() {
	c.t.Helper()
	for _, m := range c.Members {
		m.Terminate(0)
	}
}

// FreePorts picks n distinct free ports (see internal/freeport).
func FreePorts(t TB, n int) []int {
	t.Helper()
	ports, err := freeport.Ports(n)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return ports
}

// Eventually calls f until it returns nil, and fails the test if timeout
// passes first.
func Eventually(t TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Call sends one request with Client and fails the test on a transport
// error. header holds name, value pairs.
func Call(t TB, method, url, body string, header ...string) Reply {
	t.Helper()
	r, err := Send(context.Background(), client, method, url, body, header...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return r
}

// WaitServing waits until the member at base answers HTTP requests at all.
func WaitServing(t TB, base string) {
	t.Helper()
	Eventually(t, StartTimeout, func() error {
		_, err := Send(context.Background(), probeClient, http.MethodGet, base+"/probe?consistency=serializable", "")
		return err
	})
}

// WaitWritable waits until a write through base is committed.
func WaitWritable(t TB, base string) {
	t.Helper()
	PutOK(t, base, "probe", "ok")
}

// PutOK writes key=value through base, retrying until it is acknowledged
// (a leader election can make a try fail; a PUT may be repeated safely).
func PutOK(t TB, base, key, value string) {
	t.Helper()
	Eventually(t, StartTimeout, func() error {
		r, err := Send(context.Background(), client, http.MethodPut, base+"/"+key, value)
		if err != nil {
			return err
		}
		if r.Code != http.StatusNoContent {
			return fmt.Errorf("PUT %s/%s: %d %q", base, key, r.Code, r.Body)
		}
		return nil
	})
}

// ReadLocal reads key from the member's own state (no quorum round trip),
// so it shows what that member has applied.
func ReadLocal(base, key string) (Reply, error) {
	return Send(context.Background(), client, http.MethodGet, base+"/"+key+"?consistency=serializable", "")
}

// CheckKeys reports the first key whose value on base differs from want;
// want[key] == nil means the key must be absent.
func CheckKeys(base string, want map[string]*string) error {
	for _, k := range slices.Sorted(maps.Keys(want)) {
		r, err := ReadLocal(base, k)
		if err != nil {
			return err
		}
		switch {
		case want[k] == nil && r.Code != http.StatusNotFound:
			return fmt.Errorf("%s: GET %s = %d %q, want 404", base, k, r.Code, r.Body)
		case want[k] != nil && (r.Code != http.StatusOK || r.Body != *want[k]):
			return fmt.Errorf("%s: GET %s = %d %q, want 200 %q", base, k, r.Code, r.Body, *want[k])
		}
	}
	return nil
}

// WaitKeys waits until base holds want (see CheckKeys).
func WaitKeys(t TB, base string, want map[string]*string) {
	t.Helper()
	Eventually(t, StartTimeout, func() error { return CheckKeys(base, want) })
}

// Present turns key-value pairs into a CheckKeys want: every key present.
func Present(kv map[string]string) map[string]*string {
	want := make(map[string]*string, len(kv))
	for k, v := range kv {
		want[k] = &v
	}
	return want
}

// Seed returns the seed of a randomised test: flagged (a -seed flag) if
// set, else one from the clock. It logs the seed and how to replay the
// test with it (pkg is the package to give go test: "." or "./e2e").
func Seed(t TB, flagged uint64, pkg string) uint64 {
	t.Helper()
	seed := flagged
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with: go test %s -run '^%s$' -seed %d)", seed, pkg, t.Name(), seed)
	return seed
}
