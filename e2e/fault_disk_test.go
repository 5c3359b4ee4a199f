package e2e

// Disk and crash faults on single members of the built binary: crashes at
// failpoints in the persistence code, a damaged newest snapshot, data
// directories that are not directories, and a full disk. After each, the
// member restarts with every acknowledged write, or refuses to start with
// one clear error. (A torn WAL tail: TestProcessTornWALTail.)

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.uber.org/zap"

	"raftexample/internal/proctest"
)

// writeUntilExit PUTs prefix-0, prefix-1, ... through member id, one at a
// time, until the member exits, limit writes were sent, or a minute passed.
// It returns the acknowledged writes and whether the member exited.
func writeUntilExit(t *testing.T, c *proctest.Cluster, id int, prefix string, limit int) (map[string]string, bool) {
	t.Helper()
	acked := map[string]string{}
	deadline := time.Now().Add(time.Minute)
	m := c.Member(id)
	for i := 0; i < limit && time.Now().Before(deadline); i++ {
		if !m.Running() {
			return acked, true
		}
		key, value := fmt.Sprintf("%s-%d", prefix, i), fmt.Sprintf("value-%d", i)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := proctest.Send(ctx, proctest.Client(), http.MethodPut, c.URL(id)+"/"+key, value)
		cancel()
		if err == nil && r.Code == http.StatusNoContent {
			acked[key] = value
		}
	}
	return acked, !m.Running()
}

// withEnv runs the member's next start with extra environment variables.
func withEnv(p *proctest.Proc, env ...string) (restore func()) {
	saved := p.Env
	p.Env = append(slices.Clone(saved), env...)
	return func() { p.Env = saved }
}

