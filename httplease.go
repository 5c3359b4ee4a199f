package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"
)

// The lease routes (lease.go holds the leases themselves):
//
//	POST   /v1/leases                 grant: {"ttl":"10s"[,"id":N]} -> 201
//	GET    /v1/leases                 every lease
//	GET    /v1/leases/{id}            one lease with its keys
//	POST   /v1/leases/{id}/keepalive  restart its TTL
//	DELETE /v1/leases/{id}            revoke it, deleting its keys in one revision
//
// and PUT /v1/kv/{key}?lease=N or ?ttl=D (httpv1.go).

// leaseAPI is what the HTTP layer needs from the leases. The kvstore has
// it; a store without it (a test's fake) answers 404 on these routes.
type leaseAPI interface {
	GrantLease(ctx context.Context, id uint64, ttl time.Duration) (uint64, error)
	KeepAlive(ctx context.Context, id uint64) (time.Duration, error)
	RevokeLease(ctx context.Context, id uint64) (uint64, error)
	Lease(ctx context.Context, id uint64, serializable bool) (leaseInfo, error)
	Leases(ctx context.Context, serializable bool) ([]leaseInfo, error)
}

// jsonLease is a lease on the wire. Durations are given both as Go duration
// strings and in whole seconds (remaining rounded up, so 0 means gone).
type jsonLease struct {
	ID               uint64   `json:"id"`
	TTL              string   `json:"ttl"`
	TTLSeconds       int64    `json:"ttlSeconds"`
	Remaining        string   `json:"remaining,omitempty"`
	RemainingSeconds *int64   `json:"remainingSeconds,omitempty"`
	Keys             []string `json:"keys,omitempty"`
}

func newJSONLease(l leaseInfo, withRemaining bool) jsonLease {
	j := jsonLease{ID: l.ID, TTL: l.TTL.String(), TTLSeconds: int64(l.TTL / time.Second), Keys: l.Keys}
	if withRemaining {
		left := l.Remaining.Round(time.Millisecond)
		secs := int64(math.Ceil(left.Seconds()))
		j.Remaining, j.RemainingSeconds = left.String(), &secs
	}
	return j
}

func (h *clientAPI) leasesMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/leases", h.listLeases)
	mux.HandleFunc("POST /v1/leases", h.grantLease)
	mux.HandleFunc("/v1/leases", h.allowOnly("GET, HEAD, POST"))
	mux.HandleFunc("GET /v1/leases/{id}", h.getLease)
	mux.HandleFunc("DELETE /v1/leases/{id}", h.revokeLease)
	mux.HandleFunc("/v1/leases/{id}", h.allowOnly("GET, HEAD, DELETE"))
	mux.HandleFunc("POST /v1/leases/{id}/keepalive", h.keepAlive)
	mux.HandleFunc("/v1/leases/{id}/keepalive", h.allowOnly("POST"))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.jsonFail(w, fmt.Errorf("%w: no such endpoint %s", errNotFound, r.URL.Path))
	})
	return mux
}

// withLeases serves a lease route, or 404 when the store has no leases.
func (h *clientAPI) withLeases(serve http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h.leases == nil {
			h.jsonFail(w, fmt.Errorf("%w: no such endpoint %s (this store has no leases)", errNotFound, r.URL.Path))
			return
		}
		serve(w, r)
	}
}

// parseTTL reads a TTL given as a Go duration ("10s", "1m30s") or as a
// number of seconds.
func parseTTL(raw json.RawMessage) (time.Duration, error) {
	var text string
	if err := json.Unmarshal(raw, &text); err == nil {
		d, err := time.ParseDuration(text)
		if err != nil {
			return 0, fmt.Errorf("%w: ttl %q: want a duration like \"10s\" or a number of seconds", errInvalid, text)
		}
		return d, validTTL(d)
	}
	var secs float64
	if err := json.Unmarshal(raw, &secs); err != nil || secs <= 0 || secs > maxLeaseTTL.Seconds() {
		return 0, fmt.Errorf("%w: ttl %s: want a duration like \"10s\" or a number of seconds", errInvalid, raw)
	}
	d := time.Duration(secs * float64(time.Second))
	return d, validTTL(d)
}

