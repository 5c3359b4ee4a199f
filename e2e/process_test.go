package e2e

// Process-level tests: they build the raftexample binary once and run
// members as separate processes, stopping them with real signals. The root
// package's in-process tests cannot see exit codes, signal handling, WAL
// files left by a SIGKILL, or the Procfile.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"raftexample/internal/proctest"
)

// raftexample is the binary under test, built on first use.
var raftexample proctest.Binary

func TestMain(m *testing.M) {
	code := m.Run()
	if err := raftexample.Remove(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: removing the built binary:", err)
	}
	os.Exit(code)
}

const (
	loadDuration = 2 * time.Second  // a write load runs this long...
	loadLimit    = 10 * time.Second // ...or longer if it must, up to this
	maxLoadPuts  = 1500             // attempts per writer, however long it runs
)

// 1. The Procfile starts a working cluster, run the way goreman runs it.

func TestProcessProcfile(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "Procfile")) // the module root
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir() // the working directory: data lands here
	logDir := t.TempDir()
	if err := os.Symlink(raftexample.Path(t), filepath.Join(dir, "raftexample")); err != nil {
		t.Fatal(err)
	}

	entryRe := regexp.MustCompile(`^([A-Za-z0-9_-]+):\s*(.+)$`)
	portRe := regexp.MustCompile(`\b\d{4,5}\b`)
	var names, commands []string
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := entryRe.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("Procfile line %q is not `name: command`", line)
		}
		names, commands = append(names, m[1]), append(commands, m[2])
	}
	if len(commands) != 3 {
		t.Fatalf("Procfile has %d processes, want 3", len(commands))
	}

	// Every port in the Procfile gets a free one, the same in every line.
	newPort := map[string]string{}
	for _, cmd := range commands {
		for _, port := range portRe.FindAllString(cmd, -1) {
			newPort[port] = ""
		}
	}
	free := proctest.FreePorts(t, len(newPort))
	for i, port := range slices.Sorted(maps.Keys(newPort)) {
		newPort[port] = strconv.Itoa(free[i])
	}
	t.Logf("Procfile ports replaced: %v", newPort)

	idRe := regexp.MustCompile(`--?id[= ](\d+)`)
	httpPortRe := regexp.MustCompile(`--?port[= ](\d+)`)
	members := map[int]*proctest.Proc{}
	urls := map[int]string{}
	for i, cmd := range commands {
		cmd = portRe.ReplaceAllStringFunc(cmd, func(p string) string { return newPort[p] })
		idm, portm := idRe.FindStringSubmatch(cmd), httpPortRe.FindStringSubmatch(cmd)
		if idm == nil || portm == nil {
			t.Fatalf("Procfile entry %s has no --id or --port: %q", names[i], cmd)
		}
		id, _ := strconv.Atoi(idm[1])
		members[id] = proctest.NewProc(t, names[i], dir, filepath.Join(logDir, names[i]+".log"), "sh", "-c", cmd)
		urls[id] = "http://127.0.0.1:" + portm[1]
	}
	for id := 1; id <= 3; id++ {
		if members[id] == nil {
			t.Fatalf("Procfile has no member %d", id)
		}
	}
	for id := 1; id <= 3; id++ {
		members[id].Start()
	}

	proctest.WaitWritable(t, urls[1])
	proctest.PutOK(t, urls[1], "procfile-a", "1")
	for _, id := range []int{2, 3} {
		proctest.WaitKeys(t, urls[id], proctest.Present(map[string]string{"procfile-a": "1"}))
	}
	for id := 1; id <= 3; id++ {
		if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("raftexample-%d", id))); err != nil {
			t.Errorf("member %d's WAL is not in the working directory: %v", id, err)
		}
	}

	// goreman's sh stays the parent of raftexample; stop raftexample itself,
	// and sh passes its exit code on.
	members[2].Terminate(shChild(t, members[2]))
	proctest.PutOK(t, urls[1], "procfile-b", "2")
	proctest.WaitKeys(t, urls[3], proctest.Present(map[string]string{"procfile-b": "2"}))

	members[2].Start()
	proctest.WaitKeys(t, urls[2], proctest.Present(map[string]string{"procfile-a": "1", "procfile-b": "2"}))
}

