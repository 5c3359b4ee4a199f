package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchClients runs b.N calls of op spread over n goroutines, each with
// its own index g, and reports calls per second.
func benchClients(b *testing.B, n int, op func(g int, i int64) error) {
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for g := range n {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				if err := op(g, i); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}

func benchHTTPClient(conns int) *http.Client {
	return &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{MaxIdleConns: 4 * conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}}
}

// benchDo sends one request and wants status want.
func benchDo(client *http.Client, method, url, body string, want int) (string, error) {
	r, err := send(context.Background(), client, method, url, body)
	if err != nil {
		return "", err
	}
	if r.code != want {
		return "", fmt.Errorf("%s %s: %v", method, url, r)
	}
	return r.body, nil
}

// BenchmarkLeaseKeepalive measures keepalives per second over HTTP against
// a three-member in-process cluster: 32 clients keep 1000 leases alive
// through all three members (each keepalive is a raft entry).
func BenchmarkLeaseKeepalive(b *testing.B) {
	const clients, leases = 32, 1000
	c := newTestCluster(b, 3, nil)
	ids := make([]uint64, leases)
	for i := range ids {
		ids[i] = grantLease(b, c.members[i%3].srv.URL, "60s")
	}
	client := benchHTTPClient(clients)
	defer client.CloseIdleConnections()
	benchClients(b, clients, func(g int, i int64) error {
		m := c.members[i%3]
		_, err := benchDo(client, "POST", fmt.Sprintf("%s/v1/leases/%d/keepalive", m.srv.URL, ids[i%leases]), "", http.StatusOK)
		return err
	})
}

// BenchmarkLockCycle measures lock acquire+release cycles per second on one
// lock, over HTTP to the leader of a three-member in-process cluster, with
// 1 and 8 contenders, each on a lease of its own.
func BenchmarkLockCycle(b *testing.B) {
	for _, contenders := range []int{1, 8} {
		b.Run(fmt.Sprintf("contenders=%d", contenders), func(b *testing.B) {
			c := newTestCluster(b, 3, nil)
			base := c.leaderMember().srv.URL
			ids := make([]uint64, contenders)
			for i := range ids {
				ids[i] = grantLease(b, base, "60s")
			}
			client := benchHTTPClient(contenders)
			defer client.CloseIdleConnections()
			benchClients(b, contenders, func(g int, _ int64) error {
				body, err := benchDo(client, "POST", base+"/v1/locks/bench?wait=30s", fmt.Sprintf(`{"lease":%d}`, ids[g]), http.StatusOK)
				if err != nil {
					return err
				}
				var held struct {
					Key string `json:"key"`
				}
				if err := json.Unmarshal([]byte(body), &held); err != nil {
					return err
				}
				_, err = benchDo(client, "DELETE", base+"/v1/kv/"+held.Key, "", http.StatusNoContent)
				return err
			})
		})
	}
}
