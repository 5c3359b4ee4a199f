package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// watchIdle is how long a watch stream may bring nothing, not even the
// server's heartbeat comment (every 10 s, docs/API.md), before kvctl takes
// the connection for dead and reconnects.
const watchIdle = 35 * time.Second

// reconnect delays: the first, and the most between attempts.
const (
	watchRetryFirst = 100 * time.Millisecond
	watchRetryMax   = 2 * time.Second
)

func newWatchCmd(a *app) *cobra.Command {
	var prefix bool
	var rev uint64
	cmd := &cobra.Command{
		Use:   "watch KEY",
		Short: "Print the changes of a key (or of every key under a prefix) as they happen",
		Long: `Print each change of KEY (with --prefix, of every key starting with KEY)
as it happens, from GET /v1/watch, until interrupted.

Without --rev the watch starts at the state read when it begins; with --rev N
it prints every retained change from revision N on (as etcdctl's --rev).
A connection that drops is made again, to the next endpoint if need be, and
the watch resumes after the last change it printed: nothing is lost or
repeated. A revision no longer retained (410) ends the watch with an error.

-o plain (the default): PUT or DELETE, the key, and for a put the value, one
per line, as etcdctl prints them. -o table: one line per change (revision,
type, key, value). -o json: each event as the server sent it.`,
		Args: exactArgs("KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.watch(cmd.Context(), watchTarget{key: args[0], prefix: prefix}, rev)
		},
	}
	cmd.Flags().BoolVar(&prefix, "prefix", false, "watch every key starting with KEY")
	cmd.Flags().Uint64Var(&rev, "rev", 0, "print changes from this revision on (0: from now)")
	return cmd
}

// watchTarget is what a watch follows.
type watchTarget struct {
	key    string
	prefix bool
}

// watchPosition is how far a watch has printed. Events come a whole
// revision at a time, but a connection can drop in the middle of one; the
// watch then asks again for that revision and skips what it printed.
type watchPosition struct {
	rev     uint64 // the revision of the last event printed, or the one before the first wanted
	printed int    // events of rev printed (0 when rev is only the starting point)
}

// query is the watch request that continues from p, and how many of its
// first events were printed already.
func (p watchPosition) query(t watchTarget) (path string, skip int) {
	q := url.Values{}
	if t.prefix {
		q.Set("prefix", t.key)
	} else {
		q.Set("key", t.key)
	}
	after := p.rev
	if p.printed > 0 {
		after-- // ask again for the revision the drop may have cut short
	}
	q.Set("rev", strconv.FormatUint(after, 10))
	return "/v1/watch?" + q.Encode(), p.printed
}

// watch follows t from revision from (0: from the state now) until ctx
// ends, which is a clean exit.
func (a *app) watch(ctx context.Context, t watchTarget, from uint64) error {
	pos := watchPosition{}
	if from > 0 {
		pos.rev = from - 1
	} else {
		rev, err := a.currentRevision(ctx, t.key)
		if err != nil {
			return err
		}
		pos.rev = rev
	}
	delay := watchRetryFirst
	for streams := 0; ; streams++ {
		err := a.watchStream(ctx, t, &pos, streams > 0)
		if ctx.Err() != nil {
			return nil // interrupted: a clean end
		}
		var ce *connectError
		switch {
		case errors.Is(err, errStreamEnded):
			delay = watchRetryFirst // it was up: try again soon
		case errors.As(err, &ce) && streams > 0 && !isPermanent(err):
		default:
			return err // the first connection failed, a 4xx, or printing failed
		}
		fmt.Fprintf(a.errOut, "kvctl: watch: %v; reconnecting after revision %d\n", err, pos.rev)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, watchRetryMax)
	}
}

// currentRevision is the revision of the state a listing reads now: a
// watch from it misses nothing that happens after it starts.
func (a *app) currentRevision(ctx context.Context, prefix string) (uint64, error) {
	var page struct {
		Rev uint64 `json:"rev"`
	}
	q := url.Values{"prefix": {prefix}, "limit": {"1"}}
	if _, err := a.client.getJSON(ctx, "/v1/kv?"+q.Encode(), &page); err != nil {
		return 0, fmt.Errorf("reading the current revision to watch from: %w", err)
	}
	return page.Rev, nil
}

// errStreamEnded: a watch stream that was open ended (the member stopped,
// the connection dropped, the watcher fell behind and was cut off).
var errStreamEnded = errors.New("the watch stream ended")

// connectError is a watch stream that could not be opened.
type connectError struct{ err error }

