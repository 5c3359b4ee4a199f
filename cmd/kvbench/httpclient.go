package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// httpClient talks the raftexample API to one member over one keep-alive
// connection: a transport of its own that never opens a second one.
type httpClient struct {
	base string // http://host:port
	hc   *http.Client
	buf  bytes.Buffer
}

func newHTTPClient(endpoint string, dialTimeout time.Duration) *httpClient {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1,
		MaxIdleConnsPerHost: 1,
		MaxConnsPerHost:     1,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &httpClient{base: strings.TrimRight(endpoint, "/"), hc: &http.Client{Transport: tr}}
}

func (c *httpClient) Close() { c.hc.CloseIdleConnections() }

// do sends one request and reads the whole answer into c.buf, so the
// connection can carry the next request.
func (c *httpClient) do(ctx context.Context, method, path string, body []byte, hdr map[string]string) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	c.buf.Reset()
	if _, err := c.buf.ReadFrom(resp.Body); err != nil {
		return nil, err
	}
	return resp, nil
}

// statusErr describes an unexpected answer; a 404 is errNotFound and a 412
// errConflict.
func (c *httpClient) statusErr(resp *http.Response) error {
	switch resp.StatusCode {
	case http.StatusNotFound:
		return errNotFound
	case http.StatusPreconditionFailed:
		return errConflict
	}
	msg := strings.TrimSpace(c.buf.String())
	if len(msg) > 200 {
		msg = msg[:200]
	}
	return &statusError{code: resp.StatusCode, msg: msg}
}

func (c *httpClient) Put(ctx context.Context, key string, value []byte) error {
	resp, err := c.do(ctx, http.MethodPut, "/"+key, value, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		return c.statusErr(resp)
	}
	return nil
}

func (c *httpClient) Get(ctx context.Context, key string, serializable bool) ([]byte, error) {
	path := "/" + key
	if serializable {
		path += "?consistency=serializable"
	}
	resp, err := c.do(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, c.statusErr(resp)
	}
	return c.buf.Bytes(), nil
}

// CAS reads the key's revision from its ETag on /v1/kv and writes with
// If-Match (or If-None-Match: * when the key is absent).
func (c *httpClient) CAS(ctx context.Context, key string, value []byte, serializable bool) error {
	path := "/v1/kv/" + key
	read := path
	if serializable {
		read += "?consistency=serializable"
	}
	resp, err := c.do(ctx, http.MethodGet, read, nil, nil)
	if err != nil {
		return err
	}
	cond := map[string]string{}
	switch tag := resp.Header.Get("ETag"); {
	case resp.StatusCode == http.StatusNotFound, resp.StatusCode == http.StatusOK && tag == "":
		cond["If-None-Match"] = "*"
	case resp.StatusCode == http.StatusOK:
		cond["If-Match"] = tag
	default:
		return c.statusErr(resp)
	}
	resp, err = c.do(ctx, http.MethodPut, path, value, cond)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		return c.statusErr(resp)
	}
	return nil
}

// raftexampleStatus is the part of GET /v1/status that kvbench uses.
type raftexampleStatus struct {
	ID     uint64 `json:"id"`
	Leader uint64 `json:"leader"`
	Keys   int    `json:"keys"`
}

func fetchStatus(ctx context.Context, endpoint string) (raftexampleStatus, error) {
	var st raftexampleStatus
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"/v1/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s/v1/status: HTTP %d", endpoint, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("%s/v1/status: %w", endpoint, err)
	}
	return st, nil
}

// memberRole is one endpoint's member ID and the leader it knows.
type memberRole struct {
	endpoint   string
	id, leader uint64
}

// raftexampleRoles asks every endpoint for its ID and its leader.
func raftexampleRoles(ctx context.Context, endpoints []string) ([]memberRole, error) {
	roles := make([]memberRole, len(endpoints))
	for i, ep := range endpoints {
		st, err := fetchStatus(ctx, ep)
		if err != nil {
			return nil, err
		}
		roles[i] = memberRole{endpoint: ep, id: st.ID, leader: st.Leader}
	}
	return roles, nil
}

// pickEndpoints chooses the endpoints that get the load: all of them, the
// leader's, or one follower's. Every member must agree on the leader.
func pickEndpoints(roles []memberRole, sendTo string) ([]string, error) {
	if sendTo == "all" {
		eps := make([]string, len(roles))
		for i, r := range roles {
			eps[i] = r.endpoint
		}
		return eps, nil
	}
	if len(roles) == 0 {
		return nil, fmt.Errorf("no endpoints")
	}
	leader := roles[0].leader
	for _, r := range roles {
		if r.leader == 0 || r.leader != leader {
			return nil, fmt.Errorf("members do not agree on a leader (%s says %d, %s says %d)",
				roles[0].endpoint, leader, r.endpoint, r.leader)
		}
	}
	for _, r := range roles {
		if (sendTo == "leader") == (r.id == leader) {
			return []string{r.endpoint}, nil
		}
	}
	if sendTo == "leader" {
		return nil, fmt.Errorf("leader %d is not among the endpoints", leader)
	}
	return nil, fmt.Errorf("no follower among the endpoints")
}
