package main

// Every situation of the error table in docs/API.md against live in-process members: the status,
// the headers that go with it, and a message that says what went wrong.

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

type errorCase struct {
	name, method, path, body string
	want                     int
	wantText                 string // the answer mentions this (case-insensitive)
}

// checkErrorCase sends tc to base and checks the answer.
func checkErrorCase(t *testing.T, base string, tc errorCase) {
	t.Helper()
	r := do(t, tc.method, base+tc.path, tc.body)
	if r.code != tc.want || !strings.Contains(strings.ToLower(r.body), strings.ToLower(tc.wantText)) {
		t.Errorf("%s: %s %s = %d %q, want %d mentioning %q", tc.name, tc.method, tc.path, r.code, strings.TrimSpace(r.body), tc.want, tc.wantText)
	}
	if r.code == http.StatusServiceUnavailable && r.header.Get("Retry-After") == "" {
		t.Errorf("%s: 503 without Retry-After", tc.name)
	}
}

func TestSpecErrors(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	base := c.members[0].srv.URL
	_, free := freeListeners(t, 1)
	tooBig := strings.Repeat("x", 1<<20+1) // startMember sets --max-request-bytes to 1 MiB
	for _, tc := range []errorCase{
		{"empty key (root)", http.MethodPut, "/", "v", 400, "empty key"},
		{"empty key (v1)", http.MethodPut, "/v1/kv/", "v", 400, "empty key"},
		{"empty key (txn)", http.MethodPost, "/v1/txn", `[{"op":"put","key":"","value":"v"}]`, 400, "empty key"},
		{"member ID 0", http.MethodPost, "/0", free[0], 400, "member ID"},
		{"member ID not a number", http.MethodDelete, "/v1/members/abc", "", 400, "member ID"},
		{"member ID 0 (v1)", http.MethodPost, "/v1/members/0/promote", "", 400, "member ID"},
		{"malformed peer URL", http.MethodPost, "/4", "not a url", 400, "peer URL"},
		{"peer URL without a port", http.MethodPost, "/v1/members", `{"peerURL":"http://127.0.0.1"}`, 400, "peer URL"},
		{"bad JSON (txn)", http.MethodPost, "/v1/txn", `[{"op":"put"`, 400, "txn body"},
		{"bad JSON (members)", http.MethodPost, "/v1/members", `{"peerURL":`, 400, "JSON"},
		{"unknown JSON field", http.MethodPost, "/v1/leader", `{"ID":1,"x":2}`, 400, "unknown field"},
		{"body too large (root)", http.MethodPut, "/k", tooBig, 413, "too large"},
		{"body too large (txn)", http.MethodPost, "/v1/txn", tooBig, 413, "too large"},
		{"member ID in use", http.MethodPost, "/1", free[0], 409, "already exists"},
		{"peer URL in use", http.MethodPost, "/4", c.peers[1], 409, "already used"},
		{"peer URL in use (v1)", http.MethodPost, "/v1/members", fmt.Sprintf(`{"peerURL":%q}`, c.peers[2]), 409, "already used"},
		{"remove a member that does not exist", http.MethodDelete, "/9", "", 404, "not in the cluster"},
		{"remove a member that does not exist (v1)", http.MethodDelete, "/v1/members/9", "", 404, "not in the cluster"},
	} {
		checkErrorCase(t, base, tc)
	}

	t.Run("last voter", func(t *testing.T) {
		one := newTestCluster(t, 1, nil)
		checkErrorCase(t, one.members[0].srv.URL, errorCase{"remove the last voter", http.MethodDelete, "/1", "", 409, "last voter"})
	})

	t.Run("stopping", func(t *testing.T) {
		one := newTestCluster(t, 1, nil)
		one.members[0].rc.Stop() // raft stops; the HTTP server still answers
		checkErrorCase(t, one.members[0].srv.URL, errorCase{"write while stopping", http.MethodPut, "/k", "v", 503, "stopping"})
	})

	t.Run("no leader", func(t *testing.T) {
		three := newTestCluster(t, 3, nil)
		three.members[1].stop()
		three.members[2].stop()
		m := three.members[0]
		eventually(t, 20*m.cfg.electionTimeout(), func() error {
			if m.rc.leader.current() != 0 {
				return fmt.Errorf("member 1 still sees leader %d", m.rc.leader.current())
			}
			return nil
		})
		checkErrorCase(t, m.srv.URL, errorCase{"write without a leader", http.MethodPut, "/k", "v", 503, "no leader"})
		checkErrorCase(t, m.srv.URL, errorCase{"read without a leader", http.MethodGet, "/k", "", 503, "no leader"})
		checkErrorCase(t, m.srv.URL, errorCase{"member change without a leader", http.MethodPost, "/v1/members", fmt.Sprintf(`{"peerURL":%q}`, free[0]), 503, "no leader"})
	})

	// A leader that has not yet noticed it lost its followers accepts
	// proposals that cannot commit: the write times out (504, and may still
	// apply), and a membership change meanwhile is refused (409, retry).
	t.Run("timeout and change in progress", func(t *testing.T) {
		opts := defaultMemberOptions()
		opts.http.RequestTimeout = 400 * time.Millisecond
		slow := newTestClusterWith(t, 3, opts, func(cfg *raftConfig) { cfg.ElectionTicks = 100 }) // 1s election timeout
		lead := int(slow.waitLeader()) - 1
		for i, m := range slow.members {
			if i != lead {
				m.stop()
			}
		}
		m := slow.members[lead]
		srv := m.srv
		first := make(chan int, 1)
		go func() {
			// A learner: adding a voter is refused outright while the
			// followers are down (strict reconfiguration).
			code := do(t, http.MethodPost, srv.URL+"/v1/members", fmt.Sprintf(`{"peerURL":%q,"learner":true}`, free[0])).code
			first <- code
		}()
		eventually(t, 5*time.Second, func() error {
			if m.rc.shared.lastConfIndex.Load() <= m.rc.shared.published.Load() {
				return fmt.Errorf("the first change is not in the log yet")
			}
			return nil
		})
		checkErrorCase(t, srv.URL, errorCase{"second membership change", http.MethodDelete, "/v1/members/2", "", 409, "in progress"})
		checkErrorCase(t, srv.URL, errorCase{"write that cannot commit", http.MethodPut, "/k", "v", 504, "may still apply"})
		if code := <-first; code != http.StatusGatewayTimeout {
			t.Errorf("the membership change that cannot commit answered %d, want 504", code)
		}
	})
}

