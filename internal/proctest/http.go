package proctest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Reply is an HTTP answer, read whole.
type Reply struct {
	Code   int
	Body   string
	Header http.Header
}

// Send makes one request with client and reads the whole answer. header
// holds name, value pairs ("If-Match", `"7"`).
func Send(ctx context.Context, client *http.Client, method, url, body string, header ...string) (Reply, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return Reply{}, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return Reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return Reply{}, fmt.Errorf("%s %s: read body: %w", method, url, err)
	}
	return Reply{Code: resp.StatusCode, Body: string(b), Header: resp.Header}, nil
}

// GetOK GETs url with client and wants 200.
func GetOK(ctx context.Context, client *http.Client, url string) error {
	r, err := Send(ctx, client, http.MethodGet, url, "")
	if err != nil {
		return err
	}
	if r.Code != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d", url, r.Code)
	}
	return nil
}