// diedBySIGKILL reports whether p's last run ended by SIGKILL.
func diedBySIGKILL(p *proctest.Proc) bool {
	var exitErr *exec.ExitError
	if !errors.As(p.Err(), &exitErr) {
		return false
	}
	ws, ok := exitErr.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// checkHealthyAfter restarts member id after a crash and requires every
// acknowledged write, then a write and a clean restart with the same data.
func checkHealthyAfter(t *testing.T, c *proctest.Cluster, id int, acked map[string]string) {
	t.Helper()
	m := c.Member(id)
	m.Start()
	proctest.WaitServing(t, c.URL(id))
	// Serving means replayed: a serializable read must show every acknowledged write.
	if err := proctest.CheckKeys(c.URL(id), proctest.Present(acked)); err != nil {
		t.Errorf("right after the restart: %v", err)
	}
	proctest.WaitKeys(t, c.URL(id), proctest.Present(acked))
	proctest.PutOK(t, c.URL(id), "after-crash", "yes")
	m.Terminate(0)
	m.Start()
	proctest.WaitServing(t, c.URL(id))
	want := proctest.Present(acked)
	yes := "yes"
	want["after-crash"] = &yes
	if err := proctest.CheckKeys(c.URL(id), want); err != nil {
		t.Errorf("after a clean restart: %v", err)
	}
}

// Crash at every failpoint in turn; the member recovers every time.
func TestFaultFailpoints(t *testing.T) {
	if testing.Short() {
		t.Skip("crashes and restarts a member at each of 9 failpoints; ./test.sh runs it")
	}
	snapshotFlags := []string{"--snapshot-count", "5", "--snapshot-catchup-entries", "2", "--max-snapshots", "2", "--max-wals", "1"}
	for _, tc := range []struct {
		point string
		hit   int
	}{
		{"before-wal-save", 40},
		{"after-wal-save-before-apply", 40},
		{"before-snapshot-save", 3},
		{"after-snapshot-file", 3},
		{"after-wal-snapshot-record", 3},
		{"after-wal-release", 3},
		{"before-compact", 3},
		{"after-compact", 3},
	} {
		t.Run(tc.point, func(t *testing.T) {
			c := proctest.NewCluster(t, raftexample.Path(t), 1, snapshotFlags...)
			m := c.Member(1)
			restore := withEnv(m, fmt.Sprintf("RAFTEXAMPLE_FAILPOINT=%s:%d", tc.point, tc.hit))
			c.Start()
			restore()
			acked, exited := writeUntilExit(t, c, 1, "fp", 500)
			if !exited {
				t.Fatalf("the member did not reach failpoint %s (hit %d) in %d writes", tc.point, tc.hit, len(acked))
			}
			if !diedBySIGKILL(m) || !strings.Contains(m.Output(), "failpoint reached") {
				t.Fatalf("the member exited (%v) but not at the failpoint", m.Err())
			}
			t.Logf("killed at %s (hit %d) after %d acknowledged writes", tc.point, tc.hit, len(acked))
			newest := newestSnapIndex(t, filepath.Join(c.DataDir, "raftexample-1-snap"))
			before := len(m.Output())
			checkHealthyAfter(t, c, 1, acked)
			// Every crash leaves a newest snapshot the restart can use at
			// once, even one the WAL does not record yet (after-snapshot-file).
			restart := m.Output()[before:]
			if strings.Contains(restart, "checking the snapshots the WAL lists") {
				t.Errorf("the restart fell back to scanning the WAL for snapshots")
			}
			if want := fmt.Sprintf(`"snapshot-index": %d,`, newest); newest > 0 && !strings.Contains(restart, want) {
				t.Errorf("the restart did not start from the newest snapshot (%d)", newest)
			}
		})
	}
	// A follower that receives a snapshot from the leader saves it through
	// the same code; crash it there.
	for _, point := range []string{"after-snapshot-file", "after-wal-snapshot-record"} {
		t.Run("incoming-"+point, func(t *testing.T) {
			c := proctest.NewCluster(t, raftexample.Path(t), 3, append(snapshotFlags, "--request-timeout", "2s")...)
			c.Start()
			m3 := c.Member(3)
			m3.Terminate(0)
			kv := map[string]string{}
			for i := range 20 {
				key := fmt.Sprintf("behind-%d", i)
				proctest.PutOK(t, c.URL(1+i%2), key, "v")
				kv[key] = "v"
			}
			restore := withEnv(m3, "RAFTEXAMPLE_FAILPOINT="+point)
			m3.Start()
			restore()
			if code := m3.WaitExit(proctest.StartTimeout); code != -1 || !diedBySIGKILL(m3) {
				t.Fatalf("member 3 exited with %d (%v), want death by SIGKILL at %s", code, m3.Err(), point)
			}
			m3.Start()
			proctest.WaitKeys(t, c.URL(3), proctest.Present(kv))
			proctest.PutOK(t, c.URL(3), "from-3", "yes")
			kv["from-3"] = "yes"
			for id := 1; id <= 3; id++ {
				proctest.WaitKeys(t, c.URL(id), proctest.Present(kv))
			}
		})
	}
}

// newestSnapIndex is the index in the name of the newest .snap file in dir
// that reads back whole (<term>-<index>.snap, both hex), or 0 if there is
// none. A kill can land while a background snapshot writes its .snap file
// (etcd's snapshotter writes it in place); the restart rightly skips such a
// torn file, and so does this.
func newestSnapIndex(t *testing.T, dir string) uint64 {
	t.Helper()
	snaps, err := filepath.Glob(filepath.Join(dir, "*.snap"))
	if err != nil {
		t.Fatal(err)
	}
	var newest uint64
	for _, p := range snaps {
		var term, index uint64
		if _, err := fmt.Sscanf(filepath.Base(p), "%016x-%016x.snap", &term, &index); err != nil {
			t.Fatalf("snapshot file %s: %v", p, err)
		}
		if _, err := snap.Read(zap.NewNop(), p); err != nil {
			t.Logf("snapshot file %s does not read back whole (%v): skipped", p, err)
			continue
		}
		newest = max(newest, index)
	}
	return newest
}

// stoppedWithSnapshots writes 40 keys to a one-member cluster that
// snapshots every 5 entries, keeping 3, and stops it.
func stoppedWithSnapshots(t *testing.T) (*proctest.Cluster, map[string]string) {
	t.Helper()
	c := proctest.NewCluster(t, raftexample.Path(t), 1, "--snapshot-count", "5", "--snapshot-catchup-entries", "2", "--max-snapshots", "3")
	c.Start()
	kv := map[string]string{}
	for i := range 40 {
		key := fmt.Sprintf("key-%d", i)
		proctest.PutOK(t, c.URL(1), key, fmt.Sprint(i))
		kv[key] = fmt.Sprint(i)
	}
	c.Member(1).Terminate(0)
	return c, kv
}

// The newest snapshot's state file (.snap.db) is damaged: its checksum
// gives it away, and the member starts from the snapshot before it.
func TestFaultDamagedNewestStateFile(t *testing.T) {
	c, kv := stoppedWithSnapshots(t)
	m := c.Member(1)
	dbs, _ := filepath.Glob(filepath.Join(c.DataDir, "raftexample-1-snap", "*.snap.db"))
	if len(dbs) < 2 {
		t.Fatalf("want at least 2 state files to fall back on, have %v", dbs)
	}
	slices.Sort(dbs)
	newest := dbs[len(dbs)-1]
	data, err := os.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x01 // one bit: only the checksum can tell
	if err := os.WriteFile(newest, data, 0o644); err != nil {
		t.Fatal(err)
	}
	m.Start()
	proctest.WaitServing(t, c.URL(1))
	if err := proctest.CheckKeys(c.URL(1), proctest.Present(kv)); err != nil {
		t.Fatalf("after falling back to an older snapshot: %v", err)
	}
	if !strings.Contains(m.Output(), "checking the snapshots the WAL lists") {
		t.Errorf("the member did not say it fell back from the damaged snapshot")
	}
}

// The newest snapshot file is damaged: the member sets it aside and starts
// from the one before, replaying the WAL from there.
func TestFaultDamagedNewestSnapshot(t *testing.T) {
	c, kv := stoppedWithSnapshots(t)
	m := c.Member(1)
	snapDir := filepath.Join(c.DataDir, "raftexample-1-snap")
	snaps, _ := filepath.Glob(filepath.Join(snapDir, "*.snap"))
	if len(snaps) < 2 {
		t.Fatalf("want at least 2 snapshot files to fall back on, have %v", snaps)
	}
	slices.Sort(snaps)
	newest := snaps[len(snaps)-1]
	data, err := os.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(data) / 2; i < len(data)/2+8 && i < len(data); i++ {
		data[i] ^= 0xff
	}
	if err := os.WriteFile(newest, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("damaged %s (%d bytes); older: %v", filepath.Base(newest), len(data), snaps[:len(snaps)-1])

	m.Start()
	proctest.WaitServing(t, c.URL(1))
	if err := proctest.CheckKeys(c.URL(1), proctest.Present(kv)); err != nil {
		t.Fatalf("after falling back to an older snapshot: %v", err)
	}
	if broken, _ := filepath.Glob(filepath.Join(snapDir, "*.broken")); len(broken) == 0 {
		t.Errorf("the damaged snapshot was not set aside as .broken")
	}
	proctest.PutOK(t, c.URL(1), "after", "yes")
	kv["after"] = "yes"
	m.Terminate(0)
	m.Start()
	proctest.WaitServing(t, c.URL(1))
	if err := proctest.CheckKeys(c.URL(1), proctest.Present(kv)); err != nil {
		t.Fatalf("after another restart: %v", err)
	}
}

// A data directory that is not a directory stops the member at start with
// one clear error and touches nothing; once it is back, the member starts
// with its data. (Root ignores permission bits, so a file stands in for an
// unreadable directory.)
func TestFaultDataDirNotADirectory(t *testing.T) {
	for _, dir := range []string{"raftexample-1", "raftexample-1-snap"} {
		t.Run(dir, func(t *testing.T) {
			c := proctest.NewCluster(t, raftexample.Path(t), 1, "--snapshot-count", "5")
			c.Start()
			kv := map[string]string{}
			for i := range 12 {
				key := fmt.Sprintf("key-%d", i)
				proctest.PutOK(t, c.URL(1), key, "v")
				kv[key] = "v"
			}
			m := c.Member(1)
			m.Terminate(0)
			path := filepath.Join(c.DataDir, dir)
			aside := path + ".aside"
			if err := os.Rename(path, aside); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte("not a directory\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			before := len(m.Output())
			m.Start()
			if code := m.WaitExit(proctest.ExitTimeout); code != 1 {
				t.Fatalf("with %s a file, the member exited with %d, want 1", dir, code)
			}
			requireOneClearError(t, m.Output()[before:], dir)

			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(aside, path); err != nil {
				t.Fatal(err)
			}
			m.Start()
			proctest.WaitServing(t, c.URL(1))
			if err := proctest.CheckKeys(c.URL(1), proctest.Present(kv)); err != nil {
				t.Fatalf("with the directory back: %v", err)
			}
		})
	}
}

// requireOneClearError checks that a member that stopped on a fault logged
// one line saying why, naming what failed, and did not panic.
func requireOneClearError(t *testing.T, out, mention string) {
	t.Helper()
	var failed []string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "panic") || strings.Contains(line, "\tfatal\t") {
			t.Fatalf("the member panicked or logged a fatal error:\n%s", out)
		}
		if strings.Contains(line, "raftexample failed") {
			failed = append(failed, line)
		}
	}
	if len(failed) != 1 || !strings.Contains(failed[0], mention) {
		t.Fatalf("want one \"raftexample failed\" line mentioning %q, got %d:\n%s\nwhole output:\n%s", mention, len(failed), strings.Join(failed, "\n"), out)
	}
	t.Logf("the error: %s", failed[0])
}

// The disk fills up under a running member: it stops with one clear error
// rather than run on without saving; once space is freed it restarts with
// every acknowledged write. Needs root to mount a small tmpfs.
func TestFaultDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a full disk is simulated with a small tmpfs, which needs root to mount")
	}
	disk := t.TempDir()
	// The WAL preallocates 64 MB segments, the one in use and the next, so
	// the file system must hold two of them (a member on a disk without
	// that room does not start: it fails with ENOSPC, which is right); a
	// filler file then takes all the rest.
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", disk).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s); the disk-full test needs one", err, strings.TrimSpace(string(out)))
	}
	// Registered before the member exists, so it runs after it is killed.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", disk).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", disk, err, out)
		}
	})
	c := proctest.NewCluster(t, raftexample.Path(t), 1, "--data-dir", disk, "--snapshot-count", "20", "--max-snapshots", "2")
	c.Start()
	acked, _ := writeUntilExit(t, c, 1, "before", 30)
	filler := filepath.Join(disk, "filler")
	fillDisk(t, filler)

	m := c.Member(1)
	more, exited := writeUntilExit(t, c, 1, "full", 2000)
	if !exited {
		t.Fatalf("the member kept running on a full disk through %d writes", len(more))
	}
	for k, v := range more {
		acked[k] = v
	}
	var exitErr *exec.ExitError
	if !errors.As(m.Err(), &exitErr) || exitErr.ExitCode() != 1 {
		t.Fatalf("on a full disk the member exited with %v, want code 1", m.Err())
	}
	requireOneClearError(t, m.Output(), "no space left on device")
	t.Logf("%d writes acknowledged before the disk filled up", len(acked))

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	checkHealthyAfter(t, c, 1, acked)
}

// fillDisk writes a file until the file system is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<16)
	for i := 0; i < 1<<14; i++ { // at most 1 GiB
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
	t.Fatal("the file system did not fill up")
}
