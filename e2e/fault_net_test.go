package e2e

// The networks of the fault tests: how members reach each other's peer
// ports, and how a test cuts those links.
//
// proxyNet puts a fault-injecting HTTP proxy in front of every member's peer
// port. rafthttp names the sending member in the X-Server-From header of
// every request (stream dials, pipeline and snapshot posts), so one proxy per
// member can block each direction of each pair of members separately: a
// blocked request waits at the proxy, and a stream or body in flight stops
// moving, as packets would stop in a real partition. Connections that a
// partition stopped are cut when it heals (TCP would have timed them out).
//
// netnsNet (root only) runs each member in its own network namespace, wired
// to a hub namespace by veth pairs on two bridges: one for peer traffic, one
// for clients. A partition takes a member's peer link down; the client link
// stays up, so the test can still talk to an isolated member.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"raftexample/internal/proctest"
)

// memberAddrs is where one member lives on a peerNet.
type memberAddrs struct {
	listenURL string   // the peer URL the member itself listens on (its own --cluster entry)
	peerURL   string   // the URL other members use to reach it
	apiBase   string   // base URL of its client API, as the test reaches it
	apiPort   int      // its --port
	wrap      []string // command prefix that runs the member (netns exec), or nil
}

// peerNet is a network the fault tests can cut.
type peerNet interface {
	// add allocates addresses for member id.
	add(t *testing.T, id int) memberAddrs
	// cut stops all traffic between the members of a and those of b.
	cut(a, b []int)
	// heal restores every link.
	heal()
	// client returns the HTTP client that reaches the members' APIs.
	client() *http.Client
	name() string
}

// errLinkCut ends a proxied exchange that a partition interrupted.
var errLinkCut = errors.New("link cut by a partition")

// proxyNet is the proxy-based peerNet on loopback.
type proxyNet struct {
	t *testing.T
	c *http.Client

	mu      sync.Mutex
	blocked map[[2]int]bool   // {from, to}: bytes from -> to do not flow
	cuts    map[[2]int]uint64 // {from, to}: how many times it was blocked
	changed chan struct{}     // closed and replaced at every change
	ports   map[int]bool      // member ports handed out, so none is given twice
}

func newProxyNet(t *testing.T) *proxyNet {
	n := &proxyNet{
		t:       t,
		c:       &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
		blocked: map[[2]int]bool{},
		cuts:    map[[2]int]uint64{},
		changed: make(chan struct{}),
		ports:   map[int]bool{},
	}
	t.Cleanup(n.heal) // release requests that wait at the proxies
	return n
}

// newPort picks a free port no earlier member was given: a port picked and
// released for a member that has not started yet is free to the kernel, and
// was seen handed out again to a later member (TestFaultFive, "ID mismatch").
func (n *proxyNet) newPort(t *testing.T) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	for range 100 {
		if p := proctest.FreePorts(t, 1)[0]; !n.ports[p] {
			n.ports[p] = true
			return p
		}
	}
	t.Fatal("no fresh free port in 100 tries")
	return 0
}

func (n *proxyNet) name() string         { return "proxy" }
func (n *proxyNet) client() *http.Client { return n.c }

func (n *proxyNet) add(t *testing.T, id int) memberAddrs {
	listenPort, apiPort := n.newPort(t), n.newPort(t)
	listen := fmt.Sprintf("http://127.0.0.1:%d", listenPort)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target, _ := url.Parse(listen)
	p := &peerProxy{net: n, to: id, upstream: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}}
	p.rp = &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(target) },
		Transport:     p.upstream,
		FlushInterval: -1, // raft streams: forward every write at once
		ErrorLog:      quietLog,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	srv := &http.Server{Handler: p, ErrorLog: quietLog}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		p.upstream.CloseIdleConnections()
	})
	return memberAddrs{
		listenURL: listen,
		peerURL:   "http://" + ln.Addr().String(),
		apiBase:   fmt.Sprintf("http://127.0.0.1:%d", apiPort),
		apiPort:   apiPort,
	}
}

func (n *proxyNet) cut(a, b []int) {
	n.cutOneWay(a, b)
	n.cutOneWay(b, a)
}

// cutOneWay stops what the members of from send to those of to; the other
// direction keeps flowing.
func (n *proxyNet) cutOneWay(from, to []int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, x := range from {
		for _, y := range to {
			if pair := [2]int{x, y}; !n.blocked[pair] {
				n.blocked[pair] = true
				n.cuts[pair]++
			}
		}
	}
	n.notifyLocked()
}

func (n *proxyNet) heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.blocked)
	n.notifyLocked()
}

func (n *proxyNet) notifyLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

