package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"raftexample/internal/proctest"
)

// The end-to-end tests run kvctl against a real cluster of three
// raftexample processes: kvctl as a built binary where its exit code is the
// point, in process (run) where it watches in the background.

var (
	raftexampleBin proctest.Binary
	kvctlBin       builtKvctl
)

func TestMain(m *testing.M) {
	code := m.Run()
	if err := raftexampleBin.Remove(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	kvctlBin.remove()
	os.Exit(code)
}

// builtKvctl is this package built once, on first use.
type builtKvctl struct {
	once      sync.Once
	dir, path string
	err       error
}

func (b *builtKvctl) get(t *testing.T) string {
	t.Helper()
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "kvctl-bin-"); b.err != nil {
			return
		}
		b.path = filepath.Join(b.dir, "kvctl")
		out, err := exec.Command("go", "build", "-o", b.path, ".").CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build kvctl: %v\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func (b *builtKvctl) remove() {
	b.once.Do(func() {})
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// kvctlProc runs the kvctl binary with stdin and returns what it printed
// and its exit code.
func kvctlProc(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kvctlBin.get(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	code := 0
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("kvctl %q: %v", args, err)
	}
	return result{stdout: out.String(), stderr: errOut.String(), code: code}
}

// syncBuffer is a bytes.Buffer that a running command writes while the
// test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// e2eCluster is a running three-member cluster and kvctl's flag for it.
type e2eCluster struct {
	*proctest.Cluster
	eps string // --endpoints=1,2,3
}

func startCluster(t *testing.T) *e2eCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a three-member cluster of raftexample processes; skipped with -short")
	}
	c := proctest.NewCluster(t, raftexampleBin.Path(t), 3)
	c.Start()
	return &e2eCluster{Cluster: c, eps: "--endpoints=" + c.URL(1) + "," + c.URL(2) + "," + c.URL(3)}
}

