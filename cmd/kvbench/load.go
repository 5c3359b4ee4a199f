package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"
)

// client is one worker's connection to one member of the system under test.
// Get's result is valid until the next call on the same client.
type client interface {
	Put(ctx context.Context, key string, value []byte) error
	Get(ctx context.Context, key string, serializable bool) ([]byte, error)
	// CAS reads key's revision, then writes value on condition that the
	// revision is unchanged (or the key still absent); errConflict if not.
	CAS(ctx context.Context, key string, value []byte, serializable bool) error
	Close()
}

const keyLen = 16

// keyName is the 16-byte name of key number k: "k" and 15 digits.
func keyName(k int) string {
	var b [keyLen]byte
	b[0] = 'k'
	s := strconv.Itoa(k)
	for i := 1; i < keyLen-len(s); i++ {
		b[i] = '0'
	}
	copy(b[keyLen-len(s):], s)
	return string(b[:])
}

// makeValue is the size-byte value that worker w writes with sequence
// number seq: "w<w>s<seq>." and filler, so every acknowledged write has a
// value of its own that verification can recognise (values shorter than
// that header are cut and recognised less well).
func makeValue(w int, seq uint64, size int) []byte {
	b := make([]byte, 0, max(size, 24))
	b = append(b, 'w')
	b = strconv.AppendInt(b, int64(w), 10)
	b = append(b, 's')
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, '.')
	for i := len(b); i < size; i++ {
		b = append(b, byte('a'+(seq+uint64(i))%26))
	}
	return b[:size]
}

// ownedKeys is how many of keys keys worker w of conc owns: the keys k with
// k % conc == w. Writers only write their own keys, so the last value each
// acknowledged is well defined.
func ownedKeys(keys, conc, w int) int {
	if w >= keys {
		return 0
	}
	return (keys - w + conc - 1) / conc
}

// keyState is what one worker knows about one of its keys: the sequence
// number of the last acknowledged write (0: none) and of writes that failed
// after it, which may or may not have been applied.
type keyState struct {
	acked     uint64
	uncertain []uint64
}

// tracker records one worker's writes to its own keys.
type tracker struct {
	worker, conc int
	seq          uint64
	keys         []keyState // index j is key worker + j*conc
}

func newTracker(worker, conc, keys int) *tracker {
	return &tracker{worker: worker, conc: conc, keys: make([]keyState, ownedKeys(keys, conc, worker))}
}

func (t *tracker) key(j int) int { return t.worker + j*t.conc }

func (t *tracker) next() uint64 { t.seq++; return t.seq }

// done records the outcome of writing sequence number seq to owned key j.
func (t *tracker) done(j int, seq uint64, err error) {
	ks := &t.keys[j]
	if err == nil {
		ks.acked, ks.uncertain = seq, nil
		return
	}
	ks.uncertain = append(ks.uncertain, seq)
}

// phase is one stretch of load: workers issue operations until end, and
// those started at or after from are measured.
type phase struct {
	op           string
	from, end    time.Time
	timeout      time.Duration
	valueSize    int
	keys         int
	putRatio     float64
	serializable bool
	timed        bool // also record when each measured operation started
}

// workerStats is what one worker measured.
type workerStats struct {
	lat    []time.Duration
	starts []time.Duration // with phase.timed: starts[i] is when lat[i]'s operation started, after from
	errors map[string]int
}

// worker is one client with its own key choice, writes and measurements.
type worker struct {
	id    int
	c     client
	rng   *rand.Rand
	track *tracker
	next  int // -load: next owned key index to write
	stats workerStats
}

func newWorkers(clients []client, keys int, seed uint64) []*worker {
	ws := make([]*worker, len(clients))
	for i, c := range clients {
		ws[i] = &worker{
			id:    i,
			c:     c,
			rng:   rand.New(rand.NewPCG(seed, uint64(i))),
			track: newTracker(i, len(clients), keys),
		}
	}
	return ws
}

