package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// watchScript serves GET /v1/kv (a listing at revision listRev) and
// GET /v1/watch, handing the n-th watch request to streams[n] (the last
// one keeps serving any later request).
type watchScript struct {
	t       *testing.T
	listRev uint64
	mu      sync.Mutex
	revs    []string // the rev= of each watch request, in order
	streams []func(w http.ResponseWriter, r *http.Request)
}

func (s *watchScript) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v1/kv" {
		fmt.Fprintf(w, `{"keys":[],"more":false,"rev":%d}`, s.listRev)
		return
	}
	s.mu.Lock()
	n := len(s.revs)
	s.revs = append(s.revs, r.URL.Query().Get("rev"))
	serve := s.streams[min(n, len(s.streams)-1)]
	s.mu.Unlock()
	serve(w, r)
}

func (s *watchScript) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.revs...)
}

// sse writes server-sent events and flushes: lines like "id: 3",
// "data: {...}", "" (the end of an event).
func sse(w http.ResponseWriter, lines ...string) {
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
	w.(http.Flusher).Flush()
}

func putEvent(key, value string, rev int) []string {
	return []string{fmt.Sprintf("id: %d", rev),
		fmt.Sprintf(`data: {"type":"put","key":%q,"rev":%d,"value":%q}`, key, rev, value), ""}
}

func streamHeader(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	sse(w, ": watching", "")
}

// The stream drops in the middle of revision 12 (a transaction of two
// puts), and the member then stops (503); the watch reconnects to the next
// endpoint, asks again for revision 12, skips the put it printed, and goes
// on: every change printed once, in order.
func TestWatchResumesAfterTheStreamDrops(t *testing.T) {
	first := &watchScript{t: t, listRev: 10}
	first.streams = []func(http.ResponseWriter, *http.Request){
		func(w http.ResponseWriter, r *http.Request) {
			streamHeader(w)
			sse(w, putEvent("a", "1", 11)...)
			sse(w, putEvent("b", "2", 12)...) // then the connection drops
		},
		func(w http.ResponseWriter, r *http.Request) {
			jsonFail(w, http.StatusServiceUnavailable, "this member is stopping")
		},
	}
	reached := make(chan struct{})
	second := &watchScript{t: t}
	second.streams = []func(http.ResponseWriter, *http.Request){
		func(w http.ResponseWriter, r *http.Request) {
			streamHeader(w)
			sse(w, putEvent("b", "2", 12)...)
			sse(w, putEvent("c", "3", 12)...)
			sse(w, putEvent("d", "4", 13)...)
			sse(w, "event: cutoff", `data: {"type":"cutoff","rev":13}`, "")
		},
		func(w http.ResponseWriter, r *http.Request) {
			streamHeader(w)
			close(reached)
			<-r.Context().Done()
		},
	}
	secondURL := serveHandler(t, second)
	eps := "--endpoints=" + serveHandler(t, first) + "," + secondURL

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan result, 1)
	go func() { done <- kvctlCtx(ctx, "", eps, "watch", "--prefix", "") }()
	select {
	case <-reached:
	case r := <-done:
		t.Fatalf("the watch ended early: %+v", r)
	case <-time.After(20 * time.Second):
		t.Fatal("the watch did not come back a third time")
	}
	cancel()
	r := (<-done).want(t, exitOK)

	if want := "PUT\na\n1\nPUT\nb\n2\nPUT\nc\n3\nPUT\nd\n4\n"; r.stdout != want {
		t.Errorf("printed %q, want %q", r.stdout, want)
	}
	if got := strings.Join(append(first.requests(), second.requests()...), ","); got != "10,11,11,13" {
		t.Errorf("watch requests asked for rev %s, want 10 (the listing), 11 twice (revision 12 again), then 13", got)
	}
	for _, want := range []string{"closed by the member", "fell behind", "resumed on " + secondURL} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
}

func serveHandler(t *testing.T, h http.Handler) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestWatchRevCountsFromTheFirstWanted(t *testing.T) {
	s := &watchScript{t: t}
	s.streams = []func(http.ResponseWriter, *http.Request){
		func(w http.ResponseWriter, r *http.Request) {
			streamHeader(w)
			sse(w, `id: 5`, `data: {"type":"delete","key":"k","rev":5}`, "")
			sse(w, `id: 6`, `data: {"type":"put","keyBase64":"/w==","valueBase64":"AA==","rev":6}`, "")
			// The stream ends; the next request is refused for good.
		},
		func(w http.ResponseWriter, r *http.Request) {
			jsonFail(w, http.StatusBadRequest, "no more")
		},
	}
	r := kvctl(t, "", "--endpoints="+serveHandler(t, s), "-o", "table", "watch", "k", "--rev", "5").want(t, exitError)
	if got := s.requests(); got[0] != "4" {
		t.Errorf("--rev 5 asked for rev=%s, want 4 (the API's rev= is the last revision seen)", got[0])
	}
	if !strings.Contains(r.stdout, "5          DELETE k ") || !strings.Contains(r.stdout, `6          PUT    "\xff" "\x00"`) {
		t.Errorf("watch -o table printed %q", r.stdout)
	}
	if !strings.Contains(r.stderr, "400 Bad Request: no more") {
		t.Errorf("stderr %q", r.stderr)
	}
}

func TestWatchCompactedIsAnError(t *testing.T) {
	s := &watchScript{t: t}
	s.streams = []func(http.ResponseWriter, *http.Request){
		func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusGone)
			fmt.Fprint(w, `{"error":"watch from rev 3: revision is older than the retained watch history","code":410,"compactRevision":20}`)
		},
	}
	r := kvctl(t, "", "--endpoints="+serveHandler(t, s), "watch", "k", "--rev", "4").want(t, exitError)
	if !strings.Contains(r.stderr, "410 Gone: watch from rev 3") || !strings.Contains(r.stderr, "--rev 21 or later") {
		t.Errorf("stderr %q", r.stderr)
	}
}

func TestWatchFirstConnectionFails(t *testing.T) {
	r := kvctl(t, "", "--endpoints="+refusedURL(t), "watch", "k", "--rev", "1").want(t, exitError)
	if !strings.Contains(r.stderr, "connection refused") {
		t.Errorf("stderr %q", r.stderr)
	}
}
