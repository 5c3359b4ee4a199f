package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"raftexample/internal/wire"
)

// fakeStore is an in-memory kvAPI and clusterAPI that can be told to fail.
type fakeStore struct {
	mu      sync.Mutex
	kv      map[string]kvItem
	rev     uint64
	members map[uint64]string
	err     error // returned by every call when set
}

func newFakeStore() *fakeStore {
	return &fakeStore{kv: map[string]kvItem{}, members: map[uint64]string{1: "http://127.0.0.1:1"}}
}

func (f *fakeStore) Get(_ context.Context, key string, _ bool) (kvItem, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	it, ok := f.kv[key]
	return it, ok, f.err
}

func (f *fakeStore) List(_ context.Context, prefix, after string, limit int, _ bool) (listPage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var keys []string
	for k := range f.kv {
		if strings.HasPrefix(k, prefix) && k > after {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var items []kvItem
	for _, k := range keys[:min(limit, len(keys))] {
		items = append(items, f.kv[k])
	}
	return listPage{Items: items, More: len(keys) > limit}, f.err
}

func (f *fakeStore) Txn(_ context.Context, ops []wire.Op) (txnResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return txnResult{}, f.err
	}
	f.rev++
	res := txnResult{Rev: f.rev, Failed: -1, Found: make([]bool, len(ops))}
	for i, o := range ops {
		cur, ok := f.kv[o.Key]
		res.Found[i] = ok
		if !condHolds(o, cur, ok) {
			res.Failed = i
			return res, nil
		}
	}
	for _, o := range ops {
		if o.Kind == wire.Put {
			f.kv[o.Key] = kvItem{Key: o.Key, Value: o.Value, Rev: f.rev}
		} else {
			delete(f.kv, o.Key)
		}
	}
	return res, nil
}

func (f *fakeStore) Watch(string, bool, uint64, bool) (*watcher, []event, uint64, error) {
	return nil, nil, 0, errCompacted
}

func (f *fakeStore) Unwatch(*watcher) {}

func (f *fakeStore) AddMember(_ context.Context, id uint64, u string, learner bool) (memberInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return memberInfo{}, f.err
	}
	if err := validatePeerURL(u); err != nil {
		return memberInfo{}, err
	}
	if _, ok := f.members[id]; ok {
		return memberInfo{}, fmt.Errorf("%w: member %d exists", errConflict, id)
	}
	f.members[id] = u
	return memberInfo{ID: id, PeerURL: u, Learner: learner}, nil
}

func (f *fakeStore) ListMembers() []memberInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []memberInfo
	for id, u := range f.members {
		out = append(out, memberInfo{ID: id, PeerURL: u})
	}
	return out
}

func (f *fakeStore) PromoteMember(context.Context, uint64) error  { return f.err }
func (f *fakeStore) TransferLeader(context.Context, uint64) error { return f.err }

func (f *fakeStore) Status() memberStatus { return memberStatus{ID: 1, Members: f.ListMembers()} }

func (f *fakeStore) Health(context.Context, bool) error { return f.err }

func (f *fakeStore) ClusterStatus(context.Context) clusterStatus {
	return clusterStatus{ID: 1, Members: []clusterMember{{memberInfo: memberInfo{ID: 1}, Reachable: true}}}
}

func (f *fakeStore) RemoveMember(_ context.Context, id uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	if _, ok := f.members[id]; !ok {
		return fmt.Errorf("%w: member %d", errNotFound, id)
	}
	delete(f.members, id)
	return nil
}