// runPhase runs every worker through p and merges what they measured.
func runPhase(ctx context.Context, ws []*worker, p phase) (ops int, lat []time.Duration, errs map[string]int) {
	var wg sync.WaitGroup
	for _, w := range ws {
		w.stats = workerStats{errors: map[string]int{}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.loop(ctx, p)
		}()
	}
	wg.Wait()
	errs = map[string]int{}
	for _, w := range ws {
		lat = append(lat, w.stats.lat...)
		for k, n := range w.stats.errors {
			errs[k] += n
		}
	}
	slices.Sort(lat)
	return len(lat), lat, errs
}

func (w *worker) loop(ctx context.Context, p phase) {
	for ctx.Err() == nil {
		start := time.Now()
		if !start.Before(p.end) {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, p.timeout)
		err, ok := w.do(rctx, p)
		cancel()
		if !ok {
			return // -load: this worker has written all its keys
		}
		if start.Before(p.from) || ctx.Err() != nil {
			continue // warm-up, or interrupted
		}
		if err != nil {
			w.stats.errors[errorKind(err)]++
			continue
		}
		if p.timed {
			w.stats.starts = append(w.stats.starts, start.Sub(p.from))
		}
		w.stats.lat = append(w.stats.lat, time.Since(start))
	}
}

// timedOps pairs the latencies the workers measured in their last phase,
// which must have been timed, with the operations' start times.
func timedOps(ws []*worker) []timedOp {
	n := 0
	for _, w := range ws {
		n += len(w.stats.lat)
	}
	ops := make([]timedOp, 0, n)
	for _, w := range ws {
		for i, lat := range w.stats.lat {
			ops = append(ops, timedOp{start: w.stats.starts[i], lat: lat})
		}
	}
	return ops
}

// do performs one operation of p; ok is false when there is nothing left to do.
func (w *worker) do(ctx context.Context, p phase) (err error, ok bool) {
	switch p.op {
	case "get":
		return w.get(ctx, p), true
	case "mixed":
		if w.rng.Float64() < p.putRatio {
			return w.put(ctx, p, w.rng.IntN(len(w.track.keys)), false), true
		}
		return w.get(ctx, p), true
	case "cas":
		return w.put(ctx, p, w.rng.IntN(len(w.track.keys)), true), true
	case "load":
		if w.next >= len(w.track.keys) {
			return nil, false
		}
		w.next++
		return w.put(ctx, p, w.next-1, false), true
	default: // put
		return w.put(ctx, p, w.rng.IntN(len(w.track.keys)), false), true
	}
}

func (w *worker) get(ctx context.Context, p phase) error {
	_, err := w.c.Get(ctx, keyName(w.rng.IntN(p.keys)), p.serializable)
	return err
}

// put writes a fresh value to owned key j and records the outcome.
func (w *worker) put(ctx context.Context, p phase, j int, cas bool) error {
	seq := w.track.next()
	key, value := keyName(w.track.key(j)), makeValue(w.id, seq, p.valueSize)
	var err error
	if cas {
		err = w.c.CAS(ctx, key, value, p.serializable)
	} else {
		err = w.c.Put(ctx, key, value)
	}
	w.track.done(j, seq, err)
	return err
}

// fill writes every owned key once (the preload before reads), bounded by limit.
func fill(ctx context.Context, ws []*worker, valueSize int, limit, timeout time.Duration) error {
	for _, w := range ws {
		w.next = 0
	}
	now := time.Now()
	_, _, errs := runPhase(ctx, ws, phase{op: "load", from: now, end: now.Add(limit), timeout: timeout, valueSize: valueSize})
	for _, w := range ws {
		if w.next < len(w.track.keys) {
			return fmt.Errorf("preload did not finish within %v", limit)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("preload failed: %s", formatKinds(errs))
	}
	return ctx.Err()
}