// statuses reads every member's status through kvctl status -o json.
func (c *e2eCluster) statuses(t *testing.T) []memberStatus {
	t.Helper()
	r := kvctlProc(t, "", c.eps, "status", "-o", "json")
	var rows []struct {
		Status json.RawMessage `json:"status"`
		Error  string          `json:"error"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		t.Fatalf("status -o json: %v: %q", err, r.stdout)
	}
	out := make([]memberStatus, len(rows))
	for i, row := range rows {
		if row.Error == "" {
			if err := json.Unmarshal(row.Status, &out[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	return out
}

func TestE2EKeys(t *testing.T) {
	c := startCluster(t)
	kvctlProc(t, "", c.eps, "put", "a/1", "one").want(t, exitOK)
	rev := strings.TrimSpace(kvctlProc(t, "", c.eps, "put", "a/2", "two", "-o", "plain").want(t, exitOK).stdout)
	if r := kvctlProc(t, "", "--endpoints="+c.URL(3), "get", "a/1"); r.stdout != "one" {
		t.Errorf("get through member 3: %q", r.stdout)
	}
	if r := kvctlProc(t, "", c.eps, "get", "--prefix", "a/"); r.stdout != "a/1\none\na/2\ntwo\n" {
		t.Errorf("get --prefix: %q", r.stdout)
	}
	if r := kvctlProc(t, "", c.eps, "ls", "a/"); r.stdout != "a/1\na/2\n" {
		t.Errorf("ls: %q", r.stdout)
	}
	if r := kvctlProc(t, "", c.eps, "get", "a/2", "-o", "json"); r.stdout != `{"key":"a/2","value":"two","rev":`+rev+"}\n" {
		t.Errorf("get -o json: %q", r.stdout)
	}

	// Conditions: 3 when they fail, 0 when they hold.
	kvctlProc(t, "", c.eps, "put", "a/2", "2", "--if-match", "1").want(t, exitPrecondition)
	kvctlProc(t, "", c.eps, "put", "a/2", "2", "--if-match", rev).want(t, exitOK)
	kvctlProc(t, "", c.eps, "put", "a/2", "3", "--if-none-match").want(t, exitPrecondition)
	kvctlProc(t, "", c.eps, "put", "a/3", "3", "--if-none-match").want(t, exitOK)
	kvctlProc(t, "", c.eps, "del", "a/3", "--if-match", "1").want(t, exitPrecondition)
	kvctlProc(t, "", c.eps, "del", "a/3", "--if-match", "*").want(t, exitOK)
	kvctlProc(t, "", c.eps, "del", "a/3").want(t, exitError) // gone
	kvctlProc(t, "", c.eps, "get", "a/3").want(t, exitError)

	// A transaction applies whole, or exits 3 and applies nothing.
	ops := `[{"op":"put","key":"t/1","value":"x"},{"op":"delete","key":"a/1"}]`
	if r := kvctlProc(t, ops, c.eps, "txn", "-o", "json").want(t, exitOK); !regexp.MustCompile(`"results":\[\{"found":false,"createRev":\d+\},\{"found":true\}\]`).MatchString(r.stdout) {
		t.Errorf("txn -o json: %q", r.stdout)
	}
	failing := `[{"op":"put","key":"t/2","value":"y"},{"op":"put","key":"t/1","value":"z","ifAbsent":true}]`
	if r := kvctlProc(t, failing, c.eps, "txn").want(t, exitPrecondition); !strings.Contains(r.stderr, "condition of op 1 failed") {
		t.Errorf("txn stderr: %q", r.stderr)
	}
	kvctlProc(t, "", c.eps, "get", "t/2").want(t, exitError)

	// Usage errors never reach the cluster.
	kvctlProc(t, "", c.eps, "frobnicate").want(t, exitUsage)
	kvctlProc(t, "", c.eps, "get").want(t, exitUsage)
	kvctlProc(t, "", c.eps, "put", "k", "v", "--if-match", "nope").want(t, exitUsage)
}

func TestE2EStatusMembersLeader(t *testing.T) {
	c := startCluster(t)
	r := kvctlProc(t, "", c.eps, "status").want(t, exitOK)
	rows := tableRows(r.stdout)
	if len(rows) != 4 {
		t.Fatalf("status: %d rows, want a header and 3:\n%s", len(rows), r.stdout)
	}
	leaders := 0
	for i, row := range rows[1:] {
		if row[0] != strconv.Itoa(i+1) || row[1] != c.URL(i+1) || row[2] != c.Peers[i] {
			t.Errorf("row %d: %q, want member %d at %s, %s", i, row, i+1, c.URL(i+1), c.Peers[i])
		}
		if row[3] == "*" {
			leaders++
			if row[5] != "StateLeader" {
				t.Errorf("the marked row is %s", row[5])
			}
		}
	}
	if leaders != 1 {
		t.Errorf("%d rows marked leader:\n%s", leaders, r.stdout)
	}

	r = kvctlProc(t, "", c.eps, "member", "ls", "-o", "plain").want(t, exitOK)
	if n := strings.Count(r.stdout, " voter"); n != 3 || strings.Count(r.stdout, " leader") != 1 {
		t.Errorf("member ls: %q", r.stdout)
	}

	// Leadership to another member: every member then reports it.
	leader := c.statuses(t)[0].Leader
	next := leader%3 + 1
	kvctlProc(t, "", c.eps, "leader", "move", strconv.FormatUint(next, 10)).want(t, exitOK)
	proctest.Eventually(t, 10*time.Second, func() error {
		for _, s := range c.statuses(t) {
			if s.Leader != next {
				return fmt.Errorf("member %d sees leader %d, want %d", s.ID, s.Leader, next)
			}
		}
		return nil
	})
}

func TestE2EMemberAddPromoteRemove(t *testing.T) {
	c := startCluster(t)
	ports := proctest.FreePorts(t, 2)
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	r := kvctlProc(t, "", c.eps, "member", "add", peer, "--learner", "--id", "4").want(t, exitOK)
	if r.stdout != "added member 4 ("+peer+", learner); start it with --join\n" {
		t.Errorf("member add: %q", r.stdout)
	}
	args := proctest.MemberArgs(4, append(append([]string{}, c.Peers...), peer), ports[1], c.DataDir, append(proctest.FastRaft(), "--join")...)
	m4 := proctest.NewProc(t, "member 4", c.DataDir, filepath.Join(c.DataDir, "member-4.log"), append([]string{raftexampleBin.Path(t)}, args...)...)
	m4.Start()
	// Promotion is refused (409) until the learner has caught up.
	proctest.Eventually(t, proctest.StartTimeout, func() error {
		if r := kvctlProc(t, "", c.eps, "member", "promote", "4"); r.code != exitOK {
			return errors.New(r.stderr)
		}
		return nil
	})
	r = kvctlProc(t, "", c.eps, "member", "ls", "-o", "plain").want(t, exitOK)
	if !strings.Contains(r.stdout, "4 "+peer+" voter") {
		t.Errorf("member ls after promote: %q", r.stdout)
	}
	kvctlProc(t, "", c.eps, "member", "rm", "4").want(t, exitOK)
	if code := m4.WaitExit(proctest.ExitTimeout); code != 0 {
		t.Errorf("the removed member exited %d, want 0", code)
	}
	if r := kvctlProc(t, "", c.eps, "member", "ls", "-o", "plain"); strings.Contains(r.stdout, peer) {
		t.Errorf("member ls after rm: %q", r.stdout)
	}
}

// With the first endpoint down, every command goes to the next; status
// shows the dead member as a row and exits 1; a watch connected to it
// resumes on another member without losing or repeating a change.
func TestE2EFirstEndpointDown(t *testing.T) {
	c := startCluster(t)

	// The watch starts at w/0's revision, so it prints w/0 first.
	rev := strings.TrimSpace(kvctlProc(t, "", c.eps, "put", "w/0", "0", "-o", "plain").want(t, exitOK).stdout)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{c.eps, "watch", "--prefix", "w/", "--rev", rev}, strings.NewReader(""), &out, &errOut)
	}()
	waitOutput := func(want string) {
		t.Helper()
		proctest.Eventually(t, proctest.StartTimeout, func() error {
			if got := out.String(); got != want {
				return fmt.Errorf("the watch printed %q, want %q (stderr %q)", got, want, errOut.String())
			}
			return nil
		})
	}
	base := "PUT\nw/0\n0\n"
	waitOutput(base)

	c.Member(1).Kill()
	proctest.PutOK(t, c.URL(2), "w/1", "1")
	ops := `[{"op":"put","key":"w/2","value":"2"},{"op":"delete","key":"w/0"}]`
	kvctlProc(t, ops, c.eps, "txn").want(t, exitOK)
	waitOutput(base + "PUT\nw/1\n1\nPUT\nw/2\n2\nDELETE\nw/0\n")
	if !strings.Contains(errOut.String(), "resumed on ") || strings.Contains(errOut.String(), "resumed on "+c.URL(1)) {
		t.Errorf("the watch did not say it resumed on another member: %q", errOut.String())
	}

	kvctlProc(t, "", c.eps, "put", "f/1", "v").want(t, exitOK)
	if r := kvctlProc(t, "", c.eps, "get", "f/1").want(t, exitOK); r.stdout != "v" {
		t.Errorf("get with member 1 down: %q", r.stdout)
	}
	kvctlProc(t, "", c.eps, "ls").want(t, exitOK)
	kvctlProc(t, "", c.eps, "member", "ls").want(t, exitOK)
	if r := kvctlProc(t, "", c.eps, "export", "f/").want(t, exitOK); r.stdout != `{"key":"f/1","value":"v"}`+"\n" {
		t.Errorf("export with member 1 down: %q", r.stdout)
	}
	kvctlProc(t, `{"key":"f/2","value":"w"}`, c.eps, "import").want(t, exitOK)
	kvctlProc(t, "", c.eps, "del", "f/2").want(t, exitOK)
	r := kvctlProc(t, "", c.eps, "status").want(t, exitError)
	rows := tableRows(r.stdout)
	if len(rows) != 4 || rows[1][0] != "-" || !strings.Contains(rows[1][2], "unreachable") || rows[2][0] != "2" || rows[3][0] != "3" {
		t.Errorf("status with member 1 down:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "1 of 3 endpoints did not answer") {
		t.Errorf("status stderr: %q", r.stderr)
	}

	cancel()
	if code := <-done; code != exitOK {
		t.Errorf("an interrupted watch exited %d, want 0", code)
	}
}

func TestE2EExportImport(t *testing.T) {
	c := startCluster(t)
	for k, v := range binaryRecords {
		kvctlProc(t, string(v), c.eps, "put", "bin/"+k, "-").want(t, exitOK)
	}
	exported := kvctlProc(t, "", c.eps, "export", "bin/").want(t, exitOK).stdout
	for k := range binaryRecords {
		kvctlProc(t, "", c.eps, "del", "bin/"+k).want(t, exitOK)
	}
	if r := kvctlProc(t, "", c.eps, "ls", "bin/"); r.stdout != "" {
		t.Fatalf("keys left after del: %q", r.stdout)
	}
	kvctlProc(t, exported, c.eps, "import").want(t, exitOK)
	for k, v := range binaryRecords {
		if r := kvctlProc(t, "", c.eps, "get", "bin/"+k); r.stdout != string(v) {
			t.Errorf("bin/%q after import: %q, want %q", k, r.stdout, v)
		}
	}
	if again := kvctlProc(t, "", c.eps, "export", "bin/").stdout; again != exported {
		t.Errorf("export after import:\n%s\nwant\n%s", again, exported)
	}

	// A larger import goes in several transactions, none over the
	// members' --max-request-bytes.
	var in strings.Builder
	value := strings.Repeat("v", 1000)
	for i := range 3000 {
		fmt.Fprintf(&in, `{"key":"big/%05d","value":"%s"}`+"\n", i, value)
	}
	r := kvctlProc(t, in.String(), c.eps, "import").want(t, exitOK)
	if r.stdout != "imported 3000 keys in 3 requests\n" {
		t.Errorf("import: %q", r.stdout)
	}
	if n := strings.Count(kvctlProc(t, "", c.eps, "ls", "big/").stdout, "\n"); n != 3000 {
		t.Errorf("%d keys after import, want 3000", n)
	}
}
