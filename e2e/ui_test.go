package e2e

// The dashboard (/ui), used as a person uses it: a real headless Chromium
// (Debian's chromium package), driven with chromedp, opens the page a real
// member serves and clicks through it. Every wait is a condition polled in
// the page with a deadline. Without chromium these tests fail (they never
// skip, except under -short): .ci/run installs it.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"raftexample/internal/proctest"
)

// screenshotDirEnv names a directory where the dashboard tests save
// screenshots of both panels (docs/ holds the README's).
const screenshotDirEnv = "RAFTEXAMPLE_SCREENSHOTS"

// pageTimeout bounds each wait for the page to show something. A member's
// status is polled every second, and an unreachable one is given up on
// after 0.8 s, so "a few seconds" is plenty on a loaded machine.
const pageTimeout = 10 * time.Second

// newBrowser starts a headless Chromium for the test and returns the
// context of its first tab.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path := chromiumPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // CI runs as root, where Chromium's sandbox cannot start
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("ignore-certificate-errors", true), // the TLS test's own CA
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// chromiumPath finds the browser, or fails the test: a missing browser is a
// broken setup, not a reason to pass.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("no chromium on PATH: the dashboard tests need it (apt-get install chromium; .ci/run installs it)")
	return ""
}

// waitPage waits until the JavaScript expression cond is true in the page,
// and fails the test with what the page shows if it is not within timeout.
func waitPage(t *testing.T, ctx context.Context, what, cond string, timeout time.Duration) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](cond,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("%s: not within %v (%v); the page shows:\n%s", what, timeout, err, text)
	}
}

// evalPage evaluates expression in the page.
func evalPage[T any](t *testing.T, ctx context.Context, expression string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expression))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expression, err)
	}
	return v
}

