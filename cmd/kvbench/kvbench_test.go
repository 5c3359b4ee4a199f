package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {90, 90 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0.1, time.Millisecond}} {
		if got := percentile(lat, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if got := percentile(nil, 99); got != 0 {
		t.Errorf("p99 of nothing = %v", got)
	}
	one := []time.Duration{7 * time.Millisecond}
	if percentile(one, 50) != one[0] || percentile(one, 100) != one[0] {
		t.Error("a single sample is every percentile")
	}
	// Nearest rank: the 99th percentile of 10 samples is the largest.
	if got := percentile(lat[:10], 99); got != 10*time.Millisecond {
		t.Errorf("p99 of 10 = %v", got)
	}
}

func TestSummaryLine(t *testing.T) {
	r := &result{
		target: "raftexample", op: "put", sendTo: "all", consistency: "-",
		members: 3, conc: 64, value: 256, keys: 10000, run: 2, runs: 3,
		ops: 4, elapsed: 2 * time.Second,
		lat:     []time.Duration{time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond, 1500 * time.Microsecond * 10},
		errors:  map[string]int{"http_503": 2, "timeout": 1},
		applied: 1,
	}
	want := "kvbench: target=raftexample op=put conc=64 value=256 ops_s=2.0 p50_ms=2.000 p90_ms=15.000 p99_ms=15.000 max_ms=15.000 errors=3 applied=1.0000" +
		" members=3 send_to=all consistency=- keys=10000 ops=4 secs=2.00 error_kinds=http_503:2,timeout:1 run=2/3"
	if got := r.summary(); got != want {
		t.Errorf("summary:\n got %s\nwant %s", got, want)
	}
	r.applied, r.errors, r.lat, r.ops = -1, nil, nil, 0
	got := r.summary()
	for _, part := range []string{" ops_s=0.0 ", " p50_ms=0.000 ", " errors=0 applied=- ", " error_kinds=- "} {
		if !strings.Contains(got, part) {
			t.Errorf("summary %q lacks %q", got, part)
		}
	}
	// The fields the issue names come first, in its order.
	fields := strings.Fields(got)[1:]
	for i, name := range []string{"target", "op", "conc", "value", "ops_s", "p50_ms", "p90_ms", "p99_ms", "max_ms", "errors", "applied"} {
		if !strings.HasPrefix(fields[i], name+"=") {
			t.Errorf("field %d is %q, want %s=", i, fields[i], name)
		}
	}
}

func TestParseOptionsDefaults(t *testing.T) {
	o, err := parseOptions([]string{"-cluster", "3"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.target != "raftexample" || o.op != "put" || o.conc != 64 || o.valueSize != 256 || o.keys != 10000 ||
		o.duration != 10*time.Second || o.warmup != 2*time.Second || o.timeout != 5*time.Second ||
		o.consistency != "linearizable" || o.sendTo != "all" || !o.verify || !o.preload || o.runs != 1 {
		t.Errorf("defaults: %+v", o)
	}
	o, err = parseOptions([]string{"-endpoints", "127.0.0.1:2379, http://localhost:2380/", "-target", "etcd", "-op", "get",
		"-consistency", "serializable", "-conc", "8", "-send-to", "leader", "-member-flags", "--a 1  --b",
		"-member-env", "GOMAXPROCS=1  GODEBUG=x=1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(o.endpoints, " "); got != "http://127.0.0.1:2379 http://localhost:2380" {
		t.Errorf("endpoints %q", got)
	}
	if !o.serializable() || o.conc != 8 || o.sendTo != "leader" || strings.Join(o.memberFlags, "|") != "--a|1|--b" ||
		strings.Join(o.memberEnv, "|") != "GOMAXPROCS=1|GODEBUG=x=1" {
		t.Errorf("options: %+v", o)
	}
	o, err = parseOptions([]string{"-cluster", "1", "-load", "1000", "-conc", "4"}, io.Discard)
	if err != nil || o.op != "load" || o.keys != 1000 {
		t.Errorf("-load: %+v, %v", o, err)
	}
	o, err = parseOptions([]string{"-cluster", "3", "-load", "100000", "-op", "put", "-runs", "2"}, io.Discard)
	if err != nil || o.op != "put" || o.keys != 100000 || o.loadLimit != 10*time.Minute {
		t.Errorf("-load then puts: %+v, %v", o, err)
	}
	o, err = parseOptions([]string{"-target", "bare", "-op", "get"}, io.Discard)
	if err != nil || o.cluster != 1 {
		t.Errorf("bare starts its own server: %+v, %v", o, err)
	}
}

func TestParseOptionsRejects(t *testing.T) {
	for _, args := range [][]string{
		{},                                    // nothing to load
		{"-cluster", "3", "-target", "mysql"}, // unknown target
		{"-cluster", "3", "-op", "scan"},
		{"-cluster", "3", "-conc", "0"},
		{"-cluster", "3", "-value", "0"},
		{"-cluster", "3", "-keys", "10", "-conc", "64"}, // writers need their own keys
		{"-cluster", "3", "-duration", "0s"},
		{"-cluster", "3", "-warmup", "-1s"},
		{"-cluster", "3", "-timeout", "0s"},
		{"-cluster", "3", "-consistency", "eventual"},
		{"-cluster", "3", "-send-to", "random"},
		{"-cluster", "3", "-put-ratio", "1.5"},
		{"-cluster", "3", "-runs", "0"},
		{"-cluster", "3", "-member-env", "GOMAXPROCS"}, // not NAME=value
		{"-cluster", "3", "-member-env", "=1"},
		{"-cluster", "3", "-restart", "kill", "-restart-count", "0"},
		{"-cluster", "3", "-restart", "nicely"},
		{"-cluster", "1", "-restart", "kill"},
		{"-cluster", "3", "-load", "-1"},
		{"-cluster", "3", "-load", "100", "-load-limit", "0s"},
		{"-cluster", "12"},
		{"-cluster", "3", "-endpoints", "127.0.0.1:1"},
		{"-target", "etcd", "-cluster", "3"}, // no etcd binary
		{"-endpoints", "127.0.0.1:1", "-rss"},
		{"-endpoints", "10.0.0.1:2379"}, // not loopback
		{"-endpoints", "example.com:80"},
		{"-endpoints", "https://127.0.0.1:2379"},
		{"-endpoints", "http://127.0.0.1:2379/v1"},
		{"-endpoints", "127.0.0.1"}, // no port
		{"-target", "bare", "-send-to", "leader"},
		{"-serve-bare", "0.0.0.0:80"},
		{"-cluster", "3", "extra"},
	} {
		if _, err := parseOptions(args, io.Discard); err == nil {
			t.Errorf("%q: accepted", args)
		}
	}
}

func TestKeysAndValues(t *testing.T) {
	for _, k := range []int{0, 7, 999999, 123456789012345} {
		name := keyName(k)
		if len(name) != keyLen || name[0] != 'k' {
			t.Errorf("keyName(%d) = %q", k, name)
		}
		if n, err := strconv.Atoi(name[1:]); err != nil || n != k {
			t.Errorf("keyName(%d) = %q does not round-trip", k, name)
		}
	}
	v := makeValue(3, 17, 256)
	if len(v) != 256 || !strings.HasPrefix(string(v), "w3s17.") {
		t.Errorf("makeValue = %q", v)
	}
	if string(makeValue(3, 17, 256)) != string(v) {
		t.Error("makeValue is not deterministic")
	}
	if string(makeValue(3, 18, 256)) == string(v) || string(makeValue(4, 17, 256)) == string(v) {
		t.Error("different writes share a value")
	}
	if got := makeValue(1, 1, 3); string(got) != "w1s" {
		t.Errorf("short value %q", got)
	}
}

func TestOwnedKeysPartitionTheKeySpace(t *testing.T) {
	for _, c := range []struct{ keys, conc int }{{10, 3}, {10000, 64}, {64, 64}, {5, 8}, {1, 1}} {
		seen := make([]int, c.keys)
		for w := range c.conc {
			tr := newTracker(w, c.conc, c.keys)
			if len(tr.keys) != ownedKeys(c.keys, c.conc, w) {
				t.Fatalf("tracker size")
			}
			for j := range tr.keys {
				seen[tr.key(j)]++
			}
		}
		for k, n := range seen {
			if n != 1 {
				t.Errorf("keys=%d conc=%d: key %d owned %d times", c.keys, c.conc, k, n)
			}
		}
	}
}

func TestTrackerRecordsAcknowledgedAndUncertainWrites(t *testing.T) {
	tr := newTracker(1, 4, 20) // keys 1, 5, 9, 13, 17
	s1, s2, s3, s4 := tr.next(), tr.next(), tr.next(), tr.next()
	tr.done(0, s1, nil)
	tr.done(0, s2, errors.New("timeout"))
	tr.done(2, s3, errors.New("timeout"))
	tr.done(3, s4, nil)
	w := &worker{id: 1, track: tr}
	cs := collectChecks([]*worker{w}, 0, 1)
	if len(cs) != 2 {
		t.Fatalf("checks %+v: want the two keys with an acknowledged write", cs)
	}
	if cs[0].key != keyName(1) || cs[0].acked != s1 || len(cs[0].uncertain) != 1 || cs[0].uncertain[0] != s2 {
		t.Errorf("check 0: %+v", cs[0])
	}
	if !cs[0].accepts(makeValue(1, s1, 64), 64) || !cs[0].accepts(makeValue(1, s2, 64), 64) || cs[0].accepts(makeValue(1, s4, 64), 64) {
		t.Error("accepts: want the acknowledged and the uncertain value only")
	}
	// A later acknowledged write settles the uncertainty.
	s5 := tr.next()
	tr.done(0, s5, nil)
	if ks := tr.keys[0]; ks.acked != s5 || ks.uncertain != nil {
		t.Errorf("after a later ack: %+v", ks)
	}
	if got := collectChecks([]*worker{w}, 1, 1); len(got) != 1 {
		t.Errorf("sample of 1: %d checks", len(got))
	}
}

// fakeKV is an in-test stand-in for a raftexample member: the root paths,
// /v1/kv with ETags and conditions, and /v1/status.
type fakeKV struct {
	mu     sync.Mutex
	data   map[string][]byte
	revs   map[string]int
	rev    int
	id     uint64
	leader uint64
}

func newFakeKV(id, leader uint64) *fakeKV {
	return &fakeKV{data: map[string][]byte{}, revs: map[string]int{}, id: id, leader: leader}
}

func (f *fakeKV) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.URL.Path == "/v1/status" {
		fmt.Fprintf(w, `{"id":%d,"leader":%d,"keys":%d}`, f.id, f.leader, len(f.data))
		return
	}
	v1 := strings.HasPrefix(r.URL.Path, "/v1/kv/")
	key := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/v1/kv"), "/")
	switch r.Method {
	case http.MethodGet:
		v, ok := f.data[key]
		if !ok {
			http.Error(w, "key not found", http.StatusNotFound)
			return
		}
		if v1 {
			w.Header().Set("ETag", `"`+strconv.Itoa(f.revs[key])+`"`)
		}
		w.Write(v)
	case http.MethodPut:
		if v1 {
			cur, exists := f.revs[key]
			match, none := r.Header.Get("If-Match"), r.Header.Get("If-None-Match")
			if (none == "*" && exists) || (match != "" && match != `"`+strconv.Itoa(cur)+`"`) {
				http.Error(w, "condition failed", http.StatusPreconditionFailed)
				return
			}
		}
		body, _ := io.ReadAll(r.Body)
		f.rev++
		f.data[key], f.revs[key] = body, f.rev
		w.WriteHeader(http.StatusNoContent)
	default:
		http.Error(w, "no", http.StatusMethodNotAllowed)
	}
}

func testClients(urls []string, n int) []client {
	cs := make([]client, n)
	for i := range cs {
		cs[i] = newHTTPClient(urls[i%len(urls)], time.Second)
	}
	return cs
}

func closeAll(cs []client) {
	for _, c := range cs {
		c.Close()
	}
}

func TestVerifyFindsEveryAcknowledgedWrite(t *testing.T) {
	fake := newFakeKV(1, 1)
	srv := httptest.NewServer(fake)
	defer srv.Close()
	clients := testClients([]string{srv.URL}, 4)
	defer closeAll(clients)
	ws := newWorkers(clients, 40, 1)
	ctx := context.Background()
	if err := fill(ctx, ws, 32, time.Minute, time.Second); err != nil {
		t.Fatal(err)
	}
	checks := collectChecks(ws, 0, 1)
	if len(checks) != 40 {
		t.Fatalf("%d checks after writing 40 keys", len(checks))
	}
	v := verify(ctx, clients, checks, 32, time.Second)
	if v.checked != 40 || v.matched != 40 || v.applied() != 1 || len(v.readErrors) != 0 {
		t.Fatalf("verify: %+v", v)
	}

	// Lose one write and change another: both are found.
	fake.mu.Lock()
	delete(fake.data, keyName(7))
	fake.data[keyName(8)] = makeValue(0, 999, 32)
	fake.mu.Unlock()
	v = verify(ctx, clients, checks, 32, time.Second)
	if v.matched != 38 || v.applied() != 38.0/40 || len(v.examples) != 2 {
		t.Fatalf("verify after losing writes: %+v", v)
	}

	// A write whose answer never came may be the one that stuck.
	w := ws[keyOwner(9, 4)]
	j := 9 / 4
	seq := w.track.next()
	w.track.done(j, seq, errors.New("timeout"))
	fake.mu.Lock()
	fake.data[keyName(9)] = makeValue(w.id, seq, 32)
	fake.mu.Unlock()
	v = verify(ctx, clients, collectChecks(ws, 0, 1), 32, time.Second)
	if v.matched != 38 {
		t.Fatalf("an uncertain write that applied is not a lost one: %+v", v)
	}
}

func keyOwner(k, conc int) int { return k % conc }

func TestVerifyCountsFailedReads(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no leader", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	clients := testClients([]string{srv.URL}, 2)
	defer closeAll(clients)
	checks := []check{{key: keyName(0), acked: 1}, {key: keyName(1), worker: 1, acked: 1}}
	v := verify(context.Background(), clients, checks, 8, time.Second)
	if v.matched != 0 || v.applied() != 0 || v.readErrors["http_503"] != 2 {
		t.Fatalf("verify against a failing member: %+v", v)
	}
}

func TestLoadPhaseAgainstFake(t *testing.T) {
	fake := newFakeKV(1, 1)
	srv := httptest.NewServer(fake)
	defer srv.Close()
	clients := testClients([]string{srv.URL}, 3)
	defer closeAll(clients)
	ws := newWorkers(clients, 30, 1)
	now := time.Now()
	p := phase{op: "load", from: now, end: now.Add(time.Minute), timeout: time.Second, valueSize: 16, keys: 30}
	ops, lat, errs := runPhase(context.Background(), ws, p)
	if ops != 30 || len(lat) != 30 || len(errs) != 0 || len(fake.data) != 30 {
		t.Fatalf("load: ops=%d errs=%v stored=%d", ops, errs, len(fake.data))
	}
	for i := 1; i < len(lat); i++ {
		if lat[i] < lat[i-1] {
			t.Fatal("latencies are not sorted")
		}
	}
	// Reads, conditional writes and a mix, each bounded by a short window.
	for _, op := range []string{"get", "cas", "mixed", "put"} {
		now := time.Now()
		p := phase{op: op, from: now, end: now.Add(50 * time.Millisecond), timeout: time.Second, valueSize: 16, keys: 30, putRatio: 0.5}
		ops, _, errs := runPhase(context.Background(), ws, p)
		if ops == 0 || len(errs) != 0 {
			t.Errorf("%s: ops=%d errors=%v", op, ops, errs)
		}
	}
	v := verify(context.Background(), clients, collectChecks(ws, 0, 1), 16, time.Second)
	if v.applied() != 1 {
		t.Errorf("verify after mixed load: %+v", v)
	}
}

func TestCASConflict(t *testing.T) {
	fake := newFakeKV(1, 1)
	srv := httptest.NewServer(fake)
	defer srv.Close()
	c := newHTTPClient(srv.URL, time.Second)
	defer c.Close()
	ctx := context.Background()
	if err := c.CAS(ctx, "a", []byte("1"), false); err != nil {
		t.Fatalf("cas on an absent key: %v", err)
	}
	if err := c.CAS(ctx, "a", []byte("2"), true); err != nil {
		t.Fatalf("cas on a present key: %v", err)
	}
	// A write between the read and the conditional put makes it fail.
	racer := &racingFake{fakeKV: fake}
	srv2 := httptest.NewServer(racer)
	defer srv2.Close()
	c2 := newHTTPClient(srv2.URL, time.Second)
	defer c2.Close()
	if err := c2.CAS(ctx, "a", []byte("3"), false); !errors.Is(err, errConflict) || errorKind(err) != "conflict" {
		t.Fatalf("cas after a racing write: %v", err)
	}
	if v, err := c.Get(ctx, "a", false); err != nil || string(v) != "racer" {
		t.Fatalf("get: %q, %v", v, err)
	}
}

// racingFake writes the key itself right after answering a GET.
type racingFake struct{ *fakeKV }

func (r *racingFake) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.fakeKV.ServeHTTP(w, req)
	if req.Method == http.MethodGet {
		r.mu.Lock()
		r.rev++
		key := strings.TrimPrefix(req.URL.Path, "/v1/kv/")
		r.data[key], r.revs[key] = []byte("racer"), r.rev
		r.mu.Unlock()
	}
}

func TestPickEndpoints(t *testing.T) {
	roles := []memberRole{{"http://a", 1, 2}, {"http://b", 2, 2}, {"http://c", 3, 2}}
	for _, c := range []struct{ sendTo, want string }{{"all", "http://a http://b http://c"}, {"leader", "http://b"}, {"follower", "http://a"}} {
		eps, err := pickEndpoints(roles, c.sendTo)
		if err != nil || strings.Join(eps, " ") != c.want {
			t.Errorf("%s: %v, %v", c.sendTo, eps, err)
		}
	}
	if _, err := pickEndpoints([]memberRole{{"http://a", 1, 1}, {"http://b", 2, 2}}, "leader"); err == nil {
		t.Error("members disagreeing on the leader: accepted")
	}
	if _, err := pickEndpoints([]memberRole{{"http://a", 1, 0}}, "leader"); err == nil {
		t.Error("no leader: accepted")
	}
	if _, err := pickEndpoints([]memberRole{{"http://a", 1, 1}}, "follower"); err == nil {
		t.Error("no follower: accepted")
	}
	if _, err := pickEndpoints([]memberRole{{"http://b", 2, 1}}, "leader"); err == nil {
		t.Error("leader outside the endpoints: accepted")
	}
}

func TestRaftexampleRolesFromStatus(t *testing.T) {
	var urls []string
	for id := uint64(1); id <= 3; id++ {
		srv := httptest.NewServer(newFakeKV(id, 3))
		defer srv.Close()
		urls = append(urls, srv.URL)
	}
	roles, err := raftexampleRoles(context.Background(), urls)
	if err != nil {
		t.Fatal(err)
	}
	eps, err := pickEndpoints(roles, "leader")
	if err != nil || eps[0] != urls[2] {
		t.Fatalf("leader: %v, %v", eps, err)
	}
}

func TestErrorKind(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{errNotFound, "not_found"},
		{fmt.Errorf("x: %w", errConflict), "conflict"},
		{&statusError{code: 503}, "http_503"},
		{fmt.Errorf("put: %w", context.DeadlineExceeded), "timeout"},
		{context.Canceled, "canceled"},
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), "conn_refused"},
		{io.ErrUnexpectedEOF, "conn_reset"},
		{errors.New("mystery"), "other"},
	} {
		if got := errorKind(c.err); got != c.want {
			t.Errorf("errorKind(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}

func TestBareHandler(t *testing.T) {
	srv := httptest.NewServer(bareHandler(256))
	defer srv.Close()
	c := newHTTPClient(srv.URL, time.Second)
	defer c.Close()
	v, err := c.Get(context.Background(), keyName(1), false)
	if err != nil || len(v) != 256 {
		t.Fatalf("get: %d bytes, %v", len(v), err)
	}
	if err := c.Put(context.Background(), keyName(1), make([]byte, 256)); err != nil {
		t.Fatalf("put: %v", err)
	}
}

func TestCPUAccounting(t *testing.T) {
	total, busy, err := parseStatCPU("cpu  100 5 50 800 20 3 2 10 7 0")
	if err != nil || total != 990 || busy != 160 {
		t.Fatalf("parseStatCPU = %d, %d, %v", total, busy, err)
	}
	if _, _, err := parseStatCPU("intr 1 2 3"); err == nil {
		t.Error("parseStatCPU accepted a line that is not the cpu line")
	}
	ticks, err := parseProcStat("4242 (raft example) S 1 2 3 4 5 6 7 8 9 10 120 30 0 0 20 0 9")
	if err != nil || ticks != 150 {
		t.Fatalf("parseProcStat = %d, %v", ticks, err)
	}
	if _, err := parseProcStat("garbage"); err == nil {
		t.Error("parseProcStat accepted garbage")
	}
	now := time.Now()
	a := cpuSample{at: now, total: 0, busy: 0, self: 0, procs: map[int]uint64{1: 0}}
	b := cpuSample{at: now.Add(2 * time.Second), total: 400, busy: 200, self: 100, procs: map[int]uint64{1: 200}}
	u := cpuBetween(a, b)
	if u.client != 0.5 || u.sut != 1 {
		t.Errorf("cpuBetween = %+v", u)
	}
	if got := (cpuUse{machine: 2, sut: 1, client: 0.5}).fields(true); got != "cpu_sut=1.00 cpu_client=0.50 cpu_other=0.50" {
		t.Errorf("fields = %q", got)
	}
	if got := (cpuUse{machine: 1, client: 0.25}).fields(false); got != "cpu_sut=- cpu_client=0.25 cpu_other=0.75" {
		t.Errorf("fields without members = %q", got)
	}
}

func TestMeasureLoadReturnsWhenEveryKeyIsWritten(t *testing.T) {
	fake := newFakeKV(1, 1)
	srv := httptest.NewServer(fake)
	defer srv.Close()
	clients := testClients([]string{srv.URL}, 2)
	defer closeAll(clients)
	o, err := parseOptions([]string{"-endpoints", srv.URL, "-conc", "2", "-load", "20", "-value", "16"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ws := newWorkers(clients, o.keys, 1)
	done := make(chan *result, 1)
	go func() { done <- measure(context.Background(), o, "load", ws, nil, []string{srv.URL}, 1, 1) }()
	select {
	case res := <-done:
		if res.ops != 20 || res.op != "load" || res.errorCount() != 0 {
			t.Errorf("load result: %+v", res)
		}
	case <-time.After(time.Minute): // -load-limit is 10 minutes
		t.Fatal("measure waited for -load-limit after every key was written")
	}
}

func TestScanMetric(t *testing.T) {
	page := `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 42
# HELP raftexample_snapshot_duration_seconds Time to encode and save one snapshot.
raftexample_snapshot_duration_seconds_sum 0.25
raftexample_snapshot_in_progress_total 9
raftexample_snapshot_in_progress{member="2"} 7
# HELP raftexample_snapshot_in_progress 1 while this member writes a snapshot of its own.
# TYPE raftexample_snapshot_in_progress gauge
raftexample_snapshot_in_progress 1
raftexample_proposals_pending 0
`
	if v, err := scanMetric(strings.NewReader(page), snapshotGauge); err != nil || v != 1 {
		t.Errorf("scanMetric = %v, %v; want 1", v, err)
	}
	if v, err := scanMetric(strings.NewReader("go_goroutines 42\n"), "go_goroutines"); err != nil || v != 42 {
		t.Errorf("go_goroutines = %v, %v", v, err)
	}
	// A sample may carry a timestamp in milliseconds.
	if v, err := scanMetric(strings.NewReader(snapshotGauge+" 0 1712345678000\n"), snapshotGauge); err != nil || v != 0 {
		t.Errorf("with a timestamp: %v, %v", v, err)
	}
	for _, bad := range []string{
		"",
		"raftexample_snapshot_in_progress_total 1\n", // only a metric whose name starts the same
		`raftexample_snapshot_in_progress{member="1"} 1` + "\n",
		"# raftexample_snapshot_in_progress 1\n",
		"raftexample_snapshot_in_progress yes\n",
	} {
		if v, err := scanMetric(strings.NewReader(bad), snapshotGauge); err == nil {
			t.Errorf("scanMetric(%q) = %v, want an error", bad, v)
		}
	}
}

// msDur is a number of milliseconds as a duration, for synthetic timelines.
func msDur(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestSnapshotTimeline(t *testing.T) {
	yes, no := true, false
	tl := newSnapshotTimeline(2)
	round := func(sent int, a, b bool, okA, okB bool) {
		tl.observe(msDur(sent), msDur(sent+2), []bool{a, b}, []bool{okA, okB})
	}
	round(0, no, no, yes, yes)
	round(20, yes, no, yes, yes) // member 1 starts: from the idle round's sending...
	round(40, yes, yes, yes, yes)
	round(60, no, yes, yes, yes)
	round(80, no, no, yes, yes) // ...to this idle round's answer
	round(100, no, no, yes, yes)
	round(120, no, yes, yes, no) // member 2 busy, but its poll failed: not known
	round(140, no, yes, yes, yes)
	round(160, no, no, yes, no) // member 2 keeps its last known state
	round(180, no, no, yes, yes)
	round(200, no, no, yes, yes)
	round(220, yes, no, yes, yes)
	// The interval that closed at 242 ends after the next one starts (at
	// 240, when the idle round was sent): joined, and still open at the end.
	round(240, no, no, yes, yes)
	round(260, yes, no, yes, yes)
	got := tl.finish(msDur(270))
	want := []interval{{msDur(0), msDur(82)}, {msDur(120), msDur(182)}, {msDur(200), msDur(270)}}
	if len(got) != len(want) {
		t.Fatalf("intervals %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("interval %d = %v, want %v", i, got[i], want[i])
		}
	}

	// Rounds closer together than a round takes: the next interval would
	// start before the last one ended, so they are one.
	tl = newSnapshotTimeline(1)
	tl.observe(msDur(0), msDur(30), []bool{true}, []bool{true})
	tl.observe(msDur(20), msDur(50), []bool{false}, []bool{true})
	tl.observe(msDur(40), msDur(70), []bool{true}, []bool{true})
	tl.observe(msDur(60), msDur(90), []bool{false}, []bool{true})
	if got := tl.finish(msDur(100)); len(got) != 1 || got[0] != (interval{0, msDur(90)}) {
		t.Errorf("overlapping intervals: %v", got)
	}
	if got := newSnapshotTimeline(3).finish(msDur(5)); len(got) != 0 {
		t.Errorf("no rounds: %v", got)
	}
}

func TestSplitBySnapshots(t *testing.T) {
	ivs := []interval{{msDur(100), msDur(200)}, {msDur(500), msDur(600)}}
	var ops []timedOp
	// Operations of 1 ms that start every 10 ms over the first second;
	// those overlapping a snapshot take 10 times as long.
	wantSnap := 0
	for start := 0; start < 1000; start += 10 {
		op := timedOp{start: msDur(start), lat: msDur(1)}
		if (start >= 100 && start <= 200) || (start >= 500 && start <= 600) {
			op.lat = msDur(10)
			wantSnap++
		}
		ops = append(ops, op)
	}
	// One sent before the snapshot that waits into it, one that ends just
	// before it, one that starts right after it.
	ops = append(ops, timedOp{msDur(95), msDur(30)}, timedOp{msDur(95), msDur(4)}, timedOp{msDur(201), msDur(1)})
	wantSnap++

	snap, steady := splitBySnapshots(ops, ivs)
	if len(snap) != wantSnap || len(snap)+len(steady) != len(ops) {
		t.Fatalf("split %d/%d, want %d in snapshots of %d", len(snap), len(steady), wantSnap, len(ops))
	}
	if percentile(snap, 50) != msDur(10) || percentile(snap, 100) != msDur(30) {
		t.Errorf("snapshot percentiles p50 %v max %v", percentile(snap, 50), percentile(snap, 100))
	}
	if percentile(steady, 99) != msDur(4) || percentile(steady, 50) != msDur(1) {
		t.Errorf("steady percentiles p50 %v p99 %v", percentile(steady, 50), percentile(steady, 99))
	}

	// Intervals reaching outside the window count only inside it.
	s := newSnapshotSplit(snapshotWatch{intervals: append(ivs, interval{msDur(950), msDur(1200)}), polls: 100, pollErrors: 3},
		ops, msDur(1000))
	if s.covered != msDur(250) || s.intervals != 3 {
		t.Errorf("covered %v in %d intervals, want 250ms in 3", s.covered, s.intervals)
	}
	got := s.fields()
	for _, part := range []string{"snap_p50_ms=10.000 ", "snap_p99_ms=", "steady_p50_ms=1.000 ", " snap_secs=0.25 ",
		" snap_intervals=3 ", " snap_polls=100 snap_poll_errors=3"} {
		if !strings.Contains(got, part) {
			t.Errorf("fields %q lack %q", got, part)
		}
	}

	// No snapshots: every operation is steady and the snapshot side is empty.
	s = newSnapshotSplit(snapshotWatch{polls: 10}, ops, msDur(1000))
	if len(s.steady) != len(ops) {
		t.Errorf("without snapshots %d of %d are steady", len(s.steady), len(ops))
	}
	got = s.fields()
	if !strings.HasPrefix(got, "snap_ops=0 snap_p50_ms=- snap_p99_ms=- steady_ops=") ||
		!strings.Contains(got, " snap_p99_ratio=- snap_secs=0.00 snap_intervals=0 ") {
		t.Errorf("fields without snapshots: %q", got)
	}
}

func TestSnapshotSplitRatio(t *testing.T) {
	s := &snapshotSplit{snap: []time.Duration{msDur(3)}, steady: []time.Duration{msDur(1), msDur(2)}}
	if got := s.fields(); !strings.Contains(got, " snap_p99_ratio=1.50 ") {
		t.Errorf("ratio: %q", got)
	}
}

// gaugeServer answers /metrics with the snapshot gauge from values, one
// request after another (the last value from then on), and calls after
// once it has answered n requests.
func gaugeServer(values []int, n int, after func()) *httptest.Server {
	var mu sync.Mutex
	served := 0
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		v := values[min(served, len(values)-1)]
		served++
		if served == n {
			after()
		}
		mu.Unlock()
		fmt.Fprintf(w, "# TYPE %s gauge\n%s %d\n", snapshotGauge, snapshotGauge, v)
	}))
}

func TestWatchSnapshotsPollsUntilStopped(t *testing.T) {
	stopped := make(chan struct{})
	var once sync.Once
	member := gaugeServer([]int{0, 0, 1, 1, 1, 0}, 10, func() { once.Do(func() { close(stopped) }) })
	defer member.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusInternalServerError)
	}))
	defer broken.Close()

	from := time.Now()
	w := watchSnapshots(context.Background(), []string{member.URL, broken.URL}, from, from.Add(time.Hour), stopped,
		time.Millisecond, time.Second)
	took := time.Since(from)
	if w.polls < 20 || w.polls%2 != 0 || w.pollErrors != w.polls/2 {
		t.Errorf("polls %d, errors %d: want at least 10 rounds of 2, the broken member's failing", w.polls, w.pollErrors)
	}
	if len(w.intervals) != 1 {
		t.Fatalf("intervals %v, want one", w.intervals)
	}
	if iv := w.intervals[0]; iv.start < 0 || iv.end <= iv.start || iv.end > took {
		t.Errorf("interval %v outside the %v polled", iv, took)
	}
}

