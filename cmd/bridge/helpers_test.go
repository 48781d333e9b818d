package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
)

// served is a bridge started with run(serve) in-process.
type served struct {
	addr  string // the gRPC address it bound
	admin string // the admin address it bound, when the config has one
	logs  *syncBuffer
	stop  func()
}

// startDemo runs the gqlgen demo upstream until the test ends.
func startDemo(t *testing.T, o demoupstream.Options) *demoupstream.Server {
	t.Helper()
	demo, err := demoupstream.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { demo.Close() })
	return demo
}

// dial is a plaintext gRPC client of the served bridge, closed when the
// test ends.
func (s *served) dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// startServe writes cfg and runs `bridge serve` until the test ends; it
// returns once the health service answers. ADDR in cfg (grpc_address) and
// ADMIN (admin_address) become 127.0.0.1:0: the bridge binds a free port
// itself and the test learns it from the log (boundAddress), so no other
// process can take the port between a test choosing it and the bridge
// binding it.
func startServe(t *testing.T, cfg string, dial ...grpc.DialOption) *served {
	t.Helper()
	return startServeArgs(t, []string{"--log-level", "debug"}, cfg, dial...)
}

// startServeArgs is startServe with serve's flags other than --config.
func startServeArgs(t *testing.T, flags []string, cfg string, dial ...grpc.DialOption) *served {
	t.Helper()
	cfg = strings.NewReplacer("ADDR", "127.0.0.1:0", "ADMIN", "127.0.0.1:0").Replace(cfg)
	path := filepath.Join(t.TempDir(), "bridge.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	done := make(chan int, 1)
	go func() { done <- run(ctx, append([]string{"serve", "--config", path}, flags...), logs, logs) }()
	s := &served{logs: logs}
	var once bool
	s.stop = func() {
		if once {
			return
		}
		once = true
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("serve exited %d; logs:\n%s", code, logs.String())
			}
		case <-time.After(20 * time.Second):
			t.Errorf("serve did not stop")
		}
	}
	t.Cleanup(s.stop)
	s.addr = boundAddress(t, logs, done, "grpc_address")
	if strings.Contains(cfg, "admin_address: 127.0.0.1:0") {
		s.admin = boundAddress(t, logs, done, "address")
	}
	if len(dial) == 0 {
		dial = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(s.addr, dial...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		hctx, hcancel := context.WithTimeout(t.Context(), time.Second)
		_, err := healthpb.NewHealthClient(conn).Check(hctx, &healthpb.HealthCheckRequest{})
		hcancel()
		if err == nil {
			return s
		}
		select {
		case code := <-done:
			t.Fatalf("serve exited %d; logs:\n%s", code, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("bridge not healthy: %v; logs:\n%s", err, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// boundAddress waits for serve's log line that reports the address it
// bound (key grpc_address on "gqlbridge serving", key address on "admin
// listening"), in the text or the JSON log format, and returns it. done
// reports serve's exit code should it exit first.
func boundAddress(t *testing.T, logs *syncBuffer, done chan int, key string) string {
	t.Helper()
	msg := map[string]string{"grpc_address": "gqlbridge serving", "address": "admin listening"}[key]
	re := regexp.MustCompile(`(?m)^.*` + msg + `.*\b` + key + `(?:=|":")(127\.0\.0\.1:[0-9]+)`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := re.FindStringSubmatch(logs.String()); m != nil {
			return m[1]
		}
		select {
		case code := <-done:
			done <- code // for stop
			t.Fatalf("serve exited %d before logging its %s; logs:\n%s", code, key, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not log its %s; logs:\n%s", key, logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testPKI is a throwaway CA with a server and two client certificates.
type testPKI struct {
	dir                   string
	caFile                string
	serverCert, serverKey string
	clients               map[string]tls.Certificate
	pool                  *x509.CertPool
}

func newPKI(t *testing.T, clientCNs ...string) *testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gqlbridge test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p := &testPKI{dir: dir, caFile: filepath.Join(dir, "ca.pem"), clients: map[string]tls.Certificate{}, pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	writePEM(t, p.caFile, "CERTIFICATE", caDER)
	issue := func(cn string, serial int64, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		if usage == x509.ExtKeyUsageServerAuth {
			tmpl.DNSNames = []string{"localhost"}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	der, key := issue("localhost", 2, x509.ExtKeyUsageServerAuth)
	p.serverCert, p.serverKey = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	writePEM(t, p.serverCert, "CERTIFICATE", der)
	kb, _ := x509.MarshalECPrivateKey(key)
	writePEM(t, p.serverKey, "EC PRIVATE KEY", kb)
	for i, cn := range clientCNs {
		der, key := issue(cn, int64(10+i), x509.ExtKeyUsageClientAuth)
		p.clients[cn] = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	return p
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// dialTLS returns dial options for the PKI's server, as client cn ("" = no
// client certificate).
func (p *testPKI) dialTLS(cn string) grpc.DialOption {
	tc := &tls.Config{RootCAs: p.pool, ServerName: "localhost"}
	if cn != "" {
		tc.Certificates = []tls.Certificate{p.clients[cn]}
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(tc))
}
