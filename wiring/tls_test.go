package wiring

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gqlbridge/gqlbridge/config"
)

// TestCAFilesRefusedAlike: every CA file the configuration names (an
// upstream's, a token callback's, the callers' with mutual TLS) is read the
// same way, and one that holds no certificate is refused when the service
// is built, naming the key and the file.
func TestCAFilesRefusedAlike(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not-a-ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, key := selfSigned(t, dir)
	for key, yaml := range map[string]string{
		"tls.ca_file": `
upstreams:
  a: {url: "wss://127.0.0.1:1/graphql", tls: {ca_file: ` + notPEM + `}}`,
		"token.callback.ca_file": `
upstreams:
  a: {url: "ws://127.0.0.1:1/graphql", token: {callback: {target: "127.0.0.1:1", ca_file: ` + notPEM + `}}}`,
		"server.tls.client_ca_file": `
server:
  tls: {cert_file: ` + cert + `, key_file: ` + key + `, client_ca_file: ` + notPEM + `}
upstreams:
  a: {url: "ws://127.0.0.1:1/graphql"}`,
	} {
		cfg, err := config.Parse([]byte(yaml), func(string) (string, bool) { return "", false })
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		svc, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
		if err == nil {
			svc.Close()
			t.Errorf("%s: a file without certificates was accepted", key)
			continue
		}
		if want := key + " " + notPEM + " holds no PEM certificate"; !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", key, err, want)
		}
	}
}

// selfSigned writes a self-signed server certificate and its key to dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	for path, b := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "EC PRIVATE KEY", Bytes: kb}} {
		if err := os.WriteFile(path, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}