func (h *clientAPI) grantLease(w http.ResponseWriter, r *http.Request) {
	body, err := h.readBody(w, r)
	if err != nil {
		h.jsonFail(w, err)
		return
	}
	var req struct {
		TTL json.RawMessage `json:"ttl"`
		ID  uint64          `json:"id"`
	}
	if err := decodeStrictJSON(body, &req); err != nil {
		h.jsonFail(w, fmt.Errorf(`%w: lease body must be like {"ttl":"10s"}: %v`, errInvalid, err))
		return
	}
	if req.TTL == nil {
		h.jsonFail(w, fmt.Errorf(`%w: lease body needs a ttl, like {"ttl":"10s"}`, errInvalid))
		return
	}
	ttl, err := parseTTL(req.TTL)
	if err != nil {
		h.jsonFail(w, err)
		return
	}
	id, err := h.leases.GrantLease(r.Context(), req.ID, ttl)
	if err != nil {
		h.jsonFail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, newJSONLease(leaseInfo{ID: id, TTL: ttl}, false))
}

// leaseID reads the {id} of a lease path.
func leaseID(r *http.Request) (uint64, error) {
	s := r.PathValue("id")
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("%w: lease ID %q must be a decimal number above 0", errInvalid, s)
	}
	return id, nil
}

func (h *clientAPI) keepAlive(w http.ResponseWriter, r *http.Request) {
	id, err := leaseID(r)
	var ttl time.Duration
	if err == nil {
		ttl, err = h.leases.KeepAlive(r.Context(), id)
	}
	if err != nil {
		h.jsonFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, newJSONLease(leaseInfo{ID: id, TTL: ttl, Remaining: ttl}, true))
}

func (h *clientAPI) revokeLease(w http.ResponseWriter, r *http.Request) {
	id, err := leaseID(r)
	var rev uint64
	if err == nil {
		rev, err = h.leases.RevokeLease(r.Context(), id)
	}
	if err != nil {
		h.jsonFail(w, err)
		return
	}
	w.Header().Set("X-Revision", strconv.FormatUint(rev, 10))
	w.WriteHeader(http.StatusNoContent)
}

func (h *clientAPI) getLease(w http.ResponseWriter, r *http.Request) {
	id, err := leaseID(r)
	serializable := false
	if err == nil {
		serializable, err = parseConsistency(r)
	}
	var l leaseInfo
	if err == nil {
		l, err = h.leases.Lease(r.Context(), id, serializable)
	}
	if err != nil {
		h.jsonFail(w, err)
		return
	}
	if l.Keys == nil {
		l.Keys = []string{}
	}
	j := newJSONLease(l, true)
	writeJSON(w, http.StatusOK, struct {
		jsonLease
		Keys []string `json:"keys"` // present even when empty
	}{j, l.Keys})
}

func (h *clientAPI) listLeases(w http.ResponseWriter, r *http.Request) {
	serializable, err := parseConsistency(r)
	var ls []leaseInfo
	if err == nil {
		ls, err = h.leases.Leases(r.Context(), serializable)
	}
	if err != nil {
		h.jsonFail(w, err)
		return
	}
	out := struct {
		Leases []jsonLease `json:"leases"`
	}{Leases: make([]jsonLease, len(ls))}
	for i, l := range ls {
		out.Leases[i] = newJSONLease(l, true)
	}
	writeJSON(w, http.StatusOK, out)
}

// parseKeyLease reads ?lease=N and ?ttl=D of a PUT /v1/kv/{key}: the lease
// to attach the key to, or the TTL of a lease of its own.
func parseKeyLease(r *http.Request) (id uint64, ttl time.Duration, err error) {
	q := r.URL.Query()
	if q.Has("lease") && q.Has("ttl") {
		return 0, 0, fmt.Errorf("%w: use ?lease= or ?ttl=, not both", errInvalid)
	}
	if s := q.Get("lease"); q.Has("lease") {
		if id, err = strconv.ParseUint(s, 10, 64); err != nil || id == 0 {
			return 0, 0, fmt.Errorf("%w: lease %q must be a decimal lease ID above 0", errInvalid, s)
		}
	}
	if s := q.Get("ttl"); q.Has("ttl") {
		if ttl, err = time.ParseDuration(s); err != nil {
			return 0, 0, fmt.Errorf("%w: ttl %q: want a duration like 30s", errInvalid, s)
		}
		if err = validTTL(ttl); err != nil {
			return 0, 0, err
		}
	}
	return id, ttl, nil
}
