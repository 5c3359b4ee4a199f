package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"raftexample/internal/wire"
)

// A crash can leave a snapshot that the WAL does not record yet, with a
// HardState whose commit index trails it (the commit is saved with the next
// append). The member starts from that snapshot, replays the WAL after it,
// and serves everything.
func TestRestartFromSnapshotTheWALDoesNotRecord(t *testing.T) {
	lns, peers := freeListeners(t, 1)
	dir := t.TempDir()
	lg := zap.NewNop()

	w, err := wal.Create(lg, filepath.Join(dir, "raftexample-1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var ents []*raftpb.Entry
	for i := uint64(1); i <= 6; i++ {
		ents = append(ents, &raftpb.Entry{Term: proto.Uint64(1), Index: proto.Uint64(i), Type: raftpb.EntryNormal.Enum(),
			Data: putEntry(fmt.Sprintf("k%d", i), []byte(fmt.Sprint(i)))})
	}
	hs := &raftpb.HardState{Term: proto.Uint64(1), Vote: proto.Uint64(1), Commit: proto.Uint64(3)}
	if err := w.Save(hs, ents); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	// The snapshot at index 5 holds k1..k5; the WAL has no record of it.
	snapdir := filepath.Join(dir, "raftexample-1-snap")
	if err := os.MkdirAll(snapdir, 0o700); err != nil {
		t.Fatal(err)
	}
	// A key no entry writes tells that the member started from the snapshot.
	st := kvState{Items: newKVTree()}
	st.Items.ReplaceOrInsert(kvItem{Key: "from-snapshot", Value: []byte("yes"), Rev: 5})
	for i := 1; i <= 5; i++ {
		st.Items.ReplaceOrInsert(kvItem{Key: fmt.Sprintf("k%d", i), Value: []byte(fmt.Sprint(i)), Rev: uint64(i)})
	}
	f, err := os.Create(filepath.Join(snapdir, fmt.Sprintf("%016x.snap.db", 5)))
	if err != nil {
		t.Fatal(err)
	}
	if err := writeKV(f, st); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	s := &raftpb.Snapshot{
		Data: wire.EncodeMembership(wire.Membership{Members: map[uint64]string{1: peers[0]}}),
		Metadata: &raftpb.SnapshotMetadata{Index: proto.Uint64(5), Term: proto.Uint64(1),
			ConfState: &raftpb.ConfState{Voters: []uint64{1}}},
	}
	if err := snap.New(lg, snapdir).SaveSnap(s); err != nil {
		t.Fatal(err)
	}

	cfg := testRaftConfig(t, 1, peers, dir)
	cfg.PeerListener = lns[0]
	m := startMember(t, cfg)
	want := map[string]string{"from-snapshot": "yes"}
	for i := 1; i <= 6; i++ { // 6 is committed once the member leads
		want[fmt.Sprintf("k%d", i)] = fmt.Sprint(i)
	}
	for key, v := range want {
		if r := do(t, http.MethodGet, m.srv.URL+"/"+key, ""); r.code != http.StatusOK || r.body != v {
			t.Errorf("GET %s = %d %q, want %q", key, r.code, r.body, v)
		}
	}
}
