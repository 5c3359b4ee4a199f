package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/spf13/cobra"
)

func newTxnCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "txn [FILE|-]",
		Short: "Apply a list of puts and deletes atomically, all or none",
		Long: `Send a JSON list of operations, read from FILE or standard input, to
POST /v1/txn as it is:

  [{"op": "put", "key": "from", "value": "90", "ifRev": 12},
   {"op": "put", "key": "to", "value": "10", "ifAbsent": true},
   {"op": "delete", "key": "user/3"}]

All of them apply at one revision, or none does. A condition that does not
hold (ifRev, ifAbsent) exits 3 and says which operation's failed.

-o table (the default): "OK, revision N" and each operation with whether its
key was there before. -o plain: the revision alone. -o json: the server's answer
(on a failed condition too, on stdout, before exiting 3).`,
		Args: maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := a.readInput(args)
			if err != nil {
				return err
			}
			return a.txn(cmd.Context(), body)
		},
	}
}

// readInput reads the file named by args[0], or standard input when there
// is no argument or it is "-".
func (a *app) readInput(args []string) ([]byte, error) {
	if len(args) == 0 || args[0] == "-" {
		b, err := io.ReadAll(a.in)
		if err != nil {
			return nil, fmt.Errorf("reading stdin: %w", err)
		}
		return b, nil
	}
	return os.ReadFile(args[0])
}

func (a *app) txn(ctx context.Context, body []byte) error {
	var ops []struct {
		Op  string `json:"op"`
		Key string `json:"key"`
	}
	if err := json.Unmarshal(body, &ops); err != nil {
		return fmt.Errorf(`txn: the input must be a JSON list of operations like [{"op":"put","key":"k","value":"v"}]: %v`, err)
	}
	resp, err := a.client.do(ctx, request{method: http.MethodPost, path: "/v1/txn", body: body,
		header: http.Header{"Content-Type": {"application/json"}}})
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusPreconditionFailed && a.format(formatTable) == formatJSON {
		writeRaw(a.out, ae.Body)
	}
	if err != nil {
		return err
	}
	var res struct {
		Rev     uint64 `json:"rev"`
		Results []struct {
			Found bool `json:"found"`
		} `json:"results"`
	}
	if err := json.Unmarshal(resp.body, &res); err != nil {
		return fmt.Errorf("%s: txn: the answer is not the JSON expected: %w", resp.endpoint, err)
	}
	switch a.format(formatTable) {
	case formatJSON:
		return writeRaw(a.out, resp.body)
	case formatPlain:
		_, err = fmt.Fprintln(a.out, res.Rev)
		return err
	}
	fmt.Fprintf(a.out, "OK, revision %d\n", res.Rev)
	t := newTable(a.out, "#", "OP", "KEY", "FOUND")
	for i, r := range res.Results {
		if i < len(ops) {
			t.AppendRow([]any{i, ops[i].Op, printable(ops[i].Key), r.Found})
		}
	}
	t.Render()
	return nil
}