// shChild returns the PID of the raftexample process that `sh -c` started
// for p (p's own PID if the shell exec'd it).
func shChild(t *testing.T, p *proctest.Proc) int {
	t.Helper()
	pid := p.Pid()
	var child int
	proctest.Eventually(t, 5*time.Second, func() error {
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(comm)) == "raftexample" {
			child = pid
			return nil
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if err != nil {
			return err
		}
		kids := strings.Fields(string(b))
		if len(kids) != 1 {
			return fmt.Errorf("sh (pid %d) has children %q, want one", pid, kids)
		}
		child, err = strconv.Atoi(kids[0])
		return err
	})
	return child
}

// 2. SIGKILL during a write load loses no acknowledged write.

// ackLog records every acknowledged write of a load and counts them by the
// member that acknowledged them.
type ackLog struct {
	mu     sync.Mutex
	values map[string]string
	by     map[int]int
}

func (a *ackLog) add(id int, key, value string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.values[key] = value
	a.by[id]++
}

// count returns how many writes member id acknowledged, or all members when
// id is 0.
func (a *ackLog) count(id int) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if id == 0 {
		return len(a.values)
	}
	return a.by[id]
}

// busiest returns the member that acknowledged the most writes so far.
func (a *ackLog) busiest() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	best := 1
	for id, n := range a.by {
		if n > a.by[best] {
			best = id
		}
	}
	return best
}

func (a *ackLog) all() map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.values)
}

// startLoad runs writers goroutines that PUT distinct keys to random members
// until ctx ends (or after maxLoadPuts tries each). The returned function waits for them.
func startLoad(ctx context.Context, c *proctest.Cluster, writers int, acks *ackLog) (wait func()) {
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < maxLoadPuts && ctx.Err() == nil; i++ {
				id := 1 + rand.IntN(len(c.Members))
				key := fmt.Sprintf("load-%d-%d", w, i)
				value := fmt.Sprintf("w%d-i%d-via%d", w, i, id)
				r, err := proctest.Send(ctx, proctest.Client(), http.MethodPut, c.URL(id)+"/"+key, value)
				if err == nil && r.Code == http.StatusNoContent {
					acks.add(id, key, value)
					continue
				}
				select { // back off from a member that is down or has no leader
				case <-ctx.Done():
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
	}
	return wg.Wait
}

// killDuringLoad SIGKILLs the busiest member while writers run, restarts it
// at once, keeps the load on for loadDuration and at least until the
// restarted member has acknowledged writes again, and then checks every
// acknowledged write on every member.
func killDuringLoad(t *testing.T, c *proctest.Cluster) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), loadLimit)
	acks := &ackLog{values: map[string]string{}, by: map[int]int{}}
	wait := startLoad(ctx, c, 4, acks)
	defer wait()
	defer cancel()

	proctest.Eventually(t, loadLimit/2, func() error {
		if n := acks.count(0); n < 300 {
			return fmt.Errorf("only %d writes acknowledged", n)
		}
		return nil
	})
	victim := acks.busiest()
	c.Member(victim).Kill()
	killedAt, ackedByVictim := time.Now(), acks.count(victim)
	t.Logf("SIGKILLed member %d after %d acknowledged writes (%d through it)", victim, acks.count(0), ackedByVictim)
	c.Member(victim).Start()

	proctest.Eventually(t, loadLimit/2, func() error {
		if n := acks.count(victim) - ackedByVictim; n < 20 {
			return fmt.Errorf("the restarted member %d acknowledged %d writes", victim, n)
		}
		return nil
	})
	select {
	case <-time.After(time.Until(began.Add(loadDuration))):
	case <-ctx.Done():
	}
	cancel()
	wait()
	all := acks.all()
	t.Logf("%d writes acknowledged in total; %d through member %d in the %v after it was killed",
		len(all), acks.count(victim)-ackedByVictim, victim, time.Since(killedAt).Round(time.Millisecond))
	for id := range c.Members {
		proctest.WaitKeys(t, c.URL(id+1), proctest.Present(all))
	}
}

func TestProcessKillDuringLoad(t *testing.T) {
	// Writes that followers forwarded to a killed leader are lost with it;
	// a short timeout frees the writers waiting for them.
	c := proctest.NewCluster(t, raftexample.Path(t), 3, "--request-timeout", "1s")
	c.Start()
	killDuringLoad(t, c)
}

func TestProcessKillDuringLoadSingleMember(t *testing.T) {
	c := proctest.NewCluster(t, raftexample.Path(t), 1)
	c.Start()
	killDuringLoad(t, c)
}

