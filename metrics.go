package main

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// metrics are this member's own Prometheus metrics. They live in a registry
// of their own (so several members can share a process in tests); /metrics
// serves them together with the default registry, where etcd's rafthttp and
// WAL packages register theirs (peer traffic, fsync durations).
type metrics struct {
	registry *prometheus.Registry

	proposalsPending   prometheus.Gauge
	proposalsCommitted prometheus.Counter
	proposalsFailed    *prometheus.CounterVec
	applyDuration      prometheus.Histogram
	readIndexDuration  prometheus.Histogram
	snapshotDuration   prometheus.Histogram
	snapshotInProgress prometheus.Gauge
	leaderChanges      prometheus.Counter
	hasLeader          prometheus.Gauge
	isLeader           prometheus.Gauge
	httpRequests       *prometheus.CounterVec
	httpDuration       *prometheus.HistogramVec
	openConnections    *prometheus.GaugeVec
	acceptErrors       *prometheus.CounterVec
	readsServed        prometheus.Counter
	leasesExpired      prometheus.Counter // lease.go
	lockWakeups        prometheus.Counter // httplock.go

	serveOnce sync.Once
	serve     http.Handler // /metrics, built once

	// raftLogBytes reads the size of raft's in-memory log; the running
	// raftNode sets it.
	raftLogBytes atomic.Pointer[func() uint64]
}

func newMetrics() *metrics {
	const ns = "raftexample"
	fast := prometheus.ExponentialBuckets(0.0001, 2, 16) // 100µs .. ~3s
	m := &metrics{
		registry: prometheus.NewRegistry(),
		proposalsPending: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "proposals_pending",
			Help: "Writes proposed by this member and not yet answered."}),
		proposalsCommitted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "proposals_committed_total",
			Help: "Write entries applied by this member (from any member)."}),
		proposalsFailed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "proposals_failed_total",
			Help: "Writes proposed by this member that ended without an answer, by reason."}, []string{"reason"}),
		applyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "apply_duration_seconds",
			Help: "Time to apply one batch of committed entries.", Buckets: fast}),
		readIndexDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "read_index_duration_seconds",
			Help: "Time for one ReadIndex round (shared by concurrent linearizable reads).", Buckets: fast}),
		snapshotDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "snapshot_duration_seconds",
			Help: "Time to encode and save one snapshot.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		snapshotInProgress: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "snapshot_in_progress",
			Help: "1 while this member writes a snapshot of its own."}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "leader_changes_total",
			Help: "Times this member saw the leader change."}),
		hasLeader: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "has_leader",
			Help: "1 if this member knows a leader."}),
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "is_leader",
			Help: "1 if this member is the leader."}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "http_requests_total",
			Help: "Client HTTP requests by route and status code."}, []string{"route", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "http_request_duration_seconds",
			Help: "Client HTTP request latency by route.", Buckets: fast}, []string{"route"}),
		openConnections: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "open_connections",
			Help: "Connections open on a listener (client or peer), capped by --max-connections."}, []string{"listener"}),
		acceptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "accept_errors_total",
			Help: "Failed accepts on a listener (such as out of file descriptors); each is retried."}, []string{"listener"}),
		readsServed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "reads_served_total",
			Help: "Key reads and listings this member answered (found or not)."}),
		leasesExpired: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "leases_expired_total",
			Help: "Leases ended by expiry, as applied by this member."}),
		lockWakeups: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "lock_waiter_wakeups_total",
			Help: "Times a lock or election waiter on this member woke because the key before it went."}),
	}
	m.registry.MustRegister(m.proposalsPending, m.proposalsCommitted, m.proposalsFailed, m.applyDuration,
		m.readIndexDuration, m.snapshotDuration, m.snapshotInProgress, m.leaderChanges, m.hasLeader, m.isLeader,
		m.httpRequests, m.httpDuration, m.openConnections, m.acceptErrors, m.readsServed, m.leasesExpired, m.lockWakeups)
	m.gaugeFunc("raft_log_bytes", "Bytes of entry data in raft's in-memory log, up to the applied index (bounded by --max-log-bytes).", func() float64 {
		if f := m.raftLogBytes.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	return m
}

// gaugeFunc registers a gauge whose value is read when scraped.
func (m *metrics) gaugeFunc(name, help string, f func() float64) {
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "raftexample", Name: name, Help: help}, f))
}

// leaderChanged records what a new SoftState says about the leader.
func (m *metrics) leaderChanged(self, leader uint64) {
	m.leaderChanges.Inc()
	m.hasLeader.Set(boolFloat(leader != 0))
	m.isLeader.Set(boolFloat(leader == self))
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// handler serves this member's metrics with the process-wide default ones
// (Go runtime, process, and etcd's rafthttp and WAL metrics).
func (m *metrics) handler() http.Handler {
	m.serveOnce.Do(func() {
		m.serve = promhttp.HandlerFor(prometheus.Gatherers{prometheus.DefaultGatherer, m.registry}, promhttp.HandlerOpts{})
	})
	return m.serve
}

// observe records one HTTP request.
func (m *metrics) observe(route string, code int, took time.Duration) {
	m.httpRequests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.httpDuration.WithLabelValues(route).Observe(took.Seconds())
}

// counterNow reads a counter's current value (0 if it cannot be read).
func counterNow(c prometheus.Counter) uint64 {
	var m dto.Metric
	if c.Write(&m) != nil {
		return 0
	}
	return uint64(m.GetCounter().GetValue())
}

// walFsyncMetric is the histogram etcd's WAL package registers in the
// default registry: the duration of each WAL fsync in this process.
const walFsyncMetric = "etcd_disk_wal_fsync_duration_seconds"

// histogram is a Prometheus histogram as GET /v1/status reports it: the
// cumulative count of observations at or below each bound (in seconds),
// since the process started. Two of them taken apart give the distribution
// in between, from which a client computes a recent percentile.
type histogram struct {
	Bounds []float64 `json:"bounds"`
	Counts []uint64  `json:"counts"`
	Count  uint64    `json:"count"`
	Sum    float64   `json:"sum"`
}

// walFsyncHistogram reads the WAL fsync histogram from the default
// registry, or nil if there is none yet.
func walFsyncHistogram() *histogram {
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil && len(families) == 0 {
		return nil
	}
	for _, f := range families {
		if f.GetName() != walFsyncMetric || len(f.GetMetric()) == 0 {
			continue
		}
		h := f.GetMetric()[0].GetHistogram()
		out := &histogram{Count: h.GetSampleCount(), Sum: h.GetSampleSum()}
		for _, b := range h.GetBucket() {
			out.Bounds = append(out.Bounds, b.GetUpperBound())
			out.Counts = append(out.Counts, b.GetCumulativeCount())
		}
		return out
	}
	return nil
}
