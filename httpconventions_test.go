package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// HEAD works wherever GET does (curl -I used to get 405), answering the
// headers GET would with no body; a watch stream takes GET alone.
func TestHTTPHeadOnGetRoutes(t *testing.T) {
	f := newFakeStore()
	srv := newTestAPI(t, f)
	if r := do(t, http.MethodPut, srv.URL+"/k", "value"); r.code != http.StatusNoContent {
		t.Fatalf("PUT: %d", r.code)
	}
	for _, path := range []string{"/k", "/v1/kv/k", "/v1/kv?prefix=", "/v1/status", "/v1/members", "/health", "/metrics"} {
		get := do(t, http.MethodGet, srv.URL+path, "")
		head := do(t, http.MethodHead, srv.URL+path, "")
		if head.code != get.code || len(head.body) != 0 {
			t.Errorf("HEAD %s: %d with %d body bytes; GET answers %d", path, head.code, len(head.body), get.code)
		}
		if head.header.Get("ETag") != get.header.Get("ETag") {
			t.Errorf("HEAD %s: ETag %q, GET's is %q", path, head.header.Get("ETag"), get.header.Get("ETag"))
		}
	}
	if r := do(t, http.MethodHead, srv.URL+"/v1/watch?key=k", ""); r.code != http.StatusMethodNotAllowed {
		t.Errorf("HEAD /v1/watch: %d, want 405", r.code)
	}
	if r := do(t, http.MethodPatch, srv.URL+"/v1/status", ""); r.code != http.StatusMethodNotAllowed || r.header.Get("Allow") != "GET, HEAD" {
		t.Errorf("PATCH /v1/status: %d Allow %q, want 405 with GET, HEAD", r.code, r.header.Get("Allow"))
	}
}

// GET /v1/kv/{key} with If-None-Match naming the key's current revision
// answers 304 Not Modified without the value; any other revision gets it.
func TestV1GetIfNoneMatch(t *testing.T) {
	srv := newTestAPI(t, newFakeStore())
	rev := mustPut(t, srv.URL, "k", "value")
	cur := fmt.Sprintf(`"%d"`, rev)
	for _, tc := range []struct {
		header string
		want   int
	}{
		{cur, http.StatusNotModified},
		{`W/` + cur, http.StatusNotModified},
		{`"1", ` + cur, http.StatusNotModified},
		{"*", http.StatusNotModified},
		{fmt.Sprintf(`"%d"`, rev+1), http.StatusOK},
	} {
		r := do(t, http.MethodGet, srv.URL+"/v1/kv/k", "", "If-None-Match", tc.header)
		if r.code != tc.want || r.header.Get("ETag") != cur {
			t.Errorf("If-None-Match %s: %d ETag %q, want %d with %s", tc.header, r.code, r.header.Get("ETag"), tc.want, cur)
		}
		if want := map[int]string{304: "", 200: "value"}[tc.want]; string(r.body) != want {
			t.Errorf("If-None-Match %s: body %q, want %q", tc.header, r.body, want)
		}
	}
}

// A JSON body of the wrong shape is explained in the client's terms, not
// with the Go type it would have been decoded into.
func TestJSONShapeErrors(t *testing.T) {
	srv := newTestAPI(t, newFakeStore())
	for _, tc := range []struct{ method, path, body, want string }{
		{http.MethodPost, "/v1/txn", `{"op":"put","key":"k","value":"v"}`, "must be a JSON list of operations"},
		{http.MethodPost, "/v1/txn", `[{"op":"put","key":7,"value":"v"}]`, `field "key" must be a string, not number`},
		{http.MethodPost, "/v1/members", `{"peerURL":"http://127.0.0.1:2","id":"two"}`, `field "id" must be a number, not string`},
		{http.MethodPost, "/v1/leader", `[2]`, "got array where an object belongs"},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var je jsonError
		json.Unmarshal(b, &je)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(je.Error, tc.want) || strings.Contains(je.Error, "main.") {
			t.Errorf("%s %s %s: %d %s, want 400 saying %q", tc.method, tc.path, tc.body, resp.StatusCode, b, tc.want)
		}
	}
}

// The membership routes answer a wrong method with the API's JSON 405 and
// the methods the path takes, and an unknown path under them with its 404.
func TestMembersRoutesMethods(t *testing.T) {
	srv := newTestAPI(t, newFakeStore())
	for _, tc := range []struct {
		method, path string
		want         int
		allow        string
	}{
		{http.MethodPut, "/v1/members", 405, "GET, HEAD, POST"},
		{http.MethodDelete, "/v1/members/", 405, "GET, HEAD, POST"},
		{http.MethodGet, "/v1/members/2", 405, "DELETE"},
		{http.MethodGet, "/v1/members/2/promote", 405, "POST"},
		{http.MethodPost, "/v1/members/2/demote", 404, ""},
		{http.MethodGet, "/v1/members/", 200, ""},
	} {
		r := do(t, tc.method, srv.URL+tc.path, "")
		var je jsonError
		jsonErr := json.Unmarshal([]byte(r.body), &je)
		if r.code != tc.want || r.header.Get("Allow") != tc.allow || (tc.want >= 400 && (jsonErr != nil || je.Code != tc.want)) {
			t.Errorf("%s %s: %d Allow %q body %s, want %d with Allow %q and a JSON error", tc.method, tc.path, r.code, r.header.Get("Allow"), r.body, tc.want, tc.allow)
		}
	}
}
