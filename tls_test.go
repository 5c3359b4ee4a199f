package main

// TLS for clients and peers (README, "Running with TLS"): certificates are made here, with a CA
// of the test's own; peers run in-process (raftConfig.PeerTLS) and as the
// built binary, whose client API is the only place client TLS exists.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"

	"raftexample/internal/proctest"
)

// testCA signs certificates for one test.
type testCA struct {
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
	certFile string
	pool     *x509.CertPool
}

// testCert is a certificate and its key, on disk and loaded.
type testCert struct {
	certFile, keyFile string
	pair              tls.Certificate
}

func serialNumber(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func writePEM(t *testing.T, path, kind string, der []byte) []byte {
	t.Helper()
	b := pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

// newTestCA makes a self-signed ECDSA P-256 CA and writes its certificate
// to dir/name.pem.
func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serialNumber(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: cert, key: key, certFile: filepath.Join(dir, name+".pem"), pool: x509.NewCertPool()}
	writePEM(t, ca.certFile, "CERTIFICATE", der)
	ca.pool.AddCert(cert)
	return ca
}

// issue signs a certificate for 127.0.0.1 good for servers and clients, and
// writes it to dir/name.pem and dir/name-key.pem.
func (ca *testCA) issue(t *testing.T, dir, name string) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serialNumber(t),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := testCert{certFile: filepath.Join(dir, name+".pem"), keyFile: filepath.Join(dir, name+"-key.pem")}
	certPEM := writePEM(t, c.certFile, "CERTIFICATE", der)
	keyPEM := writePEM(t, c.keyFile, "PRIVATE KEY", keyDER)
	if c.pair, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	return c
}

// httpsClient trusts ca's servers and presents cert, if any.
func (ca *testCA) httpsClient(t *testing.T, cert *testCert) *http.Client {
	cfg := &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		// Present it even when the server names other CAs: the server
		// must be the one to refuse a certificate.
		pair := cert.pair
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}
}

// refused requires a request to fail. With wantErr, the request must fail
// with an error that says so (a TLS alert); without, a plain-HTTP request
// to a TLS port may also be told off with a 400.
func refused(t *testing.T, what, wantErr string, client *http.Client, method, url, body string) {
	t.Helper()
	r, err := send(context.Background(), client, method, url, body)
	switch {
	case err != nil && !strings.Contains(err.Error(), wantErr):
		t.Errorf("%s: %s %s failed with %v, want an error saying %q", what, method, url, err, wantErr)
	case err != nil:
		t.Logf("%s: refused: %v", what, err)
	case r.code == http.StatusBadRequest && wantErr == "":
		t.Logf("%s: refused: 400 %q", what, strings.TrimSpace(r.body))
	default:
		t.Errorf("%s: %s %s = %d %q, want the request refused", what, method, url, r.code, r.body)
	}
}

// 9a. In-process members with peer TLS and client-certificate auth on the
// peer port replicate writes; the peer port refuses plain HTTP and clients
// without a certificate.
func TestPeerTLSInProcess(t *testing.T) {
	certDir := t.TempDir()
	ca := newTestCA(t, certDir, "ca")
	lns, peers := freeListeners(t, 3)
	for i, ln := range lns {
		peers[i] = "https://" + ln.Addr().String()
	}
	c := &testCluster{t: t, dir: t.TempDir(), peers: peers}
	for i := range 3 {
		id := uint64(i + 1)
		cert := ca.issue(t, certDir, fmt.Sprintf("member-%d", id))
		cfg := testRaftConfig(t, id, peers, c.dir)
		cfg.PeerListener = lns[i]
		cfg.PeerTLS = transport.TLSInfo{CertFile: cert.certFile, KeyFile: cert.keyFile, TrustedCAFile: ca.certFile, ClientCertAuth: true}
		c.members = append(c.members, startMember(t, cfg))
	}
	c.waitLeader()
	for i, m := range c.members {
		key := fmt.Sprintf("tls-%d", i)
		putOK(t, m.srv.URL, key, "secret")
		for _, other := range c.members {
			getLinearizable(t, other.srv.URL, key, "secret")
		}
	}
	for _, x := range mustMembers(t, c.members[0].srv.URL) {
		if !strings.HasPrefix(x.PeerURL, "https://") {
			t.Errorf("member %d listed with peer URL %s", x.ID, x.PeerURL)
		}
	}
	// Peer URLs must match the scheme in use.
	if r := postMember(t, c.members[0].srv.URL, 0, "http://127.0.0.1:1", true); r.code != http.StatusBadRequest {
		t.Errorf("adding an http:// peer to a peer-TLS cluster = %d %q, want 400", r.code, r.body)
	}

	probe := peers[0] + "/raft/probing"
	client := ca.issue(t, certDir, "client")
	if r, err := send(context.Background(), ca.httpsClient(t, &client), http.MethodGet, probe, ""); err != nil || r.code != http.StatusOK {
		t.Errorf("GET %s with a certificate from the CA: %v %+v, want 200", probe, err, r)
	}
	refused(t, "peer port, no client certificate", "tls: certificate required", ca.httpsClient(t, nil), http.MethodGet, probe, "")
	refused(t, "peer port, plain HTTP", "", testHTTP, http.MethodGet, "http://"+lns[0].Addr().String()+"/raft/probing", "")
}

