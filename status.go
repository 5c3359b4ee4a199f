package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/raft/v3"
)

// memberStatus is what GET /v1/status reports.
type memberStatus struct {
	ID            uint64       `json:"id"`
	ClusterID     string       `json:"clusterID"` // hex, as peers see it
	Leader        uint64       `json:"leader"`
	Term          uint64       `json:"term"`
	RaftState     string       `json:"raftState"`
	CommitIndex   uint64       `json:"commitIndex"`
	AppliedIndex  uint64       `json:"appliedIndex"`
	SnapshotIndex uint64       `json:"snapshotIndex"`
	Members       []memberInfo `json:"members"`
	Keys          int          `json:"keys"`
	StateBytes    int64        `json:"stateBytes"` // keys plus values, as --quota-bytes counts them
	WALBytes      int64        `json:"walBytes"`
	SnapshotBytes int64        `json:"snapshotBytes"`
	Version       string       `json:"version"`
	UptimeSeconds float64      `json:"uptimeSeconds"`

	// For the dashboard (GET /v1/cluster/status): where this member serves
	// clients, and cumulative counts from which a client computes rates
	// between two polls.
	ClientURL     string     `json:"clientURL,omitempty"`
	WritesApplied uint64     `json:"writesApplied"` // write operations applied here, from any member
	ReadsServed   uint64     `json:"readsServed"`   // key reads and listings this member answered
	WALFsync      *histogram `json:"walFsync,omitempty"`
}

// statusReporter answers GET /v1/status and /health for one member, from
// narrow views of its parts.
type statusReporter struct {
	raft       raftReporter
	state      stateReporter
	memberList memberLister
	started    time.Time

	metrics   *metrics // the member's counters (nil: reported as 0)
	clientURL string   // httpConfig.ClientURL
	// fetchPeer asks another member for its status, over the peer port
	// (GET /v1/cluster/status); nil: every other member is unreachable.
	fetchPeer func(ctx context.Context, peerURL string) (memberStatus, error)
}

// memberLister is what the status needs from the membership API.
type memberLister interface{ ListMembers() []memberInfo }

// raftReporter is what the status needs from raftNode.
type raftReporter interface {
	report() raftReport
	leaderID() uint64
	readIndex(ctx context.Context) (uint64, error)
}

// raftReport is raftNode's part of a member's status.
type raftReport struct {
	id, clusterID   uint64
	status          raft.Status
	snapshotIndex   uint64
	walDir, snapDir string
}

// stateReporter is what the status needs from the kvstore.
type stateReporter interface {
	len() int
	appliedIndex() uint64
	stateSize() int64
}

func newStatusReporter(rc raftReporter, kvs stateReporter, members memberLister) *statusReporter {
	return &statusReporter{raft: rc, state: kvs, memberList: members, started: time.Now()}
}

func (s *statusReporter) Status() memberStatus {
	r := s.raft.report()
	return memberStatus{
		ID:            r.id,
		ClusterID:     types.ID(r.clusterID).String(),
		Leader:        r.status.Lead,
		Term:          r.status.GetTerm(),
		RaftState:     r.status.RaftState.String(),
		CommitIndex:   r.status.GetCommit(),
		AppliedIndex:  s.state.appliedIndex(), // what reads see, not what raftNode has handed out
		SnapshotIndex: r.snapshotIndex,
		Members:       s.memberList.ListMembers(),
		Keys:          s.state.len(),
		StateBytes:    s.state.stateSize(),
		WALBytes:      walBytes(r.walDir),
		SnapshotBytes: dirSize(r.snapDir),
		Version:       memberVersion(),
		UptimeSeconds: time.Since(s.started).Seconds(),
		ClientURL:     s.clientURL,
		WritesApplied: s.counter(func(m *metrics) prometheus.Counter { return m.proposalsCommitted }),
		ReadsServed:   s.counter(func(m *metrics) prometheus.Counter { return m.readsServed }),
		WALFsync:      walFsyncHistogram(),
	}
}

// counter reads one of the member's counters, or 0 without metrics.
func (s *statusReporter) counter(which func(*metrics) prometheus.Counter) uint64 {
	if s.metrics == nil {
		return 0
	}
	return counterNow(which(s.metrics))
}

// Health reports why this member cannot serve, or nil. Unless serializable,
// it also proves a quorum answers with a ReadIndex round within a second.
func (s *statusReporter) Health(ctx context.Context, serializable bool) error {
	if s.raft.leaderID() == raft.None {
		return errNoLeader
	}
	if serializable {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := s.raft.readIndex(ctx); err != nil {
		return fmt.Errorf("read index: %w", err)
	}
	return nil
}

// walBytes is how much the WAL in dir holds: the size of every segment
// but the newest, plus the written part of the newest. (Segments are
// preallocated, so a new one is 64 MB of zeros from the start, and the next
// one waits as a .tmp file: their sizes say nothing of what was written.)
func walBytes(dir string) int64 {
	segs, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	if err != nil || len(segs) == 0 {
		return 0
	}
	slices.Sort(segs) // names begin with the sequence number in hex
	var total int64
	for i, seg := range segs {
		fi, err := os.Stat(seg)
		if err != nil {
			continue
		}
		size := fi.Size()
		if i == len(segs)-1 {
			if off, ok := writeOffset(seg); ok {
				size = off
			}
		}
		total += size
	}
	return total
}

// writeOffset returns the file offset at which this process writes path,
// read from Linux's /proc/self/fdinfo: the WAL writes its newest segment
// sequentially through one descriptor. It reports false where /proc is
// unavailable or nothing here has path open.
func writeOffset(path string) (int64, bool) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return 0, false
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, false
	}
	var off int64
	found := false
	for _, fd := range fds {
		if link, err := os.Readlink("/proc/self/fd/" + fd.Name()); err != nil || link != abs {
			continue
		}
		if pos, ok := fdPosition(fd.Name()); ok {
			off, found = max(off, pos), true
		}
	}
	return off, found
}

// fdPosition reads the "pos:" line of /proc/self/fdinfo/<fd>.
func fdPosition(fd string) (int64, bool) {
	b, err := os.ReadFile("/proc/self/fdinfo/" + fd)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "pos:"); ok {
			pos, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return pos, err == nil
		}
	}
	return 0, false
}

// dirSize adds up the sizes of the files in dir (0 if unreadable).
func dirSize(dir string) int64 {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var total int64
	for _, e := range entries {
		if info, err := os.Stat(filepath.Join(dir, e.Name())); err == nil && info.Mode().IsRegular() {
			total += info.Size()
		}
	}
	return total
}
