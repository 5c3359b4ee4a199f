package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"raftexample/internal/wire"
)

// Locks and elections, built on leases and create revisions the way etcd's
// concurrency package builds them, but served by the member:
//
//	POST /v1/locks/{name}                    {"lease":N} -> 200 once held
//	POST /v1/elections/{name}/campaign       {"lease":N,"value":..} -> 200 once leader
//	GET  /v1/elections/{name}                the leader
//	GET  /v1/elections/{name}/observe        server-sent events, one per leader change
//	POST /v1/elections/{name}/resign         {"lease":N} -> 204
//
// A contender's key is "<name>/<lease ID in hex>", attached to its lease.
// The holder (or leader) is the key with the lowest create revision under
// "<name>/"; that revision is the fencing token, which strictly increases
// from one holder to the next. Each waiter watches only the key just before
// its own (the greatest create revision below it), and checks again once
// that key is deleted: one unlock wakes one waiter, not all of them.

var errLockLost = fmt.Errorf("%w: the key was deleted (its lease ended, or it was deleted) while waiting", errConflict)

// errWaitElapsed: ?wait= passed before the lock was held (408).
var errWaitElapsed = errors.New("wait elapsed")

// maxLockWait bounds ?wait=: an answer must be written within the client
// listener's write timeout.
const maxLockWait = time.Minute

func (h *clientAPI) locksMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/locks/{name}", h.lock)
	mux.HandleFunc("/v1/locks/{name}", h.allowOnly("POST"))
	mux.HandleFunc("/", h.noEndpoint)
	return mux
}

func (h *clientAPI) electionsMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/elections/{name}", h.timed(h.electionLeader))
	mux.HandleFunc("/v1/elections/{name}", h.allowOnly("GET, HEAD"))
	mux.HandleFunc("POST /v1/elections/{name}/campaign", h.campaign)
	mux.HandleFunc("/v1/elections/{name}/campaign", h.allowOnly("POST"))
	mux.HandleFunc("GET /v1/elections/{name}/observe", h.observe)
	mux.HandleFunc("/v1/elections/{name}/observe", h.allowOnly("GET"))
	mux.HandleFunc("POST /v1/elections/{name}/resign", h.timed(h.resign))
	mux.HandleFunc("/v1/elections/{name}/resign", h.allowOnly("POST"))
	mux.HandleFunc("/", h.noEndpoint)
	return mux
}

func (h *clientAPI) noEndpoint(w http.ResponseWriter, r *http.Request) {
	h.jsonFail(w, fmt.Errorf("%w: no such endpoint %s", errNotFound, r.URL.Path))
}

// contenderKey is a lock's or election's key for a lease.
func contenderKey(name string, lease uint64) string {
	return name + "/" + strconv.FormatUint(lease, 16)
}

// contenderRequest is the body of a lock, campaign or resign request.
type contenderRequest struct {
	Lease uint64  `json:"lease"`
	Value *string `json:"value"`
}

// readContender reads a contender's body and the name from the path;
// withValue says whether a value is allowed (campaign).
func (h *clientAPI) readContender(w http.ResponseWriter, r *http.Request, withValue bool) (string, contenderRequest, error) {
	name := r.PathValue("name")
	if err := h.checkKey("name", name+"/ffffffffffffffff"); err != nil {
		return "", contenderRequest{}, err
	}
	body, err := h.readBody(w, r)
	if err != nil {
		return "", contenderRequest{}, err
	}
	var req contenderRequest
	if !utf8.Valid(body) {
		return "", req, fmt.Errorf("%w: body is not UTF-8", errInvalid)
	}
	if err := decodeStrictJSON(body, &req); err != nil {
		return "", req, fmt.Errorf(`%w: body must be like {"lease":N}: %v`, errInvalid, err)
	}
	switch {
	case req.Lease == 0:
		return "", req, fmt.Errorf(`%w: body needs "lease", the ID of a lease that ends the hold when it ends`, errInvalid)
	case req.Value != nil && !withValue:
		return "", req, fmt.Errorf(`%w: only a campaign takes a "value"`, errInvalid)
	}
	return name, req, nil
}

