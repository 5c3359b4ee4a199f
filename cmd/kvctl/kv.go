package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/jedib0t/go-pretty/v6/table"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newGetCmd(a *app) *cobra.Command {
	var prefix, serializable bool
	cmd := &cobra.Command{
		Use:   "get KEY",
		Short: "Print a key's value, or every key and value under a prefix",
		Long: `Print a key's value (GET /v1/kv/KEY), or with --prefix every key that
starts with KEY and its value (listed with GET /v1/kv?prefix=, page by page).

-o plain (the default): the value's bytes as stored (a newline is added on a
terminal); with --prefix, each key on a line and its value on the next.
-o table: key, revision and value. -o json: {"key","value","rev"} per key,
with keyBase64/valueBase64 for bytes that are not UTF-8, as the API writes them.
A key that does not exist is an error (exit 1).`,
		Args: exactArgs("KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if prefix {
				return a.getPrefix(cmd.Context(), args[0], serializable)
			}
			return a.getOne(cmd.Context(), args[0], serializable)
		},
	}
	cmd.Flags().BoolVar(&prefix, "prefix", false, "every key starting with KEY")
	cmd.Flags().BoolVar(&serializable, "serializable", false, "read the answering member's state, which may be stale, without a round to the leader")
	return cmd
}

// fetchValue reads one key; found is false for a 404.
func (a *app) fetchValue(ctx context.Context, key string, serializable bool) (value []byte, rev uint64, found bool, err error) {
	path := keyPath(key)
	if serializable {
		path += "?consistency=serializable"
	}
	resp, err := a.client.do(ctx, request{method: http.MethodGet, path: path})
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, err
	}
	rev, _ = parseETag(resp.header.Get("ETag"))
	return resp.body, rev, true, nil
}

// parseETag reads a revision from an ETag, "12".
func parseETag(tag string) (uint64, bool) {
	rev, err := strconv.ParseUint(strings.Trim(tag, `"`), 10, 64)
	return rev, err == nil
}

func (a *app) getOne(ctx context.Context, key string, serializable bool) error {
	value, rev, found, err := a.fetchValue(ctx, key, serializable)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("key %q not found", key)
	}
	switch a.format(formatPlain) {
	case formatJSON:
		return writeJSONLine(a.out, newKV(key, value, rev))
	case formatTable:
		t := newTable(a.out, "KEY", "REV", "VALUE")
		t.AppendRow([]any{printable(key), rev, printable(string(value))})
		t.Render()
		return nil
	default:
		return a.writeValue(value)
	}
}