// 3. SIGTERM exits 0 and leaves a WAL that restarts cleanly.

func TestProcessSigtermKeepsData(t *testing.T) {
	c := proctest.NewCluster(t, raftexample.Path(t), 1)
	c.Start()
	kv := map[string]string{}
	for i := range 20 {
		key, value := fmt.Sprintf("key-%d", i), fmt.Sprintf("value-%d", i)
		proctest.PutOK(t, c.URL(1), key, value)
		kv[key] = value
	}
	m := c.Member(1)
	m.Terminate(0)

	m.Start()
	proctest.WaitServing(t, c.URL(1))
	// It serves only after replaying the WAL: no waiting for the data.
	if err := proctest.CheckKeys(c.URL(1), proctest.Present(kv)); err != nil {
		t.Fatalf("after SIGTERM and restart: %v", err)
	}
	if out := m.Output(); strings.Contains(strings.ToLower(out), "repair") {
		t.Errorf("the WAL needed repair after a clean shutdown:\n%s", out)
	}
	proctest.PutOK(t, c.URL(1), "after-restart", "yes")
}

// 3b. After SIGKILL, a member serves nothing older than it acknowledged.

func TestProcessKillRestartServesAcknowledged(t *testing.T) {
	c := proctest.NewCluster(t, raftexample.Path(t), 1)
	c.Start()
	m := c.Member(1)
	kv := map[string]string{}
	for round := range 3 { // a few rounds, as what reaches the disk before a kill varies
		for i := range 5 {
			key, value := fmt.Sprintf("round-%d-key-%d", round, i), fmt.Sprintf("value-%d-%d", round, i)
			proctest.PutOK(t, c.URL(1), key, value)
			kv[key] = value
		}
		m.Kill()
		m.Start()
		proctest.WaitServing(t, c.URL(1))
		// The first answers after the restart: a default (linearizable) read
		// may only say 503 until there is a leader; a serializable read
		// answers from local state, which must hold every acknowledged write.
		for _, k := range slices.Sorted(maps.Keys(kv)) {
			r := proctest.Call(t, http.MethodGet, c.URL(1)+"/"+k, "")
			if r.Code != http.StatusServiceUnavailable && (r.Code != http.StatusOK || r.Body != kv[k]) {
				t.Errorf("round %d: GET %s right after restarting from SIGKILL = %d %q, want 200 %q or 503", round, k, r.Code, r.Body, kv[k])
			}
		}
		if err := proctest.CheckKeys(c.URL(1), proctest.Present(kv)); err != nil {
			t.Errorf("round %d: right after restarting from SIGKILL, the member serves a state older than it acknowledged: %v", round, err)
		}
		proctest.WaitKeys(t, c.URL(1), proctest.Present(kv)) // late is still better than lost
	}
}

// 4. A torn last WAL record (a crash mid-write) is repaired on start.

func TestProcessTornWALTail(t *testing.T) {
	// The file ends in the middle of its last record. That record was
	// synced, so this is harsher than a real crash: it may lose the last
	// acknowledged write, and only that one.
	t.Run("cut-last-record", func(t *testing.T) { tornWALTest(t, cutLastWALRecord, true) })
	// A record appended after the last one was torn: its first sector
	// reached the disk, the next is still preallocated zeros. That is what a
	// crash in the middle of an append leaves; no acknowledged write is lost.
	t.Run("torn-append", func(t *testing.T) { tornWALTest(t, appendTornWALRecord, false) })
}