// waitBound reads ?wait=: how long a lock or campaign may wait, and
// whether the client set it (408 when it passes). Without it, the bound is
// --request-timeout and the answer 504, as for any request.
func (h *clientAPI) waitBound(r *http.Request) (bound time.Duration, explicit bool, err error) {
	s := r.URL.Query().Get("wait")
	if s == "" {
		return h.requestTimeout, false, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 || d > maxLockWait {
		return 0, false, fmt.Errorf("%w: wait %q: want a duration above 0 and at most %v, like 5s", errInvalid, s, maxLockWait)
	}
	return d, true, nil
}

// jsonHolder is a lock's holder or an election's leader.
type jsonHolder struct {
	Key      string  `json:"key"`
	Fencing  uint64  `json:"fencing,omitempty"` // locks: the create revision
	Rev      uint64  `json:"rev,omitempty"`     // elections: the create revision
	ModRev   uint64  `json:"modRev,omitempty"`
	Lease    uint64  `json:"lease"`
	Value    *string `json:"value,omitempty"`
	ValueB64 []byte  `json:"valueBase64,omitempty"`
}

func (h *clientAPI) lock(w http.ResponseWriter, r *http.Request) {
	name, req, err := h.readContender(w, r, false)
	if err != nil {
		h.jsonFail(w, err)
		return
	}
	it, err := h.contend(r, name, req.Lease, nil)
	if err != nil {
		h.jsonFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, jsonHolder{Key: it.Key, Fencing: it.CreateRev, Lease: it.Lease})
}

func (h *clientAPI) campaign(w http.ResponseWriter, r *http.Request) {
	name, req, err := h.readContender(w, r, true)
	if err != nil {
		h.jsonFail(w, err)
		return
	}
	value := []byte{}
	if req.Value != nil {
		value = []byte(*req.Value)
	}
	it, err := h.contend(r, name, req.Lease, value)
	if err != nil {
		h.jsonFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, newJSONHolder(it))
}

func newJSONHolder(it kvItem) jsonHolder {
	j := jsonHolder{Key: it.Key, Rev: it.CreateRev, ModRev: it.Rev, Lease: it.Lease}
	if utf8.Valid(it.Value) {
		v := string(it.Value)
		j.Value = &v
	} else {
		j.ValueB64 = it.Value
	}
	return j
}

// contend puts the lease's key under name and waits until it is the oldest
// there. value nil is a lock's (an existing key is kept as it is: locking
// again with the same lease is the same hold); otherwise it is a campaign's
// value, written over an existing key's. If the wait ends without the hold,
// the key is deleted before answering.
func (h *clientAPI) contend(r *http.Request, name string, lease uint64, value []byte) (kvItem, error) {
	bound, explicit, err := h.waitBound(r)
	if err != nil {
		return kvItem{}, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), bound)
	defer cancel()
	key := contenderKey(name, lease)
	it, err := h.putContender(ctx, key, lease, value)
	if err != nil {
		return kvItem{}, waitErr(ctx, err, explicit)
	}
	if err = h.waitTurn(ctx, name+"/", it); err == nil {
		return it, nil
	}
	err = waitErr(ctx, err, explicit)
	if !errors.Is(err, errLockLost) {
		h.withdraw(key)
	}
	return kvItem{}, err
}

// waitErr turns the end of a wait into errWaitElapsed when the client set
// ?wait=, else errTimeout.
func waitErr(ctx context.Context, err error, explicit bool) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && (errors.Is(err, errTimeout) || errors.Is(err, context.DeadlineExceeded)) {
		if explicit {
			return fmt.Errorf("%w: not held within ?wait=; the request's key was deleted", errWaitElapsed)
		}
		return fmt.Errorf("%w: not held within --request-timeout; the request's key was deleted", errTimeout)
	}
	return err
}