func (e *connectError) Error() string { return e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// isPermanent reports whether a failed watch cannot be helped by trying
// again: a 4xx answer (a bad request, 410 compacted).
func isPermanent(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500
}

// watchStream opens one watch stream from pos and prints its events until
// it ends, keeping pos up to date.
func (a *app) watchStream(ctx context.Context, t watchTarget, pos *watchPosition, again bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	path, skip := pos.query(t)
	resp, ep, err := a.client.open(ctx, request{method: http.MethodGet, path: path, header: http.Header{"Accept": {"text/event-stream"}}})
	if err != nil {
		return &connectError{compactedMessage(err)}
	}
	defer resp.Body.Close()
	if again {
		fmt.Fprintf(a.errOut, "kvctl: watch: resumed on %s\n", ep)
	}
	idle := time.AfterFunc(watchIdle, cancel)
	defer idle.Stop()
	var printErr error
	err = readEvents(resp.Body, func() { idle.Reset(watchIdle) }, func(ev sseEvent) error {
		printErr = a.watchEvent(ev, pos, &skip)
		return printErr
	})
	switch {
	case printErr != nil:
		return printErr
	case !idle.Stop():
		err = fmt.Errorf("nothing came for %v", watchIdle)
	case err == nil:
		err = errors.New("closed by the member")
	}
	return fmt.Errorf("%w (%s: %v)", errStreamEnded, ep, err)
}

// watchEvent prints one server-sent event unless it was printed before a
// reconnect, and moves pos past it.
func (a *app) watchEvent(ev sseEvent, pos *watchPosition, skip *int) error {
	if ev.name == "cutoff" {
		// It names the last revision it delivered whole: resume after it.
		var c struct {
			Rev uint64 `json:"rev"`
		}
		if json.Unmarshal([]byte(ev.data), &c) == nil && c.Rev >= pos.rev {
			pos.rev, pos.printed = c.Rev, 0
		}
		fmt.Fprintf(a.errOut, "kvctl: watch: the member cut this watcher off (it fell behind)\n")
		return nil
	}
	if ev.name != "" {
		return nil // not an event kvctl knows; the API may add some
	}
	var e struct {
		Type string `json:"type"`
		kv
	}
	if err := json.Unmarshal([]byte(ev.data), &e); err != nil {
		return fmt.Errorf("a watch event that is not JSON: %w", err)
	}
	switch {
	case e.Rev < pos.rev:
		return nil
	case e.Rev == pos.rev && *skip > 0:
		*skip--
		return nil
	case e.Rev == pos.rev:
		pos.printed++
	default:
		pos.rev, pos.printed, *skip = e.Rev, 1, 0
	}
	return a.printEvent(e.Type, e.kv, ev.data)
}

func (a *app) printEvent(typ string, e kv, raw string) error {
	key, value, _, err := e.decoded()
	if err != nil {
		return fmt.Errorf("watch event: %w", err)
	}
	switch a.format(formatPlain) {
	case formatJSON:
		_, err = fmt.Fprintln(a.out, raw)
	case formatTable:
		_, err = fmt.Fprintf(a.out, "%-10d %-6s %s %s\n", e.Rev, strings.ToUpper(typ), printable(key), printable(string(value)))
	default:
		if typ == "delete" {
			_, err = fmt.Fprintf(a.out, "DELETE\n%s\n", key)
		} else {
			_, err = fmt.Fprintf(a.out, "PUT\n%s\n%s\n", key, value)
		}
	}
	return err
}

// compactedMessage restates a 410 in kvctl's terms (--rev counts from the
// first revision wanted, the API's rev= from the last one seen).
func compactedMessage(err error) error {
	var ae *apiError
	if !errors.As(err, &ae) || ae.Status != http.StatusGone {
		return err
	}
	var body struct {
		CompactRevision uint64 `json:"compactRevision"`
	}
	if json.Unmarshal(ae.Body, &body) == nil && body.CompactRevision > 0 {
		ae.Message = fmt.Sprintf("%s (kvctl watch --rev %d or later still works; or list the keys again and watch from now)",
			ae.Message, body.CompactRevision+1)
	}
	return ae
}

// sseEvent is one server-sent event.
type sseEvent struct {
	name, id, data string
}

// readEvents parses a text/event-stream, calling fn for each event and
// alive for each line (comments included). It returns fn's first error,
// or the read error that ended the stream (nil at a clean end).
func readEvents(r io.Reader, alive func(), fn func(sseEvent) error) error {
	br := bufio.NewReader(r)
	var ev sseEvent
	var data []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		alive()
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "" {
			if data != nil {
				ev.data = strings.Join(data, "\n")
				if err := fn(ev); err != nil {
					return err
				}
			}
			ev, data = sseEvent{}, nil
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "": // a comment: heartbeat
		case "event":
			ev.name = value
		case "id":
			ev.id = value
		case "data":
			data = append(data, value)
		}
	}
}
