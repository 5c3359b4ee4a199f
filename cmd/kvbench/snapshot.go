package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// snapshotGauge is the metric a raftexample member sets to 1 while it
// writes a snapshot of its own.
const snapshotGauge = "raftexample_snapshot_in_progress"

// How -snapshot-split polls: often enough to place a snapshot of a few
// hundred milliseconds to within a poll or two, with a timeout short
// enough that a member that stalls cannot hold up the next round for long.
const (
	snapPollEvery   = 20 * time.Millisecond
	snapPollTimeout = 200 * time.Millisecond
)

// interval is a stretch of the measured window, as offsets from its start.
type interval struct{ start, end time.Duration }

// timedOp is one successful measured operation: when it started, as an
// offset from the start of the measured window, and how long it took.
type timedOp struct{ start, lat time.Duration }

// snapshotWatch is what the poller saw during one measured window.
type snapshotWatch struct {
	intervals  []interval // sorted and disjoint
	polls      int        // requests sent
	pollErrors int        // requests that failed or had no gauge
}

// snapshotTimeline turns poll rounds into the intervals during which at
// least one member was snapshotting. Each interval covers the snapshot as
// seen through the polls: it starts when the last round that saw no
// member snapshotting was sent, and ends when the first round that again
// saw none had been answered, so the time between polls is counted as
// snapshot time rather than steady time.
type snapshotTimeline struct {
	busy      []bool        // last known state of each member
	idleSent  time.Duration // when the last round with no member busy was sent
	open      bool
	intervals []interval
}

func newSnapshotTimeline(members int) *snapshotTimeline {
	return &snapshotTimeline{busy: make([]bool, members)}
}

// observe records one round sent at sent and fully answered at received.
// A member whose poll failed (ok false) keeps its last known state: a
// member too busy to answer is not taken to have finished its snapshot.
func (t *snapshotTimeline) observe(sent, received time.Duration, busy, ok []bool) {
	some := false
	for i := range t.busy {
		if ok[i] {
			t.busy[i] = busy[i]
		}
		some = some || t.busy[i]
	}
	switch {
	case some && !t.open:
		t.openAt(t.idleSent)
	case !some && t.open:
		t.intervals[len(t.intervals)-1].end = received
		t.open = false
	}
	if !some {
		t.idleSent = sent
	}
}

// openAt starts an interval at start, joining the previous one when they
// would overlap (its end is a later time than the idle round's sending).
func (t *snapshotTimeline) openAt(start time.Duration) {
	t.open = true
	if n := len(t.intervals); n > 0 && start <= t.intervals[n-1].end {
		return // the last interval stays the open one
	}
	t.intervals = append(t.intervals, interval{start: start})
}

// finish closes an interval still open at the end of polling.
func (t *snapshotTimeline) finish(at time.Duration) []interval {
	if t.open {
		t.intervals[len(t.intervals)-1].end = max(at, t.intervals[len(t.intervals)-1].start)
		t.open = false
	}
	return t.intervals
}

// watchSnapshots polls every endpoint's /metrics each snapPollEvery from
// from until end, until stopped is closed (the load ended early), or
// until ctx is done, whichever comes first, and reports the intervals,
// as offsets from from, in which some member was snapshotting.
func watchSnapshots(ctx context.Context, endpoints []string, from, end time.Time, stopped <-chan struct{},
	every, timeout time.Duration) snapshotWatch {
	var w snapshotWatch
	tl := newSnapshotTimeline(len(endpoints))
	select {
	case <-time.After(time.Until(from)):
	case <-stopped:
		return w
	case <-ctx.Done():
		return w
	}
	hc := newPollClient(timeout)
	defer hc.CloseIdleConnections()
	tick := time.NewTicker(every)
	defer tick.Stop()
	endC := time.After(time.Until(end))
	for {
		sent := time.Since(from)
		busy, ok := pollRound(ctx, hc, endpoints, timeout)
		tl.observe(sent, time.Since(from), busy, ok)
		w.polls += len(endpoints)
		for _, good := range ok {
			if !good {
				w.pollErrors++
			}
		}
		select {
		case <-tick.C:
		case <-endC:
		case <-stopped:
		case <-ctx.Done():
		}
		if pollingOver(ctx, end, stopped) {
			w.intervals = tl.finish(time.Since(from))
			return w
		}
	}
}

// pollingOver reports whether the window has ended; unlike a select that
// also waits for the ticker, it cannot pick one more round at random.
func pollingOver(ctx context.Context, end time.Time, stopped <-chan struct{}) bool {
	select {
	case <-stopped:
		return true
	case <-ctx.Done():
		return true
	default:
		return !time.Now().Before(end)
	}
}