// state reports whether from -> to is blocked, how many times it was cut,
// and a channel closed at the next change.
func (n *proxyNet) state(from, to int) (blocked bool, cuts uint64, changed <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if from == 0 { // an unnamed sender: blocked while the target is cut off from anyone
		for pair, b := range n.blocked {
			blocked = blocked || (b && pair[1] == to)
		}
		return blocked, 0, n.changed
	}
	return n.blocked[[2]int{from, to}], n.cuts[[2]int{from, to}], n.changed
}

// pass waits until from -> to is open. It fails if ctx ends first, or if the
// link was cut since cutsAtStart (when checkCuts is set): an exchange that a
// partition interrupted never resumes.
func (n *proxyNet) pass(ctx context.Context, from, to int, cutsAtStart uint64, checkCuts bool) error {
	for {
		blocked, cuts, changed := n.state(from, to)
		if checkCuts && cuts != cutsAtStart {
			return errLinkCut
		}
		if !blocked {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// peerProxy forwards the peer requests for member to.
type peerProxy struct {
	net      *proxyNet
	to       int
	rp       *httputil.ReverseProxy
	upstream *http.Transport
}

func (p *peerProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	from := 0
	if id, err := strconv.ParseUint(r.Header.Get("X-Server-From"), 16, 64); err == nil {
		from = int(id)
	}
	// The request itself must get through before anything is forwarded.
	if err := p.net.pass(r.Context(), from, p.to, 0, false); err != nil {
		return
	}
	_, upCuts, _ := p.net.state(from, p.to)
	_, downCuts, _ := p.net.state(p.to, from)
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &gatedBody{ReadCloser: r.Body, ctx: r.Context(), net: p.net, from: from, to: p.to, cuts: upCuts}
	}
	gw := &gatedWriter{ResponseWriter: w, ctx: r.Context(), net: p.net, from: p.to, to: from, cuts: downCuts}
	p.rp.ServeHTTP(gw, r)
}

// gatedBody is a request body that flows only while its direction is open.
type gatedBody struct {
	io.ReadCloser
	ctx      context.Context
	net      *proxyNet
	from, to int
	cuts     uint64
}

func (b *gatedBody) Read(p []byte) (int, error) {
	if err := b.net.pass(b.ctx, b.from, b.to, b.cuts, b.from != 0); err != nil {
		return 0, err
	}
	return b.ReadCloser.Read(p)
}

// gatedWriter is a response that flows only while its direction is open.
type gatedWriter struct {
	http.ResponseWriter
	ctx      context.Context
	net      *proxyNet
	from, to int
	cuts     uint64
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	if err := g.net.pass(g.ctx, g.from, g.to, g.cuts, g.to != 0); err != nil {
		return 0, err
	}
	return g.ResponseWriter.Write(p)
}

func (g *gatedWriter) Flush() {
	if f, ok := g.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (g *gatedWriter) Unwrap() http.ResponseWriter { return g.ResponseWriter }

// quietLog swallows the proxies' complaints about streams they cut.
var quietLog = log.New(io.Discard, "", 0)

// netnsNet runs members in network namespaces (see the top of this file).
// Addresses are in 198.18.0.0/15, the range set aside for network tests;
// the traffic never leaves this machine's namespaces.
type netnsNet struct {
	t      *testing.T
	prefix string // of every namespace this test creates
	hub    string // namespace holding the bridges and the test's client end
	c      *http.Client

	mu       sync.Mutex
	isolated map[int]bool
}

const (
	netnsPeerPort = 2380
	netnsAPIPort  = 2379
)

// newNetnsNet sets up the hub namespace, or skips the test when this
// process may not create namespaces.
func newNetnsNet(t *testing.T) *netnsNet {
	if os.Geteuid() != 0 {
		t.Skip("network namespace faults need root (ip netns add); the proxy-based partition tests cover the same faults")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("network namespace faults need the ip command (iproute2):", err)
	}
	removeStaleNamespaces(t)
	n := &netnsNet{t: t, prefix: fmt.Sprintf("rxf%d-", os.Getpid()), isolated: map[int]bool{}}
	n.hub = n.prefix + "hub"
	if out, err := exec.Command("ip", "netns", "add", n.hub).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace here (ip netns add: %v: %s); the proxy-based partition tests cover the same faults", err, strings.TrimSpace(string(out)))
	}
	// Registered before any member starts, so it runs after they are killed.
	t.Cleanup(n.removeAll)
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "brp", "type", "bridge"},
		{"link", "set", "brp", "up"},
		{"link", "add", "brc", "type", "bridge"},
		{"link", "set", "brc", "up"},
		{"addr", "add", "198.18.1.1/24", "dev", "brc"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", n.hub}, args...)...).CombinedOutput(); err != nil {
			t.Skipf("cannot set up bridges in a network namespace here (ip %s: %v: %s); the proxy-based partition tests cover the same faults",
				strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	n.c = &http.Client{Transport: &http.Transport{
		DialContext:         dialInNamespace("/var/run/netns/" + n.hub),
		MaxIdleConnsPerHost: 64,
	}}
	return n
}

func (n *netnsNet) name() string         { return "netns" }
func (n *netnsNet) client() *http.Client { return n.c }

// ip runs `ip -n ns args...`, failing the test on error.
func (n *netnsNet) ip(t *testing.T, ns string, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s %s: %v: %s", ns, strings.Join(args, " "), err, out)
	}
}

func (n *netnsNet) add(t *testing.T, id int) memberAddrs {
	ns := fmt.Sprintf("%sm%d", n.prefix, id)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
	}
	n.ip(t, ns, "link", "set", "lo", "up")
	for _, link := range []struct{ hubEnd, memberEnd, bridge, subnet string }{
		{fmt.Sprintf("p%d", id), "ethp", "brp", "198.18.0"},
		{fmt.Sprintf("c%d", id), "ethc", "brc", "198.18.1"},
	} {
		n.ip(t, n.hub, "link", "add", link.hubEnd, "type", "veth", "peer", "name", link.memberEnd, "netns", ns)
		n.ip(t, n.hub, "link", "set", link.hubEnd, "master", link.bridge)
		n.ip(t, n.hub, "link", "set", link.hubEnd, "up")
		n.ip(t, ns, "addr", "add", fmt.Sprintf("%s.%d/24", link.subnet, 10+id), "dev", link.memberEnd)
		n.ip(t, ns, "link", "set", link.memberEnd, "up")
	}
	peer := fmt.Sprintf("http://198.18.0.%d:%d", 10+id, netnsPeerPort)
	return memberAddrs{
		listenURL: peer,
		peerURL:   peer,
		apiBase:   fmt.Sprintf("http://198.18.1.%d:%d", 10+id, netnsAPIPort),
		apiPort:   netnsAPIPort,
		wrap:      []string{"ip", "netns", "exec", ns},
	}
}

// cut isolates the members of a from everyone when a is the smaller side
// (a member's peer link goes down), else those of b.
func (n *netnsNet) cut(a, b []int) {
	side := a
	if len(b) < len(a) {
		side = b
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, id := range side {
		n.setLink(id, "down")
		n.isolated[id] = true
	}
}

func (n *netnsNet) heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id := range n.isolated {
		n.setLink(id, "up")
		delete(n.isolated, id)
	}
}

func (n *netnsNet) setLink(id int, state string) {
	if out, err := exec.Command("ip", "-n", n.hub, "link", "set", fmt.Sprintf("p%d", id), state).CombinedOutput(); err != nil {
		n.t.Errorf("set member %d's peer link %s: %v: %s", id, state, err, out)
	}
}

// removeAll deletes every namespace this test created (their veth pairs go
// with them).
func (n *netnsNet) removeAll() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, ns := range namespaceNames(string(out)) {
		if strings.HasPrefix(ns, n.prefix) {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				n.t.Errorf("ip netns del %s: %v: %s", ns, err, out)
			}
		}
	}
}

