package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"raftexample/internal/wire"
)

// kvAPI is what the HTTP layer needs from the key-value store.
type kvAPI interface {
	Get(ctx context.Context, key string, serializable bool) (kvItem, bool, error)
	List(ctx context.Context, prefix, after string, limit int, serializable bool) (listPage, error)
	Txn(ctx context.Context, ops []wire.Op) (txnResult, error)
	Watch(key string, prefix bool, afterRev uint64, resume bool) (w *watcher, backlog []event, from uint64, err error)
	Unwatch(w *watcher)
}

// clusterAPI is what the HTTP layer needs to change the membership.
type clusterAPI interface {
	ListMembers() []memberInfo
	AddMember(ctx context.Context, id uint64, peerURL string, learner bool) (memberInfo, error)
	PromoteMember(ctx context.Context, id uint64) error
	RemoveMember(ctx context.Context, id uint64) error
	TransferLeader(ctx context.Context, id uint64) error
}

// clientAPI serves everything a client reaches on the client port (the
// original called it httpKVAPI; it now serves more than keys): the
// original raftexample API on root paths,
//
//	PUT /{key}       set key (body = value)
//	GET /{key}       read key
//	DELETE /{key}    delete key
//	POST /{id}       add member id (body = peer URL)
//	DELETE /{id}     remove member id (a decimal ID)
//
// the /v1 API (httpv1.go), and the operator's endpoints (httpcluster.go).
type clientAPI struct {
	store           kvAPI
	leases          leaseAPI // the store's leases; nil if it has none
	cluster         clusterAPI
	status          statusAPI
	metrics         *metrics
	requestTimeout  time.Duration
	maxRequestBytes int64
	maxKeyBytes     int
	retryAfter      string // seconds, for 503 answers
	heartbeat       time.Duration
	watchWrite      time.Duration
	logger          *zap.Logger
	closing         chan struct{} // closed on shutdown to end watch streams
	closeOnce       sync.Once

	// requireClientCert answers 403 to clients without a verified
	// certificate, on every route but /health.
	requireClientCert bool

	routes routeHandlers // built once by newClientAPI
}

func newClientAPI(store kvAPI, cluster clusterAPI, status statusAPI, cfg httpConfig) *clientAPI {
	secs := int((cfg.RetryAfter + time.Second - 1) / time.Second)
	h := &clientAPI{
		store:           store,
		cluster:         cluster,
		status:          status,
		metrics:         cfg.Metrics,
		requestTimeout:  cfg.RequestTimeout,
		maxRequestBytes: cfg.MaxRequestBytes,
		maxKeyBytes:     cfg.MaxKeyBytes,
		retryAfter:      strconv.Itoa(max(secs, 1)),
		heartbeat:       cfg.WatchHeartbeat,
		watchWrite:      cfg.WatchWriteTimeout,
		logger:          cfg.Logger,
		closing:         make(chan struct{}),

		requireClientCert: cfg.RequireClientCert,
	}
	h.leases, _ = store.(leaseAPI)
	h.routes = h.buildRoutes()
	return h
}

// httpConfig configures the client-facing HTTP API.
type httpConfig struct {
	RequestTimeout  time.Duration
	MaxRequestBytes int64
	MaxKeyBytes     int           // longest key on any route (--max-key-bytes); 0: no bound
	RetryAfter      time.Duration // suggested wait after a 503
	WatchHeartbeat  time.Duration // comment lines keeping idle watch streams open
	// WatchWriteTimeout is how long a watcher may take to accept one event
	// or heartbeat; one that does not read is closed (0: no bound).
	WatchWriteTimeout time.Duration
	Logger            *zap.Logger
	Metrics           *metrics
	// ClientURL is where clients reach this member, as its status reports
	// it (main: the host of its peer URL, --port, https with TLS).
	ClientURL string

	// RequireClientCert: --client-cert-auth. The listener verifies any
	// certificate given; the handler refuses requests without one.
	RequireClientCert bool
}

// closeStreams ends long-lived responses (watches) so a graceful shutdown
// does not wait for them; register it with http.Server.RegisterOnShutdown.
func (h *clientAPI) closeStreams() { h.closeOnce.Do(func() { close(h.closing) }) }