// tlsFlags are the client and peer TLS flags of a member using cert.
func tlsFlags(ca *testCA, cert testCert) []string {
	return []string{
		"--cert-file", cert.certFile, "--key-file", cert.keyFile,
		"--trusted-ca-file", ca.certFile, "--client-cert-auth",
		"--peer-cert-file", cert.certFile, "--peer-key-file", cert.keyFile,
		"--peer-trusted-ca-file", ca.certFile, "--peer-client-cert-auth",
	}
}

// 9b, 9c. Three processes with client TLS, client-certificate auth and peer
// TLS: a client with a certificate from the CA reads and writes over https;
// one without, or with another CA's, or speaking plain HTTP, is refused. A
// member whose peer certificate comes from another CA cannot join.
func TestProcessTLS(t *testing.T) {
	certDir := t.TempDir()
	ca := newTestCA(t, certDir, "ca")
	memberCert := ca.issue(t, certDir, "member")
	clientCert := ca.issue(t, certDir, "client")
	otherCA := newTestCA(t, certDir, "other-ca")
	foreignCert := otherCA.issue(t, certDir, "foreign")

	const n = 3
	dataDir := t.TempDir()
	ports := proctest.FreePorts(t, 2*n+2) // and two for the foreign member
	var peers []string
	for _, port := range ports[:n] {
		peers = append(peers, fmt.Sprintf("https://127.0.0.1:%d", port))
	}
	base := func(id int) string { return fmt.Sprintf("https://127.0.0.1:%d", ports[n+id-1]) }
	for id := 1; id <= n; id++ {
		args := proctest.MemberArgs(id, peers, ports[n+id-1], dataDir, append(proctest.FastRaft(), tlsFlags(ca, memberCert)...)...)
		m := proctest.NewProc(t, fmt.Sprintf("member %d", id), dataDir,
			filepath.Join(dataDir, fmt.Sprintf("member-%d.log", id)), append([]string{raftexample.Path(t)}, args...)...)
		m.Start()
	}

	good := ca.httpsClient(t, &clientCert)
	put := func(id int, key, value string) {
		t.Helper()
		eventually(t, proctest.StartTimeout, func() error {
			r, err := send(context.Background(), good, http.MethodPut, base(id)+"/"+key, value)
			if err != nil {
				return err
			}
			if r.code != http.StatusNoContent {
				return fmt.Errorf("PUT %s/%s = %d %q", base(id), key, r.code, r.body)
			}
			return nil
		})
	}
	get := func(id int, key string) reply {
		t.Helper()
		r, err := send(context.Background(), good, http.MethodGet, base(id)+"/"+key, "")
		if err != nil {
			t.Fatalf("GET %s/%s: %v", base(id), key, err)
		}
		return r
	}

	// 9b. Clients.
	put(1, "k1", "v1")
	put(2, "k2", "v2")
	for id := 1; id <= n; id++ {
		for k, v := range map[string]string{"k1": "v1", "k2": "v2"} {
			if r := get(id, k); r.code != http.StatusOK || r.body != v {
				t.Errorf("GET %s over https from member %d = %d %q, want 200 %q", k, id, r.code, r.body, v)
			}
		}
	}
	if r, err := send(context.Background(), good, http.MethodGet, base(3)+"/health", ""); err != nil || r.code != http.StatusOK {
		t.Errorf("GET /health over https: %v %+v, want 200", err, r)
	}
	// Without a certificate a client gets through the handshake, so that
	// probes reach /health, and is refused everything else with 403.
	noCert := ca.httpsClient(t, nil)
	if r, err := send(context.Background(), noCert, http.MethodGet, base(3)+"/health", ""); err != nil || r.code != http.StatusOK {
		t.Errorf("GET /health without a client certificate: %v %+v, want 200", err, r)
	}
	for _, path := range []string{"/nocert", "/v1/kv/nocert"} {
		if r, err := send(context.Background(), noCert, http.MethodPut, base(1)+path, "x"); err != nil ||
			r.code != http.StatusForbidden || !strings.Contains(r.body, "client certificate") {
			t.Errorf("PUT %s without a client certificate: %v %+v, want 403 naming the certificate", path, err, r)
		}
	}
	for _, path := range []string{"/nocert", "/v1/status", "/metrics", "/v1/members"} {
		if r, err := send(context.Background(), noCert, http.MethodGet, base(2)+path, ""); err != nil || r.code != http.StatusForbidden {
			t.Errorf("GET %s without a client certificate: %v %+v, want 403", path, err, r)
		}
	}
	foreignClient := otherCA.issue(t, certDir, "foreign-client")
	refused(t, "client API, certificate from another CA", "tls: unknown certificate authority", ca.httpsClient(t, &foreignClient), http.MethodPut, base(1)+"/foreign", "x")
	refused(t, "client API, plain HTTP", "", testHTTP, http.MethodPut, strings.Replace(base(1), "https:", "http:", 1)+"/plain", "x")
	for _, k := range []string{"nocert", "foreign", "plain"} {
		if r := get(2, k); r.code != http.StatusNotFound {
			t.Errorf("GET %s after a refused PUT = %d %q, want 404", k, r.code, r.body)
		}
	}

	// 9c. A peer with another CA's certificate is added as a learner and
	// started; the members refuse its connections and it never joins.
	foreignPeer := fmt.Sprintf("https://127.0.0.1:%d", ports[2*n])
	b := fmt.Sprintf(`{"peerURL":%q,"learner":true}`, foreignPeer)
	r, err := send(context.Background(), good, http.MethodPost, base(1)+"/v1/members", b)
	if err != nil || r.code != http.StatusCreated {
		t.Fatalf("POST /v1/members %s: %v %+v, want 201", b, err, r)
	}
	var added memberInfo
	mustJSON(t, "POST /v1/members", r.body, &added)
	if added.ID != n+1 {
		t.Fatalf("the foreign member got ID %d, want %d", added.ID, n+1)
	}
	argv := []string{raftexample.Path(t), "--id", strconv.Itoa(n + 1), "--join",
		"--cluster", strings.Join(append(peers, foreignPeer), ","),
		"--port", strconv.Itoa(ports[2*n+1]), "--data-dir", dataDir,
		// It trusts the cluster's CA, so only the cluster's side can refuse.
		"--peer-cert-file", foreignCert.certFile, "--peer-key-file", foreignCert.keyFile,
		"--peer-trusted-ca-file", ca.certFile, "--peer-client-cert-auth", "--log-level", "debug"}
	// It gives up after 20 election timeouts; a 10 ms tick makes that 2 s
	// instead of 10 s. It never joins, so its raft timing matters nowhere else.
	argv = append(append(argv, proctest.FastRaft()...), "--tick", "10ms")
	foreign := proctest.NewProc(t, "foreign member", dataDir, filepath.Join(dataDir, "foreign.log"), argv...)
	foreign.Start()
	// The members refuse its connections in the TLS handshake, so it cannot
	// even learn the cluster ID it would join: it gives up, saying why.
	if code := foreign.WaitExit(proctest.StartTimeout); code != 1 {
		t.Errorf("the foreign member exited with %d (%v), want 1", code, foreign.Err())
	}
	if out := foreign.Output(); !strings.Contains(out, "cluster ID") || !strings.Contains(out, "unknown certificate authority") {
		t.Errorf("the foreign member's refusal does not name the cluster ID lookup and the TLS refusal:\n%s", proctest.TailFile(foreign.Log, 5))
	}
	refused(t, "peer port, certificate from another CA", "tls: unknown certificate authority", ca.httpsClient(t, &foreignCert), http.MethodGet, peers[0]+"/raft/probing", "")
	put(3, "after-foreign", "ok")
	if r := get(1, "after-foreign"); r.code != http.StatusOK || r.body != "ok" {
		t.Errorf("GET after-foreign = %d %q, want 200 ok", r.code, r.body)
	}
	r, err = send(context.Background(), good, http.MethodPost, fmt.Sprintf("%s/v1/members/%d/promote", base(2), added.ID), "")
	if err != nil || r.code != http.StatusConflict {
		t.Errorf("promoting the foreign member: %v %+v, want 409", err, r)
	}
}

