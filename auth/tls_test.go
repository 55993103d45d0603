package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/nats-io/nats.go"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	der  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "exgrpo test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, der: der}
}

// issue writes a certificate for 127.0.0.1 with the given use, signed by
// the CA, and its key, as <name>.pem and <name>-key.pem in dir.
func (c *testCA) issue(t *testing.T, dir, name string, serial int64, use x509.ExtKeyUsage) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{use},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &k.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	writePEM(t, cert, "CERTIFICATE", der)
	writePEM(t, key, "EC PRIVATE KEY", keyDER)
	return cert, key
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeCerts makes a throwaway CA and a server certificate for 127.0.0.1
// signed by it, and returns the PEM paths.
func writeCerts(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	c := newTestCA(t)
	ca = filepath.Join(dir, "ca.pem")
	writePEM(t, ca, "CERTIFICATE", c.der)
	cert, key = c.issue(t, dir, "server", 2, x509.ExtKeyUsageServerAuth)
	return ca, cert, key
}

// TestRolesOverMutualTLS: with client verification on, a role connects
// through bus.Connect with the CA, its client certificate and its
// credentials and does its job (opens the run's topology); without a client
// certificate it is refused; a server it does not trust fails at once with
// the certificate error instead of being retried; a certificate without its
// key is a configuration error.
func TestRolesOverMutualTLS(t *testing.T) {
	dir := t.TempDir()
	c := newTestCA(t)
	ca := filepath.Join(dir, "ca.pem")
	writePEM(t, ca, "CERTIFICATE", c.der)
	srvCert, srvKey := c.issue(t, dir, "server", 2, x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := c.issue(t, dir, "client", 3, x509.ExtKeyUsageClientAuth)
	cfg := DefaultConfig(testRun)
	cfg.TLS = TLSConfig{CertFile: srvCert, KeyFile: srvKey, CAFile: ca, Verify: true}
	s := startServerWith(t, dir, cfg)
	url := s.ClientURL() // tls://...
	creds := CredsFile(dir, Learner)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := bus.Connect(ctx, bus.ConnConfig{URL: url, CredsFile: creds, Name: "learner",
		TLSCA: ca, TLSCert: cliCert, TLSKey: cliKey}, nil)
	if err != nil {
		t.Fatalf("learner with CA, client certificate and credentials: %v", err)
	}
	defer nc.Close()
	if !nc.TLSRequired() {
		t.Error("connection is not TLS")
	}
	if _, err := bus.Open(ctx, nc, bus.DefaultConfig(testRun), nil); err != nil {
		t.Fatalf("learner over mutual TLS cannot open the run's topology: %v", err)
	}

	short, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	if nc, err := bus.Connect(short, bus.ConnConfig{URL: url, CredsFile: creds, TLSCA: ca}, nil); err == nil {
		nc.Close()
		t.Error("client without a certificate connected to a server that verifies clients")
	}

	other := t.TempDir()
	otherCA := filepath.Join(other, "ca.pem")
	writePEM(t, otherCA, "CERTIFICATE", newTestCA(t).der)
	ctx3, cancel3 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel3()
	_, err = bus.Connect(ctx3, bus.ConnConfig{URL: url, CredsFile: creds, TLSCA: otherCA, TLSCert: cliCert, TLSKey: cliKey}, nil)
	var ua x509.UnknownAuthorityError
	if !errors.As(err, &ua) || ctx3.Err() != nil {
		t.Errorf("untrusted server: got %v (context %v), want an x509 unknown-authority error at once", err, ctx3.Err())
	}

	if err := (bus.ConnConfig{TLSCert: cliCert}).Validate(); !errors.Is(err, bus.ErrConfig) {
		t.Errorf("certificate without key: got %v, want bus.ErrConfig", err)
	}
	if _, err := bus.Connect(ctx, bus.ConnConfig{URL: url, TLSCA: filepath.Join(dir, "missing.pem")}, nil); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing CA file: got %v, want a not-exist error", err)
	}
}

// TestTLSServer: a server.conf with TLS serves only TLS clients that trust
// its CA, and still requires credentials.
func TestTLSServer(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := writeCerts(t, dir)
	cfg := DefaultConfig(testRun)
	cfg.TLS = TLSConfig{CertFile: cert, KeyFile: key}
	s := startServerWith(t, dir, cfg)
	url := s.ClientURL()
	if nc, err := nats.Connect(url, nats.UserCredentials(CredsFile(dir, Actor))); err == nil {
		nc.Close()
		t.Fatal("client that does not trust the server's CA connected")
	}
	if nc, err := nats.Connect(url, nats.RootCAs(ca)); err == nil {
		nc.Close()
		t.Fatal("TLS client without credentials connected")
	}
	nc, err := nats.Connect(url, nats.RootCAs(ca), nats.UserCredentials(CredsFile(dir, Actor)))
	if err != nil {
		t.Fatalf("TLS client with the CA and credentials: %v", err)
	}
	defer nc.Close()
	if !nc.TLSRequired() {
		t.Error("connection is not TLS")
	}
}
