package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// check is one written key to read back: its last acknowledged value must
// be there, or a later (or earlier) write whose outcome the client never
// learned, since such a write may legitimately apply at any time.
type check struct {
	key       string
	worker    int
	acked     uint64
	uncertain []uint64
}

// accepts reports whether v is a value the key may hold.
func (c *check) accepts(v []byte, valueSize int) bool {
	if bytes.Equal(v, makeValue(c.worker, c.acked, valueSize)) {
		return true
	}
	for _, seq := range c.uncertain {
		if bytes.Equal(v, makeValue(c.worker, seq, valueSize)) {
			return true
		}
	}
	return false
}

// collectChecks lists every key with an acknowledged write, or sample of
// them chosen at random when sample > 0.
func collectChecks(ws []*worker, sample int, seed uint64) []check {
	var cs []check
	for _, w := range ws {
		for j, ks := range w.track.keys {
			if ks.acked == 0 {
				continue
			}
			cs = append(cs, check{key: keyName(w.track.key(j)), worker: w.id, acked: ks.acked, uncertain: ks.uncertain})
		}
	}
	if sample > 0 && sample < len(cs) {
		rng := rand.New(rand.NewPCG(seed, 0x5eed))
		rng.Shuffle(len(cs), func(i, j int) { cs[i], cs[j] = cs[j], cs[i] })
		cs = cs[:sample]
	}
	return cs
}

// verifyResult is what reading the written keys back found.
type verifyResult struct {
	checked    int
	matched    int
	readErrors map[string]int // reads that failed even after retries, by kind
	examples   []string       // a few keys that did not match, for the log
}

// applied is the share of checked keys whose last acknowledged write reads
// back (1 when nothing was checked).
func (v *verifyResult) applied() float64 {
	if v.checked == 0 {
		return 1
	}
	return float64(v.matched) / float64(v.checked)
}

// verify reads every checked key with a linearizable GET, spreading the
// reads over the clients. A read that keeps failing counts as not applied.
func verify(ctx context.Context, clients []client, checks []check, valueSize int, timeout time.Duration) verifyResult {
	res := verifyResult{checked: len(checks), readErrors: map[string]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := i; k < len(checks) && ctx.Err() == nil; k += len(clients) {
				ok, err := verifyOne(ctx, c, &checks[k], valueSize, timeout)
				mu.Lock()
				switch {
				case ok:
					res.matched++
				case err != nil:
					res.readErrors[errorKind(err)]++
				case len(res.examples) < 5:
					res.examples = append(res.examples, checks[k].key)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return res
}

// verifyOne reads one key, retrying failed reads a few times.
func verifyOne(ctx context.Context, c client, ck *check, valueSize int, timeout time.Duration) (bool, error) {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return false, ctx.Err()
			}
		}
		rctx, cancel := context.WithTimeout(ctx, timeout)
		var v []byte
		v, err = c.Get(rctx, ck.key, false)
		ok := err == nil && ck.accepts(v, valueSize)
		cancel()
		switch {
		case ok:
			return true, nil
		case err == nil, errors.Is(err, errNotFound):
			return false, nil // an answer, and the wrong one
		}
	}
	return false, fmt.Errorf("read %s: %w", ck.key, err)
}
