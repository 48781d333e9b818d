package wiring

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	certPEM, keyPEM, _ := newTestCA(t, "CA").issue(t, 2, true)
	cert, key := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	replace(t, cert, certPEM)
	replace(t, key, keyPEM)
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
		err := buildError(t, yaml)
		if err == nil {
			t.Errorf("%s: a file without certificates was accepted", key)
			continue
		}
		if want := key + " " + notPEM + " holds no PEM certificate"; !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", key, err, want)
		}
	}
}

// TestRereadFilesNeededAtStartup: the files the service reads again while
// it runs (tlsreload.go, callers.go, the OAuth2 client secret) are read at
// startup too, and a missing one stops it with an error naming its key.
func TestRereadFilesNeededAtStartup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	certPEM, keyPEM, _ := newTestCA(t, "CA").issue(t, 2, true)
	cert, key := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	replace(t, cert, certPEM)
	replace(t, key, keyPEM)
	const up = "\nupstreams:\n  a: {url: \"wss://127.0.0.1:1/graphql\"}\n"
	for want, yaml := range map[string]string{
		"server.tls: open " + missing:                         "server:\n  tls: {cert_file: " + missing + ", key_file: " + key + "}" + up,
		"server.tls.client_ca_file: open " + missing:          "server:\n  tls: {cert_file: " + cert + ", key_file: " + key + ", client_ca_file: " + missing + "}" + up,
		"server.callers.c.token_file: open " + missing:        "server:\n  callers:\n    c: {token_file: " + missing + ", upstreams: [a]}" + up,
		"upstream a: tls.cert_file/key_file: open " + missing: "upstreams:\n  a: {url: \"wss://127.0.0.1:1/graphql\", tls: {cert_file: " + cert + ", key_file: " + missing + "}}\n",
		"upstream a: token.oauth2.client_secret_file: open " + missing: `
upstreams:
  a:
    url: "wss://127.0.0.1:1/graphql"
    connection_params: {token: "{{token}}"}
    token: {oauth2: {token_url: "http://127.0.0.1:1/token", client_id: bridge, client_secret_file: ` + missing + `}}
`,
	} {
		err := buildError(t, yaml)
		if err == nil {
			t.Errorf("%s: started without the file", want)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want %q", err, want)
		}
	}
}

// buildError builds the service of a configuration file that parses, and
// returns the error that stopped it, nil (the service closed) if none did.
func buildError(t *testing.T, yaml string) error {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("%v\n%s", err, yaml)
	}
	svc, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err == nil {
		svc.Close()
	}
	return err
}
