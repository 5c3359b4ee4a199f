package main

import (
	"path/filepath"
	"testing"

	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// The WAL writer alone: a batch of appends is in the WAL and in raft's
// log before any of its acknowledgements leaves, and only the newest
// acknowledgement to the leader leaves.
func TestWALWriterPersistsBeforeAcknowledging(t *testing.T) {
	dir := t.TempDir()
	d := &diskStore{waldir: filepath.Join(dir, "wal"), snapdir: dir, logger: testLogger(t)}
	w, err := wal.Create(libLogger(d.logger), d.waldir, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.wal = w
	log := raft.NewMemoryStorage()
	var acked []*raftpb.Message
	ww := &walWriter{disk: d, log: log, deliver: func(ms []*raftpb.Message) error {
		// What an acknowledgement promises must be in raft's log already.
		if last, _ := log.LastIndex(); last != 2 {
			t.Errorf("acknowledged with raft's log at %d, want 2", last)
		}
		acked = append(acked, ms...)
		return nil
	}}
	appendMsg := func(index uint64) *raftpb.Message {
		return &raftpb.Message{
			Type: raftpb.MsgStorageAppend.Enum(), Term: new(uint64(1)), Vote: new(uint64(2)), Commit: new(index - 1),
			Entries:   []*raftpb.Entry{{Index: new(index), Term: new(uint64(1)), Data: []byte("x")}},
			Responses: []*raftpb.Message{{Type: raftpb.MsgAppResp.Enum(), To: new(uint64(2)), Term: new(uint64(1)), Index: new(index)}},
		}
	}
	if err := ww.persist([]*raftpb.Message{appendMsg(1), appendMsg(2)}); err != nil {
		t.Fatal(err)
	}
	if len(acked) != 1 || acked[0].GetIndex() != 2 {
		t.Fatalf("acknowledgements %v, want one for index 2", acked)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w, err = wal.Open(libLogger(d.logger), d.waldir, &walpb.Snapshot{Index: proto.Uint64(0), Term: proto.Uint64(0)})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	_, st, ents, err := w.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 2 || st.GetCommit() != 1 || st.GetVote() != 2 {
		t.Fatalf("WAL holds %d entries and %v, want 2 entries, commit 1, vote 2", len(ents), st)
	}
}

// A batch saved with one fsync carries an acknowledgement per MsgApp; only
// the newest per member and term leaves, and everything else keeps its order.
func TestCoalesceAcks(t *testing.T) {
	ack := func(to, term, index uint64) *raftpb.Message {
		return &raftpb.Message{Type: raftpb.MsgAppResp.Enum(), To: new(to), Term: new(term), Index: new(index)}
	}
	reject := &raftpb.Message{Type: raftpb.MsgAppResp.Enum(), To: new(uint64(1)), Term: new(uint64(3)), Index: new(uint64(9)), Reject: new(true)}
	vote := &raftpb.Message{Type: raftpb.MsgVoteResp.Enum(), To: new(uint64(2)), Term: new(uint64(3))}
	stable := &raftpb.Message{Type: raftpb.MsgStorageAppendResp.Enum(), To: new(uint64(3)), Term: new(uint64(3)), Index: new(uint64(7))}
	oldTerm := ack(1, 2, 8)
	stale := ack(2, 3, 4) // a later acknowledgement for a lower index
	msgs := []*raftpb.Message{
		ack(1, 3, 5), oldTerm, vote, ack(2, 3, 6), reject, ack(1, 3, 7), stable, stale, ack(3, 3, 7), ack(1, 3, 7),
	}
	got := coalesceAcks(msgs)
	want := []*raftpb.Message{oldTerm, vote, msgs[3], reject, stable, stale, msgs[8], msgs[9]}
	if len(got) != len(want) {
		t.Fatalf("kept %d messages, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("message %d: got %v, want %v", i, got[i], want[i])
		}
	}
	if single := []*raftpb.Message{ack(1, 3, 5)}; len(coalesceAcks(single)) != 1 {
		t.Fatalf("a lone acknowledgement was dropped")
	}
}
