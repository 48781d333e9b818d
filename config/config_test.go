package config

import (
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseDefaultsAndSubstitution(t *testing.T) {
	t.Parallel()
	cfg, err := Parse([]byte(`
# a comment with ${NOT_SUBSTITUTED}
upstreams:
  orders:
    url: wss://orders.internal/graphql
    token:
      value: "${ORDERS_TOKEN}"
    connection_params:
      Authorization: "Bearer {{token}}"
    retry:
      initial: 250ms
`), env(map[string]string{"ORDERS_TOKEN": "t0k"}))
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.Upstreams["orders"]
	if u.Token.Value != "t0k" || u.Retry.Initial != 250*time.Millisecond || !*u.Dedup || u.Queue.Policy != "drop_oldest" {
		t.Fatalf("got %+v", u)
	}
	if cfg.Server.GRPCAddress != "127.0.0.1:50051" || cfg.Server.DrainGrace != 10*time.Second {
		t.Fatalf("server defaults %+v", cfg.Server)
	}
}

func TestParseErrorsNameKeyAndLine(t *testing.T) {
	t.Parallel()
	cases := []struct{ yaml, want string }{
		{"upstreams:\n  a:\n    url: ws://x/graphql\n    bogus: 1\n", "line 4: field bogus not found"},
		{"upstreams:\n  a:\n    url: http://x/graphql\n", "line 3: upstreams.a.url: must be a ws:// or wss:// URL"},
		{"upstreams:\n  a:\n    url: ws://x/g\n    subprotocols: [graphql-transport]\n", `line 4: upstreams.a.subprotocols: unknown subprotocol "graphql-transport"`},
		{"upstreams:\n  a:\n    url: ws://x/g\n    token:\n      value: a\n      env: B\n", "line 4: upstreams.a.token: name exactly one source"},
		{"upstreams:\n  a:\n    url: ws://x/g\n    close_codes:\n      4400: fatal\n", `unknown class "fatal" (allowed: transient, auth, misconfiguration, bridge_fault)`},
		{"upstreams:\n  a:\n    url: ws://x/g\n    queue:\n      policy: block\n", `line 5: upstreams.a.queue.policy: unknown policy "block"`},
		{"upstreams:\n  a:\n    url: ws://x/g\n    headers:\n      X: ${MISSING}\n", "line 5: environment variable MISSING is not set"},
		{"server:\n  grpc_address: 1\n", "upstreams: at least one upstream is required"},
		{"", "empty"},
		{"upstreams:\n  a:\n    url: ws://x/g\n    ack_timeout: soon\n", "line 4"},
	}
	for _, tc := range cases {
		_, err := Parse([]byte(tc.yaml), env(nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", tc.yaml, err, tc.want)
		}
	}
}

func TestSecretNotInErrors(t *testing.T) {
	t.Parallel()
	_, err := Parse([]byte("upstreams:\n  a:\n    url: ws://x/g\n    token:\n      value: ${T}\n      file: /x\n"), env(map[string]string{"T": "sup3rsecret"}))
	if err == nil || strings.Contains(err.Error(), "sup3rsecret") {
		t.Fatalf("err %v", err)
	}
}

// TestParseBatchLimits: server.max_batch and server.max_batch_bytes are
// read as written, 0 when absent (the bridge's defaults then apply), and a
// negative value is an error naming the key and its line.
func TestParseBatchLimits(t *testing.T) {
	t.Parallel()
	const up = "upstreams:\n  a:\n    url: ws://x/g\n"
	cfg, err := Parse([]byte("server:\n  max_batch: 64\n  max_batch_bytes: 262144\n"+up), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.MaxBatch != 64 || cfg.Server.MaxBatchBytes != 262144 {
		t.Fatalf("server %+v", cfg.Server)
	}
	if cfg, err = Parse([]byte(up), env(nil)); err != nil || cfg.Server.MaxBatch != 0 || cfg.Server.MaxBatchBytes != 0 {
		t.Fatalf("absent: %+v, %v", cfg.Server, err)
	}
	for key, line := range map[string]string{"max_batch": "line 2", "max_batch_bytes": "line 3"} {
		y := "server:\n  max_batch: 8\n  max_batch_bytes: 4096\n" + up
		y = strings.Replace(y, key+": ", key+": -", 1)
		_, err := Parse([]byte(y), env(nil))
		if want := line + ": server." + key + ": must not be negative"; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s negative: %v, want %q", key, err, want)
		}
	}
}
