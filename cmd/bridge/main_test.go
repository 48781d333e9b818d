package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// syncBuffer is a bytes.Buffer safe for the logger and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestServeAndSubscribe runs the binary's serve and subscribe commands
// in-process against the gqlgen demo upstream over loopback, with a token
// from the environment, then drains on cancel.
func TestServeAndSubscribe(t *testing.T) {
	demo := startDemo(t, demoupstream.Options{Token: "tok-from-env"})
	t.Setenv("GQLBRIDGE_TEST_TOKEN", "tok-from-env")
	cfgPath := filepath.Join(t.TempDir(), "bridge.yaml")
	cfg := `
server:
  grpc_address: 127.0.0.1:0
  admin_address: "off"
  drain_grace: 100ms
upstreams:
  demo:
    url: ` + demo.URL() + `
    token:
      value: ${GQLBRIDGE_TEST_TOKEN}
    connection_params:
      Authorization: "Bearer {{token}}"
`
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	logs := &syncBuffer{}
	served := make(chan int, 1)
	go func() { served <- run(ctx, []string{"serve", "--config", cfgPath}, logs, logs) }()
	grpcAddr := boundAddress(t, logs, served, "grpc_address")

	var stdout, stderr bytes.Buffer
	code := -1
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		stdout.Reset()
		stderr.Reset()
		code = run(t.Context(), []string{"subscribe", "--addr", grpcAddr, "--upstream", "demo",
			"--variables", `{"c":3}`, `subscription($c: Int) { ticker(count: $c, intervalMs: 5) { n } }`}, &stdout, &stderr)
		if code != 14 { // UNAVAILABLE while the server is still starting
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code != 0 {
		t.Fatalf("subscribe exit %d; stderr:\n%s\nlogs:\n%s", code, stderr.String(), logs.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("stdout %q, want 3 JSON lines", stdout.String())
	}
	for i, l := range lines {
		var v struct {
			Data struct{ Ticker struct{ N int } }
		}
		if err := json.Unmarshal([]byte(l), &v); err != nil || v.Data.Ticker.N != i+1 {
			t.Fatalf("line %d = %q (%v)", i, l, err)
		}
	}
	if !strings.Contains(stderr.String(), "lifecycle: subscribed") {
		t.Fatalf("stderr %q lacks the lifecycle line", stderr.String())
	}

	// A bad request: the exit code is the gRPC code (NOT_FOUND = 5).
	stderr.Reset()
	if code := run(t.Context(), []string{"subscribe", "--addr", grpcAddr, "--upstream", "nope", "subscription { ticker { n } }"}, &stdout, &stderr); code != 5 {
		t.Fatalf("unknown upstream: exit %d, stderr %s", code, stderr.String())
	}

	stop()
	select {
	case code := <-served:
		if code != 0 {
			t.Fatalf("serve exit %d; logs:\n%s", code, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop")
	}
	if strings.Contains(logs.String(), "tok-from-env") {
		t.Fatal("the token reached the logs")
	}
}

func TestCheckConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("upstreams:\n  a:\n    url: ws://127.0.0.1:1/graphql\n    token:\n      value: hunter2\n"), 0o600)
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"check-config", good}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if strings.Contains(out.String(), "hunter2") || !strings.Contains(out.String(), "configuration ok") {
		t.Fatalf("output %q", out.String())
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("upstreams:\n  a:\n    url: ws://127.0.0.1:1/graphql\n    retries: 3\n"), 0o600)
	out.Reset()
	errb.Reset()
	if code := run(t.Context(), []string{"check-config", bad}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "line 4") || !strings.Contains(errb.String(), "retries") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
}
