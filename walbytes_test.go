package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// /v1/status reports the bytes the WAL holds, not the size of its
// preallocated segments: a fresh member reported 128000000 walBytes for a
// three-entry log (a 64 MB segment and the next one waiting as .tmp).
func TestStatusWALBytesAreBytesWritten(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	walBytesOf := func(m *member) int64 {
		t.Helper()
		r := do(t, http.MethodGet, m.srv.URL+"/v1/status", "")
		var st memberStatus
		if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &st) != nil {
			t.Fatalf("GET /v1/status: %d %s", r.code, r.body)
		}
		return st.WALBytes
	}
	before := walBytesOf(c.members[0])
	if before <= 0 || before > 64<<10 {
		t.Fatalf("a new member's walBytes is %d, want a few hundred bytes", before)
	}
	const value = 100 << 10
	if r := do(t, http.MethodPut, c.members[0].srv.URL+"/k", strings.Repeat("x", value)); r.code != http.StatusNoContent {
		t.Fatalf("PUT: %d %s", r.code, r.body)
	}
	after := walBytesOf(c.members[0])
	if grew := after - before; grew < value || grew > value+4<<10 {
		t.Fatalf("walBytes grew by %d for a %d-byte value (from %d to %d)", grew, value, before, after)
	}
	// A restarted member reads the WAL back and appends after its end.
	if again := walBytesOf(c.restart(0)); again < after || again > after+4<<10 {
		t.Fatalf("walBytes after a restart: %d, before it %d", again, after)
	}
}