// A member that stops while a write it proposed is in the log but not yet
// committed must not answer as if the write were refused: the rest of the
// cluster may still commit it, and here it does.
func TestStoppingWithWriteInFlight(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *raftConfig) { cfg.ElectionTicks = 100 }) // 1s election timeout
	lead := int(c.waitLeader()) - 1
	for i, m := range c.members {
		if i != lead {
			m.stop()
		}
	}
	m := c.members[lead]
	last, _ := m.rc.raftStorage.LastIndex()
	answer := make(chan reply, 1)
	go func() {
		r, err := send(t.Context(), &http.Client{Timeout: 10 * time.Second}, http.MethodPut, m.srv.URL+"/in-flight", "v")
		if err != nil {
			r = reply{body: err.Error()}
		}
		answer <- r
	}()
	eventually(t, 5*time.Second, func() error {
		if now, _ := m.rc.raftStorage.LastIndex(); now == last {
			return errors.New("the write is not in the leader's log yet")
		}
		return nil
	})
	m.rc.Stop()
	r := <-answer
	t.Logf("the stopping leader answered %d %q", r.code, strings.TrimSpace(r.body))
	if r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "may still apply") {
		t.Errorf("PUT in flight while its member stops = %d %q, want 503 saying the write may still apply", r.code, r.body)
	}

	// Bring back the old leader and one follower: the follower's log is
	// behind, so only the old leader can win an election, and its first
	// commit commits the write.
	m.srv.Close()
	follower := (lead + 1) % 3
	for _, i := range []int{lead, follower} {
		cfg := c.members[i].cfg
		cfg.PeerListener = relisten(t, c.peers[i])
		cfg.Metrics = newMetrics()
		c.members[i] = startMember(t, cfg)
	}
	eventually(t, 10*time.Second, func() error {
		it, ok, err := c.members[follower].kvs.Get(t.Context(), "in-flight", false)
		if err != nil || !ok || string(it.Value) != "v" {
			return fmt.Errorf("in-flight = %q %v %v", it.Value, ok, err)
		}
		return nil
	})
}
