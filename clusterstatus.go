package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The cluster's status in one answer, for the dashboard (/ui) and for
// operators: GET /v1/cluster/status on any member asks every other member
// for its GET /v1/status over the peer port (GET /raftexample/status), with
// peer TLS where the peers use it, and reports the ones that do not answer
// in time as unreachable. A page served by one member thus sees the whole
// cluster without talking to any other member itself.

// peerStatusPath is served on the peer port next to clusterIDPath: this
// member's status, as GET /v1/status answers it.
const peerStatusPath = "/raftexample/status"

// peerStatusTimeout bounds the wait for one member's status: the dashboard
// polls every second, and a paused member must not hold up the answer.
const peerStatusTimeout = 800 * time.Millisecond

// maxStatusBytes bounds a peer's status answer.
const maxStatusBytes = 1 << 20

// clusterStatus is what GET /v1/cluster/status answers.
type clusterStatus struct {
	ID      uint64          `json:"id"`     // the member that answered
	Leader  uint64          `json:"leader"` // the leader that member knows
	Members []clusterMember `json:"members"`
}

// clusterMember is one member in clusterStatus: the membership's entry,
// whether it answered, and its status if it did.
type clusterMember struct {
	memberInfo
	Reachable bool          `json:"reachable"`
	Error     string        `json:"error,omitempty"` // why it is unreachable
	Lag       *uint64       `json:"lag,omitempty"`   // the leader's commit index less this member's applied index
	Status    *memberStatus `json:"status,omitempty"`
}

// ClusterStatus gathers every member's status: its own directly, the
// others' over the peer port, all at once, each within peerStatusTimeout.
func (s *statusReporter) ClusterStatus(ctx context.Context) clusterStatus {
	own := s.Status()
	out := clusterStatus{ID: own.ID, Leader: own.Leader, Members: make([]clusterMember, len(own.Members))}
	var asking sync.WaitGroup
	for i, m := range own.Members {
		out.Members[i].memberInfo = m
		if m.ID == own.ID {
			out.Members[i].Reachable, out.Members[i].Status = true, &own
			continue
		}
		asking.Go(func() { out.Members[i].ask(ctx, s.fetchPeer) })
	}
	asking.Wait()
	out.setLag()
	return out
}

// ask fills in the member's status from fetch, or why it has none.
func (c *clusterMember) ask(ctx context.Context, fetch func(context.Context, string) (memberStatus, error)) {
	if fetch == nil {
		c.Error = "no peer client"
		return
	}
	ctx, cancel := context.WithTimeout(ctx, peerStatusTimeout)
	defer cancel()
	st, err := fetch(ctx, c.PeerURL)
	if err != nil {
		c.Error = err.Error()
		return
	}
	c.Reachable, c.Status = true, &st
}

// setLag sets each reachable member's lag behind the leader's commit index,
// when the leader answered.
func (c *clusterStatus) setLag() {
	var commit uint64
	found := false
	for _, m := range c.Members {
		if m.ID == c.Leader && m.Status != nil {
			commit, found = m.Status.CommitIndex, true
		}
	}
	if !found {
		return
	}
	for i, m := range c.Members {
		if m.Status != nil {
			lag := commit - min(commit, m.Status.AppliedIndex)
			c.Members[i].Lag = &lag
		}
	}
}

// peerStatusFetcher asks a member for its status at its peer URL with the
// peer client (which carries the peer TLS settings).
func peerStatusFetcher(client *http.Client) func(context.Context, string) (memberStatus, error) {
	return func(ctx context.Context, peerURL string) (memberStatus, error) {
		var st memberStatus
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(peerURL, "/")+peerStatusPath, nil)
		if err != nil {
			return st, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return st, fmt.Errorf("unreachable: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return st, fmt.Errorf("answered %s", resp.Status)
		}
		if err := json.NewDecoder(io.LimitReader(resp.Body, maxStatusBytes)).Decode(&st); err != nil {
			return st, fmt.Errorf("bad status answer: %w", err)
		}
		return st, nil
	}
}

// servePeerStatus answers peerStatusPath with this member's status once
// reporter is set (503 before: the member is still replaying its log).
func servePeerStatus(reporter *atomic.Pointer[statusReporter]) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeJSON(w, http.StatusMethodNotAllowed, jsonError{Error: "GET only", Code: http.StatusMethodNotAllowed})
			return
		}
		s := reporter.Load()
		if s == nil {
			writeJSON(w, http.StatusServiceUnavailable, jsonError{Error: errCatchingUp.Error(), Code: http.StatusServiceUnavailable})
			return
		}
		writeJSON(w, http.StatusOK, s.Status())
	}
}

func (h *clientAPI) clusterStatusReport(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, h.status.ClusterStatus(r.Context()))
}
