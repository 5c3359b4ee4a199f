package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeKV is an in-memory stand-in for one member's /v1 API, as docs/API.md
// describes it, for tests of kvctl's side of each exchange. The
// end-to-end tests (kvctl_e2e_test.go) run the real thing.
type fakeKV struct {
	mu       sync.Mutex
	rev      uint64
	data     map[string]fakeItem
	txns     [][]byte // bodies of the POST /v1/txn requests taken
	puts     int      // PUT /v1/kv requests taken
	requests int
	url      string // once served
}

type fakeItem struct {
	value []byte
	rev   uint64
}

func newFakeKV() *fakeKV { return &fakeKV{data: map[string]fakeItem{}, rev: 1} }

// serve starts an HTTP server for f, closed when the test ends.
func (f *fakeKV) serve(t *testing.T) string {
	if f.url != "" {
		return f.url
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return srv.URL
}

func (f *fakeKV) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	body, _ := io.ReadAll(r.Body)
	switch p := r.URL.Path; {
	case p == "/v1/kv":
		f.list(w, r)
	case strings.HasPrefix(p, "/v1/kv/"):
		f.key(w, r, strings.TrimPrefix(p, "/v1/kv/"), body)
	case p == "/v1/txn":
		f.txns = append(f.txns, body)
		f.txn(w, body)
	case p == "/v1/members":
		fmt.Fprint(w, `{"members":[{"id":1,"peerURL":"http://127.0.0.1:1001","learner":false,"leader":true},{"id":2,"peerURL":"http://127.0.0.1:1002","learner":true,"leader":false}]}`)
	case p == "/v1/status":
		fmt.Fprintf(w, `{"id":1,"clusterID":"abc","leader":1,"term":3,"raftState":"StateLeader","commitIndex":%d,"appliedIndex":%d,"members":[{"id":1,"peerURL":"http://127.0.0.1:1001"}],"keys":%d,"stateBytes":2048,"version":"test"}`,
			f.rev, f.rev, len(f.data))
	default:
		jsonFail(w, http.StatusNotFound, "no such endpoint "+p)
	}
}

func jsonFail(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"error": msg, "code": code})
}

func (f *fakeKV) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 1000
	if s := q.Get("limit"); s != "" {
		limit, _ = strconv.Atoi(s)
	}
	var keys []string
	for k := range f.data {
		if strings.HasPrefix(k, q.Get("prefix")) && k > q.Get("after") {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	more := len(keys) > limit
	keys = keys[:min(limit, len(keys))]
	out := struct {
		Keys []kv   `json:"keys"`
		More bool   `json:"more"`
		Rev  uint64 `json:"rev"`
	}{Keys: []kv{}, More: more, Rev: f.rev}
	for _, k := range keys {
		out.Keys = append(out.Keys, newKV(k, nil, f.data[k].rev).withoutValue())
	}
	json.NewEncoder(w).Encode(out)
}

func (f *fakeKV) key(w http.ResponseWriter, r *http.Request, key string, body []byte) {
	it, ok := f.data[key]
	switch r.Method {
	case http.MethodGet:
		if !ok {
			jsonFail(w, http.StatusNotFound, fmt.Sprintf("not found: key %q", key))
			return
		}
		w.Header().Set("ETag", strconv.Quote(strconv.FormatUint(it.rev, 10)))
		w.Write(it.value)
		return
	case http.MethodPut:
		f.puts++
	}
	cond := fakeCond{exists: ok, rev: it.rev}
	if !cond.holds(r.Header) {
		jsonFail(w, http.StatusPreconditionFailed, fmt.Sprintf("precondition failed: key %q", key))
		return
	}
	if r.Method == http.MethodDelete {
		if !ok {
			jsonFail(w, http.StatusNotFound, fmt.Sprintf("not found: key %q", key))
			return
		}
		f.rev++
		delete(f.data, key)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	f.rev++
	f.data[key] = fakeItem{value: body, rev: f.rev}
	w.Header().Set("ETag", strconv.Quote(strconv.FormatUint(f.rev, 10)))
	w.WriteHeader(http.StatusNoContent)
}

// fakeCond checks If-Match and If-None-Match against a key's state.
type fakeCond struct {
	exists bool
	rev    uint64
}

func (c fakeCond) holds(h http.Header) bool {
	switch m := h.Get("If-Match"); {
	case h.Get("If-None-Match") == "*":
		return !c.exists
	case m == "*":
		return c.exists
	case m != "":
		return c.exists && m == strconv.Quote(strconv.FormatUint(c.rev, 10))
	}
	return true
}

func (f *fakeKV) txn(w http.ResponseWriter, body []byte) {
	var ops []struct {
		Op       string  `json:"op"`
		Key      string  `json:"key"`
		Value    *string `json:"value"`
		IfRev    uint64  `json:"ifRev"`
		IfAbsent bool    `json:"ifAbsent"`
	}
	if err := json.Unmarshal(body, &ops); err != nil || len(ops) == 0 {
		jsonFail(w, http.StatusBadRequest, fmt.Sprintf("bad txn: %v", err))
		return
	}
	for i, o := range ops {
		it, ok := f.data[o.Key]
		if (o.IfAbsent && ok) || (o.IfRev != 0 && (!ok || it.rev != o.IfRev)) {
			w.WriteHeader(http.StatusPreconditionFailed)
			fmt.Fprintf(w, `{"error":"condition of op %d failed","code":412,"failed":%d}`, i, i)
			return
		}
	}
	f.rev++
	var found []string
	for _, o := range ops {
		_, ok := f.data[o.Key]
		found = append(found, fmt.Sprintf(`{"found":%t}`, ok))
		if o.Op == "delete" {
			delete(f.data, o.Key)
		} else {
			f.data[o.Key] = fakeItem{value: []byte(*o.Value), rev: f.rev}
		}
	}
	fmt.Fprintf(w, `{"succeeded":true,"rev":%d,"results":[%s]}`, f.rev, strings.Join(found, ","))
}

// snapshot copies the data, for comparisons.
func (f *fakeKV) snapshot() map[string][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string][]byte{}
	for k, it := range f.data {
		out[k] = bytes.Clone(it.value)
	}
	return out
}

func (f *fakeKV) counts() (txns, puts, requests int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.txns), f.puts, f.requests
}

// refusedURL is the URL of a server that has stopped: connections to it
// are refused.
func refusedURL(t *testing.T) string {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	return url
}

// answering503 is an endpoint that answers every request with 503 and msg,
// and counts them.
func answering503(t *testing.T, msg string) (string, *int) {
	var mu sync.Mutex
	n := new(int)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		*n++
		mu.Unlock()
		w.Header().Set("Retry-After", "1")
		jsonFail(w, http.StatusServiceUnavailable, msg)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, n
}

// result is what one kvctl run printed and returned.
type result struct {
	stdout, stderr string
	code           int
}

// kvctl runs one command line with stdin, bounded by a deadline.
func kvctl(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return kvctlCtx(ctx, stdin, args...)
}

func kvctlCtx(ctx context.Context, stdin string, args ...string) result {
	var out, errOut bytes.Buffer
	code := run(ctx, args, strings.NewReader(stdin), &out, &errOut)
	return result{stdout: out.String(), stderr: errOut.String(), code: code}
}

// want fails the test unless r exited with code.
func (r result) want(t *testing.T, code int) result {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	return r
}
