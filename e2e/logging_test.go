package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"raftexample/internal/proctest"
)

// At the default level a member logs what it does, not the libraries'
// chatter: a 3-member start and a hundred writes used to log about 170
// lines per cluster (every stream opened, every configuration switch, raft's
// "entry at index N missing from unstable log; ignoring" on writes). Now
// each member logs a handful, start-up ends with one "ready" line naming the
// member, the cluster size, the leader and the URLs, and the callers name
// this program's files as raftexample/<file>, whatever folder it was built in.
func TestProcessStartLogsAreQuiet(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three processes")
	}
	c := proctest.NewCluster(t, raftexample.Path(t), 3)
	c.Start()
	for i := range 100 {
		proctest.PutOK(t, c.URL(1+i%3), fmt.Sprintf("k%d", i), "v")
	}
	ready := regexp.MustCompile(`\tready\t\{"id": (\d), "members": 3, "leader": [123], "client-url": "http://127.0.0.1:\d+", "peer-url": "http://127.0.0.1:\d+"\}`)
	for id := 1; id <= 3; id++ {
		var lines []string
		proctest.Eventually(t, 5*time.Second, func() error {
			lines = logLines(c.Member(id).Output())
			for _, l := range lines {
				if m := ready.FindStringSubmatch(l); m != nil && m[1] == fmt.Sprint(id) {
					return nil
				}
			}
			return fmt.Errorf("member %d logged no ready line", id)
		})
		if len(lines) > 12 {
			t.Errorf("member %d logged %d lines at info for a start and 100 writes, want at most 12:\n%s", id, len(lines), strings.Join(lines, "\n"))
		}
		for _, l := range lines {
			if strings.Contains(l, "missing from unstable log") || strings.Contains(l, "\tmain/") {
				t.Errorf("member %d: %s", id, l)
			}
		}
	}
}

// logLines returns a member's log lines, without the test harness's own.
func logLines(out string) []string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" && !strings.HasPrefix(l, "===") {
			lines = append(lines, l)
		}
	}
	return lines
}
