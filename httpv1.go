package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"raftexample/internal/wire"
)

// The /v1 API: keys with revisions and conditional writes, listing,
// transactions and watches. Errors are JSON: {"error": "...", "code": N}.
//
//	GET/PUT/DELETE /v1/kv/{key}        one key; ETag and If-Match/If-None-Match
//	GET  /v1/kv?prefix=P&after=K&limit=N  keys in order
//	POST /v1/txn                        puts and deletes, all or none
//	GET  /v1/watch?key=K|prefix=P&rev=R  server-sent events

const (
	defaultListLimit = 1000
	maxListLimit     = 10000
)

func (h *clientAPI) v1Key(w http.ResponseWriter, r *http.Request) {
	key := strings.TrimPrefix(r.URL.Path, "/v1/kv/")
	if key == "" {
		h.jsonFail(w, fmt.Errorf("%w: empty key", errInvalid))
		return
	}
	if err := h.checkKey("key", key); err != nil {
		h.jsonFail(w, err)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		h.v1Get(w, r, key)
	case http.MethodPut, http.MethodDelete:
		h.v1Write(w, r, key)
	default:
		h.methodNotAllowed(w, "GET, HEAD, PUT, DELETE")
	}
}

func (h *clientAPI) v1Get(w http.ResponseWriter, r *http.Request, key string) {
	serializable, err := parseConsistency(r)
	if err != nil {
		h.jsonFail(w, err)
		return
	}
	it, ok, err := h.store.Get(r.Context(), key, serializable)
	switch {
	case err != nil:
		h.jsonFail(w, err)
	case !ok:
		h.jsonFail(w, fmt.Errorf("%w: key %q", errNotFound, key))
	case etagMatches(r.Header.Get("If-None-Match"), it.Rev):
		// The client's copy is current: a cache revalidating it needs no body.
		w.Header().Set("ETag", etag(it.Rev))
		w.WriteHeader(http.StatusNotModified)
	default:
		w.Header().Set("ETag", etag(it.Rev))
		setItemHeaders(w.Header(), it)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(it.Value)
	}
}

// etagMatches reports whether an If-None-Match header names the revision
// rev: "*", or a list of entity tags ("12", W/"12") of which one is rev's.
func etagMatches(header string, rev uint64) bool {
	for _, tag := range strings.Split(header, ",") {
		tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
		if tag == "*" || tag == etag(rev) {
			return true
		}
	}
	return false
}

