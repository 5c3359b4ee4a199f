package main

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"
)

// The room for garbage is 15% of a large live heap, at least 64 MB,
// and never more than Go's default.
func TestGCTunerPercent(t *testing.T) {
	g := newGCTuner(func(string) string { return "" })
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, 100},
		{10 << 20, 100}, // 64 MB of room is more than GOGC=100 gives
		{64 << 20, 100}, // exactly the default
		{128 << 20, 50}, // 64 MB of 128 MB
		{400 << 20, 16}, // 64 MB is still more than 15%
		{4 << 30, 15},   // 15%, however large
		{1 << 40, 15},   // no overflow
	} {
		if got := g.percent(c.live); got != c.want {
			t.Errorf("percent(%d MB) = %d, want %d", c.live>>20, got, c.want)
		}
	}
	if g := newGCTuner(func(k string) string { return map[string]string{"GOGC": "200"}[k] }); g.Every != 0 {
		t.Errorf("with GOGC set the tuner still runs every %v", g.Every)
	}
}

// run lowers GOGC for a heap that needs less room, and when its context
// ends it stops and puts back the value it found.
func TestGCTunerAdjustsAndRestores(t *testing.T) {
	before := gcPercent()
	runtime.GC() // so that there is a live heap to size the room by
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		gcTuner{MinRoom: 1, Fraction: 0.1, Every: time.Millisecond}.run(ctx)
	}()
	eventually(t, 5*time.Second, func() error {
		if p := gcPercent(); p != 10 {
			return fmt.Errorf("GOGC is %d, want 10", p)
		}
		return nil
	})
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("tuner did not stop")
	}
	if after := gcPercent(); after != before {
		t.Fatalf("GOGC left at %d, was %d", after, before)
	}
}
