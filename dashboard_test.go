package main

// The server side of the dashboard (README, "The dashboard"): /ui's
// embedded files, GET /v1/cluster/status and the peer route it asks,
// ?pretty. The page itself is tested in a browser, in e2e/ui_test.go.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"go.etcd.io/etcd/client/pkg/v3/transport"
)

// /ui serves the embedded files with their types, an ETag (304 when the
// browser has the file), no-cache, and a CSP that allows only the page's
// own origin; other methods get 405, unknown files 404.
func TestUIFiles(t *testing.T) {
	srv := newTestAPI(t, newFakeStore())
	for path, ctype := range map[string]string{
		"/ui":               "text/html; charset=utf-8",
		"/ui/":              "text/html; charset=utf-8",
		"/ui/index.html":    "text/html; charset=utf-8",
		"/ui/app.js":        "text/javascript; charset=utf-8",
		"/ui/style.css":     "text/css; charset=utf-8",
		"/ui/uplot.min.js":  "text/javascript; charset=utf-8",
		"/ui/uplot.min.css": "text/css; charset=utf-8",
		"/ui/uplot.LICENSE": "text/plain; charset=utf-8",
	} {
		r := do(t, http.MethodGet, srv.URL+path, "")
		if r.code != http.StatusOK || r.header.Get("Content-Type") != ctype || r.body == "" {
			t.Errorf("GET %s: %d %q, want 200 %q with a body", path, r.code, r.header.Get("Content-Type"), ctype)
			continue
		}
		csp := r.header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: CSP %q lacks %q", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") || strings.Contains(csp, "http") {
			t.Errorf("GET %s: CSP %q allows more than the page's origin", path, csp)
		}
		if r.header.Get("Cache-Control") != "no-cache" || r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: Cache-Control %q, X-Content-Type-Options %q", path, r.header.Get("Cache-Control"), r.header.Get("X-Content-Type-Options"))
		}
		etag := r.header.Get("ETag")
		if again := do(t, http.MethodGet, srv.URL+path, "", "If-None-Match", etag); etag == "" || again.code != http.StatusNotModified || again.body != "" {
			t.Errorf("GET %s with If-None-Match %s: %d %q, want 304", path, etag, again.code, again.body)
		}
		if head := do(t, http.MethodHead, srv.URL+path, ""); head.code != http.StatusOK || head.body != "" || head.header.Get("ETag") != etag {
			t.Errorf("HEAD %s: %d %q ETag %q", path, head.code, head.body, head.header.Get("ETag"))
		}
	}
	if r := do(t, http.MethodGet, srv.URL+"/ui/nothing.js", ""); r.code != http.StatusNotFound {
		t.Errorf("GET /ui/nothing.js: %s, want 404", r)
	}
	if r := do(t, http.MethodPost, srv.URL+"/ui", ""); r.code != http.StatusMethodNotAllowed || r.header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /ui: %s Allow %q, want 405", r, r.header.Get("Allow"))
	}
}

// The page loads nothing from the network: every src and href in it names
// one of the embedded files.
func TestUILoadsOnlyItsOwnFiles(t *testing.T) {
	page := string(uiFiles["index.html"].body)
	refs := regexp.MustCompile(`(?:src|href)="([^"]*)"`).FindAllStringSubmatch(page, -1)
	if len(refs) < 4 {
		t.Fatalf("index.html names %d files, want its scripts and styles", len(refs))
	}
	for _, ref := range refs {
		name, ok := strings.CutPrefix(ref[1], "/ui/")
		if _, embedded := uiFiles[name]; !(ok && embedded) && !strings.HasPrefix(ref[1], "#") {
			t.Errorf("index.html loads %q, which is not an embedded file", ref[1])
		}
	}
	if strings.Contains(string(uiFiles["app.js"].body), "://") {
		t.Error("app.js names an absolute URL; the page must talk only to the member that served it")
	}
}

// ?pretty indents any JSON answer; without it, JSON is one line.
func TestPrettyJSON(t *testing.T) {
	f := newFakeStore()
	f.kv["k"] = kvItem{Key: "k", Value: []byte("v"), Rev: 3}
	srv := newTestAPI(t, f)
	for _, path := range []string{"/v1/status", "/v1/kv?prefix=", "/v1/members", "/v1/cluster/status", "/v1/nothing", "/health"} {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		compact := do(t, http.MethodGet, srv.URL+path, "")
		pretty := do(t, http.MethodGet, srv.URL+path+sep+"pretty", "")
		if strings.Count(compact.body, "\n") != 1 {
			t.Errorf("GET %s: %q, want one line of JSON", path, compact.body)
		}
		if !strings.Contains(pretty.body, "{\n  \"") || pretty.code != compact.code {
			t.Errorf("GET %s?pretty: %s, want the same answer indented", path, pretty)
		}
		var a, b any
		if json.Unmarshal([]byte(compact.body), &a) != nil || json.Unmarshal([]byte(pretty.body), &b) != nil ||
			fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("GET %s: compact %q and pretty %q differ", path, compact.body, pretty.body)
		}
	}
}