// tornWALTest writes keys to a single member, SIGKILLs it, damages the end
// of its newest WAL file, and restarts it.
func tornWALTest(t *testing.T, damage func(t *testing.T, walFile string), lastMayBeLost bool) {
	c := proctest.NewCluster(t, raftexample.Path(t), 1)
	c.Start()
	const n = 10
	want := map[string]string{}
	for i := range n {
		key, value := fmt.Sprintf("key-%d", i), fmt.Sprintf("value-%d", i)
		proctest.PutOK(t, c.URL(1), key, value)
		want[key] = value
	}
	m := c.Member(1)
	m.Kill()
	damage(t, newestWAL(t, filepath.Join(c.DataDir, "raftexample-1")))

	m.Start()
	proctest.WaitServing(t, c.URL(1))
	if out := m.Output(); !strings.Contains(strings.ToLower(out), "repair") {
		t.Errorf("no log line mentions repairing the WAL")
	}
	// Once a new write is applied, everything before it in the log is too.
	proctest.PutOK(t, c.URL(1), "after-repair", "yes")
	lastKey := fmt.Sprintf("key-%d", n-1)
	if lastMayBeLost {
		last, err := proctest.ReadLocal(c.URL(1), lastKey)
		switch {
		case err != nil:
			t.Fatal(err)
		case last.Code == http.StatusNotFound:
			t.Logf("the cut record held the last write, %s", lastKey)
			delete(want, lastKey)
		case last.Code != http.StatusOK || last.Body != want[lastKey]:
			t.Errorf("GET %s = %d %q, want 404 or 200 %q", lastKey, last.Code, last.Body, want[lastKey])
		}
	}
	want["after-repair"] = "yes"
	if err := proctest.CheckKeys(c.URL(1), proctest.Present(want)); err != nil {
		t.Fatalf("after repairing the WAL: %v", err)
	}

	// The repaired WAL survives a clean restart, which needs no waiting.
	m.Terminate(0)
	m.Start()
	proctest.WaitServing(t, c.URL(1))
	if err := proctest.CheckKeys(c.URL(1), proctest.Present(want)); err != nil {
		t.Fatalf("restart after repair: %v", err)
	}
}

func newestWAL(t *testing.T, walDir string) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(walDir, "*.wal"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no WAL files in %s (%v)", walDir, err)
	}
	slices.Sort(files)
	return files[len(files)-1]
}

// lastWALFrame reads a WAL file and finds its last frame. A WAL file is a
// sequence of frames: an 8-byte little-endian length word (its top byte
// holds padding information), the record, and padding to 8 bytes.
// Preallocated zeros follow the last frame.
func lastWALFrame(t *testing.T, walFile string) (data []byte, last, recLen, end int) {
	t.Helper()
	data, err := os.ReadFile(walFile)
	if err != nil {
		t.Fatal(err)
	}
	last = -1
	for end+8 <= len(data) {
		word := binary.LittleEndian.Uint64(data[end:])
		if word == 0 {
			break
		}
		n, pad := int(word&(1<<56-1)), 0
		if word&(1<<63) != 0 {
			pad = int(word >> 56 & 0x7)
		}
		if end+8+n+pad > len(data) {
			t.Fatalf("%s: frame at %d runs past the end of the file", walFile, end)
		}
		last, recLen = end, n
		end += 8 + n + pad
	}
	if last < 0 {
		t.Fatalf("%s holds no records", walFile)
	}
	return data, last, recLen, end
}

// cutLastWALRecord truncates the file in the middle of its last record.
func cutLastWALRecord(t *testing.T, walFile string) {
	data, last, recLen, _ := lastWALFrame(t, walFile)
	cut := int64(last + 8 + recLen/2)
	if err := os.Truncate(walFile, cut); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: last record at offset %d (%d bytes); file truncated from %d to %d bytes",
		filepath.Base(walFile), last, recLen, len(data), cut)
}

