package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Tests of the /v1 API against in-process clusters: conditional writes,
// transactions, listing, watches, JSON bodies, and what survives a restart.

// parseETag reads an ETag of the form "<rev>".
func parseETag(tag string) (uint64, error) {
	if len(tag) < 3 || tag[0] != '"' || tag[len(tag)-1] != '"' {
		return 0, fmt.Errorf("ETag %q is not a quoted revision", tag)
	}
	return strconv.ParseUint(tag[1:len(tag)-1], 10, 64)
}

// expect fails the test unless r has the wanted status code.
func expect(t testing.TB, r reply, code int, what string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("%s: got %s, want %d", what, r, code)
	}
}

// mustPut writes key=value through /v1/kv/ and returns the new revision.
func mustPut(t testing.TB, base, key, value string, hdr ...string) uint64 {
	t.Helper()
	r := do(t, http.MethodPut, base+"/v1/kv/"+key, value, hdr...)
	expect(t, r, http.StatusNoContent, "PUT "+key)
	rev, err := parseETag(r.header.Get("ETag"))
	if err != nil || rev == 0 {
		t.Fatalf("PUT %s: ETag %q: %v", key, r.header.Get("ETag"), err)
	}
	return rev
}

// jsonErrorBody is the body of every /v1 error.
type jsonErrorBody struct {
	Error  string `json:"error"`
	Code   int    `json:"code"`
	Failed *int   `json:"failed"`
}

// expectJSONError checks that r is a JSON error with the given status.
func expectJSONError(t testing.TB, r reply, code int, what string) jsonErrorBody {
	t.Helper()
	expect(t, r, code, what)
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s: Content-Type %q, want application/json", what, ct)
	}
	var e jsonErrorBody
	if err := json.Unmarshal([]byte(r.body), &e); err != nil {
		t.Fatalf("%s: error body %q: %v", what, r.body, err)
	}
	if e.Code != code || e.Error == "" {
		t.Fatalf("%s: error body %q, want code %d and a message", what, r.body, code)
	}
	return e
}

// txnReply is the body of a successful POST /v1/txn.
type txnReply struct {
	Succeeded bool   `json:"succeeded"`
	Rev       uint64 `json:"rev"`
	Results   []struct {
		Found bool `json:"found"`
	} `json:"results"`
}

// txnOpJSON is one operation of a POST /v1/txn body; Value nil leaves the
// value out.
type txnOpJSON struct {
	Op       string  `json:"op"`
	Key      string  `json:"key"`
	Value    *string `json:"value,omitempty"`
	IfRev    uint64  `json:"ifRev,omitempty"`
	IfAbsent bool    `json:"ifAbsent,omitempty"`
}

func putOp(key, value string) txnOpJSON { return txnOpJSON{Op: "put", Key: key, Value: &value} }
func delOp(key string) txnOpJSON        { return txnOpJSON{Op: "delete", Key: key} }

func txnJSON(t testing.TB, ops ...txnOpJSON) string {
	t.Helper()
	b, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// listReply is the body of GET /v1/kv.
type listReply struct {
	Keys []struct {
		Key       string `json:"key"`
		KeyBase64 []byte `json:"keyBase64"`
		Rev       uint64 `json:"rev"`
	} `json:"keys"`
	More bool `json:"more"`
}

func list(t testing.TB, base string, q url.Values) listReply {
	t.Helper()
	r := do(t, http.MethodGet, base+"/v1/kv?"+q.Encode(), "")
	expect(t, r, http.StatusOK, "list "+q.Encode())
	var l listReply
	if err := json.Unmarshal([]byte(r.body), &l); err != nil {
		t.Fatalf("list %s: %q: %v", q.Encode(), r.body, err)
	}
	return l
}

// ---- server-sent events ----

// sseMsg is one server-sent message: a comment, or an event.
type sseMsg struct {
	comment string // text after ": " for a comment line
	name    string // the event: field ("" for plain events)
	id      string
	data    string
}

// watchEvent is the JSON data of a watch event (or of the final cutoff).
type watchEvent struct {
	name        string  // SSE event name: "" or "cutoff"
	id          string  // SSE id
	Type        string  `json:"type"`
	Key         string  `json:"key"`
	KeyBase64   []byte  `json:"keyBase64"`
	Value       *string `json:"value"`
	ValueBase64 []byte  `json:"valueBase64"`
	Rev         uint64  `json:"rev"`
	Error       string  `json:"error"`
}

func (e watchEvent) String() string {
	v := "<nil>"
	if e.Value != nil {
		v = *e.Value
	}
	return fmt.Sprintf("%s %s %q=%.20q @%d", e.name, e.Type, e.Key, v, e.Rev)
}

// readSSE parses a server-sent event stream onto out until the stream ends
// or done is closed.
func readSSE(r *bufio.Reader, out chan<- sseMsg, done <-chan struct{}) error {
	var m sseMsg
	started := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if !started {
				continue
			}
			select {
			case out <- m:
			case <-done:
				return errors.New("watch closed by the test")
			}
			m, started = sseMsg{}, false
			continue
		case strings.HasPrefix(line, ":"):
			m.comment = strings.TrimPrefix(strings.TrimPrefix(line, ":"), " ")
		case strings.HasPrefix(line, "event: "):
			m.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			m.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			m.data += strings.TrimPrefix(line, "data: ")
		default:
			return fmt.Errorf("unexpected line %q in the event stream", line)
		}
		started = true
	}
}

