package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkGet measures GET throughput over HTTP against a three-member
// in-process cluster: 64 concurrent clients on keep-alive connections read
// existing keys through all three members, linearizably (ReadIndex) and
// serializably (local state).
func BenchmarkGet(b *testing.B) {
	const (
		clients = 64
		keys    = 100
	)
	c := newTestCluster(b, 3, nil)
	for i := range keys {
		if err := c.members[0].kvs.Put(b.Context(), fmt.Sprintf("bench-%d", i), []byte("value")); err != nil {
			b.Fatal(err)
		}
	}
	transport := &http.Transport{MaxIdleConns: 4 * clients, MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}
	for _, mode := range []struct{ name, query string }{
		{"linearizable", ""},
		{"serializable", "?consistency=serializable"},
	} {
		b.Run(mode.name, func(b *testing.B) {
			// Every member must have applied the keys before reading them
			// locally.
			for _, m := range c.members {
				eventually(b, 10*time.Second, func() error {
					if _, ok, _ := m.kvs.Get(b.Context(), fmt.Sprintf("bench-%d", keys-1), true); !ok {
						return fmt.Errorf("member %d has not applied the keys", m.cfg.ID)
					}
					return nil
				})
			}
			var next atomic.Int64
			var failed atomic.Value
			var wg sync.WaitGroup
			b.ResetTimer()
			for g := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, 512)
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						m := c.members[(int(i)+g)%len(c.members)]
						url := fmt.Sprintf("%s/bench-%d%s", m.srv.URL, i%keys, mode.query)
						if err := benchGet(client, url, buf); err != nil {
							failed.CompareAndSwap(nil, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			if err, _ := failed.Load().(error); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

// benchGet reads url, which must answer 200, draining the body so the
// connection is reused.
func benchGet(client *http.Client, url string, buf []byte) error {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.CopyBuffer(io.Discard, resp.Body, buf); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d", url, resp.StatusCode)
	}
	return nil
}