// writeValue writes a value's bytes unchanged, adding a newline only for a
// person at a terminal, so `kvctl get k > file` keeps the exact bytes.
func (a *app) writeValue(value []byte) error {
	if _, err := a.out.Write(value); err != nil {
		return err
	}
	if isTerminal(a.out) && (len(value) == 0 || value[len(value)-1] != '\n') {
		_, err := io.WriteString(a.out, "\n")
		return err
	}
	return nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (a *app) getPrefix(ctx context.Context, prefix string, serializable bool) error {
	format := a.format(formatPlain)
	t := newTable(a.out, "KEY", "REV", "VALUE")
	err := a.listKeys(ctx, prefix, serializable, func(page listPage, _ []byte) error {
		for _, k := range page.keys {
			value, rev, found, err := a.fetchValue(ctx, k.key, serializable)
			if err != nil {
				return err
			}
			if !found {
				continue // deleted since it was listed
			}
			if err := a.writeKV(t, format, k.key, value, rev); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && format == formatTable {
		t.Render()
	}
	return err
}

// writeKV writes one key and value of get --prefix in format; a table's
// rows are rendered by the caller at the end.
func (a *app) writeKV(t table.Writer, format, key string, value []byte, rev uint64) error {
	switch format {
	case formatJSON:
		return writeJSONLine(a.out, newKV(key, value, rev))
	case formatTable:
		t.AppendRow([]any{printable(key), rev, printable(string(value))})
		return nil
	default:
		_, err := fmt.Fprintf(a.out, "%s\n%s\n", key, value)
		return err
	}
}

// listedKey is a key of a listing page.
type listedKey struct {
	key string
	rev uint64
}

// listPage is one page of GET /v1/kv.
type listPage struct {
	keys []listedKey
	more bool
	rev  uint64
}

// listKeys pages through GET /v1/kv?prefix=, handing each page (decoded and
// as the server wrote it) to fn. The pages are read one after another, so
// together they are not a picture of one revision: each has its own rev.
func (a *app) listKeys(ctx context.Context, prefix string, serializable bool, fn func(page listPage, raw []byte) error) error {
	after := ""
	for {
		q := url.Values{"prefix": {prefix}}
		if after != "" {
			q.Set("after", after)
		}
		if serializable {
			q.Set("consistency", "serializable")
		}
		var body struct {
			Keys []kv   `json:"keys"`
			More bool   `json:"more"`
			Rev  uint64 `json:"rev"`
		}
		resp, err := a.client.getJSON(ctx, "/v1/kv?"+q.Encode(), &body)
		if err != nil {
			return err
		}
		page := listPage{more: body.More, rev: body.Rev, keys: make([]listedKey, len(body.Keys))}
		for i, k := range body.Keys {
			key, _, _, err := k.decoded()
			if err != nil {
				return fmt.Errorf("%s: listing: %w", resp.endpoint, err)
			}
			page.keys[i] = listedKey{key: key, rev: k.Rev}
		}
		if err := fn(page, resp.body); err != nil {
			return err
		}
		if !page.more || len(page.keys) == 0 {
			return nil
		}
		after = page.keys[len(page.keys)-1].key
	}
}

func newLsCmd(a *app) *cobra.Command {
	var serializable bool
	cmd := &cobra.Command{
		Use:   "ls [PREFIX]",
		Short: "List the keys under a prefix (all keys without one)",
		Long: `List keys in byte order with GET /v1/kv?prefix=PREFIX, page by page.

-o plain (the default): one key per line. -o table: key and revision.
-o json: each page as the server wrote it, one per line.`,
		Args: maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			prefix := ""
			if len(args) == 1 {
				prefix = args[0]
			}
			return a.ls(cmd.Context(), prefix, serializable)
		},
	}
	cmd.Flags().BoolVar(&serializable, "serializable", false, "read the answering member's state, which may be stale")
	return cmd
}

func (a *app) ls(ctx context.Context, prefix string, serializable bool) error {
	format := a.format(formatPlain)
	t := newTable(a.out, "KEY", "REV")
	err := a.listKeys(ctx, prefix, serializable, func(page listPage, raw []byte) error {
		if format == formatJSON {
			return writeRaw(a.out, raw)
		}
		for _, k := range page.keys {
			if format == formatTable {
				t.AppendRow([]any{printable(k.key), k.rev})
			} else if _, err := fmt.Fprintln(a.out, k.key); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && format == formatTable {
		t.Render()
	}
	return err
}

// conditions are the flags of a conditional write, as headers.
type conditions struct {
	ifMatch     string
	ifNoneMatch bool
}

func (c *conditions) addFlags(cmd *cobra.Command, create bool) {
	cmd.Flags().StringVar(&c.ifMatch, "if-match", "", `only if the key is at this revision (a number), or exists at all ("*"); exit 3 otherwise`)
	if create {
		cmd.Flags().BoolVar(&c.ifNoneMatch, "if-none-match", false, "only if the key does not exist yet (create); exit 3 otherwise")
	}
}

func (c conditions) header() (http.Header, error) {
	h := http.Header{}
	switch {
	case c.ifMatch != "" && c.ifNoneMatch:
		return nil, usageErrorf("--if-match and --if-none-match exclude each other")
	case c.ifNoneMatch:
		h.Set("If-None-Match", "*")
	case c.ifMatch == "*":
		h.Set("If-Match", "*")
	case c.ifMatch != "":
		rev, err := strconv.ParseUint(c.ifMatch, 10, 64)
		if err != nil || rev == 0 {
			return nil, usageErrorf(`--if-match %q: want a revision (a positive number) or "*"`, c.ifMatch)
		}
		h.Set("If-Match", strconv.Quote(c.ifMatch))
	}
	return h, nil
}

func newPutCmd(a *app) *cobra.Command {
	var cond conditions
	cmd := &cobra.Command{
		Use:   "put KEY [VALUE|-]",
		Short: "Set a key's value (from stdin when VALUE is - or left out)",
		Long: `Set a key's value with PUT /v1/kv/KEY. The value is the argument, or
standard input read to its end when it is "-" or left out (any bytes).

-o table (the default): "OK, revision N". -o plain: the new revision alone.
-o json: {"key","rev"}. A failed --if-match or --if-none-match exits 3.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usageErrorf("put takes KEY and VALUE (or - for stdin), got %d argument(s)", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			hdr, err := cond.header()
			if err != nil {
				return err
			}
			var value []byte
			if len(args) == 1 || args[1] == "-" {
				if value, err = io.ReadAll(a.in); err != nil {
					return fmt.Errorf("reading the value from stdin: %w", err)
				}
			} else {
				value = []byte(args[1])
			}
			return a.put(cmd.Context(), args[0], value, hdr)
		},
	}
	cond.addFlags(cmd, true)
	return cmd
}

func (a *app) put(ctx context.Context, key string, value []byte, hdr http.Header) error {
	if key == "" {
		return usageErrorf("the key must not be empty")
	}
	resp, err := a.client.do(ctx, request{method: http.MethodPut, path: keyPath(key), body: value, header: hdr})
	if err != nil {
		return err
	}
	rev, _ := parseETag(resp.header.Get("ETag"))
	switch a.format(formatTable) {
	case formatJSON:
		return writeJSONLine(a.out, newKV(key, nil, rev).withoutValue())
	case formatPlain:
		_, err = fmt.Fprintln(a.out, rev)
	default:
		_, err = fmt.Fprintf(a.out, "OK, revision %d\n", rev)
	}
	return err
}

func newDelCmd(a *app) *cobra.Command {
	var cond conditions
	cmd := &cobra.Command{
		Use:     "del KEY",
		Aliases: []string{"delete"},
		Short:   "Delete a key",
		Long: `Delete a key with DELETE /v1/kv/KEY. A key that does not exist is an
error (exit 1); a failed --if-match exits 3.

-o table (the default): "deleted KEY". -o plain: nothing. -o json: {"key"}.`,
		Args: exactArgs("KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			hdr, err := cond.header()
			if err != nil {
				return err
			}
			return a.del(cmd.Context(), args[0], hdr)
		},
	}
	cond.addFlags(cmd, false)
	return cmd
}

func (a *app) del(ctx context.Context, key string, hdr http.Header) error {
	if key == "" {
		return usageErrorf("the key must not be empty")
	}
	_, err := a.client.do(ctx, request{method: http.MethodDelete, path: keyPath(key), header: hdr})
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return fmt.Errorf("key %q not found", key)
	}
	if err != nil {
		return err
	}
	switch a.format(formatTable) {
	case formatJSON:
		return writeJSONLine(a.out, newKV(key, nil, 0).withoutValue())
	case formatPlain:
		return nil
	default:
		_, err = fmt.Fprintf(a.out, "deleted %s\n", printable(key))
		return err
	}
}

// withoutValue drops the value fields, for answers about a key alone.
func (e kv) withoutValue() kv {
	e.Value, e.ValueBase64 = nil, nil
	return e
}
