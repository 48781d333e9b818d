package wiring

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/gqlbridge/gqlbridge/config"
)

// testCA issues certificates for the tests of this file.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a certificate with the serial number, for a server
// (localhost) or a client, as PEM files' contents and as a tls.Certificate.
func (ca *testCA) issue(t *testing.T, serial int64, server bool) (certPEM, keyPEM []byte, cert tls.Certificate) {
	t.Helper()
	if server {
		return ca.issueServer(t, serial, "localhost")
	}
	return ca.sign(t, serial, x509.ExtKeyUsageClientAuth, nil)
}

// issueServer returns a server certificate for hosts (DNS names or IP
// addresses).
func (ca *testCA) issueServer(t *testing.T, serial int64, hosts ...string) (certPEM, keyPEM []byte, cert tls.Certificate) {
	t.Helper()
	return ca.sign(t, serial, x509.ExtKeyUsageServerAuth, hosts)
}

func (ca *testCA) sign(t *testing.T, serial int64, usage x509.ExtKeyUsage, hosts []string) (certPEM, keyPEM []byte, cert tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
		tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// serveHealth serves gRPC health checks with creds on loopback until the
// test ends, and returns the address.
func serveHealth(t *testing.T, creds credentials.TransportCredentials) string {
	t.Helper()
	srv := grpc.NewServer(grpc.Creds(creds))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return lis.Addr().String()
}

// replace writes contents to path as a Secret volume update does: a new
// file renamed over the old one.
func replace(t *testing.T, path string, contents []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, contents, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestServerTLSFilesReloaded: server.tls's certificate, key and client CA
// are used from the next connection on once their files change, without a
// restart; connections already open are left alone; files that change to
// something unusable (a key that does not match) leave the last good ones
// in use, with one warning.
func TestServerTLSFilesReloaded(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	caA, caB := newTestCA(t, "CA A"), newTestCA(t, "CA B")
	serverA, serverKeyA, _ := caA.issue(t, 100, true)
	serverB, serverKeyB, _ := caB.issue(t, 200, true)
	_, _, clientA := caA.issue(t, 101, false)
	_, _, clientB := caB.issue(t, 201, false)
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")
	replace(t, certFile, serverA)
	replace(t, keyFile, serverKeyA)
	replace(t, caFile, caA.pem)

	var logs syncBuffer
	creds, err := serverCredentials(&config.ServerTLS{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile},
		slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	addr := serveHealth(t, creds)

	roots := x509.NewCertPool()
	roots.AddCert(caA.cert)
	roots.AddCert(caB.cert)
	// check makes one health check on a new connection as the client
	// holding cert, and returns the serial number of the server
	// certificate it was shown, and the connection.
	check := func(cert tls.Certificate) (int64, *grpc.ClientConn, error) {
		var mu sync.Mutex
		var serial int64
		tc := &tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{cert},
			VerifyConnection: func(cs tls.ConnectionState) error {
				mu.Lock()
				defer mu.Unlock()
				serial = cs.PeerCertificates[0].SerialNumber.Int64()
				return nil
			}}
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		mu.Lock()
		defer mu.Unlock()
		return serial, cc, err
	}

	serial, ccA, err := check(clientA)
	if err != nil || serial != 100 {
		t.Fatalf("before the change: server certificate %d, error %v; want 100, nil", serial, err)
	}
	defer ccA.Close()

	replace(t, certFile, serverB)
	replace(t, keyFile, serverKeyB)
	replace(t, caFile, caB.pem)
	serial, cc, err := check(clientB)
	cc.Close()
	if err != nil || serial != 200 {
		t.Fatalf("after the change, a client of CA B: server certificate %d, error %v; want 200, nil", serial, err)
	}
	if _, cc, err := check(clientA); err == nil {
		cc.Close()
		t.Fatal("after the change, a client of CA A, no longer the client CA, was let in")
	} else {
		cc.Close()
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(ccA).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("the connection made before the change: %v", err)
	}
	if n := strings.Count(logs.String(), "TLS files reloaded"); n != 2 {
		t.Errorf("%d reloads logged, want 2 (the pair, the CA):\n%s", n, logs.String())
	}

	// A certificate with the wrong key: the last good pair stays, and the
	// problem is logged once however many handshakes meet it.
	replace(t, certFile, serverA)
	for range 2 {
		serial, cc, err := check(clientB)
		cc.Close()
		if err != nil || serial != 200 {
			t.Fatalf("with a mismatched pair: server certificate %d, error %v; want the last good one, 200", serial, err)
		}
	}
	if n := strings.Count(logs.String(), "cannot be used"); n != 1 ||
		!strings.Contains(logs.String(), "server.tls: tls: private key does not match public key") {
		t.Errorf("want one warning naming server.tls and the mismatch, got %d:\n%s", n, logs.String())
	}
	replace(t, keyFile, serverKeyA)
	if serial, cc, err := check(clientB); err != nil || serial != 100 {
		t.Fatalf("once the key matches again: server certificate %d, error %v; want 100", serial, err)
	} else {
		cc.Close()
	}

	// A file gone: the same, logged once.
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		serial, cc, err := check(clientB)
		cc.Close()
		if err != nil || serial != 100 {
			t.Fatalf("with the key file gone: server certificate %d, error %v; want the last good one, 100", serial, err)
		}
	}
	if n := strings.Count(logs.String(), "no such file or directory"); n != 1 {
		t.Errorf("a missing key file logged %d times, want once:\n%s", n, logs.String())
	}
}

// TestUpstreamClientCertificateReloaded: an upstream's tls.cert_file and
// key_file are presented from the next connection on once they change.
func TestUpstreamClientCertificateReloaded(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newTestCA(t, "upstream clients")
	certA, keyA, _ := ca.issue(t, 300, false)
	certB, keyB, _ := ca.issue(t, 400, false)
	certFile, keyFile := filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	replace(t, certFile, certA)
	replace(t, keyFile, keyA)

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(r.TLS.PeerCertificates[0].SerialNumber.String()))
	}))
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.StartTLS()
	defer srv.Close()
	caFile := filepath.Join(dir, "server-ca.pem")
	replace(t, caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))

	client, err := upstreamHTTPClient(&config.UpstreamTLS{CAFile: caFile, CertFile: certFile, KeyFile: keyFile},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer client.CloseIdleConnections()
	presented := func() string {
		t.Helper()
		client.CloseIdleConnections() // a new connection, a new handshake
		resp, err := client.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := presented(); got != "300" {
		t.Fatalf("client certificate %s, want 300", got)
	}
	replace(t, certFile, certB)
	replace(t, keyFile, keyB)
	if got := presented(); got != "400" {
		t.Fatalf("after the files changed: client certificate %s, want 400", got)
	}
}

// TestCallbackCAFileReloaded: a token callback's ca_file is read again at
// each connection to the callback.
func TestCallbackCAFileReloaded(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	caA, caB := newTestCA(t, "callback CA A"), newTestCA(t, "callback CA B")
	certA, keyA, _ := caA.issueServer(t, 800, "127.0.0.1")
	certB, keyB, _ := caB.issueServer(t, 900, "127.0.0.1")
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.pem")
	replace(t, certFile, certA)
	replace(t, keyFile, keyA)
	replace(t, caFile, caA.pem)
	log := slog.New(slog.DiscardHandler)
	screds, err := serverCredentials(&config.ServerTLS{CertFile: certFile, KeyFile: keyFile}, log)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveHealth(t, screds)
	creds, err := callbackCredentials(caFile, log)
	if err != nil {
		t.Fatal(err)
	}
	check := func() error {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := check(); err != nil {
		t.Fatalf("CA A, server certificate from A: %v", err)
	}
	replace(t, certFile, certB)
	replace(t, keyFile, keyB)
	if err := check(); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("CA A in the file, server certificate from B: %v, want UNAVAILABLE, signed by unknown authority", err)
	}
	replace(t, caFile, caB.pem)
	if err := check(); err != nil {
		t.Fatalf("CA B in the file, server certificate from B: %v", err)
	}
}
