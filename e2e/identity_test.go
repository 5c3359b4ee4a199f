package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"raftexample/internal/proctest"
)

// status is what these tests read of GET /v1/status (docs/API.md).
type status struct {
	ClusterID string `json:"clusterID"`
	Leader    uint64 `json:"leader"`
	Members   []struct {
		ID      uint64 `json:"id"`
		PeerURL string `json:"peerURL"`
	} `json:"members"`
}

// memberStatus reads GET /v1/status of the member at base.
func memberStatus(t *testing.T, base string) status {
	t.Helper()
	r := proctest.Call(t, http.MethodGet, base+"/v1/status", "")
	if r.Code != http.StatusOK {
		t.Fatalf("GET %s/v1/status = %d %q", base, r.Code, r.Body)
	}
	var st status
	if err := json.Unmarshal([]byte(r.Body), &st); err != nil {
		t.Fatalf("GET /v1/status: %v in %q", err, r.Body)
	}
	return st
}

// Stale data from another cluster: member 1 ran alone and wrote a key; then
// three members are started with a three-URL --cluster in the same data
// dir. Member 2 used to panic ("need non-empty snapshot") and member 1 led a
// cluster of its own beside theirs. Now nobody crashes, members 2 and 3
// elect a leader and serve, member 1 warns that --cluster disagrees with
// its data and runs alone in its own cluster, and the cluster ID mismatch
// is logged where the foreign messages arrive.
func TestProcessStaleDataOtherCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four processes")
	}
	c := proctest.NewCluster(t, raftexample.Path(t), 3)
	solo := proctest.NewProc(t, "member 1 alone", c.DataDir, filepath.Join(c.DataDir, "solo.Log"),
		append([]string{raftexample.Path(t), "--id", "1", "--cluster", c.Peers[0],
			"--port", fmt.Sprint(c.Ports[0]), "--data-dir", c.DataDir}, proctest.FastRaft()...)...)
	solo.Start()
	proctest.WaitWritable(t, c.URL(1))
	proctest.PutOK(t, c.URL(1), "solo", "1")
	solo.Terminate(0)

	for _, m := range c.Members {
		m.Start()
	}
	proctest.WaitWritable(t, c.URL(2))
	proctest.PutOK(t, c.URL(3), "three", "3")
	proctest.WaitKeys(t, c.URL(2), proctest.Present(map[string]string{"three": "3"}))
	proctest.WaitKeys(t, c.URL(2), map[string]*string{"solo": nil})

	proctest.Eventually(t, proctest.StartTimeout, func() error {
		out := c.Member(1).Output()
		for _, want := range []string{"--cluster disagrees with the membership stored", "refusing messages from a member of another cluster"} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("member 1 has not logged %q yet", want)
			}
		}
		return nil
	})
	// The mismatch is plain, not a flood: rafthttp's own line for each
	// refused message goes to debug after the first each minute.
	for id := 1; id <= 3; id++ {
		lines := 0
		for _, l := range strings.Split(c.Member(id).Output(), "\n") {
			if strings.Contains(l, "cluster ID mismatch") && !strings.Contains(l, "\tdebug\t") {
				lines++
			}
		}
		if lines > 6 {
			t.Errorf("member %d logged %d lines about the cluster ID mismatch, want a few", id, lines)
		}
	}
	// Member 1 dials only the membership stored in its data (itself), not
	// the --cluster members: 2 and 3 never hear from it.
	for id := 2; id <= 3; id++ {
		if out := c.Member(id).Output(); strings.Contains(out, `"remote-member": "1"`) {
			t.Errorf("member %d was dialled by member 1, which should dial only its stored membership", id)
		}
	}
	st1, st2 := memberStatus(t, c.URL(1)), memberStatus(t, c.URL(2))
	if st1.ClusterID == st2.ClusterID {
		t.Errorf("member 1 (stale data) and member 2 report the same cluster ID %s", st1.ClusterID)
	}
	if len(st1.Members) != 1 {
		t.Errorf("member 1 runs with members %+v, want its stored one-member cluster", st1.Members)
	}
	if st2.Leader == 1 || st2.Leader == 0 {
		t.Errorf("members 2 and 3 see leader %d, want 2 or 3", st2.Leader)
	}
	// Member 1 never hears of the three-member cluster's writes.
	proctest.WaitKeys(t, c.URL(1), map[string]*string{"three": nil})
	for id := 1; id <= 3; id++ {
		if !c.Member(id).Running() {
			t.Errorf("member %d exited: %v", id, c.Member(id).Err())
		}
		if out := c.Member(id).Output(); strings.Contains(out, "panic") {
			t.Errorf("member %d panicked:\n%s", id, proctest.TailFile(c.Member(id).Log, 20))
		}
	}
}