// namespaceNames parses `ip netns list`: "name (id: 3)" lines.
func namespaceNames(list string) []string {
	var names []string
	for _, line := range strings.Split(list, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

// removeStaleNamespaces deletes namespaces left by fault tests whose process
// died without cleaning up (SIGKILL, a machine reset).
func removeStaleNamespaces(t *testing.T) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, ns := range namespaceNames(string(out)) {
		pidText, _, ok := strings.Cut(strings.TrimPrefix(ns, "rxf"), "-")
		pid, err := strconv.Atoi(pidText)
		if !strings.HasPrefix(ns, "rxf") || !ok || err != nil || pid == os.Getpid() {
			continue
		}
		if unix.Kill(pid, 0) == unix.ESRCH {
			t.Logf("removing network namespace %s left by a dead test process", ns)
			exec.Command("ip", "netns", "del", ns).Run()
		}
	}
}

// dialInNamespace returns a dialer whose sockets live in the network
// namespace at nsPath. A socket belongs to the namespace of the thread that
// created it, so the dial runs on a locked thread that enters the namespace
// and leaves it again.
func dialInNamespace(nsPath string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		done := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			c, restored, err := dialFromNamespace(ctx, nsPath, network, addr)
			if restored {
				runtime.UnlockOSThread()
			} // else the thread dies with this goroutine, still locked
			done <- result{c, err}
		}()
		r := <-done
		return r.c, r.err
	}
}

// dialFromNamespace dials from nsPath on the calling (locked) thread and
// reports whether the thread is back in its own namespace.
func dialFromNamespace(ctx context.Context, nsPath, network, addr string) (c net.Conn, restored bool, err error) {
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return nil, true, err
	}
	defer orig.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		return nil, true, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("enter %s: %w", nsPath, err)
	}
	c, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
	restored = unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil
	return c, restored, err
}
