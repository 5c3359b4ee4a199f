package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"go.uber.org/zap"
)

// Failpoints let tests crash a member at a named point of its persistence
// code, the way a power cut or kill -9 would, to prove that a restart
// recovers from there. RAFTEXAMPLE_FAILPOINT=<name> crashes the member the
// first time it reaches the point; <name>:<n> the n-th time. main reads the
// variable once at startup into raftConfig.Failpoint. Unset, nothing happens.
var failpointNames = []string{
	"before-wal-save",             // a Ready with new entries, before the WAL write
	"after-wal-save-before-apply", // new entries are synced; their acknowledgements not yet sent
	"before-snapshot-save",        // a snapshot was created in memory; no file yet
	"after-snapshot-file",         // the .snap file is written; the WAL does not name it yet
	"after-wal-snapshot-record",   // the WAL names the snapshot; older WAL files still locked
	"after-wal-release",           // older WAL files released: from now on they may be purged
	"before-compact",              // the snapshot is saved; the in-memory log not compacted
	"after-compact",               // the in-memory log is compacted
}

// failpoint is one parsed RAFTEXAMPLE_FAILPOINT setting.
type failpoint struct {
	name string
	nth  int64 // crash on this hit (1 = the first)
	hits atomic.Int64
}

// parseFailpoint parses "<name>" or "<name>:<n>"; an empty spec means none.
func parseFailpoint(spec string) (*failpoint, error) {
	if spec == "" {
		return nil, nil
	}
	name, count, hasCount := strings.Cut(spec, ":")
	fp := &failpoint{name: name, nth: 1}
	if hasCount {
		n, err := strconv.ParseInt(count, 10, 64)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("RAFTEXAMPLE_FAILPOINT=%q: the count after ':' must be a positive number", spec)
		}
		fp.nth = n
	}
	if !slices.Contains(failpointNames, name) {
		return nil, fmt.Errorf("RAFTEXAMPLE_FAILPOINT=%q: unknown failpoint; known: %s", spec, strings.Join(failpointNames, ", "))
	}
	return fp, nil
}

// reach crashes the process if fp is set to crash at name and this is the
// configured hit. SIGKILL, not os.Exit: nothing more runs. A nil fp (no
// failpoint armed) does nothing.
func (fp *failpoint) reach(name string, logger *zap.Logger) {
	if fp == nil || fp.name != name || fp.hits.Add(1) != fp.nth {
		return
	}
	logger.Warn("failpoint reached; killing this process", zap.String("failpoint", name), zap.Int64("hit", fp.nth))
	syscall.Kill(syscall.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way
}