// watchStream reads a watch response in the background.
type watchStream struct {
	msgs  chan sseMsg
	ended chan struct{} // closed when the stream has ended; then err is set
	err   error
	stop  func()
}

// startStream starts reading body as an event stream; closeBody ends it.
func startStream(t testing.TB, body io.Reader, closeBody func()) *watchStream {
	w := &watchStream{msgs: make(chan sseMsg), ended: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(w.ended)
		w.err = readSSE(bufio.NewReader(body), w.msgs, done)
	}()
	var once sync.Once
	w.stop = func() {
		once.Do(func() {
			close(done)
			closeBody()
			<-w.ended
		})
	}
	t.Cleanup(w.stop)
	return w
}

// openWatch starts GET /v1/watch?query and checks that it is an event
// stream.
func openWatch(t testing.TB, base, query string, hdr ...string) *watchStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/watch?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req) // no client timeout: the stream is long-lived
	if err != nil {
		cancel()
		t.Fatalf("watch %s: %v", query, err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("watch %s: %d %s %q", query, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	return startStream(t, resp.Body, func() { cancel(); resp.Body.Close() })
}

// next returns the next message, or false when the stream ended. It fails
// the test when nothing comes within timeout.
func (w *watchStream) next(t testing.TB, timeout time.Duration) (sseMsg, bool) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case m := <-w.msgs:
		return m, true
	case <-w.ended:
		return sseMsg{}, false
	case <-timer.C:
		t.Fatalf("no watch message within %v", timeout)
		return sseMsg{}, false
	}
}

// nextEvent skips comments and returns the next event, or false when the
// stream ended.
func (w *watchStream) nextEvent(t testing.TB, timeout time.Duration) (watchEvent, bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m, ok := w.next(t, time.Until(deadline))
		if !ok {
			return watchEvent{}, false
		}
		if m.data == "" {
			continue // a comment
		}
		return decodeEvent(t, m), true
	}
}

func decodeEvent(t testing.TB, m sseMsg) watchEvent {
	t.Helper()
	e := watchEvent{name: m.name, id: m.id}
	if err := json.Unmarshal([]byte(m.data), &e); err != nil {
		t.Fatalf("event data %q: %v", m.data, err)
	}
	if m.id != strconv.FormatUint(e.Rev, 10) {
		t.Fatalf("event id %q does not match its rev %d", m.id, e.Rev)
	}
	return e
}

// events reads n events; the stream must not end before.
func (w *watchStream) events(t testing.TB, n int, timeout time.Duration) []watchEvent {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var out []watchEvent
	for len(out) < n {
		e, ok := w.nextEvent(t, time.Until(deadline))
		if !ok {
			t.Fatalf("watch ended after %d of %d events: %v (got %v)", len(out), n, w.err, out)
		}
		out = append(out, e)
	}
	return out
}

// wantEvent is an expected watch event; value "" means no value (delete).
type wantEvent struct {
	typ, key, value string
	rev             uint64
}

func checkEvents(t testing.TB, got []watchEvent, want []wantEvent) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d events %v, want %d %v", len(got), got, len(want), want)
	}
	for i, w := range want {
		g := got[i]
		gv := ""
		if g.Value != nil {
			gv = *g.Value
		}
		if g.name != "" || g.Type != w.typ || g.Key != w.key || gv != w.value || g.Rev != w.rev ||
			(w.typ == "delete" && g.Value != nil) {
			t.Fatalf("event %d: got %v, want %v", i, g, w)
		}
	}
}

// ---- tests ----

// Conditional writes on one key: ETag on PUT and GET, If-Match with a
// revision or *, If-None-Match: *, and 412 JSON errors that change nothing.
func TestV1ConditionalWrites(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	base, other := c.members[0].srv.URL, c.members[1].srv.URL

	expectJSONError(t, do(t, http.MethodGet, base+"/v1/kv/k", ""), http.StatusNotFound, "GET absent")
	expectJSONError(t, do(t, http.MethodPut, base+"/v1/kv/k", "x", "If-Match", "*"), http.StatusPreconditionFailed, "If-Match * on absent")
	expectJSONError(t, do(t, http.MethodPut, base+"/v1/kv/k", "x", "If-Match", `"1"`), http.StatusPreconditionFailed, "If-Match rev on absent")
	rev1 := mustPut(t, base, "k", "one", "If-None-Match", "*")
	expectJSONError(t, do(t, http.MethodPut, base+"/v1/kv/k", "x", "If-None-Match", "*"), http.StatusPreconditionFailed, "If-None-Match * on present")

	// Another member answers with the same value and revision.
	r := do(t, http.MethodGet, other+"/v1/kv/k", "")
	expect(t, r, http.StatusOK, "GET via member 2")
	if string(r.body) != "one" || r.rev() != rev1 {
		t.Fatalf("GET via member 2: %q ETag %q, want one with rev %d", r.body, r.header.Get("ETag"), rev1)
	}

	rev2 := mustPut(t, other, "k", "two", "If-Match", fmt.Sprintf(`"%d"`, rev1))
	if rev2 <= rev1 {
		t.Fatalf("revision went from %d to %d", rev1, rev2)
	}
	e := expectJSONError(t, do(t, http.MethodPut, base+"/v1/kv/k", "three", "If-Match", fmt.Sprintf(`"%d"`, rev1)),
		http.StatusPreconditionFailed, "If-Match with a stale revision")
	if !strings.Contains(e.Error, strconv.FormatUint(rev1, 10)) {
		t.Errorf("412 message %q does not name the revision", e.Error)
	}
	expectJSONError(t, do(t, http.MethodDelete, base+"/v1/kv/k", "", "If-Match", fmt.Sprintf(`"%d"`, rev1)),
		http.StatusPreconditionFailed, "DELETE with a stale revision")
	r = do(t, http.MethodGet, base+"/v1/kv/k", "")
	if r.code != http.StatusOK || string(r.body) != "two" || r.rev() != rev2 {
		t.Fatalf("after failed conditions: %s ETag %q, want two with rev %d", r, r.header.Get("ETag"), rev2)
	}
	rev3 := mustPut(t, base, "k", "three", "If-Match", "*")
	expect(t, do(t, http.MethodDelete, base+"/v1/kv/k", "", "If-Match", fmt.Sprintf(`"%d"`, rev3)), http.StatusNoContent, "DELETE at its revision")
	expectJSONError(t, do(t, http.MethodDelete, base+"/v1/kv/k", ""), http.StatusNotFound, "DELETE absent")

	for _, h := range [][]string{
		{"If-Match", `"0"`}, {"If-Match", `"x"`}, {"If-None-Match", `"3"`},
	} {
		expectJSONError(t, do(t, http.MethodPut, base+"/v1/kv/k", "v", h...), http.StatusBadRequest, fmt.Sprint(h))
	}
	r = do(t, http.MethodPut, base+"/v1/kv/k", "v", "If-Match", "*", "If-None-Match", "*")
	expectJSONError(t, r, http.StatusBadRequest, "If-Match with If-None-Match")
}