func doPage(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// screenshot saves the page as dir/name (PNG) when screenshotDirEnv is set.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv(screenshotDirEnv)
	if dir == "" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if !filepath.IsAbs(dir) {
		dir = filepath.Join("..", dir) // relative to the module root, as the variable is given to go test there
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// leaderOf asks the member at base which member leads.
func leaderOf(t *testing.T, base string) int {
	t.Helper()
	var st struct {
		Leader int `json:"leader"`
	}
	r := proctest.Call(t, http.MethodGet, base+"/v1/status", "")
	if err := json.Unmarshal([]byte(r.Body), &st); err != nil || r.Code != http.StatusOK {
		t.Fatalf("GET /v1/status: %d %q", r.Code, r.Body)
	}
	return st.Leader
}

func cardSelector(id int, class string) string {
	return fmt.Sprintf(`document.querySelector('.member-card[data-member-id="%d"]%s')`, id, class)
}

// The page served by member 1 of a real three-member cluster shows the
// three members and the leader; a key created in it is in the cluster; an
// edit from a stale revision shows the conflict and writes nothing;
// leadership moved through the API shows without a reload; a member
// stopped with SIGSTOP is greyed out within seconds.
func TestUIDashboard(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster and a browser")
	}
	ctx := newBrowser(t)
	c := proctest.NewCluster(t, raftexample.Path(t), 3)
	c.Start()
	base := c.URL(1)
	for i := range 20 { // some history for the charts and the key browser
		proctest.PutOK(t, base, fmt.Sprintf("app/config/%02d", i), fmt.Sprintf(`{"replicas": %d, "zone": "eu-%d"}`, i%3+1, i%2))
	}
	proctest.PutOK(t, base, "app/feature-flags", `{"dark-mode": true}`)

	doPage(t, ctx, "open the dashboard", chromedp.Navigate(base+"/ui"))
	waitPage(t, ctx, "three member cards, one the leader",
		`document.querySelectorAll('.member-card').length === 3 && document.querySelectorAll('.member-card.leader').length === 1`, pageTimeout)
	lead := leaderOf(t, base)
	waitPage(t, ctx, fmt.Sprintf("member %d shown as the leader", lead), cardSelector(lead, ".leader")+` !== null`, pageTimeout)
	for id := 1; id <= 3; id++ {
		waitPage(t, ctx, fmt.Sprintf("member %d's client URL", id),
			cardSelector(id, "")+fmt.Sprintf(`.innerText.includes(%q)`, c.URL(id)), pageTimeout)
	}
	stopLoad := startUILoad(t, c)
	waitPage(t, ctx, "charts with ten samples",
		`[...document.querySelectorAll('.member-card')].every(c => Number(c.dataset.samples) >= 10) && document.querySelectorAll('.member-card canvas').length >= 9`, 2*pageTimeout)
	stopLoad()
	screenshot(t, ctx, "dashboard-cluster.png")

	// Create a key in the page; it is in the cluster.
	doPage(t, ctx, "watch app/",
		chromedp.Navigate(base+"/ui#data"),
		chromedp.WaitVisible(chromedp.ID("new-key")),
		chromedp.SetValue(chromedp.ID("watch-prefix"), "app/"),
		chromedp.Click(chromedp.ID("watch-toggle")),
	)
	waitPage(t, ctx, "the watch running", `document.getElementById('watch-state').innerText.startsWith('watching')`, pageTimeout)
	doPage(t, ctx, "create a key",
		chromedp.Click(chromedp.ID("new-key")),
		chromedp.SetValue(chromedp.ID("key"), "app/greeting"),
		chromedp.SetValue(chromedp.ID("value"), "hello from the browser"),
		chromedp.Click(chromedp.ID("save")),
	)
	waitPage(t, ctx, "saved", `document.getElementById('edit-msg').innerText.startsWith('Saved app/greeting')`, pageTimeout)
	if r := proctest.Call(t, http.MethodGet, c.URL(2)+"/v1/kv/app/greeting", ""); r.Code != http.StatusOK || r.Body != "hello from the browser" {
		t.Fatalf("the key created in the page, read through member 2: %d %q", r.Code, r.Body)
	}

	// Leases and locks show in their table, and an edit in the page keeps
	// a key on its lease.
	lease := grantLease(t, base)
	if r := proctest.Call(t, http.MethodPut, fmt.Sprintf("%s/v1/kv/app/session/web-1?lease=%d", base, lease), "10.0.0.7:8080"); r.Code != http.StatusNoContent {
		t.Fatalf("PUT a key on lease %d: %d %q", lease, r.Code, r.Body)
	}
	if r := proctest.Call(t, http.MethodPost, base+"/v1/locks/backup", fmt.Sprintf(`{"lease":%d}`, lease)); r.Code != http.StatusOK {
		t.Fatalf("POST /v1/locks/backup: %d %q", r.Code, r.Body)
	}
	waitPage(t, ctx, "the lease with its key and its lock", fmt.Sprintf(
		`(r => r && r.innerText.includes('app/session/web-1') && r.innerText.includes('backup/'))(document.querySelector('#leases tr[data-lease="%d"]'))`, lease), pageTimeout)
	doPage(t, ctx, "open the leased key",
		chromedp.Click(chromedp.CSS(`#browse button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`button.key[data-key="app/session/web-1"]`)),
		chromedp.Click(chromedp.CSS(`button.key[data-key="app/session/web-1"]`)),
	)
	waitPage(t, ctx, "its lease in the editor", fmt.Sprintf(`document.getElementById('lease').value === '%d'`, lease), pageTimeout)
	doPage(t, ctx, "edit the leased key",
		chromedp.SetValue(chromedp.ID("value"), "10.0.0.8:8080"),
		chromedp.Click(chromedp.ID("save")),
	)
	waitPage(t, ctx, "saved", `document.getElementById('edit-msg').innerText.startsWith('Saved app/session/web-1')`, pageTimeout)
	if r := proctest.Call(t, http.MethodGet, base+"/v1/kv/app/session/web-1", ""); r.Body != "10.0.0.8:8080" || r.Header.Get("X-Lease") != strconv.Itoa(lease) {
		t.Fatalf("the leased key after the edit: %q on lease %q, want it on lease %d", r.Body, r.Header.Get("X-Lease"), lease)
	}

	// Open a key, change it behind the page's back, then save from the page:
	// the conflict is shown with the current value, and nothing is written.
	doPage(t, ctx, "open a key", chromedp.Click(chromedp.CSS(`button.key[data-key="app/feature-flags"]`)))
	waitPage(t, ctx, "its value, as JSON", `document.getElementById('value').value.includes('dark-mode')`, pageTimeout)
	doPage(t, ctx, "show it pretty", chromedp.Click(chromedp.CSS(`input[name=format][value=json]`)))
	waitPage(t, ctx, "pretty JSON", `document.getElementById('value').value === '{\n  "dark-mode": true\n}'`, pageTimeout)
	theirs := `{"dark-mode": false}`
	if r := proctest.Call(t, http.MethodPut, c.URL(3)+"/v1/kv/app/feature-flags", theirs); r.Code != http.StatusNoContent {
		t.Fatalf("PUT through the API: %d %q", r.Code, r.Body)
	}
	doPage(t, ctx, "save a stale edit",
		chromedp.SetValue(chromedp.ID("value"), `{"dark-mode": true, "beta": true}`),
		chromedp.Click(chromedp.ID("save")),
	)
	waitPage(t, ctx, "the conflict, with the current value",
		`!document.getElementById('conflict').hidden && document.getElementById('conflict-value').textContent === `+strconv.Quote(theirs), pageTimeout)
	if r := proctest.Call(t, http.MethodGet, base+"/v1/kv/app/feature-flags", ""); r.Body != theirs {
		t.Fatalf("after the conflict the key holds %q, want %q (not overwritten)", r.Body, theirs)
	}
	waitPage(t, ctx, "both writes in the watch tail",
		`[...document.querySelectorAll('#events li')].map(li => li.innerText).join('\n').includes('app/feature-flags = '+`+strconv.Quote(theirs)+`)`, pageTimeout)
	screenshot(t, ctx, "dashboard-data.png")

	// Leadership moved through the API shows up without a reload.
	doPage(t, ctx, "back to the cluster panel", chromedp.Navigate(base+"/ui#cluster"))
	waitPage(t, ctx, "cards again", `document.querySelectorAll('.member-card.leader').length === 1`, pageTimeout)
	marker := evalPage[bool](t, ctx, `(window.__sameDocument = true)`) // gone if the page reloads
	next := lead%3 + 1
	if r := proctest.Call(t, http.MethodPost, base+"/v1/leader", fmt.Sprintf(`{"id":%d}`, next)); r.Code != http.StatusNoContent {
		t.Fatalf("POST /v1/leader: %d %q", r.Code, r.Body)
	}
	waitPage(t, ctx, fmt.Sprintf("member %d shown as the new leader", next), cardSelector(next, ".leader")+` !== null`, pageTimeout)
	if !marker || !evalPage[bool](t, ctx, `window.__sameDocument === true`) {
		t.Fatal("the page reloaded to show the new leader")
	}

	// A member stopped dead is greyed out within seconds, and back when
	// it resumes.
	stopped := 2
	if next == 2 {
		stopped = 3
	}
	c.Member(stopped).Signal(syscall.SIGSTOP)
	waitPage(t, ctx, fmt.Sprintf("member %d greyed out", stopped), cardSelector(stopped, ".unreachable")+` !== null`, 5*time.Second)
	c.Member(stopped).Signal(syscall.SIGCONT)
	waitPage(t, ctx, fmt.Sprintf("member %d back", stopped), cardSelector(stopped, ".unreachable")+` === null`, pageTimeout)
}

// grantLease grants a ten-minute lease through the member at base.
func grantLease(t *testing.T, base string) int {
	t.Helper()
	r := proctest.Call(t, http.MethodPost, base+"/v1/leases", `{"ttl":"600s"}`)
	var l struct {
		ID int `json:"id"`
	}
	if r.Code != http.StatusCreated || json.Unmarshal([]byte(r.Body), &l) != nil || l.ID == 0 {
		t.Fatalf("POST /v1/leases: %d %q", r.Code, r.Body)
	}
	return l.ID
}

// startUILoad writes and reads through every member, paced, until the
// returned func is called, so that the charts have something to show.
func startUILoad(t *testing.T, c *proctest.Cluster) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var running sync.WaitGroup
	running.Go(func() {
		pace := time.NewTicker(20 * time.Millisecond)
		defer pace.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-pace.C:
			}
			base := c.URL(i%3 + 1)
			key := fmt.Sprintf("/v1/kv/app/load/%02d", i%16)
			proctest.Send(ctx, proctest.Client(), http.MethodPut, base+key, strconv.Itoa(i))
			proctest.Send(ctx, proctest.Client(), http.MethodGet, base+key, "")
			proctest.Send(ctx, proctest.Client(), http.MethodGet, c.URL((i+1)%3+1)+"/v1/kv?prefix=app/config/", "")
		}
	})
	t.Cleanup(cancel)
	return func() {
		cancel()
		running.Wait()
	}
}

// The page works over https and with authentication. A single member sits
// behind a stub of the auth the API will have: an https proxy that answers
// POST /v1/auth/token with a token for the right password and refuses every
// other /v1 request without it (401). The page shows its login form, logs
// in, and then sends the token on every request, the watch tail's included.
func TestUIOverTLSWithLogin(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a member and a browser")
	}
	ctx := newBrowser(t)
	c := proctest.NewCluster(t, raftexample.Path(t), 1)
	c.Start()
	stub := newAuthStub(t, c.URL(1))

	doPage(t, ctx, "open the dashboard over https", chromedp.Navigate(stub.URL+"/ui"))
	waitPage(t, ctx, "the login form", `document.getElementById('login').open`, pageTimeout)
	doPage(t, ctx, "log in with a wrong password",
		chromedp.SetValue(chromedp.ID("login-name"), "root"),
		chromedp.SetValue(chromedp.ID("login-password"), "wrong"),
		chromedp.Click(chromedp.ID("login-ok")),
	)
	waitPage(t, ctx, "the refusal", `document.getElementById('login-msg').innerText.includes('401')`, pageTimeout)
	doPage(t, ctx, "log in",
		chromedp.SetValue(chromedp.ID("login-password"), authStubPassword),
		chromedp.Click(chromedp.ID("login-ok")),
	)
	waitPage(t, ctx, "the member, once logged in",
		`!document.getElementById('login').open && document.querySelectorAll('.member-card.leader').length === 1`, pageTimeout)
	refusedBefore := stub.refused.Load()
	if refusedBefore == 0 {
		t.Fatal("the stub refused nothing: the page did not meet the 401")
	}

	doPage(t, ctx, "watch every key",
		chromedp.Navigate(stub.URL+"/ui#data"),
		chromedp.WaitVisible(chromedp.ID("watch-toggle")),
		chromedp.Click(chromedp.ID("watch-toggle")),
	)
	waitPage(t, ctx, "the watch running", `document.getElementById('watch-state').innerText.startsWith('watching')`, pageTimeout)
	proctest.PutOK(t, c.URL(1), "watched", "seen")
	waitPage(t, ctx, "the event in the tail", `[...document.querySelectorAll('#events li')].some(li => li.innerText.includes('watched = seen'))`, pageTimeout)
	if n := stub.refused.Load(); n != refusedBefore {
		t.Errorf("the stub refused %d requests after the login, want none: the page must send its token on every request", n-refusedBefore)
	}
}

const (
	authStubPassword = "s3cret"
	authStubToken    = "token-for-root"
)

// authStub is an https reverse proxy to a member that asks for a bearer
// token on every /v1 request but the token's own.
type authStub struct {
	*httptest.Server
	refused atomic.Int64 // /v1 requests answered 401
}

func newAuthStub(t *testing.T, member string) *authStub {
	target, err := url.Parse(member)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	s := &authStub{}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v1/auth/token":
			var login struct{ Name, Password string }
			if json.NewDecoder(r.Body).Decode(&login) != nil || login.Name != "root" || login.Password != authStubPassword {
				http.Error(w, `{"error":"wrong user name or password","code":401}`, http.StatusUnauthorized)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"token":%q,"ttl":300}`, authStubToken)
		case strings.HasPrefix(r.URL.Path, "/v1/") && r.Header.Get("Authorization") != "Bearer "+authStubToken:
			s.refused.Add(1)
			http.Error(w, `{"error":"authentication required","code":401}`, http.StatusUnauthorized)
		default:
			proxy.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(func() {
		s.CloseClientConnections() // the page's watch stream would hold Close for ever
		s.Close()
	})
	return s
}