// 9d. TLS flags that cannot work are refused with a clear message.
func TestTLSFlagValidation(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	cert := ca.issue(t, dir, "member")
	peer := fmt.Sprintf("127.0.0.1:%d", proctest.FreePorts(t, 1)[0])
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name     string
		args     []string
		want     int
		wantText []string
	}{
		{"cert without key", []string{"--cert-file", cert.certFile}, 2, []string{"--cert-file", "--key-file"}},
		{"key without cert", []string{"--key-file", cert.keyFile}, 2, []string{"--cert-file", "--key-file"}},
		{"client auth without CA", []string{"--cert-file", cert.certFile, "--key-file", cert.keyFile, "--client-cert-auth"}, 2, []string{"--trusted-ca-file"}},
		{"CA without cert", []string{"--trusted-ca-file", ca.certFile}, 2, []string{"--cert-file"}},
		{"peer cert without key", []string{"--peer-cert-file", cert.certFile}, 2, []string{"--peer-key-file"}},
		{"peer auth without CA", []string{"--peer-cert-file", cert.certFile, "--peer-key-file", cert.keyFile, "--peer-client-cert-auth"}, 2, []string{"--peer-trusted-ca-file"}},
		{"https cluster without peer TLS", []string{"--cluster", "https://" + peer}, 2, []string{"--cluster", "https://" + peer, "peer TLS"}},
		{"http cluster with peer TLS", []string{"--cluster", "http://" + peer, "--peer-cert-file", cert.certFile, "--peer-key-file", cert.keyFile}, 2, []string{"--cluster", "https://"}},
		{"missing cert file", []string{"--cert-file", missing, "--key-file", missing}, 1, []string{missing}},
	} {
		args := append([]string{"--port", "0", "--data-dir", t.TempDir()}, tc.args...)
		ctx, cancel := context.WithTimeout(context.Background(), proctest.ExitTimeout)
		var out bytes.Buffer
		cmd := exec.CommandContext(ctx, raftexample.Path(t), args...)
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		cancel()
		code := 0
		var exitErr *exec.ExitError
		switch {
		case errors.As(err, &exitErr):
			code = exitErr.ExitCode()
		case err != nil:
			t.Fatalf("%s: %v", tc.name, err)
		}
		if code != tc.want {
			t.Errorf("%s: exit %d, want %d; output:\n%s", tc.name, code, tc.want, out.String())
			continue
		}
		for _, s := range tc.wantText {
			if !strings.Contains(out.String(), s) {
				t.Errorf("%s: output does not mention %q:\n%s", tc.name, s, out.String())
			}
		}
	}
}

