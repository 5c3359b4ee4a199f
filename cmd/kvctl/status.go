package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/jedib0t/go-pretty/v6/table"
	"github.com/jedib0t/go-pretty/v6/text"
	"github.com/spf13/cobra"
)

// memberStatus is the part of GET /v1/status that kvctl shows.
type memberStatus struct {
	ID           uint64   `json:"id"`
	Leader       uint64   `json:"leader"`
	Term         uint64   `json:"term"`
	RaftState    string   `json:"raftState"`
	CommitIndex  uint64   `json:"commitIndex"`
	AppliedIndex uint64   `json:"appliedIndex"`
	Members      []member `json:"members"`
	Keys         int64    `json:"keys"`
	StateBytes   int64    `json:"stateBytes"`
	Version      string   `json:"version"`
}

// peerURL is the member's own peer URL, from the membership it reports.
func (s memberStatus) peerURL() string {
	for _, m := range s.Members {
		if m.ID == s.ID {
			return m.PeerURL
		}
	}
	return ""
}

// endpointStatus is one endpoint's answer to GET /v1/status, or why there
// is none.
type endpointStatus struct {
	Endpoint string          `json:"endpoint"`
	Status   json.RawMessage `json:"status,omitempty"` // as the member sent it
	Error    string          `json:"error,omitempty"`
	parsed   memberStatus
}

func newStatusCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show every endpoint's raft and storage status in one table",
		Long: `Ask every endpoint of --endpoints for GET /v1/status, at once, and show one
row per endpoint: member ID, endpoint and peer URL, a * on the leader's row,
term, raft state, commit and applied index, how far its applied index lags
the leader's commit index, keys, state size and version. An endpoint that
does not answer is a row that says why; kvctl then exits 1 after the table.

-o table (the default); -o plain: the same columns, space-separated, without a
header; -o json: a list of {"endpoint","status"} (the member's answer as sent)
or {"endpoint","error"}.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error { return a.status(cmd.Context()) },
	}
}

func (a *app) status(ctx context.Context) error {
	statuses := a.fetchStatuses(ctx)
	var err error
	switch a.format(formatTable) {
	case formatJSON:
		err = writeJSONLine(a.out, statuses)
	case formatPlain:
		err = writeStatusLines(a, statuses)
	default:
		writeStatusTable(a, statuses)
	}
	if err != nil {
		return err
	}
	failed := 0
	for _, s := range statuses {
		if s.Error != "" {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d endpoints did not answer", failed, len(statuses))
	}
	return nil
}

// fetchStatuses asks every endpoint at once, each without failover: the
// point is to hear from each one.
func (a *app) fetchStatuses(ctx context.Context) []endpointStatus {
	out := make([]endpointStatus, len(a.client.endpoints))
	var wg sync.WaitGroup
	for i, ep := range a.client.endpoints {
		wg.Go(func() {
			out[i] = a.fetchStatus(ctx, ep)
		})
	}
	wg.Wait()
	return out
}

func (a *app) fetchStatus(ctx context.Context, ep string) endpointStatus {
	s := endpointStatus{Endpoint: ep}
	one := &client{endpoints: []string{ep}, hc: a.client.hc, timeout: a.client.timeout}
	resp, err := one.do(ctx, request{method: http.MethodGet, path: "/v1/status"})
	if err == nil {
		err = json.Unmarshal(resp.body, &s.parsed)
	}
	if err != nil {
		s.Error = strings.TrimPrefix(err.Error(), ep+": ")
		return s
	}
	s.Status = resp.body
	return s
}

// leaderCommit is the leader's commit index, from the leader's own row;
// without that row, the highest commit index any member reported.
func leaderCommit(statuses []endpointStatus) uint64 {
	var highest uint64
	for _, s := range statuses {
		if s.Error != "" {
			continue
		}
		if s.parsed.ID == s.parsed.Leader {
			return s.parsed.CommitIndex
		}
		highest = max(highest, s.parsed.CommitIndex)
	}
	return highest
}

// statusRow is one row's cells, for both the table and plain lines (which
// give the state size in bytes and "-" for an empty cell, so that every
// line has the same fields).
func statusRow(s endpointStatus, commit uint64, plain bool) []any {
	p := s.parsed
	lag := uint64(0)
	if commit > p.AppliedIndex {
		lag = commit - p.AppliedIndex
	}
	row := []any{p.ID, s.Endpoint, p.peerURL(), mark(p.ID != 0 && p.ID == p.Leader), p.Term, p.RaftState,
		p.CommitIndex, p.AppliedIndex, lag, p.Keys, humanBytes(p.StateBytes), p.Version}
	if plain {
		row[10] = p.StateBytes
		for i, c := range row {
			if c == "" {
				row[i] = "-"
			}
		}
	}
	return row
}

func writeStatusTable(a *app, statuses []endpointStatus) {
	t := newTable(a.out, "ID", "ENDPOINT", "PEER URL", "LEADER", "TERM", "RAFT STATE",
		"COMMIT", "APPLIED", "LAG", "KEYS", "STATE SIZE", "VERSION")
	commit := leaderCommit(statuses)
	for _, s := range statuses {
		if s.Error != "" {
			// One cell spanning the columns from PEER URL on.
			row := []any{"-", s.Endpoint}
			for len(row) < 12 {
				row = append(row, "unreachable: "+s.Error)
			}
			t.AppendRow(row, table.RowConfig{AutoMerge: true, AutoMergeAlign: text.AlignLeft})
			continue
		}
		t.AppendRow(statusRow(s, commit, false))
	}
	t.Render()
}

func writeStatusLines(a *app, statuses []endpointStatus) error {
	commit := leaderCommit(statuses)
	for _, s := range statuses {
		var err error
		if s.Error != "" {
			_, err = fmt.Fprintf(a.out, "- %s unreachable: %s\n", s.Endpoint, s.Error)
		} else {
			_, err = fmt.Fprintln(a.out, statusRow(s, commit, true)...)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// humanBytes writes a byte count in IEC units, as ls -h does.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
