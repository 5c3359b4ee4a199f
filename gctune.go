package main

import (
	"context"
	"runtime/debug"
	runtimemetrics "runtime/metrics"
	"time"
)

// gcTuner bounds the heap's room for garbage as the state grows. With Go's
// default GOGC=100 the heap may grow to twice the live data before the next
// collection: harmless for a small store, but a member holding gigabytes of
// keys would need twice that in memory. The tuner keeps the room at
// Fraction of the live heap, never below MinRoom and never more than the
// default would give. At large heaps collections stay rare (they start
// after Fraction × live bytes of allocation) while memory stays near the
// data's size.
type gcTuner struct {
	MinRoom  uint64        // bytes of garbage always allowed
	Fraction float64       // of the live heap, allowed as garbage
	Every    time.Duration // how often to look at the live heap
}

// newGCTuner allows 64 MB of garbage, or 15% of the live heap. With
// GOGC set in the environment, the user's choice stands and it does nothing.
func newGCTuner(getenv func(string) string) gcTuner {
	if getenv("GOGC") != "" {
		return gcTuner{}
	}
	return gcTuner{MinRoom: 64 << 20, Fraction: 0.15, Every: time.Second}
}

// percent is the GOGC value that gives a heap of live bytes its room.
func (g gcTuner) percent(live uint64) int {
	if live == 0 {
		return 100
	}
	p := g.Fraction * 100
	if float64(live)*g.Fraction < float64(g.MinRoom) {
		p = float64(g.MinRoom) * 100 / float64(live)
	}
	return int(min(100, max(10, p)))
}

// run adjusts GOGC every g.Every until ctx ends, then restores the value it
// found. It returns at once if g.Every is not positive.
func (g gcTuner) run(ctx context.Context) {
	if g.Every <= 0 {
		return
	}
	original := gcPercent()
	defer debug.SetGCPercent(original)
	current := original
	sample := []runtimemetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	t := time.NewTicker(g.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		runtimemetrics.Read(sample)
		if sample[0].Value.Kind() != runtimemetrics.KindUint64 {
			continue
		}
		if p := g.percent(sample[0].Value.Uint64()); p != current {
			debug.SetGCPercent(p)
			current = p
		}
	}
}

// gcPercent is the current GOGC.
func gcPercent() int {
	s := []runtimemetrics.Sample{{Name: "/gc/gogc:percent"}}
	runtimemetrics.Read(s)
	return int(s[0].Value.Uint64())
}