// withdraw deletes a contender's key after its wait failed, with a request
// timeout of its own: the request's has run out.
func (h *clientAPI) withdraw(key string) {
	ctx, cancel := context.WithTimeout(context.Background(), h.requestTimeout)
	defer cancel()
	h.store.Txn(ctx, []wire.Op{{Kind: wire.Delete, Key: key}})
}

// putContender creates key on lease if it is absent, or, for a campaign,
// writes value over it; it returns the key as written.
func (h *clientAPI) putContender(ctx context.Context, key string, lease uint64, value []byte) (kvItem, error) {
	put := wire.Op{Kind: wire.Put, Key: key, Value: value, Lease: lease, Cond: wire.CondAbsent}
	if value == nil {
		put.Value = []byte{}
	}
	for {
		res, err := h.store.Txn(ctx, []wire.Op{put})
		switch {
		case err != nil:
			return kvItem{}, err
		case res.LeaseErr != nil:
			return kvItem{}, fmt.Errorf("lease %d: %w", lease, res.LeaseErr)
		case res.Failed < 0:
			return kvItem{Key: key, Value: put.Value, Rev: res.Rev, CreateRev: res.CreateRev[0], Lease: lease}, nil
		}
		// The key exists: this lease contends already.
		it, ok, err := h.store.Get(ctx, key, true)
		if err != nil {
			return kvItem{}, err
		}
		if ok && value == nil {
			return it, nil
		}
		if ok {
			put.Cond, put.CondRev = wire.CondRev, it.Rev // a campaign's new value
		} else {
			put.Cond = wire.CondAbsent // gone meanwhile: create it again
		}
	}
}

// waitTurn returns once me is the oldest key under prefix, waiting each
// time for the key just before it to go.
func (h *clientAPI) waitTurn(ctx context.Context, prefix string, me kvItem) error {
	for {
		items, rev, err := h.listAll(ctx, prefix)
		if err != nil {
			return err
		}
		var pred *kvItem
		found := false
		for i, it := range items {
			switch {
			case it.Key == me.Key:
				found = it.CreateRev == me.CreateRev
			case it.CreateRev < me.CreateRev && (pred == nil || it.CreateRev > pred.CreateRev):
				pred = &items[i]
			}
		}
		if !found {
			return errLockLost
		}
		if pred == nil {
			return nil
		}
		gone, err := h.waitDeleted(ctx, pred.Key, me.Key, rev)
		if err != nil {
			return err
		}
		if gone {
			h.metrics.lockWakeups.Inc()
		}
	}
}

// listAll lists every key under prefix on this member, and the revision
// of the first page: a watch from it sees every change after the listing.
func (h *clientAPI) listAll(ctx context.Context, prefix string) ([]kvItem, uint64, error) {
	var items []kvItem
	var rev uint64
	after := ""
	for {
		page, err := h.store.List(ctx, prefix, after, maxListLimit, true)
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 {
			rev = page.Rev
		}
		items = append(items, page.Items...)
		if !page.More {
			return items, rev, nil
		}
		after = page.Items[len(page.Items)-1].Key
	}
}

// waitDeleted waits, from revision rev on, until pred is deleted (true) or
// mine is deleted, or the watch is cut off (false: check again).
func (h *clientAPI) waitDeleted(ctx context.Context, pred, mine string, rev uint64) (bool, error) {
	pw, backlog, _, err := h.store.Watch(pred, false, rev, true)
	if errors.As(err, new(*compactedError)) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer h.store.Unwatch(pw)
	if deletes(backlog, pred) {
		return true, nil
	}
	mw, backlog, _, err := h.store.Watch(mine, false, rev, true)
	if errors.As(err, new(*compactedError)) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer h.store.Unwatch(mw)
	if deletes(backlog, mine) {
		return false, nil
	}
	for {
		select {
		case evs, ok := <-pw.Revisions():
			if !ok {
				return false, nil
			}
			pw.Received(evs)
			if deletes(evs, pred) {
				return true, nil
			}
		case evs, ok := <-mw.Revisions():
			if !ok {
				return false, nil
			}
			mw.Received(evs)
			if deletes(evs, mine) {
				return false, nil
			}
		case <-ctx.Done():
			return false, ctxErr(ctx)
		case <-h.closing:
			return false, errStopping
		}
	}
}