// A transaction applies all of its operations at one revision, or none of
// them when any condition fails; results tell which keys existed before.
func TestV1TxnAtomicity(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	base := c.members[1].srv.URL // a follower or the leader: either works
	revA := mustPut(t, base, "a", "a1")
	revGone := mustPut(t, base, "gone", "g")
	expect(t, do(t, http.MethodDelete, base+"/v1/kv/gone", ""), http.StatusNoContent, "DELETE gone")

	// Success: a conditional overwrite, a create, a delete of an absent key.
	ok := putOp("a", "a2")
	ok.IfRev = revA
	create := putOp("b", "b1")
	create.IfAbsent = true
	r := do(t, http.MethodPost, base+"/v1/txn", txnJSON(t, ok, create, delOp("nothing")))
	expect(t, r, http.StatusOK, "txn")
	var tr txnReply
	if err := json.Unmarshal([]byte(r.body), &tr); err != nil {
		t.Fatal(err)
	}
	if !tr.Succeeded || tr.Rev <= revGone || len(tr.Results) != 3 ||
		!tr.Results[0].Found || tr.Results[1].Found || tr.Results[2].Found {
		t.Fatalf("txn answer %s", r.body)
	}
	for _, m := range c.members { // every member applied both puts at one revision
		for key, want := range map[string]string{"a": "a2", "b": "b1"} {
			eventually(t, 5*time.Second, func() error {
				r, err := send(t.Context(), testHTTP, http.MethodGet, m.srv.URL+"/v1/kv/"+key+"?consistency=serializable", "")
				if err != nil {
					return err
				}
				if r.code != http.StatusOK || string(r.body) != want || r.rev() != tr.Rev {
					return fmt.Errorf("member %d: %s = %s rev %d, want %q rev %d", m.cfg.ID, key, r, r.rev(), want, tr.Rev)
				}
				return nil
			})
		}
	}

	// A delete that finds its key, and puts on fresh keys.
	r = do(t, http.MethodPost, base+"/v1/txn", txnJSON(t, delOp("b"), putOp("c", "c1")))
	expect(t, r, http.StatusOK, "txn 2")
	var tr2 txnReply
	if err := json.Unmarshal([]byte(r.body), &tr2); err != nil {
		t.Fatal(err)
	}
	if !tr2.Succeeded || tr2.Rev <= tr.Rev || !tr2.Results[0].Found || tr2.Results[1].Found {
		t.Fatalf("txn 2 answer %s", r.body)
	}

	// Failures: the last op's condition fails (stale rev, present key, absent
	// key with a rev); nothing of the transaction is applied.
	stale := delOp("a")
	stale.IfRev = revA
	present := putOp("c", "c2")
	present.IfAbsent = true
	absent := putOp("b", "b2")
	absent.IfRev = tr.Rev
	for name, bad := range map[string]txnOpJSON{"stale rev": stale, "present": present, "absent": absent} {
		body := txnJSON(t, putOp("a", "a3"), putOp("d", "d1"), delOp("c"), bad)
		e := expectJSONError(t, do(t, http.MethodPost, base+"/v1/txn", body), http.StatusPreconditionFailed, name)
		if e.Failed == nil || *e.Failed != 3 {
			t.Fatalf("%s: failed op %v, want 3", name, e.Failed)
		}
	}
	// The first op failing is reported as op 0.
	e := expectJSONError(t, do(t, http.MethodPost, base+"/v1/txn", txnJSON(t, present, putOp("d", "d1"))), http.StatusPreconditionFailed, "first op")
	if e.Failed == nil || *e.Failed != 0 {
		t.Fatalf("first op: failed op %v, want 0", e.Failed)
	}
	for key, want := range map[string]struct {
		code  int
		value string
		rev   uint64
	}{"a": {200, "a2", tr.Rev}, "b": {404, "", 0}, "c": {200, "c1", tr2.Rev}, "d": {404, "", 0}} {
		r := do(t, http.MethodGet, base+"/v1/kv/"+key, "")
		if r.code != want.code || (want.code == 200 && (string(r.body) != want.value || r.rev() != want.rev)) {
			t.Errorf("after failed txns: %s = %s rev %d, want %d %q rev %d", key, r, r.rev(), want.code, want.value, want.rev)
		}
	}

	// Malformed transactions are 400 and change nothing either.
	for _, body := range []string{
		``, `[]`, `{}`, `[{"op":"put","key":"a"}]`, `[{"op":"delete","key":"a","value":"x"}]`,
		`[{"op":"get","key":"a"}]`, `[{"op":"put","key":"","value":"x"}]`, `[{"op":"put","key":"a","value":"x","ifRev":3,"ifAbsent":true}]`,
		`[{"op":"put","key":"a","value":"x","extra":1}]`, `[{"op":"put","key":"a","value":"x"}] []`, `[{"op":"put","key":"a","value":"x"}`,
	} {
		expectJSONError(t, do(t, http.MethodPost, base+"/v1/txn", body), http.StatusBadRequest, "txn "+body)
	}
	if r := do(t, http.MethodGet, base+"/v1/kv/a", ""); string(r.body) != "a2" {
		t.Fatalf("a = %s after malformed txns", r)
	}
}