func (h *clientAPI) v1Write(w http.ResponseWriter, r *http.Request, key string) {
	o := wire.Op{Kind: wire.Delete, Key: key}
	if r.Method == http.MethodPut {
		v, err := h.readBody(w, r)
		if err != nil {
			h.jsonFail(w, err)
			return
		}
		o = wire.Op{Kind: wire.Put, Key: key, Value: v}
		if o.Lease, o.TTL, err = parseKeyLease(r); err != nil {
			h.jsonFail(w, err)
			return
		}
		if (o.Lease != 0 || o.TTL != 0) && h.leases == nil {
			h.jsonFail(w, fmt.Errorf("%w: this store has no leases", errInvalid))
			return
		}
	}
	var err error
	if o.Cond, o.CondRev, err = parseConditions(r.Header); err != nil {
		h.jsonFail(w, err)
		return
	}
	res, err := h.store.Txn(r.Context(), []wire.Op{o})
	switch {
	case err != nil:
		h.jsonFail(w, err)
	case res.Failed == 0 && res.LeaseErr != nil:
		h.jsonFail(w, fmt.Errorf("key %q, lease %d: %w", key, o.Lease, res.LeaseErr))
	case res.Failed == 0:
		h.jsonFail(w, fmt.Errorf("%w: key %q does not match %s", errCondition, key, describeCond(o)))
	case o.Kind == wire.Delete && !res.Found[0]:
		h.jsonFail(w, fmt.Errorf("%w: key %q", errNotFound, key))
	default:
		if o.Kind == wire.Put {
			w.Header().Set("ETag", etag(res.Rev))
			if len(res.CreateRev) > 0 {
				w.Header().Set("X-Create-Revision", strconv.FormatUint(res.CreateRev[0], 10))
			}
			if lease := max(o.Lease, res.Lease); lease != 0 {
				w.Header().Set("X-Lease", strconv.FormatUint(lease, 10))
			}
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// setItemHeaders gives a key's revisions and lease, which a raw value has no
// room for, as headers.
func setItemHeaders(h http.Header, it kvItem) {
	h.Set("X-Create-Revision", strconv.FormatUint(it.CreateRev, 10))
	h.Set("X-Mod-Revision", strconv.FormatUint(it.Rev, 10))
	if it.Lease != 0 {
		h.Set("X-Lease", strconv.FormatUint(it.Lease, 10))
	}
}

func etag(rev uint64) string { return `"` + strconv.FormatUint(rev, 10) + `"` }

// parseConditions reads If-Match: "<rev>" or *, and If-None-Match: *.
func parseConditions(hdr http.Header) (wire.Cond, uint64, error) {
	match, noneMatch := hdr.Get("If-Match"), hdr.Get("If-None-Match")
	switch {
	case match != "" && noneMatch != "":
		return 0, 0, fmt.Errorf("%w: use If-Match or If-None-Match, not both", errInvalid)
	case noneMatch == "*":
		return wire.CondAbsent, 0, nil
	case noneMatch != "":
		return 0, 0, fmt.Errorf("%w: If-None-Match supports only *", errInvalid)
	case match == "*":
		return wire.CondExists, 0, nil
	case match != "":
		rev, err := strconv.ParseUint(strings.Trim(match, `"`), 10, 64)
		if err != nil || rev == 0 {
			return 0, 0, fmt.Errorf("%w: If-Match %q: want a revision in quotes, like \"12\"", errInvalid, match)
		}
		return wire.CondRev, rev, nil
	}
	return wire.CondNone, 0, nil
}

func describeCond(o wire.Op) string {
	switch o.Cond {
	case wire.CondRev:
		return fmt.Sprintf("revision %d", o.CondRev)
	case wire.CondAbsent:
		return "absent"
	default:
		return "present"
	}
}

// jsonKey names a key in JSON: as a string when it is UTF-8, else base64.
// Rev is its mod revision, also given as modRev next to createRev (for a
// key that exists) and its lease (when it has one).
type jsonKey struct {
	Key       string `json:"key,omitempty"`
	KeyBase64 []byte `json:"keyBase64,omitempty"`
	Rev       uint64 `json:"rev"`
	CreateRev uint64 `json:"createRev,omitempty"`
	ModRev    uint64 `json:"modRev,omitempty"`
	Lease     uint64 `json:"lease,omitempty"`
}

func newJSONKey(key string, rev uint64) jsonKey {
	if utf8.ValidString(key) {
		return jsonKey{Key: key, Rev: rev}
	}
	return jsonKey{KeyBase64: []byte(key), Rev: rev}
}

// newJSONItem names a stored key with its revisions and lease.
func newJSONItem(it kvItem) jsonKey {
	k := newJSONKey(it.Key, it.Rev)
	k.CreateRev, k.ModRev, k.Lease = it.CreateRev, it.Rev, it.Lease
	return k
}

func (h *clientAPI) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := defaultListLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			h.jsonFail(w, fmt.Errorf("%w: limit %q: want a positive number", errInvalid, s))
			return
		}
		limit = min(n, maxListLimit)
	}
	serializable, err := parseConsistency(r)
	if err == nil {
		err = h.checkKey("prefix", q.Get("prefix"))
	}
	if err == nil {
		err = h.checkKey("after", q.Get("after"))
	}
	if err != nil {
		h.jsonFail(w, err)
		return
	}
	page, err := h.store.List(r.Context(), q.Get("prefix"), q.Get("after"), limit, serializable)
	if err != nil {
		h.jsonFail(w, err)
		return
	}
	out := struct {
		Keys []jsonKey `json:"keys"`
		More bool      `json:"more"`
		Rev  uint64    `json:"rev"` // the state's revision: watch with rev= this to follow on
	}{Keys: make([]jsonKey, len(page.Items)), More: page.More, Rev: page.Rev}
	for i, it := range page.Items {
		out.Keys[i] = newJSONItem(it)
	}
	writeJSON(w, http.StatusOK, out)
}

