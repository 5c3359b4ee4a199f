package main

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// A client that goes away in the middle of a write is not a server error:
// the member answers no 500 (metrics record 499) and logs nothing at error
// level. kvbench used to end every run with a few "http_500" errors and
// "request failed: propose: context canceled" lines for exactly this.
func TestCanceledRequestsAreNotServerErrors(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	c := newTestCluster(t, 1, func(cfg *raftConfig) { cfg.Logger = zap.New(core) })
	m := c.members[0]

	// Many writers, each giving up after a few microseconds to a couple of
	// milliseconds, so that cancellations land in every stage of a write:
	// queued for raft, inside node.Propose, waiting for the apply.
	const writers, perWriter = 32, 40
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: writers}}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				wait := time.Duration((w*perWriter+i)%64) * 30 * time.Microsecond
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				req, _ := http.NewRequestWithContext(ctx, http.MethodPut, m.srv.URL+"/k", strings.NewReader("v"))
				if resp, err := client.Do(req); err == nil {
					resp.Body.Close()
				}
				cancel()
			}
		})
	}
	wg.Wait()
	// The member still serves, and what it recorded has settled.
	if r := do(t, http.MethodPut, m.srv.URL+"/k", "last"); r.code != http.StatusNoContent {
		t.Fatalf("PUT after the canceled ones: %d", r.code)
	}
	if n := counterValue(t, m.cfg.Metrics.httpRequests.WithLabelValues("kv", "500")); n != 0 {
		t.Errorf("%v canceled requests were counted as 500s", n)
	}
	if n := counterValue(t, m.cfg.Metrics.httpRequests.WithLabelValues("kv", "499")); n == 0 {
		t.Errorf("no request was counted as canceled (499): the test did not cancel any mid-write")
	}
	for _, e := range logs.FilterLevelExact(zapcore.ErrorLevel).All() {
		t.Errorf("logged at error level: %s %v", e.Message, e.ContextMap())
	}
}

// counterValue reads a counter's current value.
func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
