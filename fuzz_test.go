package main

// Fuzz target of the HTTP handler. (The decoders of what the log and
// snapshots carry are fuzzed in internal/wire.) Seed corpora are in
// testdata/fuzz/<target>/; test.sh runs 10 000 inputs of each target, and
//
//	go test -run '^$' -fuzz '^FuzzHTTPHandler$' -fuzztime 10m .
//
// runs one for longer.

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

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
		{"GET", "/ui/app.js", "", "", nil},
		{"GET", "/v1/cluster/status?pretty", "", "", nil},
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
		h := newClientAPI(store, store, store, httpConfig{
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
