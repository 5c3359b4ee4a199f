package proctest

import (
	"fmt"
	"strconv"
	"strings"

	"raftexample/internal/freeport"
)

// MemberArgs is a member's command line after the binary: its ID, the
// peer URLs of every member (--cluster, entry i is member i+1), its client
// port and its data directory, then extra flags in order (a later flag
// overrides an earlier one).
func MemberArgs(id int, cluster []string, port int, dataDir string, extra ...string) []string {
	args := []string{
		"--id", strconv.Itoa(id),
		"--cluster", strings.Join(cluster, ","),
		"--port", strconv.Itoa(port),
		"--data-dir", dataDir,
	}
	return append(args, extra...)
}

// FastRaft shortens raft's timing (election timeout 500ms instead of 1s),
// so that elections after each start and kill cost a test less.
func FastRaft() []string {
	return []string{"--tick", "50ms", "--election-ticks", "10", "--heartbeat-ticks", "1"}
}

// Layout is where the members of a cluster on loopback listen: free ports
// below the kernel's ephemeral range (see internal/freeport), so that a
// member restarts on its ports.
type Layout struct {
	Peers []string // peer URLs; entry i belongs to member i+1
	Ports []int    // client ports, likewise
}

// NewLayout picks the ports of n members.
func NewLayout(n int) (Layout, error) {
	ports, err := freeport.Ports(2 * n)
	if err != nil {
		return Layout{}, err
	}
	l := Layout{Ports: ports[n:]}
	for _, port := range ports[:n] {
		l.Peers = append(l.Peers, fmt.Sprintf("http://127.0.0.1:%d", port))
	}
	return l, nil
}

// URL is the base URL of member id's client API.
func (l Layout) URL(id int) string { return fmt.Sprintf("http://127.0.0.1:%d", l.Ports[id-1]) }

// Args is member id's command line after the binary (see MemberArgs).
func (l Layout) Args(id int, dataDir string, extra ...string) []string {
	return MemberArgs(id, l.Peers, l.Ports[id-1], dataDir, extra...)
}