// txnOp is one operation of a POST /v1/txn body.
type txnOp struct {
	Op       string  `json:"op"` // "put" or "delete"
	Key      string  `json:"key"`
	Value    *string `json:"value,omitempty"`
	IfRev    uint64  `json:"ifRev,omitempty"`    // the key must exist at this revision
	IfAbsent bool    `json:"ifAbsent,omitempty"` // the key must not exist
}

func (t txnOp) toOp() (wire.Op, error) {
	o := wire.Op{Key: t.Key}
	switch t.Op {
	case "put":
		if t.Value == nil {
			return wire.Op{}, errors.New("put needs a value")
		}
		o.Kind, o.Value = wire.Put, []byte(*t.Value)
	case "delete":
		if t.Value != nil {
			return wire.Op{}, errors.New("delete takes no value")
		}
		o.Kind = wire.Delete
	default:
		return wire.Op{}, fmt.Errorf("op %q: want put or delete", t.Op)
	}
	switch {
	case t.Key == "":
		return wire.Op{}, errors.New("empty key")
	case t.IfRev != 0 && t.IfAbsent:
		return wire.Op{}, errors.New("ifRev and ifAbsent exclude each other")
	case t.IfRev != 0:
		o.Cond, o.CondRev = wire.CondRev, t.IfRev
	case t.IfAbsent:
		o.Cond = wire.CondAbsent
	}
	return o, nil
}