// clusterStatusOf reads GET /v1/cluster/status from the member at base.
func clusterStatusOf(t *testing.T, base string) clusterStatus {
	t.Helper()
	r := do(t, http.MethodGet, base+"/v1/cluster/status", "")
	var cs clusterStatus
	if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &cs) != nil {
		t.Fatalf("GET /v1/cluster/status: %s", r)
	}
	return cs
}

// GET /v1/cluster/status reports every member's status, gathered over the
// peer port, with its lag behind the leader; a stopped member is there,
// unreachable, with the reason.
func TestClusterStatusWithOneMemberUnreachable(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lead := c.waitLeader()
	base := c.members[0].srv.URL
	putOK(t, base, "k", "v")
	getLinearizable(t, base, "k", "v")

	cs := clusterStatusOf(t, base)
	if cs.ID != 1 || cs.Leader != lead || len(cs.Members) != 3 {
		t.Fatalf("cluster status %+v, want 3 members seen by member 1 with leader %d", cs, lead)
	}
	for i, m := range cs.Members {
		if m.ID != uint64(i+1) || !m.Reachable || m.Status == nil || m.Status.ID != m.ID || m.Lag == nil || m.PeerURL != c.peers[i] {
			t.Errorf("member %d: %+v, want reachable with its own status and a lag", i+1, m)
		}
	}
	own := cs.Members[0].Status
	if own.WritesApplied == 0 || own.ReadsServed == 0 || own.WALFsync == nil || own.WALFsync.Count == 0 ||
		len(own.WALFsync.Bounds) != len(own.WALFsync.Counts) {
		t.Errorf("member 1's counters: writes %d, reads %d, WAL fsync %+v; want them counted", own.WritesApplied, own.ReadsServed, own.WALFsync)
	}

	down := 3
	if lead == 3 {
		down = 2
	}
	c.members[down-1].stop()
	cs = clusterStatusOf(t, base)
	if len(cs.Members) != 3 {
		t.Fatalf("cluster status lists %d members, want 3", len(cs.Members))
	}
	for _, m := range cs.Members {
		if up := m.ID != uint64(down); m.Reachable != up || (m.Status != nil) != up || (m.Error != "") == up {
			t.Errorf("member %d: reachable %v, status %v, error %q; want reachable %v", m.ID, m.Reachable, m.Status != nil, m.Error, up)
		}
	}
}

// The peer port serves the member's status (GET only); with peer TLS the
// aggregation asks it with the peer client's certificate.
func TestPeerStatusRouteOverTLS(t *testing.T) {
	certDir := t.TempDir()
	ca := newTestCA(t, certDir, "ca")
	lns, peers := freeListeners(t, 3)
	for i, ln := range lns {
		peers[i] = "https://" + ln.Addr().String()
	}
	c := &testCluster{t: t, dir: t.TempDir(), peers: peers}
	for i := range 3 {
		cert := ca.issue(t, certDir, fmt.Sprintf("member-%d", i+1))
		cfg := testRaftConfig(t, uint64(i+1), peers, c.dir)
		cfg.PeerListener = lns[i]
		cfg.PeerTLS = transport.TLSInfo{CertFile: cert.certFile, KeyFile: cert.keyFile, TrustedCAFile: ca.certFile, ClientCertAuth: true}
		c.members = append(c.members, startMember(t, cfg))
	}
	c.waitLeader()

	client := ca.issue(t, certDir, "client")
	https := ca.httpsClient(t, &client)
	r, err := send(t.Context(), https, http.MethodGet, peers[1]+peerStatusPath, "")
	var st memberStatus
	if err != nil || r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &st) != nil || st.ID != 2 {
		t.Fatalf("GET %s%s: %v %+v, want member 2's status", peers[1], peerStatusPath, err, r)
	}
	if r, err := send(t.Context(), https, http.MethodPost, peers[1]+peerStatusPath, ""); err != nil || r.code != http.StatusMethodNotAllowed {
		t.Errorf("POST %s: %v %+v, want 405", peerStatusPath, err, r)
	}
	for _, m := range clusterStatusOf(t, c.members[0].srv.URL).Members {
		if !m.Reachable || m.Status == nil || m.Status.ID != m.ID {
			t.Errorf("member %d over peer TLS: %+v, want its status", m.ID, m)
		}
	}
}

// A member's client URL has its peer URL's host, its --port, and https
// when it serves TLS.
func TestClientURLOf(t *testing.T) {
	for _, tc := range []struct{ peer, scheme, want string }{
		{"http://127.0.0.1:12379", "http", "http://127.0.0.1:12380"},
		{"https://node-1.example:2380", "https", "https://node-1.example:12380"},
		{"http://[::1]:2380", "http", "http://[::1]:12380"},
	} {
		if got := clientURLOf(tc.peer, tc.scheme, 12380); got != tc.want {
			t.Errorf("clientURLOf(%q, %q, 12380) = %q, want %q", tc.peer, tc.scheme, got, tc.want)
		}
	}
}