// Listing walks keys with a prefix in order, page by page, with after and
// limit; limit is capped and has a default.
func TestV1ListPagination(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	base := c.members[0].srv.URL
	var want []string
	revs := map[string]uint64{}
	for i := range 25 {
		k := fmt.Sprintf("p/%02d", 24-i) // written out of order
		revs[k] = mustPut(t, base, k, "v")
		want = append(want, k)
	}
	for _, k := range []string{"p", "p0", "o/z", "q/a", "p/"} { // around the prefix
		revs[k] = mustPut(t, base, k, "v")
	}
	want = append(want, "p/")
	slices.Sort(want)

	// Pages of 5 (25 keys + "p/" = 26: six pages, the last one short).
	var got []string
	after := ""
	for page := 0; ; page++ {
		q := url.Values{"prefix": {"p/"}, "limit": {"5"}}
		if page > 0 {
			q.Set("after", after)
		}
		l := list(t, base, q)
		if len(l.Keys) > 5 || (l.More && len(l.Keys) != 5) {
			t.Fatalf("page %d: %d keys, more=%v", page, len(l.Keys), l.More)
		}
		for _, k := range l.Keys {
			if k.Rev != revs[k.Key] {
				t.Fatalf("key %q rev %d, want %d", k.Key, k.Rev, revs[k.Key])
			}
			got = append(got, k.Key)
		}
		if !l.More {
			break
		}
		after = got[len(got)-1]
		if page > 10 {
			t.Fatal("listing does not end")
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("pages gave %q, want %q", got, want)
	}

	// Exactly a page's worth left: more is false.
	l := list(t, base, url.Values{"prefix": {"p/"}, "after": {"p/19"}, "limit": {"5"}})
	if len(l.Keys) != 5 || l.More || l.Keys[4].Key != "p/24" {
		t.Fatalf("last full page: %+v", l)
	}
	// after need not be a key; after below the prefix starts at the prefix.
	l = list(t, base, url.Values{"prefix": {"p/"}, "after": {"p/05x"}, "limit": {"2"}})
	if len(l.Keys) != 2 || l.Keys[0].Key != "p/06" || !l.More {
		t.Fatalf("after a non-key: %+v", l)
	}
	l = list(t, base, url.Values{"prefix": {"p/"}, "after": {"a"}, "limit": {"1"}})
	if len(l.Keys) != 1 || l.Keys[0].Key != "p/" {
		t.Fatalf("after below the prefix: %+v", l)
	}
	// No prefix lists everything in order.
	l = list(t, base, url.Values{})
	var all []string
	for _, k := range l.Keys {
		all = append(all, k.Key)
	}
	if len(all) != 30 || !slices.IsSorted(all) || l.More {
		t.Fatalf("full listing: %q more=%v", all, l.More)
	}
	for _, bad := range []string{"0", "-1", "x", "1.5"} {
		expectJSONError(t, do(t, http.MethodGet, base+"/v1/kv?limit="+bad, ""), http.StatusBadRequest, "limit="+bad)
	}

	// The default page is 1000 keys and the largest is 10000: write 10001
	// keys in one transaction.
	ops := make([]txnOpJSON, 10001)
	for i := range ops {
		ops[i] = putOp(fmt.Sprintf("big/%05d", i), "v")
	}
	expect(t, do(t, http.MethodPost, base+"/v1/txn", txnJSON(t, ops...)), http.StatusOK, "txn of 10001 puts")
	l = list(t, base, url.Values{"prefix": {"big/"}})
	if len(l.Keys) != 1000 || !l.More {
		t.Fatalf("default limit: %d keys, more=%v; want 1000 and more", len(l.Keys), l.More)
	}
	l = list(t, base, url.Values{"prefix": {"big/"}, "limit": {"1000000"}})
	if len(l.Keys) != 10000 || !l.More || l.Keys[9999].Key != "big/09999" {
		t.Fatalf("capped limit: %d keys, more=%v; want 10000 and more", len(l.Keys), l.More)
	}
	l = list(t, base, url.Values{"prefix": {"big/"}, "after": {"big/09999"}, "limit": {"1000000"}})
	if len(l.Keys) != 1 || l.More || l.Keys[0].Key != "big/10000" {
		t.Fatalf("after the cap: %+v", l)
	}
}

// A watch sees the changes to its key or prefix as they are applied, and
// nothing else.
func TestV1WatchLive(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	base := c.members[0].srv.URL
	pw := openWatch(t, base, "prefix=w/")
	kw := openWatch(t, c.members[2].srv.URL, "key=w/a") // a member other than the writer's
	for _, w := range []*watchStream{pw, kw} {
		if m, ok := w.next(t, 5*time.Second); !ok || m.comment != "watching" {
			t.Fatalf("first message %+v, want the watching comment", m)
		}
	}
	r1 := mustPut(t, base, "w/a", "1")
	mustPut(t, base, "x/a", "not watched")
	r2 := mustPut(t, base, "w/b", "2")
	expect(t, do(t, http.MethodDelete, base+"/v1/kv/w/a", ""), http.StatusNoContent, "DELETE w/a")
	r4 := mustPut(t, base, "w/ab", "3") // a prefix match, not a key match
	got := pw.events(t, 4, 5*time.Second)
	if got[2].Type != "delete" || got[2].Rev <= r2 || got[2].Rev >= r4 {
		t.Fatalf("delete event %v", got[2])
	}
	checkEvents(t, got, []wantEvent{
		{"put", "w/a", "1", r1}, {"put", "w/b", "2", r2}, {"delete", "w/a", "", got[2].Rev}, {"put", "w/ab", "3", r4},
	})
	checkEvents(t, kw.events(t, 2, 5*time.Second), []wantEvent{{"put", "w/a", "1", r1}, {"delete", "w/a", "", got[2].Rev}})
	// Nothing more arrives for the key watch: the next write to w/a is next.
	r5 := mustPut(t, base, "w/a", "4")
	checkEvents(t, kw.events(t, 1, 5*time.Second), []wantEvent{{"put", "w/a", "4", r5}})

	for _, q := range []string{"", "key=a&prefix=b", "key=a&rev=x", "key=a&rev=-1"} {
		expectJSONError(t, do(t, http.MethodGet, base+"/v1/watch?"+q, ""), http.StatusBadRequest, "watch "+q)
	}
	expectJSONError(t, do(t, http.MethodPost, base+"/v1/watch?key=a", ""), http.StatusMethodNotAllowed, "POST watch")
}

// A watch with rev=R gets every retained change after R exactly once, in
// order, then the live changes; Last-Event-ID works the same way.
func TestV1WatchResume(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	base := c.members[0].srv.URL
	var all []wantEvent
	for i := range 10 {
		k := fmt.Sprintf("r/%d", i%3)
		all = append(all, wantEvent{"put", k, fmt.Sprint(i), mustPut(t, base, k, fmt.Sprint(i))})
		mustPut(t, base, "other", "x") // interleaved, not watched
	}
	for _, from := range []int{0, 3, 9} {
		after := all[from].rev
		for _, w := range []*watchStream{
			openWatch(t, base, fmt.Sprintf("prefix=r/&rev=%d", after)),
			openWatch(t, base, "prefix=r/", "Last-Event-ID", strconv.FormatUint(after, 10)),
		} {
			checkEvents(t, w.events(t, len(all)-from-1, 5*time.Second), all[from+1:])
		}
	}
	// rev=0 is everything retained; then live changes follow the backlog
	// with no gap and no repeat.
	w := openWatch(t, base, "prefix=r/&rev=0")
	checkEvents(t, w.events(t, len(all), 5*time.Second), all)
	live := wantEvent{"put", "r/live", "l", mustPut(t, base, "r/live", "l")}
	checkEvents(t, w.events(t, 1, 5*time.Second), []wantEvent{live})
	// A revision in the future: only the changes after it, once the member
	// gets there; the ones up to it are never delivered.
	future := live.rev + 5
	w = openWatch(t, base, fmt.Sprintf("key=r/live&rev=%d", future))
	var later []wantEvent
	for i := 0; len(later) < 2; i++ {
		if e := (wantEvent{"put", "r/live", fmt.Sprint(i), mustPut(t, base, "r/live", fmt.Sprint(i))}); e.rev > future {
			later = append(later, e)
		}
	}
	checkEvents(t, w.events(t, 2, 5*time.Second), later)
}

// Asking for history older than the retained window is 410 Gone; the
// oldest revision still covered works.
func TestV1WatchBeyondWindow(t *testing.T) {
	const window = 5
	c := newTestClusterWithHistory(t, 1, window, nil)
	base := c.members[0].srv.URL
	var revs []uint64
	for i := range 12 {
		revs = append(revs, mustPut(t, base, "h", fmt.Sprint(i)))
	}
	// The window holds the last 5 events (7..11); it starts after event 6.
	e := expectJSONError(t, do(t, http.MethodGet, fmt.Sprintf("%s/v1/watch?key=h&rev=%d", base, revs[5]), ""), http.StatusGone, "watch too old")
	if !strings.Contains(e.Error, strconv.FormatUint(revs[5], 10)) {
		t.Errorf("410 message %q does not name the revision", e.Error)
	}
	expectJSONError(t, do(t, http.MethodGet, base+"/v1/watch?prefix=&rev=0", ""), http.StatusGone, "watch from 0")
	w := openWatch(t, base, fmt.Sprintf("key=h&rev=%d", revs[6]))
	var want []wantEvent
	for i := 7; i < 12; i++ {
		want = append(want, wantEvent{"put", "h", fmt.Sprint(i), revs[i]})
	}
	checkEvents(t, w.events(t, 5, 5*time.Second), want)
	// Without rev, a watch needs no history.
	w = openWatch(t, base, "key=h")
	r := mustPut(t, base, "h", "new")
	checkEvents(t, w.events(t, 1, 5*time.Second), []wantEvent{{"put", "h", "new", r}})
}

// An idle watch stream carries heartbeat comments (every 50ms in tests).
func TestV1WatchHeartbeat(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	w := openWatch(t, c.members[0].srv.URL, "key=idle")
	start := time.Now()
	beats := 0
	for beats < 3 {
		m, ok := w.next(t, 5*time.Second)
		if !ok {
			t.Fatalf("stream ended: %v", w.err)
		}
		switch {
		case m.comment == "heartbeat" && m.data == "":
			beats++
		case m.comment == "watching" && beats == 0:
		default:
			t.Fatalf("unexpected message %+v on an idle stream", m)
		}
	}
	// Three beats 50ms apart take at least 100ms; allow for a slow machine.
	if took := time.Since(start); took < 100*time.Millisecond || took > 5*time.Second {
		t.Fatalf("three heartbeats took %v", took)
	}
}

// Raw bytes, invalid UTF-8 and NUL included, go through /v1/kv/ untouched;
// JSON bodies must be UTF-8, and watch events carry raw bytes as base64.
func TestV1RawBytesAndJSON(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	base := c.members[0].srv.URL
	value := []byte{0, 0xff, 0xfe, 'a', 0, 0xc3, 0x28, 0xed, 0xa0, 0x80, 0xf4, 0x90, 0x80, 0x80}
	for b := range 256 {
		value = append(value, byte(b))
	}
	w := openWatch(t, base, "prefix=bin")
	key := "bin\xff\x01key" // a key that is not UTF-8 either
	escaped := url.PathEscape(key)
	r, err := send(t.Context(), testHTTP, http.MethodPut, base+"/v1/kv/"+escaped, string(value))
	if err != nil {
		t.Fatal(err)
	}
	expect(t, r, http.StatusNoContent, "PUT raw bytes")
	rev := r.rev()
	for _, u := range []string{base + "/v1/kv/" + escaped, base + "/" + escaped, base + "/v1/kv/" + escaped + "?consistency=serializable"} {
		r := do(t, http.MethodGet, u, "")
		if r.code != http.StatusOK || r.body != string(value) {
			t.Fatalf("GET %s: %d %q, want %q", u, r.code, r.body, value)
		}
	}
	e := w.events(t, 1, 5*time.Second)[0]
	if e.Value != nil || !bytes.Equal(e.ValueBase64, value) || string(e.KeyBase64) != key || e.Key != "" || e.Rev != rev {
		t.Fatalf("watch event for raw bytes: %+v", e)
	}
	l := list(t, base, url.Values{"prefix": {"bin"}})
	if len(l.Keys) != 1 || string(l.Keys[0].KeyBase64) != key || l.Keys[0].Rev != rev {
		t.Fatalf("listing a non-UTF-8 key: %+v", l)
	}

	// A NUL in a key's path works through /v1/kv/ too.
	nul := "nul\x00key"
	expect(t, do(t, http.MethodPut, base+"/v1/kv/"+url.PathEscape(nul), "z\x00z"), http.StatusNoContent, "PUT NUL key")
	if r := do(t, http.MethodGet, base+"/v1/kv/"+url.PathEscape(nul), ""); r.code != 200 || string(r.body) != "z\x00z" {
		t.Fatalf("GET NUL key: %s", r)
	}

	// Transactions are JSON: invalid UTF-8 anywhere in the body is refused
	// and nothing is written.
	for _, body := range []string{
		"[{\"op\":\"put\",\"key\":\"t\",\"value\":\"\xff\"}]",
		"[{\"op\":\"put\",\"key\":\"t\xc3\",\"value\":\"v\"}]",
		"[{\"op\":\"put\",\"key\":\"t\",\"value\":\"v\"}]\xff",
		"\xef\xbb\xbf\xff[]",
	} {
		e := expectJSONError(t, do(t, http.MethodPost, base+"/v1/txn", body), http.StatusBadRequest, fmt.Sprintf("txn %q", body))
		if !strings.Contains(e.Error, "UTF-8") {
			t.Errorf("txn %q: message %q does not say why", body, e.Error)
		}
	}
	if l := list(t, base, url.Values{"prefix": {"t"}}); len(l.Keys) != 0 {
		t.Fatalf("a refused txn wrote %+v", l.Keys)
	}
	// Escaped NULs and non-ASCII text in JSON strings are stored as UTF-8.
	expect(t, do(t, http.MethodPost, base+"/v1/txn", `[{"op":"put","key":"t\u0000é","value":"a\u0000b ✓ \ud83d\ude00"}]`), http.StatusOK, "txn with escapes")
	if r := do(t, http.MethodGet, base+"/v1/kv/"+url.PathEscape("t\x00é"), ""); r.code != 200 || string(r.body) != "a\x00b ✓ 😀" {
		t.Fatalf("GET after txn with escapes: %s", r)
	}
}

// Values, revisions (ETags), deletions, and watch history within the window
// survive restarts with snapshots taken every few entries.
func TestV1StateSurvivesRestart(t *testing.T) {
	c := newTestCluster(t, 1, func(cfg *raftConfig) { cfg.SnapshotCount = 3; cfg.CatchupEntries = 2 })
	base := c.members[0].srv.URL
	revs := map[string]uint64{}
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		revs[k] = mustPut(t, base, "s/"+k, k+"1")
	}
	from := revs["b"] // watches resume after this revision
	expect(t, do(t, http.MethodDelete, base+"/v1/kv/s/c", ""), http.StatusNoContent, "DELETE s/c")
	r := do(t, http.MethodPost, base+"/v1/txn", txnJSON(t, putOp("s/a", "a2"), putOp("s/f", "f1"), delOp("s/d")))
	expect(t, r, http.StatusOK, "txn")
	var tr txnReply
	if err := json.Unmarshal([]byte(r.body), &tr); err != nil {
		t.Fatal(err)
	}
	revs["a"], revs["f"] = tr.Rev, tr.Rev
	delete(revs, "c")
	delete(revs, "d")
	oldG := mustPut(t, base, "s/g", "g1") // overwritten below: its ETag goes stale
	revs["g"] = mustPut(t, base, "s/g", "g2")

	before := watchFrom(t, base, from, revs["g"])
	state := func(base string) map[string]string {
		got := map[string]string{}
		l := list(t, base, url.Values{"prefix": {"s/"}})
		for _, k := range l.Keys {
			r := do(t, http.MethodGet, base+"/v1/kv/"+k.Key+"?consistency=serializable", "")
			if r.code != http.StatusOK || r.rev() != k.Rev {
				t.Fatalf("GET %s: %s rev %d, listed at %d", k.Key, r, r.rev(), k.Rev)
			}
			got[k.Key] = fmt.Sprintf("%s@%d", r.body, k.Rev)
		}
		return got
	}
	want := state(base)
	if len(want) != len(revs) {
		t.Fatalf("state before restart: %v, want keys %v", want, revs)
	}
	// Snapshots were taken: restarts load one and replay the WAL after it.
	eventually(t, 5*time.Second, func() error {
		if snaps, _ := filepath.Glob(filepath.Join(c.dir, "raftexample-1-snap", "*.snap")); len(snaps) == 0 {
			return errors.New("no snapshot yet")
		}
		return nil
	})
	for i := range 3 {
		m := c.restart(0)
		base = m.srv.URL
		if got := state(base); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("restart %d: state %v, want %v", i+1, got, want)
		}
		for _, k := range []string{"c", "d"} {
			expectJSONError(t, do(t, http.MethodGet, base+"/v1/kv/s/"+k, ""), http.StatusNotFound, "deleted s/"+k)
		}
		after := watchFrom(t, base, from, revs["g"])
		if fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("restart %d: watch from %d gave %v, before the restart %v", i+1, from, after, before)
		}
	}
	// Conditions still compare against the revisions from before.
	expectJSONError(t, do(t, http.MethodPut, base+"/v1/kv/s/g", "x", "If-Match", fmt.Sprintf(`"%d"`, oldG)), http.StatusPreconditionFailed, "stale ETag after restart")
	newRev := mustPut(t, base, "s/g", "g3", "If-Match", fmt.Sprintf(`"%d"`, revs["g"]))
	if newRev <= revs["g"] {
		t.Fatalf("revision after restart %d is not above %d", newRev, revs["g"])
	}
}