func (h *clientAPI) txn(w http.ResponseWriter, r *http.Request) {
	body, err := h.readBody(w, r)
	if err != nil {
		h.jsonFail(w, err)
		return
	}
	ops, err := parseTxn(body)
	for i := 0; err == nil && i < len(ops); i++ {
		err = h.checkKey(fmt.Sprintf("txn op %d: key", i), ops[i].Key)
	}
	if err != nil {
		h.jsonFail(w, err)
		return
	}
	res, err := h.store.Txn(r.Context(), ops)
	switch {
	case err != nil:
		h.jsonFail(w, err)
	case res.Failed >= 0:
		o := ops[res.Failed]
		writeJSON(w, h.statusCode(w, errCondition), struct {
			jsonError
			Failed int `json:"failed"`
		}{jsonError{fmt.Sprintf("condition of op %d failed: key %q is not %s; nothing was applied", res.Failed, o.Key, describeCond(o)),
			http.StatusPreconditionFailed}, res.Failed})
	default:
		type opResult struct {
			Found     bool   `json:"found"`
			CreateRev uint64 `json:"createRev,omitempty"` // puts: the key's create revision
		}
		out := struct {
			Succeeded bool       `json:"succeeded"`
			Rev       uint64     `json:"rev"`
			Results   []opResult `json:"results"`
		}{Succeeded: true, Rev: res.Rev, Results: make([]opResult, len(ops))}
		for i, f := range res.Found {
			out.Results[i].Found = f
			if res.CreateRev != nil {
				out.Results[i].CreateRev = res.CreateRev[i]
			}
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// parseTxn decodes a JSON list of operations. JSON carries text, so the body
// must be UTF-8: decoding would silently replace invalid bytes otherwise.
func parseTxn(body []byte) ([]wire.Op, error) {
	if !utf8.Valid(body) {
		return nil, fmt.Errorf("%w: body is not UTF-8 (JSON values are UTF-8 strings; use /v1/kv/ for raw bytes)", errInvalid)
	}
	var tops []txnOp
	if err := decodeStrictJSON(body, &tops); err != nil {
		return nil, fmt.Errorf(`%w: txn body must be a JSON list of operations like [{"op":"put","key":"k","value":"v"}]: %v`, errInvalid, err)
	}
	if len(tops) == 0 {
		return nil, fmt.Errorf("%w: txn body: no operations", errInvalid)
	}
	ops := make([]wire.Op, len(tops))
	for i, t := range tops {
		o, err := t.toOp()
		if err != nil {
			return nil, fmt.Errorf("%w: txn op %d: %v", errInvalid, i, err)
		}
		ops[i] = o
	}
	return ops, nil
}

// jsonProblem says what is wrong with a JSON body in the client's terms:
// which field, and what kind of value it takes (a number, a string, ...),
// rather than the Go type it would have been decoded into.
func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) {
		return err.Error()
	}
	want := "a " + te.Type.Kind().String()
	switch te.Type.Kind() {
	case reflect.Slice, reflect.Array:
		want = "a list"
	case reflect.Struct, reflect.Map:
		want = "an object"
	case reflect.String:
		want = "a string"
	case reflect.Bool:
		want = "true or false"
	case reflect.Int, reflect.Int64, reflect.Uint, reflect.Uint64, reflect.Uint32, reflect.Int32, reflect.Float64:
		want = "a number"
	}
	if te.Field == "" {
		return fmt.Sprintf("got %s where %s belongs", te.Value, want)
	}
	return fmt.Sprintf("field %q must be %s, not %s", te.Field, want, te.Value)
}

// jsonEvent is one watch event on the wire.
type jsonEvent struct {
	Type string `json:"type"`
	jsonKey
	Value       *string `json:"value,omitempty"`
	ValueBase64 []byte  `json:"valueBase64,omitempty"`
}

func newJSONEvent(e event) jsonEvent {
	je := jsonEvent{Type: e.Type.String(), jsonKey: newJSONKey(e.Key, e.Rev)}
	je.ModRev = e.Rev
	if e.Type == wire.Put {
		je.CreateRev = e.CreateRev
		if utf8.Valid(e.Value) {
			v := string(e.Value)
			je.Value = &v
		} else {
			je.ValueBase64 = e.Value
		}
	}
	return je
}

// watch streams changes as server-sent events until the client leaves, the
// member shuts down, or the watcher falls behind (then a final "cutoff"
// event names the revision to resume after).
func (h *clientAPI) watch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Has("key") == q.Has("prefix") {
		h.jsonFail(w, fmt.Errorf("%w: watch needs exactly one of key= or prefix=", errInvalid))
		return
	}
	key, prefix := q.Get("key"), q.Has("prefix")
	what := "key"
	if prefix {
		key, what = q.Get("prefix"), "prefix"
	}
	if err := h.checkKey(what, key); err != nil {
		h.jsonFail(w, err)
		return
	}
	revText := q.Get("rev")
	if revText == "" {
		revText = r.Header.Get("Last-Event-ID") // an EventSource reconnecting
	}
	var rev uint64
	if revText != "" {
		var err error
		if rev, err = strconv.ParseUint(revText, 10, 64); err != nil {
			h.jsonFail(w, fmt.Errorf("%w: rev %q", errInvalid, revText))
			return
		}
	}
	wt, backlog, from, err := h.store.Watch(key, prefix, rev, revText != "")
	var compacted *compactedError
	if errors.As(err, &compacted) {
		// The body names compactRevision, so a client can re-list and resume.
		writeJSON(w, h.statusCode(w, err), struct {
			jsonError
			CompactRevision uint64 `json:"compactRevision"`
		}{jsonError{fmt.Sprintf("watch from rev %d: %v", rev, err), http.StatusGone}, compacted.CompactRevision})
		return
	}
	if err != nil {
		h.jsonFail(w, fmt.Errorf("watch from rev %d: %w", rev, err))
		return
	}
	defer h.store.Unwatch(wt)
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	sse := sseWriter{w: w, flusher: flusher, rc: http.NewResponseController(w), timeout: h.watchWrite}
	defer sse.finish()
	sse.comment("watching")
	for _, e := range backlog {
		sse.event("", e.Rev, newJSONEvent(e))
	}
	last := from // the last revision this client has seen whole
	if n := len(backlog); n > 0 {
		last = backlog[n-1].Rev
	}
	heartbeat := time.NewTicker(h.heartbeat)
	defer heartbeat.Stop()
	for sse.err == nil {
		sse.flush()
		select {
		case evs, ok := <-wt.Revisions():
			if !ok {
				if wt.CutOff() {
					sse.event("cutoff", last, map[string]any{"type": "cutoff", "rev": last,
						"error": fmt.Sprintf("this watcher fell behind; watch again with rev=%d", last)})
					sse.flush()
				}
				return
			}
			for _, e := range evs {
				sse.event("", e.Rev, newJSONEvent(e))
			}
			wt.Received(evs)
			last = evs[0].Rev
		case <-heartbeat.C:
			sse.comment("heartbeat")
		case <-r.Context().Done():
			return
		case <-h.closing:
			return
		}
	}
}

