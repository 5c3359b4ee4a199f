package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// client sends requests to the first endpoint that answers, in the order
// given, and moves on to the next one when an endpoint cannot be reached
// or answers 503 (no leader, stopping, catching up). It remembers the
// endpoint that last answered, so a long run (import, watch) does not try
// a dead member before every request.
type client struct {
	endpoints []string
	hc        *http.Client
	timeout   time.Duration // bounds one request and its failovers; 0: none
	current   atomic.Int32  // index of the endpoint tried first
}

// clientConfig is what the global flags say about reaching the cluster.
type clientConfig struct {
	Endpoints         []string
	CACert, Cert, Key string
	Timeout           time.Duration
}

func newClient(cfg clientConfig) (*client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, usageErrorf("--endpoints: no endpoint given")
	}
	eps := make([]string, len(cfg.Endpoints))
	for i, ep := range cfg.Endpoints {
		u, err := url.Parse(strings.TrimSpace(ep))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, usageErrorf("--endpoints: %q is not a URL like http://127.0.0.1:12380", ep)
		}
		eps[i] = strings.TrimSuffix(u.String(), "/")
	}
	tlsConf, err := tlsConfig(cfg.CACert, cfg.Cert, cfg.Key)
	if err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: orDefault(cfg.Timeout, 5*time.Second), KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         dialer.DialContext,
		TLSClientConfig:     tlsConf,
		TLSHandshakeTimeout: orDefault(cfg.Timeout, 10*time.Second),
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second, // below the server's 60 s
	}
	return &client{endpoints: eps, hc: &http.Client{Transport: transport}, timeout: cfg.Timeout}, nil
}

// orDefault is d, or def when d is 0.
func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// tlsConfig builds the client side of TLS from the --cacert, --cert and
// --key files; nil when none is given (https endpoints then use the
// system's roots).
func tlsConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	if (certFile == "") != (keyFile == "") {
		return nil, usageErrorf("--cert and --key go together")
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
		conf.RootCAs = x509.NewCertPool()
		if !conf.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert %s: no PEM certificate in it", caFile)
		}
	}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--cert/--key: %w", err)
		}
		conf.Certificates = []tls.Certificate{pair}
	}
	return conf, nil
}

// request is one HTTP request to the API; path includes the query.
type request struct {
	method string
	path   string
	body   []byte
	header http.Header
	// retrySafe: sending it twice does no harm (reads, unconditional
	// puts of an import), so it may go to the next endpoint even when the
	// first may have applied it.
	retrySafe bool
}

func (r request) safeToRepeat() bool {
	return r.retrySafe || r.method == http.MethodGet || r.method == http.MethodHead
}

// response is an answer read whole.
type response struct {
	status   int
	header   http.Header
	body     []byte
	endpoint string
}

// apiError is an answer other than 2xx (or 304), with the server's message.
type apiError struct {
	Endpoint string
	Status   int
	Message  string // the JSON "error" field, or the plain-text body
	Body     []byte // the answer as sent
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s: %d %s: %s", e.Endpoint, e.Status, http.StatusText(e.Status), e.Message)
}

func newAPIError(endpoint string, status int, body []byte) *apiError {
	msg := strings.TrimSpace(string(body))
	var j struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &j) == nil && j.Error != "" {
		msg = j.Error
	}
	if msg == "" {
		msg = "(no message)"
	}
	return &apiError{Endpoint: endpoint, Status: status, Message: msg, Body: body}
}

// do sends r and reads the whole answer; a non-2xx answer is an *apiError.
// --timeout bounds the whole of it, failovers included.
func (c *client) do(ctx context.Context, r request) (*response, error) {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	resp, ep, err := c.open(ctx, r)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: reading the answer: %w", ep, err)
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: body, endpoint: ep}, nil
}

