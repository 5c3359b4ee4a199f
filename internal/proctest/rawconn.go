package proctest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// RawConn is a raw HTTP/1.1 keep-alive connection the test controls: it
// stays open between requests, can be left idle, and shows when the server
// closes it.
type RawConn struct {
	net.Conn
	R *bufio.Reader // reads what the server sent
}

// DialRaw connects to addr (host:port); the connection is closed when the
// test ends.
func DialRaw(t TB, addr string) *RawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &RawConn{Conn: c, R: bufio.NewReader(c)}
}

// Do sends one request and reads its whole answer, waiting at most wait.
// It does not touch the test, so it may run on any goroutine.
func (c *RawConn) Do(method, path, body string, wait time.Duration) (int, string, error) {
	c.SetDeadline(time.Now().Add(wait))
	defer c.SetDeadline(time.Time{})
	req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n%s", method, path, len(body), body)
	if _, err := io.WriteString(c, req); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(c.R, nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// WaitClosed waits until the server closes c (a read sees EOF or a reset)
// and returns how long that took, or an error if it is still open after
// limit. It does not touch the test, so it may run on any goroutine.
func (c *RawConn) WaitClosed(limit time.Duration) (time.Duration, error) {
	start := time.Now()
	c.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c.R)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return 0, fmt.Errorf("connection still open after %v", limit)
	}
	return time.Since(start), nil
}