// sseWriter writes server-sent events; the first write error sticks. Each
// event and heartbeat must reach the client within timeout (if set): a
// watcher that stops reading fills its connection's buffers, and its write
// then fails instead of holding the stream, its goroutine and its
// connection for ever.
type sseWriter struct {
	w       http.ResponseWriter
	flusher http.Flusher
	rc      *http.ResponseController
	timeout time.Duration
	err     error
}

// deadline bounds the next write and its flush. The stream flushes after
// every event, so the bound is per event.
func (s *sseWriter) deadline() {
	if s.timeout > 0 {
		s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	}
}

// finish gives the end of the response (written by net/http after the
// handler returns) a fresh deadline of its own.
func (s *sseWriter) finish() { s.deadline() }

func (s *sseWriter) comment(text string) {
	if s.err == nil {
		s.deadline()
		_, s.err = fmt.Fprintf(s.w, ": %s\n\n", text)
	}
}

func (s *sseWriter) event(name string, rev uint64, v any) {
	if s.err != nil {
		return
	}
	s.deadline()
	data, err := json.Marshal(v)
	if err != nil {
		s.err = err
		return
	}
	if name != "" {
		fmt.Fprintf(s.w, "event: %s\n", name)
	}
	_, s.err = fmt.Fprintf(s.w, "id: %d\ndata: %s\n\n", rev, data)
}

func (s *sseWriter) flush() {
	if s.err == nil && s.flusher != nil {
		s.flusher.Flush()
	}
}

// jsonError is the body of every /v1 error.
type jsonError struct {
	Error string `json:"error"`
	Code  int    `json:"code"`
}

func (h *clientAPI) jsonFail(w http.ResponseWriter, err error) {
	code := h.statusCode(w, err)
	writeJSON(w, code, jsonError{Error: err.Error(), Code: code})
}

// writeJSON answers v as JSON: compact, or indented if the request asked
// for ?pretty (ServeHTTP notes it in the statusRecorder under w).
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	if wantsPretty(w) {
		enc.SetIndent("", "  ")
	}
	enc.Encode(v)
}

// wantsPretty finds the statusRecorder under w, however wrapped, and
// reports whether its request asked for ?pretty.
func wantsPretty(w http.ResponseWriter) bool {
	for {
		if rec, ok := w.(*statusRecorder); ok {
			return rec.pretty
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return false
		}
		w = u.Unwrap()
	}
}