// appendTornWALRecord writes, after the last record, the first sector of a
// record that spans two sectors; the second stays zero.
func appendTornWALRecord(t *testing.T, walFile string) {
	const sector = 512
	data, _, _, end := lastWALFrame(t, walFile)
	start := end + 8 // where the record's bytes begin
	boundary := (start/sector + 1) * sector
	recLen := boundary - start + 64 // a multiple of 8, so no padding
	if start+recLen > len(data) || slices.ContainsFunc(data[end:start+recLen], func(b byte) bool { return b != 0 }) {
		t.Fatalf("%s: no preallocated zeros after the last record at %d", walFile, end)
	}
	torn := make([]byte, boundary-end)
	binary.LittleEndian.PutUint64(torn, uint64(recLen))
	for i := 8; i < len(torn); i++ {
		torn[i] = 0xa5
	}
	f, err := os.OpenFile(walFile, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(torn, int64(end)); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: wrote the first %d bytes of a %d-byte frame at offset %d", filepath.Base(walFile), len(torn), 8+recLen, end)
}

// 5. A removed member exits 0 and cannot start again from its data.

func TestProcessRemovedMember(t *testing.T) {
	// When member 3 leads, writes that members 1 and 2 forwarded to it are
	// lost with it and time out; a short timeout makes putOK retry sooner.
	c := proctest.NewCluster(t, raftexample.Path(t), 3, "--request-timeout", "2s")
	c.Start()
	proctest.PutOK(t, c.URL(1), "before", "1")

	if r := proctest.Call(t, http.MethodDelete, c.URL(1)+"/3", ""); r.Code != http.StatusNoContent {
		t.Fatalf("DELETE /3 = %d %q, want 204", r.Code, r.Body)
	}
	m3 := c.Member(3)
	if code := m3.WaitExit(10 * time.Second); code != 0 {
		t.Fatalf("removed member 3 exited with code %d (%v), want 0", code, m3.Err())
	}
	if _, err := os.Stat(filepath.Join(c.DataDir, "raftexample-3-removed")); err != nil {
		t.Errorf("no removal marker: %v", err)
	}

	before := len(m3.Output())
	began := time.Now()
	m3.Start()
	if code := m3.WaitExit(5 * time.Second); code == 0 {
		t.Errorf("member 3 started again from its data after its removal (exit 0)")
	}
	t.Logf("restarting the removed member failed after %v with:\n%s", time.Since(began), m3.Output()[before:])
	if !strings.Contains(m3.Output()[before:], "removed") {
		t.Errorf("the refusal to start does not say the member was removed")
	}

	if r := proctest.Call(t, http.MethodDelete, c.URL(1)+"/3", ""); r.Code != http.StatusNotFound {
		t.Errorf("DELETE /3 again = %d %q, want 404", r.Code, r.Body)
	}
	proctest.PutOK(t, c.URL(1), "after", "1")
	proctest.PutOK(t, c.URL(2), "after2", "2")
	proctest.WaitKeys(t, c.URL(2), proctest.Present(map[string]string{"before": "1", "after": "1"}))
	proctest.WaitKeys(t, c.URL(1), proctest.Present(map[string]string{"after2": "2"}))
}

// 6. Malformed membership requests are refused before they reach the log.

func TestProcessMalformedMemberRequests(t *testing.T) {
	c := proctest.NewCluster(t, raftexample.Path(t), 3)
	c.Start()
	unused := fmt.Sprintf("http://127.0.0.1:%d", proctest.FreePorts(t, 1)[0])
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{http.MethodPost, "/4", "not a url", http.StatusBadRequest},
		{http.MethodPost, "/4", "", http.StatusBadRequest},
		{http.MethodPost, "/4", "http://127.0.0.1", http.StatusBadRequest}, // no port
		{http.MethodPost, "/4", "ftp://127.0.0.1:1", http.StatusBadRequest},
		{http.MethodPost, "/4", "http://[::1", http.StatusBadRequest},
		{http.MethodPost, "/0", unused, http.StatusBadRequest},
		{http.MethodPost, "/abc", unused, http.StatusBadRequest},
		{http.MethodPost, "/-1", unused, http.StatusBadRequest},
		{http.MethodPost, "/1", unused, http.StatusConflict},     // ID in use
		{http.MethodPost, "/4", c.Peers[1], http.StatusConflict}, // URL in use
		{http.MethodDelete, "/0", "", http.StatusBadRequest},
		{http.MethodDelete, "/9", "", http.StatusNotFound},
	} {
		r := proctest.Call(t, tc.method, c.URL(1)+tc.path, tc.body)
		if r.Code != tc.want {
			t.Errorf("%s %s %q = %d %q, want %d", tc.method, tc.path, tc.body, r.Code, r.Body, tc.want)
		}
	}

	kv := map[string]string{}
	for id := 1; id <= 3; id++ {
		key := fmt.Sprintf("via-%d", id)
		proctest.PutOK(t, c.URL(id), key, "ok")
		kv[key] = "ok"
	}
	for id := 1; id <= 3; id++ {
		proctest.WaitKeys(t, c.URL(id), proctest.Present(kv))
	}

	// Nothing bad entered the log: every member restarts and serves.
	c.StopAll()
	c.Start()
	for id := 1; id <= 3; id++ {
		proctest.WaitKeys(t, c.URL(id), proctest.Present(kv))
		if out := c.Member(id).Output(); strings.Contains(out, "panic") {
			t.Errorf("member %d panicked", id)
		}
	}
}

// 7. Without quorum, writes fail fast with 503/504 instead of hanging.