func newTestAPI(t *testing.T, f *fakeStore) *httptest.Server {
	srv := httptest.NewServer(newClientAPI(f, f, f, httpConfig{
		RequestTimeout: time.Second, MaxRequestBytes: 64, MaxKeyBytes: 8 << 10, RetryAfter: 1500 * time.Millisecond,
		Logger: zap.NewNop(), Metrics: newMetrics(),
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestHTTPKeyIsDecodedPathWithoutQuery(t *testing.T) {
	f := newFakeStore()
	srv := newTestAPI(t, f)
	if r := do(t, http.MethodPut, srv.URL+"/my%20key?x=1", "v"); r.code != http.StatusNoContent {
		t.Fatalf("PUT: %d", r.code)
	}
	if _, ok := f.kv["my key"]; !ok || len(f.kv) != 1 {
		t.Fatalf("stored keys %v, want just \"my key\"", f.kv)
	}
	if r := do(t, http.MethodGet, srv.URL+"/my%20key", ""); r.code != http.StatusOK || r.body != "v" {
		t.Fatalf("GET: %d %q", r.code, r.body)
	}
}

func TestHTTPDeleteKeyOrMember(t *testing.T) {
	f := newFakeStore()
	f.kv["k1"] = kvItem{Key: "k1", Value: []byte("v"), Rev: 1}
	srv := newTestAPI(t, f)
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/k1", http.StatusNoContent}, // a key
		{"/k1", http.StatusNotFound},  // already gone
		{"/1", http.StatusNoContent},  // member 1
		{"/1", http.StatusNotFound},   // no such member
		{"/0", http.StatusBadRequest}, // member IDs start at 1
		{"/", http.StatusBadRequest},  // empty key
	} {
		if r := do(t, http.MethodDelete, srv.URL+tc.path, ""); r.code != tc.want {
			t.Errorf("DELETE %s: %d %q, want %d", tc.path, r.code, r.body, tc.want)
		}
	}
}

func TestHTTPErrors(t *testing.T) {
	for _, tc := range []struct {
		name, method, path, body string
		storeErr                 error
		want                     int
		wantText                 string
	}{
		{"empty key", http.MethodPut, "/", "v", nil, 400, "empty key"},
		{"bad consistency", http.MethodGet, "/k?consistency=eventual", "", nil, 400, "consistency"},
		{"body too large", http.MethodPut, "/k", strings.Repeat("x", 65), nil, 413, "too large"},
		{"bad member id", http.MethodPost, "/abc", "http://127.0.0.1:2", nil, 400, "member ID"},
		{"member id 0", http.MethodPost, "/0", "http://127.0.0.1:2", nil, 400, "member ID"},
		{"malformed peer URL", http.MethodPost, "/2", "not a url", nil, 400, "peer URL"},
		{"peer URL without port", http.MethodPost, "/2", "http://127.0.0.1", nil, 400, "peer URL"},
		{"member exists", http.MethodPost, "/1", "http://127.0.0.1:2", nil, 409, "exists"},
		{"no leader", http.MethodPut, "/k", "v", errNoLeader, 503, "no leader"},
		{"stopping", http.MethodGet, "/k", "", errStopping, 503, "stopping"},
		{"dropped", http.MethodPut, "/k", "v", errDropped, 503, "dropped"},
		{"timeout", http.MethodPut, "/k", "v", errTimeout, 504, "may still apply"},
		{"leader lost", http.MethodDelete, "/k", "", errLeaderLostMid, 503, "may still apply"},
		{"quota", http.MethodPut, "/k", "v", fmt.Errorf("%w: over --quota-bytes", errQuota), 507, "--quota-bytes"},
		{"other", http.MethodPut, "/k", "v", io.ErrUnexpectedEOF, 500, "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeStore()
			f.err = tc.storeErr
			srv := newTestAPI(t, f)
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.want || !strings.Contains(string(body), tc.wantText) {
				t.Fatalf("%s %s: %d %q, want %d containing %q", tc.method, tc.path, resp.StatusCode, body, tc.want, tc.wantText)
			}
			if ra := resp.Header.Get("Retry-After"); (tc.want == 503) != (ra != "") {
				t.Fatalf("Retry-After %q on a %d", ra, tc.want)
			} else if tc.want == 503 && ra != "2" {
				t.Fatalf("Retry-After %q, want 2 (1.5s rounded up)", ra)
			}
		})
	}
}

func TestHTTPMethodNotAllowed(t *testing.T) {
	srv := newTestAPI(t, newFakeStore())
	req, _ := http.NewRequest(http.MethodPatch, srv.URL+"/k", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") == "" {
		t.Fatalf("PATCH: %d Allow=%q", resp.StatusCode, resp.Header.Get("Allow"))
	}
}
