package proctest

import (
	"context"
	"fmt"
	"time"
)

// WaitReady calls ready until it succeeds, one of procs exits, ctx ends or
// limit passes; a process that exited is reported with the end of its log.
func WaitReady(ctx context.Context, limit time.Duration, ready func(context.Context) error, procs ...*Process) error {
	deadline := time.Now().Add(limit)
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		for _, p := range procs {
			if p.Done() != nil && !p.Running() {
				return fmt.Errorf("%s exited (%v); end of its log:\n%s", p.Name, p.Err(), p.Tail(15))
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %v: %w", limit, err)
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
