package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
)

// Operating the cluster over HTTP:
//
//	GET    /health[?serializable]          200 {"health":"true"} or 503 with a reason
//	GET    /metrics                        Prometheus text format
//	GET    /v1/status                      this member's view of the cluster
//	GET    /v1/cluster/status              every member's status (clusterstatus.go)
//	GET    /v1/members                     the members
//	POST   /v1/members                     {"peerURL":..,"id"?:..,"learner"?:bool} -> 201
//	DELETE /v1/members/{id}                remove (moving leadership first if it leads)
//	POST   /v1/members/{id}/promote        learner -> voter; 409 while far behind
//	POST   /v1/leader                      {"id":N}: move leadership there

// statusAPI is what the HTTP layer needs to report on the member.
type statusAPI interface {
	Status() memberStatus
	ClusterStatus(ctx context.Context) clusterStatus
	Health(ctx context.Context, serializable bool) error
}

func (h *clientAPI) health(w http.ResponseWriter, r *http.Request) {
	_, serializable := r.URL.Query()["serializable"]
	if err := h.status.Health(r.Context(), serializable); err != nil {
		w.Header().Set("Retry-After", h.retryAfter)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"health": "false", "reason": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"health": "true"})
}

func (h *clientAPI) statusReport(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, h.status.Status())
}

// membersMux routes /v1/members and /v1/members/{id}[/promote] with
// net/http's method and wildcard patterns. Each path also has a pattern
// without a method, so that other methods get the API's JSON 405 with Allow
// rather than the mux's plain-text one; other paths under /v1/members are
// the API's JSON 404.
func (h *clientAPI) membersMux() http.Handler {
	mux := http.NewServeMux()
	list := func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string][]memberInfo{"members": h.cluster.ListMembers()})
	}
	for _, pattern := range []string{"/v1/members", "/v1/members/{$}"} {
		mux.HandleFunc("GET "+pattern, list) // GET patterns match HEAD too
		mux.HandleFunc("POST "+pattern, h.addMemberJSON)
		mux.HandleFunc(pattern, h.allowOnly("GET, HEAD, POST"))
	}
	mux.HandleFunc("DELETE /v1/members/{id}", h.memberAction(h.cluster.RemoveMember))
	mux.HandleFunc("/v1/members/{id}", h.allowOnly("DELETE"))
	mux.HandleFunc("POST /v1/members/{id}/promote", h.memberAction(h.cluster.PromoteMember))
	mux.HandleFunc("/v1/members/{id}/promote", h.allowOnly("POST"))
	notFound := func(w http.ResponseWriter, r *http.Request) {
		h.jsonFail(w, fmt.Errorf("%w: no such endpoint %s", errNotFound, r.URL.Path))
	}
	mux.HandleFunc("/", notFound)
	// The mux would redirect a path with "." or ".." segments or doubled
	// slashes to its clean form; the API names no such path, so say so.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p != path.Clean(p) && p != path.Clean(p)+"/" {
			notFound(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// memberAction serves a request on /v1/members/{id}...: 204 once do has
// done its work on the member the path names.
func (h *clientAPI) memberAction(do func(context.Context, uint64) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := parseMemberID(r.PathValue("id"))
		if err == nil {
			err = do(r.Context(), id)
		}
		if err != nil {
			h.jsonFail(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// allowOnly answers every request with the JSON 405 naming allow.
func (h *clientAPI) allowOnly(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { h.methodNotAllowed(w, allow) }
}

func (h *clientAPI) addMemberJSON(w http.ResponseWriter, r *http.Request) {
	var req struct {
		PeerURL string  `json:"peerURL"`
		ID      *uint64 `json:"id"` // absent: the cluster picks one
		Learner bool    `json:"learner"`
	}
	if err := h.decodeJSON(w, r, &req); err != nil {
		h.jsonFail(w, err)
		return
	}
	var id uint64
	if req.ID != nil {
		if id = *req.ID; id == 0 {
			h.jsonFail(w, fmt.Errorf("%w: member ID 0; leave \"id\" out to have one picked", errInvalid))
			return
		}
	}
	m, err := h.cluster.AddMember(r.Context(), id, req.PeerURL, req.Learner)
	if err != nil {
		h.jsonFail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, m)
}

func (h *clientAPI) transferLeader(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ID uint64 `json:"id"`
	}
	if err := h.decodeJSON(w, r, &req); err != nil {
		h.jsonFail(w, err)
		return
	}
	if req.ID == 0 {
		h.jsonFail(w, fmt.Errorf("%w: body must name the new leader: {\"id\": N}", errInvalid))
		return
	}
	if err := h.cluster.TransferLeader(r.Context(), req.ID); err != nil {
		h.jsonFail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// decodeJSON reads a size-limited JSON object with no unknown fields.
func (h *clientAPI) decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := h.readBody(w, r)
	if err != nil {
		return err
	}
	if err := decodeStrictJSON(body, v); err != nil {
		return fmt.Errorf("%w: JSON body: %s", errInvalid, err)
	}
	return nil
}

// decodeStrictJSON decodes one JSON value from body into v, refusing
// unknown fields and anything after the value but white space. Its error
// is in the client's terms (jsonProblem).
func decodeStrictJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errors.New(jsonProblem(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

func (h *clientAPI) methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeJSON(w, http.StatusMethodNotAllowed, jsonError{Error: "method not allowed", Code: http.StatusMethodNotAllowed})
}