func (h *clientAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route, serve := h.route(r)
	if h.requireClientCert && route != "health" && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
		route, serve = "refused", h.certificateRequired
	}
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK, pretty: r.URL.Query().Has("pretty")}
	start := time.Now()
	serve(rec, r)
	h.metrics.observe(route, rec.code, time.Since(start))
	if isKeyRead(route, r.Method, rec.code) {
		h.metrics.readsServed.Inc()
	}
}

// isKeyRead reports a key read or listing that was answered, found or not:
// what the dashboard's reads per second count.
func isKeyRead(route, method string, code int) bool {
	read := (route == "kv" || route == "v1_kv" || route == "v1_list") && (method == http.MethodGet || method == http.MethodHead)
	return read && (code == http.StatusOK || code == http.StatusNotModified || code == http.StatusNotFound)
}

// certificateRequired refuses a client without a certificate when
// --client-cert-auth is on. The TLS handshake lets such a client in (it
// verifies any certificate given) so that /health can answer probes.
func (h *clientAPI) certificateRequired(w http.ResponseWriter, r *http.Request) {
	err := errors.New("forbidden: this member requires a client certificate signed by its --trusted-ca-file (--client-cert-auth)")
	if strings.HasPrefix(r.URL.Path, "/v1") {
		writeJSON(w, http.StatusForbidden, jsonError{Error: err.Error(), Code: http.StatusForbidden})
		return
	}
	http.Error(w, err.Error(), http.StatusForbidden)
}

// route picks the handler for r, and names the route for metrics.
func (h *clientAPI) route(r *http.Request) (string, http.HandlerFunc) {
	p := r.URL.Path
	switch {
	case p == "/health":
		return "health", h.routes.health
	case p == "/metrics":
		return "metrics", h.routes.metrics
	case p == "/v1/watch":
		return "v1_watch", h.routes.watch
	case p == "/v1/kv":
		return "v1_list", h.routes.list
	case strings.HasPrefix(p, "/v1/kv/"):
		return "v1_kv", h.routes.key
	case p == "/v1/txn":
		return "v1_txn", h.routes.txn
	case p == "/v1/status":
		return "v1_status", h.routes.status
	case p == "/v1/cluster/status":
		return "v1_cluster_status", h.routes.clusterStatus
	case p == "/v1/members" || strings.HasPrefix(p, "/v1/members/"):
		return "v1_members", h.routes.members
	case p == "/v1/leader":
		return "v1_leader", h.routes.leader
	case p == "/v1/leases" || strings.HasPrefix(p, "/v1/leases/"):
		return "v1_leases", h.routes.leases
	case strings.HasPrefix(p, "/v1/locks/"):
		return "v1_locks", h.routes.locks
	case strings.HasPrefix(p, "/v1/elections/"):
		return "v1_elections", h.routes.elections
	case p == "/v1" || strings.HasPrefix(p, "/v1/"):
		return "v1_unknown", h.routes.unknown
	case p == "/ui" || strings.HasPrefix(p, "/ui/"):
		return "ui", h.routes.ui
	default:
		return "kv", h.routes.root
	}
}

// routeHandlers are the handlers route picks from, each wrapped once in
// its method check and request timeout.
type routeHandlers struct {
	health, metrics, watch, list, key, txn, status, clusterStatus, members, leader, unknown, ui, root http.HandlerFunc
	leases, locks, elections                                                                          http.HandlerFunc
}

func (h *clientAPI) buildRoutes() routeHandlers {
	return routeHandlers{
		health:  h.getOrHead(h.health),
		metrics: h.getOrHead(h.metrics.handler().ServeHTTP),
		watch:   h.only(http.MethodGet, h.watch), // a stream: no request timeout
		list:    h.timed(h.getOrHead(h.list)),
		key:     h.timed(h.v1Key),
		txn:     h.timed(h.only(http.MethodPost, h.txn)),
		status:  h.getOrHead(h.statusReport),
		// Bounded by peerStatusTimeout, asking all members at once.
		clusterStatus: h.getOrHead(h.clusterStatusReport),
		members:       h.timed(h.membersMux().ServeHTTP),
		leader:        h.timed(h.only(http.MethodPost, h.transferLeader)),
		unknown: func(w http.ResponseWriter, r *http.Request) {
			h.jsonFail(w, fmt.Errorf("%w: no such endpoint %s", errNotFound, r.URL.Path))
		},
		ui:   h.getOrHead(serveUI(uiFiles)),
		root: h.timed(h.serveRoot),
		// Locks and campaigns bound their own waits (httplock.go).
		leases:    h.withLeases(h.timed(h.leasesMux().ServeHTTP)),
		locks:     h.withLeases(h.locksMux().ServeHTTP),
		elections: h.withLeases(h.electionsMux().ServeHTTP),
	}
}

