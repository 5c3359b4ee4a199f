package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/spf13/cobra"
)

// member is one entry of GET /v1/members.
type member struct {
	ID      uint64 `json:"id"`
	PeerURL string `json:"peerURL"`
	Learner bool   `json:"learner"`
	Leader  bool   `json:"leader"`
}

func (m member) role() string {
	if m.Learner {
		return "learner"
	}
	return "voter"
}

func newMemberCmd(a *app) *cobra.Command {
	return group("member", "List and change the cluster's members",
		newMemberLsCmd(a), newMemberAddCmd(a), newMemberRmCmd(a), newMemberPromoteCmd(a))
}

func newMemberLsCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List the members",
		Long: `List the members (GET /v1/members). -o table (the default): ID, peer URL,
role and a * on the leader's row. -o plain: "ID PEERURL ROLE [leader]" lines.
-o json: the server's answer.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error { return a.memberLs(cmd.Context()) },
	}
}

func (a *app) memberLs(ctx context.Context) error {
	var body struct {
		Members []member `json:"members"`
	}
	resp, err := a.client.getJSON(ctx, "/v1/members", &body)
	if err != nil {
		return err
	}
	switch a.format(formatTable) {
	case formatJSON:
		return writeRaw(a.out, resp.body)
	case formatPlain:
		for _, m := range body.Members {
			line := fmt.Sprintf("%d %s %s", m.ID, m.PeerURL, m.role())
			if m.Leader {
				line += " leader"
			}
			if _, err := fmt.Fprintln(a.out, line); err != nil {
				return err
			}
		}
		return nil
	}
	t := newTable(a.out, "ID", "PEER URL", "ROLE", "LEADER")
	for _, m := range body.Members {
		t.AppendRow([]any{m.ID, m.PeerURL, m.role(), mark(m.Leader)})
	}
	t.Render()
	return nil
}

// mark is the leader column: a star on the leader's row.
func mark(leader bool) string {
	if leader {
		return "*"
	}
	return ""
}

func newMemberAddCmd(a *app) *cobra.Command {
	var learner bool
	var id uint64
	cmd := &cobra.Command{
		Use:   "add PEERURL",
		Short: "Announce a new member by its peer URL (then start it with --join)",
		Long: `Announce a new member (POST /v1/members); start it afterwards with --join.
Without --id the cluster picks one above every ID ever used. Add a learner
first and promote it once it has caught up, so the quorum never waits for it.

-o table (the default): the member as added. -o plain: its ID.
-o json: the server's answer.`,
		Args: exactArgs("PEERURL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.memberAdd(cmd.Context(), args[0], id, learner)
		},
	}
	cmd.Flags().BoolVar(&learner, "learner", false, "add it as a learner (not counted in the quorum until promoted)")
	cmd.Flags().Uint64Var(&id, "id", 0, "its member ID (0: picked by the cluster)")
	return cmd
}

func (a *app) memberAdd(ctx context.Context, peerURL string, id uint64, learner bool) error {
	req := struct {
		PeerURL string `json:"peerURL"`
		ID      uint64 `json:"id,omitempty"`
		Learner bool   `json:"learner,omitempty"`
	}{peerURL, id, learner}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	resp, err := a.client.do(ctx, request{method: http.MethodPost, path: "/v1/members", body: body,
		header: http.Header{"Content-Type": {"application/json"}}})
	if err != nil {
		return err
	}
	var m member
	if err := json.Unmarshal(resp.body, &m); err != nil {
		return fmt.Errorf("%s: member add: the answer is not the JSON expected: %w", resp.endpoint, err)
	}
	switch a.format(formatTable) {
	case formatJSON:
		return writeRaw(a.out, resp.body)
	case formatPlain:
		_, err = fmt.Fprintln(a.out, m.ID)
		return err
	}
	_, err = fmt.Fprintf(a.out, "added member %d (%s, %s); start it with --join\n", m.ID, m.PeerURL, m.role())
	return err
}

// parseID reads a member ID argument.
func parseID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, usageErrorf("member ID %q: want a positive decimal number", s)
	}
	return id, nil
}

// memberAction makes a command that acts on one member ID with one request
// whose success has no body, and says so in a sentence.
func memberAction(a *app, use, short, long, done string, req func(id uint64) request) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			if _, err := a.client.do(cmd.Context(), req(id)); err != nil {
				return err
			}
			switch a.format(formatTable) {
			case formatJSON:
				return writeJSONLine(a.out, map[string]uint64{"id": id})
			case formatPlain:
				return nil
			}
			_, err = fmt.Fprintf(a.out, done+"\n", id)
			return err
		},
	}
}

func newMemberRmCmd(a *app) *cobra.Command {
	return memberAction(a, "rm ID", "Remove a member",
		`Remove a member (DELETE /v1/members/ID). A leader hands leadership on first;
the removed member exits.`,
		"removed member %d",
		func(id uint64) request {
			return request{method: http.MethodDelete, path: "/v1/members/" + strconv.FormatUint(id, 10)}
		})
}

func newMemberPromoteCmd(a *app) *cobra.Command {
	return memberAction(a, "promote ID", "Make a learner a voter",
		`Make a learner a voter (POST /v1/members/ID/promote). The cluster refuses
(409) while the learner is more than 100 entries behind; try again later.`,
		"promoted member %d to voter",
		func(id uint64) request {
			return request{method: http.MethodPost, path: "/v1/members/" + strconv.FormatUint(id, 10) + "/promote"}
		})
}

func newLeaderCmd(a *app) *cobra.Command {
	move := memberAction(a, "move ID", "Hand leadership to another member",
		`Hand leadership to member ID (POST /v1/leader); answers once the member
that took the request sees ID lead.`,
		"leadership moved to member %d",
		func(id uint64) request {
			body := []byte(`{"id":` + strconv.FormatUint(id, 10) + `}`)
			return request{method: http.MethodPost, path: "/v1/leader", body: body,
				header: http.Header{"Content-Type": {"application/json"}}}
		})
	return group("leader", "Move leadership", move)
}