// With one CA for peers and clients, --peer-cert-allowed-cn tells them apart
// on the peer port: a client certificate (another CN) cannot add learner 9
// through /raftexample/members, while the members replicate as before.
func TestPeerAllowedCN(t *testing.T) {
	certDir := t.TempDir()
	ca := newTestCA(t, certDir, "ca")
	peerCert := ca.issue(t, certDir, "peer")
	clientCert := ca.issue(t, certDir, "client")
	lns, peers := freeListeners(t, 3)
	for i, ln := range lns {
		peers[i] = "https://" + ln.Addr().String()
	}
	c := &testCluster{t: t, dir: t.TempDir(), peers: peers}
	for i := range 3 {
		cfg := testRaftConfig(t, uint64(i+1), peers, c.dir)
		cfg.PeerListener = lns[i]
		cfg.PeerTLS = transport.TLSInfo{CertFile: peerCert.certFile, KeyFile: peerCert.keyFile,
			TrustedCAFile: ca.certFile, ClientCertAuth: true, AllowedCNs: []string{"peer"}}
		c.members = append(c.members, startMember(t, cfg))
	}
	lead := c.waitLeader()
	leaderPeer := peers[lead-1]
	body := `{"op":"add","id":9,"peerURL":"https://127.0.0.1:1","learner":true}`
	refused(t, "peer port, client certificate", "remote error: tls", ca.httpsClient(t, &clientCert), http.MethodPost, leaderPeer+membersPath, body)
	for i, m := range c.members {
		key := fmt.Sprintf("cn-%d", i)
		putOK(t, m.srv.URL, key, "ok")
		for _, other := range c.members {
			getLinearizable(t, other.srv.URL, key, "ok")
		}
	}
	if ms := mustMembers(t, c.members[0].srv.URL); len(ms) != 3 {
		t.Errorf("members = %+v, want the three peers only", ms)
	}
	// The peers' own certificate still works on the port.
	if r, err := send(context.Background(), ca.httpsClient(t, &peerCert), http.MethodGet, leaderPeer+"/raft/probing", ""); err != nil || r.code != http.StatusOK {
		t.Errorf("GET /raft/probing with the peer certificate: %v %+v, want 200", err, r)
	}
}
