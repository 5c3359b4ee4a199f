package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

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
	WALBytes      int64        `json:"walBytes"`
	SnapshotBytes int64        `json:"snapshotBytes"`
	Version       string       `json:"version"`
	UptimeSeconds float64      `json:"uptimeSeconds"`
}

// statusReporter answers GET /v1/status and /health for one member.
type statusReporter struct {
	rc      *raftNode
	kvs     *kvstore
	members *memberAPI
	started time.Time
}

func newStatusReporter(rc *raftNode, kvs *kvstore, members *memberAPI) *statusReporter {
	return &statusReporter{rc: rc, kvs: kvs, members: members, started: time.Now()}
}

func (s *statusReporter) Status() memberStatus {
	st := s.rc.node.Status()
	snap, _ := s.rc.raftStorage.Snapshot()
	return memberStatus{
		ID:            s.rc.cfg.ID,
		ClusterID:     types.ID(s.rc.clusterID).String(),
		Leader:        st.Lead,
		Term:          st.GetTerm(),
		RaftState:     st.RaftState.String(),
		CommitIndex:   st.GetCommit(),
		AppliedIndex:  s.rc.applied.Load(),
		SnapshotIndex: snap.GetMetadata().GetIndex(),
		Members:       s.members.Members(),
		Keys:          s.kvs.len(),
		WALBytes:      dirSize(s.rc.waldir),
		SnapshotBytes: dirSize(s.rc.snapdir),
		Version:       version,
		UptimeSeconds: time.Since(s.started).Seconds(),
	}
}

// Health reports why this member cannot serve, or nil. Unless serializable,
// it also proves a quorum answers with a ReadIndex round within a second.
func (s *statusReporter) Health(ctx context.Context, serializable bool) error {
	if s.rc.leader.current() == raft.None {
		return errNoLeader
	}
	if serializable {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := s.rc.readIndex(ctx); err != nil {
		return fmt.Errorf("read index: %w", err)
	}
	return nil
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