// newPollClient keeps one connection per member, so polling every 20 ms
// does not open a connection each time.
func newPollClient(timeout time.Duration) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: timeout}).DialContext,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     10 * time.Second,
	}}
}

// pollRound asks every endpoint at once whether it is snapshotting; ok[i]
// is false where the answer did not come.
func pollRound(ctx context.Context, hc *http.Client, endpoints []string, timeout time.Duration) (busy, ok []bool) {
	busy, ok = make([]bool, len(endpoints)), make([]bool, len(endpoints))
	var wg sync.WaitGroup
	for i, ep := range endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := fetchMetric(ctx, hc, ep, snapshotGauge, timeout)
			busy[i], ok[i] = v != 0, err == nil
		}()
	}
	wg.Wait()
	return busy, ok
}

// fetchMetric reads one unlabelled metric from endpoint's /metrics.
func fetchMetric(ctx context.Context, hc *http.Client, endpoint, name string, timeout time.Duration) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	defer io.Copy(io.Discard, resp.Body) // so the connection carries the next poll
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s/metrics: HTTP %d", endpoint, resp.StatusCode)
	}
	v, err := scanMetric(resp.Body, name)
	if err != nil {
		return 0, fmt.Errorf("%s/metrics: %w", endpoint, err)
	}
	return v, nil
}

// scanMetric finds the sample of the unlabelled metric name in a page of
// the Prometheus text format ("name value [timestamp]"; comments and other
// metrics are skipped).
func scanMetric(r io.Reader, name string) (float64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '\t') {
			continue // another metric, one whose name merely starts with name, or a labelled sample
		}
		fields := strings.Fields(rest)
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, fmt.Errorf("metric %s: %w", name, err)
		}
		return v, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("reading metrics: %w", err)
	}
	return 0, fmt.Errorf("no metric %s", name)
}

// snapshotSplit is a run's latencies split by whether a snapshot was
// under way, for -snapshot-split.
type snapshotSplit struct {
	snap, steady []time.Duration // sorted
	intervals    int             // snapshot intervals that reach into the window
	covered      time.Duration   // time of the window inside them
	polls        int
	pollErrors   int
}

// splitBySnapshots puts every operation whose time from start to answer
// overlaps a snapshot interval (ivs sorted and disjoint) in snap, and the
// rest in steady. Overlap rather than start time, because an operation
// that was sent just before a snapshot began and waited through it is
// exactly what the split is meant to catch.
func splitBySnapshots(ops []timedOp, ivs []interval) (snap, steady []time.Duration) {
	for _, op := range ops {
		// The first interval that does not end before op starts; ends are
		// sorted because the intervals are disjoint and sorted.
		i := sort.Search(len(ivs), func(i int) bool { return ivs[i].end >= op.start })
		if i < len(ivs) && ivs[i].start <= op.start+op.lat {
			snap = append(snap, op.lat)
		} else {
			steady = append(steady, op.lat)
		}
	}
	slices.Sort(snap)
	slices.Sort(steady)
	return snap, steady
}

// newSnapshotSplit splits ops by what w saw within a window of length window.
func newSnapshotSplit(w snapshotWatch, ops []timedOp, window time.Duration) *snapshotSplit {
	s := &snapshotSplit{polls: w.polls, pollErrors: w.pollErrors}
	s.snap, s.steady = splitBySnapshots(ops, w.intervals)
	for _, iv := range w.intervals {
		if d := min(iv.end, window) - max(iv.start, 0); d > 0 {
			s.intervals++
			s.covered += d
		}
	}
	return s
}

// fields renders the split for the summary line; "-" stands for a
// percentile of no operations.
func (s *snapshotSplit) fields() string {
	ratio := "-"
	if len(s.snap) > 0 && len(s.steady) > 0 && percentile(s.steady, 99) > 0 {
		ratio = strconv.FormatFloat(float64(percentile(s.snap, 99))/float64(percentile(s.steady, 99)), 'f', 2, 64)
	}
	return fmt.Sprintf("snap_ops=%d snap_p50_ms=%s snap_p99_ms=%s steady_ops=%d steady_p50_ms=%s steady_p99_ms=%s"+
		" snap_p99_ratio=%s snap_secs=%.2f snap_intervals=%d snap_polls=%d snap_poll_errors=%d",
		len(s.snap), msOrDash(s.snap, 50), msOrDash(s.snap, 99),
		len(s.steady), msOrDash(s.steady, 50), msOrDash(s.steady, 99),
		ratio, s.covered.Seconds(), s.intervals, s.polls, s.pollErrors)
}

// msOrDash is ms(percentile(sorted, p)), or "-" when there are no samples.
func msOrDash(sorted []time.Duration, p float64) string {
	if len(sorted) == 0 {
		return "-"
	}
	return ms(percentile(sorted, p))
}
