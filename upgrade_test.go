package main

import (
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// A data directory written by an earlier version starts under this one with
// every key, and keeps working: the fixtures in testdata/upgrade were
// written by the versions they are named after (see its README).
func TestUpgradeFromEarlierDataDirs(t *testing.T) {
	want := map[string]string{"bin": "\x00\xff\x01"}
	for _, i := range []string{"0", "1", "2", "4", "5", "6", "7", "8", "9", "10", "11"} {
		want["k"+i] = "v" + i
	}
	dir := t.TempDir()
	copyTree(t, filepath.Join("testdata", "upgrade", "61f5754"), dir)
	lns, _ := freeListeners(t, 1)
	cfg := testRaftConfig(t, 1, []string{"http://127.0.0.1:17379"}, dir) // the fixture's --cluster
	cfg.PeerListener = lns[0]
	c := &testCluster{t: t, dir: dir, peers: cfg.Peers, members: []*member{startMember(t, cfg)}}
	c.waitLeader()

	check := func(m *member) {
		t.Helper()
		for k, v := range want {
			if r := do(t, http.MethodGet, m.srv.URL+"/v1/kv/"+k, ""); r.code != http.StatusOK || r.body != v {
				t.Errorf("%s: %d %q, want %q", k, r.code, r.body, v)
			}
		}
		if r := do(t, http.MethodGet, m.srv.URL+"/k3", ""); r.code != http.StatusNotFound {
			t.Errorf("k3, deleted before the upgrade: %d", r.code)
		}
		if got := m.kvs.len(); got != len(want) {
			t.Errorf("%d keys, want %d", got, len(want))
		}
	}
	m := c.members[0]
	check(m)
	if m.rc.clusterID != legacyClusterID {
		t.Errorf("cluster ID %x, want the legacy %x that earlier versions used", m.rc.clusterID, legacyClusterID)
	}
	if r := do(t, http.MethodPut, m.srv.URL+"/after", "upgrade"); r.code != http.StatusNoContent {
		t.Fatalf("PUT after the upgrade: %d", r.code)
	}
	want["after"] = "upgrade"
	check(c.restart(0))
}

// copyTree copies the files below src into dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}
