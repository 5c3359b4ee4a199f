package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// errNotFound and errConflict are outcomes a client reports for a missing
// key and for a conditional write whose condition failed.
var (
	errNotFound = errors.New("key not found")
	errConflict = errors.New("condition failed")
)

// statusError is an HTTP answer other than the expected one.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.code, e.msg) }

// errorKind names the kind of a failed operation for the error counts.
func errorKind(err error) string {
	var se *statusError
	var ne net.Error
	switch {
	case errors.Is(err, errNotFound):
		return "not_found"
	case errors.Is(err, errConflict):
		return "conflict"
	case errors.As(err, &se):
		return "http_" + strconv.Itoa(se.code)
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "conn_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "conn_reset"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	if kind, ok := etcdErrorKind(err); ok {
		return kind
	}
	return "other"
}

// result is what one run measured.
type result struct {
	target      string
	op          string
	sendTo      string
	consistency string // "-" when the op does not read
	members     int
	conc        int
	value       int
	keys        int
	run, runs   int

	ops     int             // successful operations started in the measured window
	elapsed time.Duration   // length of the measured window
	lat     []time.Duration // latencies of those operations, sorted
	errors  map[string]int  // failed operations by kind
	applied float64         // share of written keys whose last acknowledged value reads back; <0 when not verified
	cpu     string          // where the CPU went in the window (cpuUse.fields), or ""

	snapshots *snapshotSplit // -snapshot-split, else nil
}

// opsPerSecond is the rate of successful operations in the measured window.
func (r *result) opsPerSecond() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ops) / r.elapsed.Seconds()
}

func (r *result) errorCount() int {
	n := 0
	for _, c := range r.errors {
		n += c
	}
	return n
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted latencies, or 0 when there are none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func ms(d time.Duration) string { return strconv.FormatFloat(d.Seconds()*1000, 'f', 3, 64) }

// formatKinds renders error counts as kind:count pairs in a stable order.
func formatKinds(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	kinds := make([]string, 0, len(m))
	for k := range m {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = k + ":" + strconv.Itoa(m[k])
	}
	return strings.Join(parts, ",")
}

// summary is the one machine-readable line a run prints: the fields the
// issue asks for first, in a fixed order, then the run's settings.
func (r *result) summary() string {
	applied := "-"
	if r.applied >= 0 {
		applied = strconv.FormatFloat(r.applied, 'f', 4, 64)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "kvbench: target=%s op=%s conc=%d value=%d ops_s=%.1f p50_ms=%s p90_ms=%s p99_ms=%s max_ms=%s errors=%d applied=%s",
		r.target, r.op, r.conc, r.value, r.opsPerSecond(),
		ms(percentile(r.lat, 50)), ms(percentile(r.lat, 90)), ms(percentile(r.lat, 99)), ms(percentile(r.lat, 100)),
		r.errorCount(), applied)
	fmt.Fprintf(&b, " members=%d send_to=%s consistency=%s keys=%d ops=%d secs=%.2f error_kinds=%s run=%d/%d",
		r.members, r.sendTo, r.consistency, r.keys, r.ops, r.elapsed.Seconds(), formatKinds(r.errors), r.run, r.runs)
	if r.cpu != "" {
		b.WriteString(" " + r.cpu)
	}
	if r.snapshots != nil {
		b.WriteString(" " + r.snapshots.fields())
	}
	return b.String()
}
