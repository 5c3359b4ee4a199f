package main

// Fuzz targets: the decoders of what the log and snapshots carry, and the
// HTTP handler. Seed corpora are in testdata/fuzz/<target>/; test.sh runs
// each target for a few seconds, and
//
//	go test -run '^$' -fuzz '^FuzzHTTPHandler$' -fuzztime 10m .
//
// runs one for longer.

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// Whatever the bytes of a log entry, decoding returns a request or
// errCorrupt, never panics; what it returns encodes and decodes to itself.
func FuzzDecodeRequest(f *testing.F) {
	f.Add(encodeRequest(request{ID: 1, Ops: []op{{Kind: opPut, Key: "k", Value: []byte("v")}}}))
	f.Add(encodeRequest(request{ID: 1 << 60, Ops: []op{
		{Kind: opPut, Key: "a\x00b", Value: []byte{0xff}, Cond: condRev, CondRev: 300},
		{Kind: opDelete, Key: "gone", Cond: condExists},
		{Kind: opPut, Key: "new", Value: nil, Cond: condAbsent},
	}}))
	f.Add([]byte{})
	f.Add([]byte{codecVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeRequest(data)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error %v is not errCorrupt", err)
			}
			return
		}
		if len(r.Ops) == 0 {
			t.Fatal("decoded a request without operations")
		}
		for _, o := range r.Ops {
			if o.Key == "" || (o.Kind != opPut && o.Kind != opDelete) || o.Cond > condExists {
				t.Fatalf("decoded an invalid op %+v", o)
			}
		}
		again, err := decodeRequest(encodeRequest(r))
		if err != nil || !sameRequest(again, r) {
			t.Fatalf("re-encoding %+v gave %+v, %v", r, again, err)
		}
	})
}

// sameRequest compares requests, treating nil and empty values alike.
func sameRequest(a, b request) bool {
	if a.ID != b.ID || len(a.Ops) != len(b.Ops) {
		return false
	}
	for i := range a.Ops {
		x, y := a.Ops[i], b.Ops[i]
		if x.Kind != y.Kind || x.Key != y.Key || !bytes.Equal(x.Value, y.Value) || x.Cond != y.Cond || x.CondRev != y.CondRev {
			return false
		}
	}
	return true
}

// Whatever the bytes of a snapshot's metadata or of a state file, decoding
// returns a value or an error, never panics; a decoded value encodes and
// decodes to itself.
func FuzzDecodeSnapshot(f *testing.F) {
	items := newKVTree()
	items.ReplaceOrInsert(kvItem{Key: "k", Value: []byte("v"), Rev: 9})
	items.ReplaceOrInsert(kvItem{Key: "bin\xff", Value: []byte{}, Rev: 4})
	f.Add(encodeKV(kvState{Items: items, HistStart: 3, History: []event{
		{Type: opPut, Key: "k", Value: []byte("v"), Rev: 9},
		{Type: opDelete, Key: "x", Rev: 10},
	}}))
	f.Add(encodeKV(kvState{Items: newKVTree()}))
	f.Add(encodeSnapshot(snapshotState{Members: map[uint64]string{1: "http://127.0.0.1:1", 2: "http://127.0.0.1:2"}, Removed: []uint64{3}}))
	f.Add([]byte{stateVersion})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		if s, err := decodeSnapshot(data); err == nil {
			again, err := decodeSnapshot(encodeSnapshot(s))
			if err != nil || !reflect.DeepEqual(again, s) {
				t.Fatalf("re-encoding the snapshot gave %+v, %v", again, err)
			}
		}
		st, err := decodeKV(data)
		if err != nil {
			return
		}
		st2, err := decodeKV(encodeKV(st))
		if err != nil || st2.Items.Len() != st.Items.Len() || st2.HistStart != st.HistStart || !reflect.DeepEqual(st2.History, st.History) {
			t.Fatalf("re-encoding the key-value state changed it (%v)", err)
		}
		st.Items.Ascend(func(it kvItem) bool {
			got, ok := st2.Items.Get(it)
			if !ok || !bytes.Equal(got.Value, it.Value) || got.Rev != it.Rev {
				t.Fatalf("key %q changed in a round trip", it.Key)
			}
			return true
		})
	})
}

// fuzzMaxBody is the handler's --max-request-bytes in FuzzHTTPHandler.
const fuzzMaxBody = 256