// deletes reports whether evs delete key.
func deletes(evs []event, key string) bool {
	for _, e := range evs {
		if e.Type == wire.Delete && e.Key == key {
			return true
		}
	}
	return false
}

// leaderOf returns the oldest key of items, if any.
func leaderOf(items []kvItem) (kvItem, bool) {
	var lead kvItem
	for _, it := range items {
		if lead.Key == "" || it.CreateRev < lead.CreateRev {
			lead = it
		}
	}
	return lead, lead.Key != ""
}

func (h *clientAPI) electionLeader(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	serializable, err := parseConsistency(r)
	if err == nil && !serializable {
		// One linearizable round; the listing below then reads this state.
		_, err = h.store.List(r.Context(), name+"/", "", 1, false)
	}
	var items []kvItem
	if err == nil {
		items, _, err = h.listAll(r.Context(), name+"/")
	}
	if err != nil {
		h.jsonFail(w, err)
		return
	}
	lead, ok := leaderOf(items)
	if !ok {
		h.jsonFail(w, fmt.Errorf("%w: election %q has no leader", errNotFound, name))
		return
	}
	writeJSON(w, http.StatusOK, newJSONHolder(lead))
}

func (h *clientAPI) resign(w http.ResponseWriter, r *http.Request) {
	name, req, err := h.readContender(w, r, false)
	if err != nil {
		h.jsonFail(w, err)
		return
	}
	key := contenderKey(name, req.Lease)
	res, err := h.store.Txn(r.Context(), []wire.Op{{Kind: wire.Delete, Key: key}})
	switch {
	case err != nil:
		h.jsonFail(w, err)
	case !res.Found[0]:
		h.jsonFail(w, fmt.Errorf("%w: lease %d is not campaigning in %q", errNotFound, req.Lease, name))
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// observe streams the election's leader as server-sent events: the current
// one first (if any), then one event each time the leader or its value
// changes. A vacancy sends nothing; the next leader's event follows it.
func (h *clientAPI) observe(w http.ResponseWriter, r *http.Request) {
	prefix := r.PathValue("name") + "/"
	if err := h.checkKey("name", prefix); err != nil {
		h.jsonFail(w, err)
		return
	}
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	sse := sseWriter{w: w, flusher: flusher, rc: http.NewResponseController(w), timeout: h.watchWrite}
	defer sse.finish()
	sse.comment("observing")
	heartbeat := time.NewTicker(h.heartbeat)
	defer heartbeat.Stop()
	var last kvItem
	for sse.err == nil {
		items, rev, err := h.listAll(r.Context(), prefix)
		if err != nil {
			return
		}
		if lead, ok := leaderOf(items); ok && (lead.Key != last.Key || lead.CreateRev != last.CreateRev || lead.Rev != last.Rev) {
			sse.event("", lead.Rev, newJSONHolder(lead))
			last = lead
		}
		sse.flush()
		wt, backlog, _, err := h.store.Watch(prefix, true, rev, true)
		if err != nil && !errors.As(err, new(*compactedError)) {
			return
		}
		if err == nil && len(backlog) > 0 {
			h.store.Unwatch(wt) // changed since the listing: list again
		} else if err == nil {
			h.awaitChange(r.Context(), wt, &sse, heartbeat.C)
			h.store.Unwatch(wt)
		}
	}
}

// awaitChange returns once wt delivers a revision or ends, sending
// heartbeats meanwhile, or when the client or the server goes.
func (h *clientAPI) awaitChange(ctx context.Context, wt *watcher, sse *sseWriter, heartbeat <-chan time.Time) {
	for sse.err == nil {
		select {
		case evs, ok := <-wt.Revisions():
			if ok {
				wt.Received(evs)
			}
			return
		case <-heartbeat:
			sse.comment("heartbeat")
			sse.flush()
		case <-ctx.Done():
			sse.err = ctx.Err()
		case <-h.closing:
			sse.err = errStopping
		}
	}
}
