package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// kvAPI is what the HTTP layer needs from the key-value store.
type kvAPI interface {
	Get(ctx context.Context, key string, serializable bool) (kvItem, bool, error)
	List(ctx context.Context, prefix, after string, limit int, serializable bool) (items []kvItem, more bool, err error)
	Txn(ctx context.Context, ops []op) (txnResult, error)
	Watch(key string, prefix bool, afterRev uint64, resume bool) (*watcher, []event, error)
	Unwatch(w *watcher)
}

// clusterAPI is what the HTTP layer needs to change the membership.
type clusterAPI interface {
	AddMember(ctx context.Context, id uint64, peerURL string) error
	RemoveMember(ctx context.Context, id uint64) error
}

// httpKVAPI serves the original raftexample API on root paths:
//
//	PUT /{key}       set key (body = value)
//	GET /{key}       read key
//	DELETE /{key}    delete key
//	POST /{id}       add member id (body = peer URL)
//	DELETE /{id}     remove member id (a decimal ID)
type httpKVAPI struct {
	store           kvAPI
	cluster         clusterAPI
	requestTimeout  time.Duration
	maxRequestBytes int64
	retryAfter      string // seconds, for 503 answers
	heartbeat       time.Duration
	logger          *zap.Logger
	closing         chan struct{} // closed on shutdown to end watch streams
	closeOnce       sync.Once
}

func newHTTPKVAPI(store kvAPI, cluster clusterAPI, cfg httpConfig) *httpKVAPI {
	secs := int((cfg.RetryAfter + time.Second - 1) / time.Second)
	return &httpKVAPI{
		store:           store,
		cluster:         cluster,
		requestTimeout:  cfg.RequestTimeout,
		maxRequestBytes: cfg.MaxRequestBytes,
		retryAfter:      strconv.Itoa(max(secs, 1)),
		heartbeat:       cfg.WatchHeartbeat,
		logger:          cfg.Logger,
		closing:         make(chan struct{}),
	}
}

// httpConfig configures the client-facing HTTP API.
type httpConfig struct {
	RequestTimeout  time.Duration
	MaxRequestBytes int64
	RetryAfter      time.Duration // suggested wait after a 503
	WatchHeartbeat  time.Duration // comment lines keeping idle watch streams open
	Logger          *zap.Logger
}

// closeStreams ends long-lived responses (watches) so a graceful shutdown
// does not wait for them; register it with http.Server.RegisterOnShutdown.
func (h *httpKVAPI) closeStreams() { h.closeOnce.Do(func() { close(h.closing) }) }

func (h *httpKVAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v1" || strings.HasPrefix(r.URL.Path, "/v1/") {
		h.serveV1(w, r)
		return
	}
	h.serveRoot(w, r)
}

// serveRoot serves the original API, with plain-text errors as it had.
func (h *httpKVAPI) serveRoot(w http.ResponseWriter, r *http.Request) {
	key := strings.TrimPrefix(r.URL.Path, "/")
	ctx, cancel := context.WithTimeout(r.Context(), h.requestTimeout)
	defer cancel()
	switch r.Method {
	case http.MethodPut:
		h.put(ctx, w, r, key)
	case http.MethodGet:
		h.get(ctx, w, r, key)
	case http.MethodPost:
		h.addMember(ctx, w, r, key)
	case http.MethodDelete:
		if isDecimal(key) {
			h.removeMember(ctx, w, key)
		} else {
			h.delete(ctx, w, key)
		}
	default:
		w.Header().Set("Allow", "GET, PUT, POST, DELETE")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func (h *httpKVAPI) put(ctx context.Context, w http.ResponseWriter, r *http.Request, key string) {
	if key == "" {
		h.fail(w, fmt.Errorf("%w: empty key", errInvalid))
		return
	}
	v, err := h.readBody(w, r)
	if err != nil {
		h.fail(w, err)
		return
	}
	if _, err := h.store.Txn(ctx, []op{{Kind: opPut, Key: key, Value: v}}); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *httpKVAPI) get(ctx context.Context, w http.ResponseWriter, r *http.Request, key string) {
	if key == "" {
		h.fail(w, fmt.Errorf("%w: empty key", errInvalid))
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

func (h *httpKVAPI) delete(ctx context.Context, w http.ResponseWriter, key string) {
	if key == "" {
		h.fail(w, fmt.Errorf("%w: empty key", errInvalid))
		return
	}
	res, err := h.store.Txn(ctx, []op{{Kind: opDelete, Key: key}})
	switch {
	case err != nil:
		h.fail(w, err)
	case !res.Found[0]:
		http.Error(w, "key not found", http.StatusNotFound)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func (h *httpKVAPI) addMember(ctx context.Context, w http.ResponseWriter, r *http.Request, key string) {
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
	if err := h.cluster.AddMember(ctx, id, strings.TrimSpace(string(body))); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *httpKVAPI) removeMember(ctx context.Context, w http.ResponseWriter, key string) {
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

var errTooLarge = errors.New("request body too large")

func (h *httpKVAPI) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxRequestBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, fmt.Errorf("%w: limit is %d bytes (--max-request-bytes)", errTooLarge, h.maxRequestBytes)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: reading body: %v", errInvalid, err)
	}
	return b, nil
}

// fail writes err as a plain-text answer with the status it calls for.
func (h *httpKVAPI) fail(w http.ResponseWriter, err error) {
	http.Error(w, err.Error(), h.status(w, err))
}

// status picks the status for err and sets the headers that go with it.
func (h *httpKVAPI) status(w http.ResponseWriter, err error) int {
	code := statusFor(err)
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", h.retryAfter)
	}
	if code == http.StatusInternalServerError {
		h.logger.Error("request failed", zap.Error(err))
	}
	return code
}

// statusFor maps request errors to HTTP status codes (SPEC §8).
func statusFor(err error) int {
	switch {
	case errors.Is(err, errInvalid):
		return http.StatusBadRequest
	case errors.Is(err, errTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errNotFound):
		return http.StatusNotFound
	case errors.Is(err, errCondition):
		return http.StatusPreconditionFailed
	case errors.Is(err, errCompacted):
		return http.StatusGone
	case errors.Is(err, errConflict):
		return http.StatusConflict
	case errors.Is(err, errNoLeader), errors.Is(err, errStopping), errors.Is(err, errCatchingUp), errors.Is(err, errDropped), errors.Is(err, errLeaderLostMid):
		return http.StatusServiceUnavailable
	case errors.Is(err, errTimeout):
		return http.StatusGatewayTimeout
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
