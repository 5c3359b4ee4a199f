package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"raftexample/internal/proctest"
)

// TestMeasureIdleConnections is the measurement behind the "2 000 idle
// connections" row of BENCHMARKS.md, not a regular test: it takes the
// default IdleTimeout (60 s) and more. Run it with
//
//	RAFTEXAMPLE_MEASURE=1 go test -run TestMeasureIdleConnections -v -count=1 .
func TestMeasureIdleConnections(t *testing.T) {
	if testing.Short() || os.Getenv("RAFTEXAMPLE_MEASURE") == "" {
		t.Skip("a measurement; set RAFTEXAMPLE_MEASURE=1")
	}
	const n = 2000
	dir := t.TempDir()
	ports := proctest.FreePorts(t, 2)
	base := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	p := proctest.NewProc(t, "member", dir, filepath.Join(dir, "member.log"), raftexample.Path(t),
		"--cluster", fmt.Sprintf("http://127.0.0.1:%d", ports[0]), "--port", strconv.Itoa(ports[1]), "--data-dir", dir)
	p.Start()
	proctest.WaitWritable(t, base)
	pid := p.Pid()
	t.Logf("before: RSS %s, open %d", rss(t, pid), openClientConns(t, base))

	addr := strings.TrimPrefix(base, "http://")
	var mu sync.Mutex
	var lastAnswer time.Time
	var lastClose time.Duration // longest from a connection's answer to its close
	var wg sync.WaitGroup
	start := time.Now()
	for range n {
		c := proctest.DialRaw(t, addr)
		if code, _, err := c.Do(http.MethodGet, "/health", "", 10*time.Second); err != nil || code != http.StatusOK {
			t.Fatalf("GET /health: %d %v", code, err)
		}
		answered := time.Now()
		mu.Lock()
		lastAnswer = answered
		mu.Unlock()
		wg.Go(func() {
			c.SetReadDeadline(answered.Add(120 * time.Second))
			io.Copy(io.Discard, c.R)
			mu.Lock()
			lastClose = max(lastClose, time.Since(answered))
			mu.Unlock()
		})
	}
	t.Logf("opened %d keep-alive connections in %v; with them: RSS %s, open %d", n, time.Since(start).Round(time.Millisecond), rss(t, pid), openClientConns(t, base))
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-tick.C:
			t.Logf("t+%2.0fs after the last answer: open %d, RSS %s", time.Since(lastAnswer).Seconds(), openClientConns(t, base), rss(t, pid))
		}
	}
	t.Logf("all %d closed %v after the last answer; longest answer-to-close %v; open %d, RSS %s",
		n, time.Since(lastAnswer).Round(time.Millisecond), lastClose.Round(time.Millisecond), openClientConns(t, base), rss(t, pid))
	for range 2 {
		<-tick.C
		t.Logf("t+%2.0fs after the last answer: open %d, RSS %s", time.Since(lastAnswer).Seconds(), openClientConns(t, base), rss(t, pid))
	}
	p.Terminate(0)
}

// rss reads a process's resident set size.
func rss(t *testing.T, pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return "?"
}

// openClientConns reads raftexample_open_connections{listener="client"},
// less the connection that asks.
func openClientConns(t *testing.T, base string) int {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			t.Logf("  goroutines %s", v)
		}
		if v, ok := strings.CutPrefix(sc.Text(), `raftexample_open_connections{listener="client"} `); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return int(f) - 1
		}
	}
	return -1
}