// timed bounds a request by --request-timeout.
func (h *clientAPI) timed(serve http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), h.requestTimeout)
		defer cancel()
		serve(w, r.WithContext(ctx))
	}
}

// only answers 405 to methods other than method.
func (h *clientAPI) only(method string, serve http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method {
			h.methodNotAllowed(w, method)
			return
		}
		serve(w, r)
	}
}

// getOrHead answers 405 to methods other than GET and HEAD; net/http sends
// only the headers of a HEAD answer. (A watch stream takes GET alone.)
func (h *clientAPI) getOrHead(serve http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.methodNotAllowed(w, "GET, HEAD")
			return
		}
		serve(w, r)
	}
}

// statusRecorder remembers the status code written, for metrics, and
// whether the request asked for indented JSON (?pretty), for writeJSON.
type statusRecorder struct {
	http.ResponseWriter
	code   int
	pretty bool
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// serveRoot serves the original API, with plain-text errors as it had.
func (h *clientAPI) serveRoot(w http.ResponseWriter, r *http.Request) {
	key := strings.TrimPrefix(r.URL.Path, "/")
	ctx := r.Context()
	switch r.Method {
	case http.MethodPut:
		h.put(ctx, w, r, key)
	case http.MethodGet, http.MethodHead:
		h.get(ctx, w, r, key)
	case http.MethodPost:
		h.addMember(ctx, w, r, key)
	case http.MethodDelete:
		if isDecimal(key) {
			h.removeMember(ctx, w, key)
		} else {
			h.delete(ctx, w, r, key)
		}
	default:
		w.Header().Set("Allow", "GET, HEAD, PUT, POST, DELETE")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func (h *clientAPI) put(ctx context.Context, w http.ResponseWriter, r *http.Request, key string) {
	if err := h.checkRootKey(key); err != nil {
		h.fail(w, err)
		return
	}
	v, err := h.readBody(w, r)
	if err != nil {
		h.fail(w, err)
		return
	}
	h.writeRoot(ctx, w, r, wire.Op{Kind: wire.Put, Key: key, Value: v})
}

// writeRoot applies a root-path PUT or DELETE, honouring If-Match and
// If-None-Match as /v1 does: a condition a client sends is never ignored.
func (h *clientAPI) writeRoot(ctx context.Context, w http.ResponseWriter, r *http.Request, o wire.Op) {
	var err error
	if o.Cond, o.CondRev, err = parseConditions(r.Header); err != nil {
		h.fail(w, err)
		return
	}
	res, err := h.store.Txn(ctx, []wire.Op{o})
	switch {
	case err != nil:
		h.fail(w, err)
	case res.Failed == 0:
		h.fail(w, fmt.Errorf("%w: key %q does not match %s", errCondition, o.Key, describeCond(o)))
	case o.Kind == wire.Delete && !res.Found[0]:
		http.Error(w, "key not found", http.StatusNotFound)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func (h *clientAPI) get(ctx context.Context, w http.ResponseWriter, r *http.Request, key string) {
	if err := h.checkRootKey(key); err != nil {
		h.fail(w, err)
		return
	}
	serializable, err := parseConsistency(r)
	if err != nil {
		h.fail(w, err)
		return
	}
	it, ok, err := h.store.Get(ctx, key, serializable)
	switch {
	case err != nil:
		h.fail(w, err)
	case !ok:
		http.Error(w, "key not found", http.StatusNotFound)
	default:
		w.Write(it.Value)
	}
}

// parseConsistency reads ?consistency=linearizable|serializable.
func parseConsistency(r *http.Request) (serializable bool, err error) {
	switch c := r.URL.Query().Get("consistency"); c {
	case "", "linearizable":
		return false, nil
	case "serializable":
		return true, nil
	default:
		return false, fmt.Errorf("%w: consistency %q: want linearizable or serializable", errInvalid, c)
	}
}

func (h *clientAPI) delete(ctx context.Context, w http.ResponseWriter, r *http.Request, key string) {
	if err := h.checkRootKey(key); err != nil {
		h.fail(w, err)
		return
	}
	h.writeRoot(ctx, w, r, wire.Op{Kind: wire.Delete, Key: key})
}

func (h *clientAPI) addMember(ctx context.Context, w http.ResponseWriter, r *http.Request, key string) {
	id, err := parseMemberID(key)
	if err != nil {
		h.fail(w, err)
		return
	}
	body, err := h.readBody(w, r)
	if err != nil {
		h.fail(w, err)
		return
	}
	if _, err := h.cluster.AddMember(ctx, id, strings.TrimSpace(string(body)), false); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *clientAPI) removeMember(ctx context.Context, w http.ResponseWriter, key string) {
	id, err := parseMemberID(key)
	if err != nil {
		h.fail(w, err)
		return
	}
	if err := h.cluster.RemoveMember(ctx, id); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// checkRootKey checks a key from a root path.
func (h *clientAPI) checkRootKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", errInvalid)
	}
	return h.checkKey("key", key)
}

// checkKey refuses a key (or a prefix, named by what) over --max-key-bytes
// (main always sets one; in-process tests may leave it unbounded).
func (h *clientAPI) checkKey(what, key string) error {
	if h.maxKeyBytes > 0 && len(key) > h.maxKeyBytes {
		return fmt.Errorf("%w: %s is %d bytes, over the limit of %d bytes (--max-key-bytes)", errInvalid, what, len(key), h.maxKeyBytes)
	}
	return nil
}

var (
	errTooLarge    = errors.New("request body too large")
	errBodyTimeout = errors.New("request timeout")
)

func (h *clientAPI) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxRequestBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, fmt.Errorf("%w: limit is %d bytes (--max-request-bytes)", errTooLarge, h.maxRequestBytes)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, fmt.Errorf("%w: the body did not arrive within the read timeout", errBodyTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: reading body: %v", errInvalid, err)
	}
	return b, nil
}

// fail writes err as a plain-text answer with the status it calls for.
func (h *clientAPI) fail(w http.ResponseWriter, err error) {
	http.Error(w, err.Error(), h.statusCode(w, err))
}

// statusCode picks the status for err and sets the headers that go with it.
func (h *clientAPI) statusCode(w http.ResponseWriter, err error) int {
	code := statusFor(err)
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", h.retryAfter)
	}
	if code == http.StatusInternalServerError {
		h.logger.Error("request failed", zap.Error(err))
	}
	return code
}

// statusClientClosed is recorded (in metrics) for a request whose client
// went away before the answer; nginx's 499. It is no server error.
const statusClientClosed = 499

// statusFor maps request errors to HTTP status codes (the error table of docs/API.md).
func statusFor(err error) int {
	switch {
	case errors.Is(err, errInvalid):
		return http.StatusBadRequest
	case errors.Is(err, errTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errBodyTimeout), errors.Is(err, errWaitElapsed):
		return http.StatusRequestTimeout
	case errors.Is(err, errNotFound):
		return http.StatusNotFound
	case errors.Is(err, errCondition):
		return http.StatusPreconditionFailed
	case errors.Is(err, errCompacted):
		return http.StatusGone
	case errors.Is(err, errQuota):
		return http.StatusInsufficientStorage
	case errors.Is(err, errConflict):
		return http.StatusConflict
	case errors.Is(err, errNoLeader), errors.Is(err, errStopping), errors.Is(err, errCatchingUp), errors.Is(err, errDropped), errors.Is(err, errLeaderLostMid):
		return http.StatusServiceUnavailable
	case errors.Is(err, errTimeout):
		return http.StatusGatewayTimeout
	case errors.Is(err, errCanceled):
		return statusClientClosed
	default:
		return http.StatusInternalServerError
	}
}

func isDecimal(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func parseMemberID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("%w: member ID %q must be a decimal number above 0", errInvalid, s)
	}
	return id, nil
}
