package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writePEM writes one PEM block to a file in dir and returns its path.
func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// clientCert makes a self-signed client certificate and its key.
func clientCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "kvctl-test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, dir, "client.pem", "CERTIFICATE", der), writePEM(t, dir, "client-key.pem", "PRIVATE KEY", keyDER)
}

// A member with TLS that requires a client certificate: kvctl reaches it
// with --cacert, --cert and --key, and not without them.
func TestTLSClientFiles(t *testing.T) {
	kvs := newFakeKV()
	srv := httptest.NewUnstartedServer(kvs)
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	ca := writePEM(t, dir, "ca.pem", "CERTIFICATE", srv.Certificate().Raw)
	cert, key := clientCert(t, dir)
	eps := "--endpoints=" + srv.URL

	kvctl(t, "", eps, "--cacert", ca, "--cert", cert, "--key", key, "put", "k", "v").want(t, exitOK)
	if string(kvs.snapshot()["k"]) != "v" {
		t.Fatal("the put did not arrive")
	}
	if r := kvctl(t, "", eps, "--cert", cert, "--key", key, "get", "k").want(t, exitError); !strings.Contains(r.stderr, "certificate") {
		t.Errorf("without --cacert: %q", r.stderr)
	}
	kvctl(t, "", eps, "--cacert", ca, "get", "k").want(t, exitError)
	kvctl(t, "", eps, "--cacert", ca, "--cert", cert, "get", "k").want(t, exitUsage)
	kvctl(t, "", eps, "--cacert", filepath.Join(dir, "missing.pem"), "get", "k").want(t, exitError)
}