func TestProcessNoQuorum(t *testing.T) {
	const requestTimeout = 2 * time.Second
	c := proctest.NewCluster(t, raftexample.Path(t), 3, "--request-timeout", requestTimeout.String())
	c.Start()
	proctest.PutOK(t, c.URL(1), "before", "1")
	c.Member(2).Kill()
	c.Member(3).Kill()

	// unavailable sends a request to the survivor, which must answer 503
	// (with Retry-After) or 504, within the request timeout plus slack.
	const bound = requestTimeout + 2*time.Second
	unavailable := func(method, path, body string) int {
		t.Helper()
		began := time.Now()
		r := proctest.Call(t, method, c.URL(1)+path, body)
		took := time.Since(began)
		t.Logf("%s %s without quorum: %d %q after %v", method, path, r.Code, strings.TrimSpace(r.Body), took.Round(time.Millisecond))
		if took > bound {
			t.Errorf("%s %s without quorum took %v, want under %v", method, path, took, bound)
		}
		switch r.Code {
		case http.StatusServiceUnavailable:
			if secs, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || secs < 1 {
				t.Errorf("503 has Retry-After %q, want a positive number of seconds", r.Header.Get("Retry-After"))
			}
		case http.StatusGatewayTimeout:
		default:
			t.Fatalf("%s %s without quorum = %d %q, want 503 or 504", method, path, r.Code, r.Body)
		}
		return r.Code
	}

	// Once the member knows it has no leader, it says so at once: 503.
	lostAt := time.Now()
	for attempt := 0; unavailable(http.MethodPut, fmt.Sprintf("/noquorum-%d", attempt), "x") != http.StatusServiceUnavailable; attempt++ {
		if attempt == 20 || time.Since(lostAt) > 20*time.Second {
			t.Fatalf("no 503 from the survivor in %d tries over %v", attempt+1, time.Since(lostAt))
		}
	}
	unavailable(http.MethodDelete, "/before", "")
	unavailable(http.MethodGet, "/before", "") // linearizable by default
	if r := proctest.Call(t, http.MethodGet, c.URL(1)+"/before?consistency=serializable", ""); r.Code != http.StatusOK || r.Body != "1" {
		t.Errorf("serializable GET without quorum = %d %q, want 200 \"1\"", r.Code, r.Body)
	}
	if !c.Member(1).Running() {
		t.Fatalf("the surviving member exited")
	}
}

// 8. Restarts from snapshots keep every write and delete.

func TestProcessSnapshotRestarts(t *testing.T) {
	c := proctest.NewCluster(t, raftexample.Path(t), 1, "--snapshot-count", "3")
	c.Start()
	m := c.Member(1)
	want := map[string]*string{}
	for round := range 4 {
		if round > 0 {
			m.Terminate(0)
			m.Start()
			proctest.WaitServing(t, c.URL(1))
			if err := proctest.CheckKeys(c.URL(1), want); err != nil {
				t.Fatalf("after restart %d: %v", round, err)
			}
		}
		for i := range 7 {
			key, value := fmt.Sprintf("round-%d-key-%d", round, i), fmt.Sprintf("value-%d-%d", round, i)
			proctest.PutOK(t, c.URL(1), key, value)
			want[key] = &value
		}
		counter := strconv.Itoa(round)
		proctest.PutOK(t, c.URL(1), "counter", counter)
		want["counter"] = &counter
		if round > 0 {
			key := fmt.Sprintf("round-%d-key-0", round-1)
			if r := proctest.Call(t, http.MethodDelete, c.URL(1)+"/"+key, ""); r.Code != http.StatusNoContent {
				t.Fatalf("DELETE %s = %d %q, want 204", key, r.Code, r.Body)
			}
			want[key] = nil
		}
	}
	m.Terminate(0)
	m.Start()
	proctest.WaitServing(t, c.URL(1))
	if err := proctest.CheckKeys(c.URL(1), want); err != nil {
		t.Fatalf("after the last restart: %v", err)
	}
	snaps, _ := filepath.Glob(filepath.Join(c.DataDir, "raftexample-1-snap", "*.snap"))
	if len(snaps) == 0 {
		t.Errorf("no snapshot files in raftexample-1-snap with --snapshot-count 3")
	}
}