func TestWatchSnapshotsStopsAtTheEndOfTheWindow(t *testing.T) {
	member := gaugeServer([]int{1}, 0, func() {})
	defer member.Close()
	from := time.Now()
	never := make(chan struct{})
	w := watchSnapshots(context.Background(), []string{member.URL}, from, from.Add(50*time.Millisecond), never,
		time.Millisecond, time.Second)
	// Busy throughout: one interval from the start to when polling stopped.
	if len(w.intervals) != 1 || w.intervals[0].start != 0 || w.intervals[0].end < 50*time.Millisecond || w.pollErrors != 0 {
		t.Errorf("watch %+v", w)
	}
}

func TestMeasureSplitsBySnapshots(t *testing.T) {
	fake := newFakeKV(1, 1)
	mux := http.NewServeMux()
	mux.Handle("/", fake)
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s 1\n", snapshotGauge) // forever snapshotting
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	clients := testClients([]string{srv.URL}, 2)
	defer closeAll(clients)
	o, err := parseOptions([]string{"-endpoints", srv.URL, "-conc", "2", "-keys", "20", "-value", "16",
		"-warmup", "0s", "-duration", "100ms", "-snapshot-split"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ws := newWorkers(clients, o.keys, 1)
	res := measure(context.Background(), o, "put", ws, nil, []string{srv.URL}, 1, 1)
	s := res.snapshots
	if s == nil || res.ops == 0 || len(s.snap) != res.ops || len(s.steady) != 0 || s.intervals != 1 || s.pollErrors != 0 {
		t.Fatalf("ops %d, split %+v: want every operation in the one snapshot", res.ops, s)
	}
	if !strings.Contains(res.summary(), " steady_ops=0 steady_p50_ms=- steady_p99_ms=- snap_p99_ratio=- ") {
		t.Errorf("summary %q", res.summary())
	}
	if _, err := parseOptions([]string{"-target", "etcd", "-endpoints", srv.URL, "-snapshot-split"}, io.Discard); err == nil {
		t.Error("-snapshot-split with -target etcd: accepted")
	}
}