// open sends r to the endpoints in turn and returns the first answer that
// is not a reason to move on, with its body unread (a watch streams it).
// A non-2xx answer is returned as an *apiError, its body consumed.
func (c *client) open(ctx context.Context, r request) (*http.Response, string, error) {
	var failures []error
	start := int(c.current.Load())
	for i := range c.endpoints {
		idx := (start + i) % len(c.endpoints)
		ep := c.endpoints[idx]
		resp, err := c.send(ctx, ep, r)
		if err == nil {
			c.current.Store(int32(idx))
			return resp, ep, nil
		}
		if ctx.Err() != nil {
			return nil, ep, fmt.Errorf("%s: %w", ep, ctx.Err())
		}
		if !c.movesOn(r, err) {
			return nil, ep, err
		}
		failures = append(failures, err)
	}
	if len(failures) == 1 {
		return nil, c.endpoints[0], failures[0]
	}
	return nil, "", &endpointsError{failures}
}

// endpointsError is every endpoint's failure, in the order tried.
type endpointsError struct{ errs []error }

func (e *endpointsError) Error() string {
	lines := make([]string, len(e.errs))
	for i, err := range e.errs {
		lines[i] = err.Error()
	}
	return "no endpoint answered:\n  " + strings.Join(lines, "\n  ")
}

func (e *endpointsError) Unwrap() []error { return e.errs }

// movesOn reports whether a failed attempt should go to the next endpoint:
// one that never reached the member (a refused connection), a 503 that
// says nothing was applied, or any failure of a request safe to repeat.
// docs/API.md: "a 503 that says 'the write may still apply' leaves the
// outcome unknown", and so does a connection lost after sending.
func (c *client) movesOn(r request, err error) bool {
	var ae *apiError
	if errors.As(err, &ae) {
		if ae.Status != http.StatusServiceUnavailable {
			return false
		}
		return r.safeToRepeat() || !strings.Contains(ae.Message, "may still apply")
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return r.safeToRepeat()
}

// send makes one attempt at one endpoint.
func (c *client) send(ctx context.Context, endpoint string, r request) (*http.Response, error) {
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, endpoint+r.path, body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", endpoint, err)
	}
	for k, vs := range r.header {
		req.Header[k] = vs
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", endpoint, unwrapURLError(err))
	}
	if resp.StatusCode/100 == 2 || resp.StatusCode == http.StatusNotModified {
		return resp, nil
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return nil, newAPIError(endpoint, resp.StatusCode, msg)
}

// unwrapURLError drops net/http's `Get "url":` wrapper: the endpoint is
// named already, and the request path says nothing to the user.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// getJSON GETs path and decodes its JSON answer into v.
func (c *client) getJSON(ctx context.Context, path string, v any) (*response, error) {
	resp, err := c.do(ctx, request{method: http.MethodGet, path: path})
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(resp.body, v); err != nil {
		return nil, fmt.Errorf("%s: GET %s: not the JSON expected: %w", resp.endpoint, path, err)
	}
	return resp, nil
}

// keyPath is the /v1/kv path of key. Every byte outside a few safe ones
// is percent-encoded, so any key (spaces, '?', '#', '%', bytes that are not
// UTF-8) reaches the member as it is; dots are encoded in "." and ".."
// segments, which proxies and URL libraries would otherwise resolve.
func keyPath(key string) string {
	var b strings.Builder
	b.WriteString("/v1/kv/")
	segs := strings.Split(key, "/")
	for i, seg := range segs {
		if i > 0 {
			b.WriteByte('/')
		}
		dotsOnly := seg == "." || seg == ".."
		for j := 0; j < len(seg); j++ {
			ch := seg[j]
			if isUnreserved(ch) && !(dotsOnly && ch == '.') {
				b.WriteByte(ch)
			} else {
				fmt.Fprintf(&b, "%%%02X", ch)
			}
		}
	}
	return b.String()
}

func isUnreserved(ch byte) bool {
	return 'a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' ||
		ch == '-' || ch == '_' || ch == '.' || ch == '~'
}