// A member that falls behind a compacted log catches up from a snapshot sent
// by the leader, and restarts from it.
func TestProcessSnapshotCatchUp(t *testing.T) {
	// If member 3 leads when it stops, writes forwarded to it are lost and
	// time out; a short timeout makes putOK retry sooner.
	c := proctest.NewCluster(t, raftexample.Path(t), 3, "--snapshot-count", "3", "--snapshot-catchup-entries", "1", "--request-timeout", "2s")
	c.Start()
	m3 := c.Member(3)
	m3.Terminate(0)
	kv := map[string]string{}
	for i := range 20 {
		key, value := fmt.Sprintf("behind-%d", i), strconv.Itoa(i)
		proctest.PutOK(t, c.URL(1+i%2), key, value)
		kv[key] = value
	}
	m3.Start()
	proctest.WaitKeys(t, c.URL(3), proctest.Present(kv))
	proctest.PutOK(t, c.URL(3), "from-3", "yes")
	kv["from-3"] = "yes"
	proctest.WaitKeys(t, c.URL(1), proctest.Present(kv))

	m3.Terminate(0)
	m3.Start()
	proctest.WaitServing(t, c.URL(3))
	proctest.WaitKeys(t, c.URL(3), proctest.Present(kv))
}

// A member whose descriptors run out (ulimit -n 300, 400 idle keep-alive
// connections) stays up: accepts, snapshots and purges fail, are logged and
// retried, and once connections close it accepts and snapshots again.
func TestProcessOutOfFileDescriptors(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a member out of file descriptors")
	}
	dir := t.TempDir()
	ports := proctest.FreePorts(t, 2)
	base := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	argv := append([]string{"sh", "-c", `ulimit -n 300 && exec "$0" "$@"`, raftexample.Path(t),
		"--cluster", fmt.Sprintf("http://127.0.0.1:%d", ports[0]), "--port", strconv.Itoa(ports[1]), "--data-dir", dir,
		"--snapshot-count", "20", "--max-snapshots", "2", "--purge-interval", "200ms"}, proctest.FastRaft()...)
	p := proctest.NewProc(t, "member", dir, filepath.Join(dir, "member.log"), argv...)
	p.Start()
	proctest.WaitWritable(t, base)
	if !strings.Contains(p.Output(), "the open-file limit is below what --max-connections needs") {
		t.Error("no warning at start that 300 descriptors cannot hold --max-connections 4096")
	}
	addr := strings.TrimPrefix(base, "http://")
	writer := proctest.DialRaw(t, addr) // opened while descriptors are free
	put := func(i int) {
		t.Helper()
		if code, _, err := writer.Do(http.MethodPut, fmt.Sprintf("/k%d", i%50), "v", 10*time.Second); err != nil || code != http.StatusNoContent {
			t.Fatalf("PUT %d through the open connection: %d %v", i, code, err)
		}
	}
	put(0)

	idle := make([]*proctest.RawConn, 400)
	for i := range idle {
		idle[i] = proctest.DialRaw(t, addr) // the kernel's backlog takes those the member cannot accept
		go idle[i].Do(http.MethodGet, "/health", "", 30*time.Second)
	}
	logged := func(s string) func() error {
		return func() error {
			if !strings.Contains(p.Output(), s) {
				return fmt.Errorf("no %q in the log", s)
			}
			return nil
		}
	}
	proctest.Eventually(t, 20*time.Second, logged("accept failed; retrying"))
	// Writes trigger snapshots; the purger runs every 200 ms.
	i := 1
	proctest.Eventually(t, 30*time.Second, func() error {
		put(i)
		i++
		for _, s := range []string{"snapshot postponed: out of file descriptors", "purge failed; retrying"} {
			if err := logged(s)(); err != nil {
				return err
			}
		}
		return nil
	})
	if !p.Running() {
		t.Fatal("the member exited")
	}

	for _, c := range idle {
		c.Close()
	}
	proctest.Eventually(t, 20*time.Second, logged("accepting connections again"))
	saved := strings.Count(p.Output(), "saved snapshot")
	proctest.Eventually(t, 30*time.Second, func() error {
		put(i)
		i++
		if n := strings.Count(p.Output(), "saved snapshot"); n <= saved {
			return errors.New("no snapshot saved since the connections closed")
		}
		return nil
	})
	if code := proctest.Call(t, http.MethodGet, base+"/k1", "").Code; code != http.StatusOK {
		t.Fatalf("GET through a new connection: %d", code)
	}
	out := p.Output()
	t.Logf("log: %d failed-accept warnings, %d postponed snapshots, %d failed purges, %d saved snapshots",
		strings.Count(out, "accept failed; retrying"), strings.Count(out, "snapshot postponed"),
		strings.Count(out, "purge failed; retrying"), strings.Count(out, "saved snapshot"))
	p.Terminate(shChild(t, p))
}