// Whatever the method, path, condition headers and body, the handler
// answers with a status from docs/API.md (never 500 from a store that does
// not fail), never panics, and /v1 errors are JSON naming their code.
func FuzzHTTPHandler(f *testing.F) {
	for _, seed := range []struct {
		method, target, ifMatch, ifNoneMatch string
		body                                 []byte
	}{
		{"PUT", "/k", "", "", []byte("v")},
		{"GET", "/k?consistency=serializable", "", "", nil},
		{"DELETE", "/k", "", "", nil},
		{"POST", "/4", "", "", []byte("http://127.0.0.1:4")},
		{"DELETE", "/1", "", "", nil},
		{"PUT", "/v1/kv/a%20b", `"3"`, "", []byte("x")},
		{"PUT", "/v1/kv/new", "", "*", []byte("x")},
		{"DELETE", "/v1/kv/k", "*", "", nil},
		{"GET", "/v1/kv?prefix=k&limit=2&after=a", "", "", nil},
		{"POST", "/v1/txn", "", "", []byte(`[{"op":"put","key":"a","value":"1","ifAbsent":true},{"op":"delete","key":"b","ifRev":3}]`)},
		{"POST", "/v1/members", "", "", []byte(`{"peerURL":"http://127.0.0.1:9","learner":true}`)},
		{"POST", "/v1/members/2/promote", "", "", nil},
		{"DELETE", "/v1/members/1", "", "", nil},
		{"POST", "/v1/leader", "", "", []byte(`{"id":1}`)},
		{"GET", "/v1/watch?key=k&rev=1", "", "", nil},
		{"GET", "/v1/status", "", "", nil},
		{"GET", "/health?serializable", "", "", nil},
		{"GET", "/metrics", "", "", nil},
		{"PATCH", "/v1/kv/k", "", "", nil},
		{"PUT", "/big", "", "", bytes.Repeat([]byte("x"), fuzzMaxBody+1)},
	} {
		f.Add(seed.method, seed.target, seed.ifMatch, seed.ifNoneMatch, seed.body)
	}
	m := newMetrics()
	valid := map[int]bool{200: true, 201: true, 204: true, 400: true, 404: true, 405: true, 409: true, 410: true, 412: true, 413: true}
	f.Fuzz(func(t *testing.T, method, target, ifMatch, ifNoneMatch string, body []byte) {
		u, err := url.ParseRequestURI(target)
		if err != nil || !validMethod(method) || !validHeaderValue(ifMatch) || !validHeaderValue(ifNoneMatch) {
			return // an HTTP server refuses these before any handler runs
		}
		store := newFakeStore()
		store.kv["k"] = kvItem{Key: "k", Value: []byte("v"), Rev: 3}
		h := newHTTPKVAPI(store, store, store, httpConfig{
			RequestTimeout: time.Second, MaxRequestBytes: fuzzMaxBody, MaxKeyBytes: 8 << 10, RetryAfter: time.Second,
			WatchHeartbeat: time.Second, Logger: zap.NewNop(), Metrics: m,
		})
		req := &http.Request{
			Method: method, URL: u, RequestURI: target, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)), Host: "fuzz",
		}
		if ifMatch != "" {
			req.Header.Set("If-Match", ifMatch)
		}
		if ifNoneMatch != "" {
			req.Header.Set("If-None-Match", ifNoneMatch)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if !valid[rec.Code] {
			t.Fatalf("%s %s: status %d %q", method, target, rec.Code, rec.Body.String())
		}
		if rec.Code == http.StatusRequestEntityTooLarge && len(body) <= fuzzMaxBody {
			t.Fatalf("%s %s: 413 for a %d-byte body", method, target, len(body))
		}
		if p := u.Path; rec.Code >= 400 && (p == "/v1" || strings.HasPrefix(p, "/v1/")) {
			var e jsonError
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code != rec.Code || e.Error == "" {
				t.Fatalf("%s %s: %d with a body that is not a JSON error: %q", method, target, rec.Code, rec.Body.String())
			}
		}
	})
}

// validMethod reports whether m is an HTTP token, as net/http requires.
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for _, c := range m {
		if c <= ' ' || c >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", c) {
			return false
		}
	}
	return true
}

// validHeaderValue reports whether v may travel in a header.
func validHeaderValue(v string) bool {
	for _, c := range []byte(v) {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
