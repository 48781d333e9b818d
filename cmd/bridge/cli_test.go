package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
)

// TestCLIHelpAndVersion: every command answers --help with its flags and
// exit 0; version prints one line; an unknown command or flag says so and
// exits 2.
func TestCLIHelpAndVersion(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in stdout or stderr
	}{
		{[]string{"--help"}, "bridge serve --config FILE"},
		{[]string{"help"}, "bridge check-config FILE"},
		{[]string{"serve", "--help"}, "-config"},
		{[]string{"subscribe", "--help"}, "-upstream"},
		{[]string{"check-config", "--help"}, "check-config"},
	} {
		var out, errOut bytes.Buffer
		code := run(t.Context(), tc.args, &out, &errOut)
		if code != 0 || !strings.Contains(out.String()+errOut.String(), tc.want) {
			t.Errorf("bridge %s: exit %d, output %q; want exit 0 and %q", strings.Join(tc.args, " "), code, out.String()+errOut.String(), tc.want)
		}
	}
	var out, errOut bytes.Buffer
	if code := run(t.Context(), []string{"version"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "gqlbridge ") || strings.Count(out.String(), "\n") != 1 {
		t.Errorf("bridge version: exit %d, %q", code, out.String())
	}
	for _, args := range [][]string{{"frobnicate"}, {"serve", "--no-such-flag"}, {"serve"}, {"check-config"}, {"check-config", "--x", "f"}, {}} {
		out.Reset()
		errOut.Reset()
		if code := run(t.Context(), args, &out, &errOut); code != 2 || errOut.Len() == 0 {
			t.Errorf("bridge %q: exit %d, stderr %q; want exit 2 and a message", args, code, errOut.String())
		}
	}
}

// TestLogsOneLinePerStateChange: at the default level the bridge logs its
// connection's state changes, each with the upstream and, for a loss, the
// close code and reason, and nothing per result: 300 results and a token
// expiry (4401, refresh, reconnect) make a handful of lines.
func TestLogsOneLinePerStateChange(t *testing.T) {
	demo := startDemo(t, demoupstream.Options{Token: "tok", TokenTTL: 400 * time.Millisecond})
	s := startServeArgs(t, []string{"--log-format", "json"}, `
server:
  grpc_address: ADDR
  admin_address: "off"
  drain_grace: 100ms
upstreams:
  demo:
    url: `+demo.URL()+`
    token: {value: tok}
    connection_params: {Authorization: "Bearer {{token}}"}
    retry: {stable_after: 100ms} # each connection lives 400ms: an expiry, not a rejection
`)
	// Results until two token expiries have passed, then the caller leaves.
	req := &bridgev1.SubscribeRequest{Upstream: "demo", Query: "subscription { ticker(count: 0, intervalMs: 2) { n } }"}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	stream, err := bridgev1.NewSubscriptionServiceClient(s.dial(t)).Subscribe(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	n, resubscribed := 0, 0
	for resubscribed < 2 || n < 300 {
		r, err := stream.Recv()
		if err != nil {
			t.Fatalf("after %d results, %d resubscriptions: %v", n, resubscribed, err)
		}
		if r.GetNext() != nil {
			n++
		} else if r.GetLifecycle().GetState() == bridgev1.Lifecycle_STATE_RESUBSCRIBED {
			resubscribed++
		}
	}
	cancel()
	s.stop()
	var lost, total int
	for _, line := range strings.Split(strings.TrimSpace(s.logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not a JSON log line: %q", line)
		}
		total++
		if rec["msg"] == "upstream connection lost, reconnecting" {
			lost++
			if rec["upstream"] != "demo" || rec["close_code"] != float64(4401) || rec["close_reason"] != "Unauthorized: token expired" {
				t.Errorf("state change line lacks upstream, close code or reason: %s", line)
			}
		}
	}
	if lost == 0 {
		t.Fatalf("no line for the lost connection:\n%s", s.logs.String())
	}
	// Startup, ready, lost and ready again per expiry, drain, shutdown:
	// tens of lines, not one per result.
	if total > 10+3*lost {
		t.Fatalf("%d log lines for %d results and %d reconnects:\n%s", total, n, lost, s.logs.String())
	}
	t.Logf("%d log lines for %d results and %d reconnects", total, n, lost)
}

// TestSchemeInAnyCase: URL schemes are case-insensitive (RFC 3986 §3.1).
// An upstream written WS://... passes check-config, and serve subscribes
// through it; what check-config accepts is what the session dials.
func TestSchemeInAnyCase(t *testing.T) {
	demo := startDemo(t, demoupstream.Options{})
	upper := "WS" + strings.TrimPrefix(demo.URL(), "ws")
	cfg := `
server:
  grpc_address: ADDR
  admin_address: "off"
  drain_grace: 100ms
upstreams:
  demo:
    url: ` + upper + `
`
	path := filepath.Join(t.TempDir(), "bridge.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(cfg, "ADDR", "127.0.0.1:0")), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run(t.Context(), []string{"check-config", path}, &out, &errOut); code != 0 {
		t.Fatalf("check-config: exit %d: %s", code, errOut.String())
	}
	s := startServe(t, cfg)
	n, _, st := consume(t.Context(), t, s.dial(t), &bridgev1.SubscribeRequest{Upstream: "demo",
		Query: "subscription { ticker(count: 2, intervalMs: 5) { n } }"})
	if st.Code() != codes.OK || n != 2 {
		t.Fatalf("subscribe through %s: %d results, %v", upper, n, st)
	}
}
