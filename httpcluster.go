package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Operating the cluster over HTTP:
//
//	GET    /health[?serializable]          200 {"health":"true"} or 503 with a reason
//	GET    /metrics                        Prometheus text format
//	GET    /v1/status                      this member's view of the cluster
//	GET    /v1/members                     the members
//	POST   /v1/members                     {"peerURL":..,"id"?:..,"learner"?:bool} -> 201
//	DELETE /v1/members/{id}                remove (moving leadership first if it leads)
//	POST   /v1/members/{id}/promote        learner -> voter; 409 while far behind
//	POST   /v1/leader                      {"id":N}: move leadership there

// statusAPI is what the HTTP layer needs to report on the member.
type statusAPI interface {
	Status() memberStatus
	Health(ctx context.Context, serializable bool) error
}

func (h *httpKVAPI) health(w http.ResponseWriter, r *http.Request) {
	_, serializable := r.URL.Query()["serializable"]
	if err := h.status.Health(r.Context(), serializable); err != nil {
		w.Header().Set("Retry-After", h.retryAfter)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"health": "false", "reason": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"health": "true"})
}

func (h *httpKVAPI) statusReport(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, h.status.Status())
}

// members routes /v1/members and /v1/members/{id}[/promote].
func (h *httpKVAPI) members(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/v1/members"), "/")
	idText, action, _ := strings.Cut(rest, "/")
	switch {
	case rest == "":
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			writeJSON(w, http.StatusOK, map[string][]memberInfo{"members": h.cluster.ListMembers()})
		case http.MethodPost:
			h.addMemberJSON(w, r)
		default:
			h.methodNotAllowed(w, "GET, HEAD, POST")
		}
	case action == "" && r.Method == http.MethodDelete, action == "promote" && r.Method == http.MethodPost:
		id, err := parseMemberID(idText)
		if err != nil {
			h.jsonFail(w, err)
			return
		}
		if action == "promote" {
			err = h.cluster.PromoteMember(r.Context(), id)
		} else {
			err = h.cluster.RemoveMember(r.Context(), id)
		}
		if err != nil {
			h.jsonFail(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case action == "":
		h.methodNotAllowed(w, "DELETE")
	case action == "promote":
		h.methodNotAllowed(w, "POST")
	default:
		h.jsonFail(w, fmt.Errorf("%w: no such endpoint %s", errNotFound, r.URL.Path))
	}
}

func (h *httpKVAPI) addMemberJSON(w http.ResponseWriter, r *http.Request) {
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

func (h *httpKVAPI) transferLeader(w http.ResponseWriter, r *http.Request) {
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
func (h *httpKVAPI) decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
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

func (h *httpKVAPI) methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeJSON(w, http.StatusMethodNotAllowed, jsonError{Error: "method not allowed", Code: http.StatusMethodNotAllowed})
}