// watchFrom returns the events after rev from a watch on s/, up to the one
// at last, as text.
func watchFrom(t *testing.T, base string, rev, last uint64) []string {
	t.Helper()
	w := openWatch(t, base, fmt.Sprintf("prefix=s/&rev=%d", rev))
	var out []string
	for {
		e, ok := w.nextEvent(t, 5*time.Second)
		if !ok {
			t.Fatalf("watch ended: %v", w.err)
		}
		out = append(out, e.String())
		if e.Rev > last {
			t.Fatalf("event %v beyond the last write %d", e, last)
		}
		if e.Rev == last {
			w.stop()
			return out
		}
	}
}

// A watcher that stops reading is cut off once its queue is full (by
// revisions or by bytes): it gets every event up to the cut, in order, then a final
// cutoff event naming the last revision it got, and the stream ends. Writes
// never wait for it.
func TestV1SlowWatcherCutOff(t *testing.T) {
	c := newTestClusterWithHistory(t, 1, 100000, nil)
	m := c.members[0]
	resp, conn := openStalledWatch(t, m.srv.URL, "prefix=s/")
	watching := func() int {
		m.kvs.mu.RLock()
		defer m.kvs.mu.RUnlock()
		return len(m.kvs.watchers)
	}
	if watching() != 1 {
		t.Fatalf("%d watchers registered, want 1", watching())
	}

	// Transactions of 100 puts of 4 KiB values: the socket buffers fill,
	// then the watcher's event buffer, then it is cut off.
	const perTxn, maxTxns = 100, 200
	value := strings.Repeat("v", 4096)
	var want []wantEvent
	var slowest time.Duration
	write := func(i int) {
		ops := make([]txnOpJSON, perTxn)
		for j := range ops {
			ops[j] = putOp(fmt.Sprintf("s/%04d/%03d", i, j), value)
		}
		start := time.Now()
		r := do(t, http.MethodPost, m.srv.URL+"/v1/txn", txnJSON(t, ops...))
		slowest = max(slowest, time.Since(start))
		expect(t, r, http.StatusOK, fmt.Sprintf("txn %d", i))
		var tr txnReply
		if err := json.Unmarshal([]byte(r.body), &tr); err != nil {
			t.Fatal(err)
		}
		for _, o := range ops {
			want = append(want, wantEvent{"put", o.Key, value, tr.Rev})
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	txns := 0
	for ; watching() > 0; txns++ {
		if txns == maxTxns || time.Now().After(deadline) {
			t.Fatalf("watcher not cut off after %d transactions (%d events)", txns, len(want))
		}
		write(txns)
	}
	for range 5 { // the member goes on as before
		write(txns)
		txns++
	}
	t.Logf("cut off after %d events; %d transactions, slowest %v", len(want)-5*perTxn, txns, slowest)
	if limit := 2 * time.Second; slowest > limit {
		t.Errorf("a write took %v with a stalled watcher, want under %v", slowest, limit)
	}

	// Now read: a prefix of the changes, in order, then the cutoff event.
	w := startStream(t, resp.Body, func() { conn.Close() })
	var got []watchEvent
	var cut *watchEvent
	for cut == nil {
		e, ok := w.nextEvent(t, 10*time.Second)
		if !ok {
			t.Fatalf("stream ended after %d events without a cutoff event: %v", len(got), w.err)
		}
		if e.name == "cutoff" {
			cut = &e
			break
		}
		got = append(got, e)
	}
	// The queue took whole transactions up to its byte bound.
	txnBytes := perTxn * int(eventBytes(event{Key: "s/0000/000", Value: []byte(value)}))
	queued := defaultWatchQueueBytes / txnBytes * perTxn
	if len(got) < queued || len(got) >= len(want) {
		t.Fatalf("watcher got %d of %d events before the cut, want at least %d and not all", len(got), len(want), queued)
	}
	checkEvents(t, got, want[:len(got)])
	if cut.Type != "cutoff" || cut.Rev != got[len(got)-1].Rev || !strings.Contains(cut.Error, fmt.Sprint(cut.Rev)) {
		t.Fatalf("cutoff event %+v, want type cutoff at rev %d with a message", *cut, got[len(got)-1].Rev)
	}
	if m, ok := w.next(t, 5*time.Second); ok {
		t.Fatalf("message %+v after the cutoff event", m)
	}
	if !errors.Is(w.err, io.EOF) {
		t.Fatalf("stream ended with %v, want EOF", w.err)
	}
}

// A transaction with more events than a watcher queues revisions reaches
// the watcher whole, with no cutoff: the queue holds whole revisions, and
// takes one of any size when it is empty. (Watchers were cut off by any
// transaction of more than 1024 matching puts.)
func TestV1WatchGetsLargeTxnWhole(t *testing.T) {
	c := newTestClusterWithHistory(t, 1, 100000, nil)
	base := c.members[0].srv.URL
	w := openWatch(t, base, "prefix=big/")
	ops := make([]txnOpJSON, 3*defaultWatchQueueRevisions)
	for i := range ops {
		ops[i] = putOp(fmt.Sprintf("big/%05d", i), "v")
	}
	r := do(t, http.MethodPost, base+"/v1/txn", txnJSON(t, ops...))
	expect(t, r, http.StatusOK, "txn")
	var tr txnReply
	if err := json.Unmarshal([]byte(r.body), &tr); err != nil {
		t.Fatal(err)
	}
	var want []wantEvent
	for _, o := range ops {
		want = append(want, wantEvent{"put", o.Key, "v", tr.Rev})
	}
	mark := mustPut(t, base, "big/zz-after", "end")
	want = append(want, wantEvent{"put", "big/zz-after", "end", mark})
	checkEvents(t, w.events(t, len(want), 10*time.Second), want)
}

// openStalledWatch starts a watch over a raw connection, reads the response
// head and the first comment, and leaves the rest unread.
func openStalledWatch(t *testing.T, base, query string) (*http.Response, net.Conn) {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := fmt.Fprintf(conn, "GET /v1/watch?%s HTTP/1.1\r\nHost: %s\r\n\r\n", query, u.Host); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(conn, 512)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("watch %s: %d", query, resp.StatusCode)
	}
	// The watcher is registered before the head is written; read the first
	// comment so that nothing else is buffered on this side.
	first := make([]byte, len(": watching\n\n"))
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != ": watching\n\n" {
		t.Fatalf("first bytes of the stream %q: %v", first, err)
	}
	conn.SetReadDeadline(time.Time{})
	return resp, conn
}

// A listing names the revision of the state it was read from, so that a
// client told 410 (its watch fell out of the history) can list again and
// watch on from that revision, missing nothing and seeing nothing twice.
func TestV1ListRevisionResumesWatch(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	base := c.members[1].srv.URL
	mustPut(t, base, "job/a", "1")
	last := mustPut(t, base, "job/b", "2")
	mustPut(t, base, "other", "x") // a later change outside the prefix

	r := do(t, http.MethodGet, base+"/v1/kv?prefix=job/", "")
	var page struct {
		Keys []jsonKey `json:"keys"`
		Rev  uint64    `json:"rev"`
	}
	if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &page) != nil {
		t.Fatalf("list: %d %s", r.code, r.body)
	}
	if len(page.Keys) != 2 || page.Rev <= last {
		t.Fatalf("list: %s, want two keys read at a revision above %d (the write to other)", r.body, last)
	}
	w := openWatch(t, base, fmt.Sprintf("prefix=job/&rev=%d", page.Rev))
	next := mustPut(t, c.members[0].srv.URL, "job/c", "3")
	e, ok := w.nextEvent(t, 5*time.Second)
	if !ok || e.Key != "job/c" || e.Rev != next {
		t.Fatalf("first event after the listing's revision: %+v, want the put of job/c at %d", e, next)
	}
}
