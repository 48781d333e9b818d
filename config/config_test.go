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

// TestQueueByteBounds: the byte bounds of the queues default when 0, are
// refused when negative, and the process's bound must leave room for the
// largest result an upstream may send, naming whichever key was set.
func TestQueueByteBounds(t *testing.T) {
	t.Parallel()
	cfg, err := Parse([]byte("server:\n  max_queued_bytes: 1048576\nupstreams:\n  a:\n    url: ws://x/g\n    max_message_bytes: 1048576\n    queue:\n      max_bytes: 65536\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.MaxQueuedBytes != 1<<20 || cfg.Upstreams["a"].Queue.MaxBytes != 64<<10 {
		t.Fatalf("parsed %d and %d", cfg.Server.MaxQueuedBytes, cfg.Upstreams["a"].Queue.MaxBytes)
	}
	if _, err := Parse([]byte("upstreams:\n  a:\n    url: ws://x/g\n"), env(nil)); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"upstreams:\n  a:\n    url: ws://x/g\n    queue:\n      max_bytes: -1\n",
			"line 5: upstreams.a.queue.max_bytes: must not be negative"},
		{"server:\n  max_queued_bytes: -1\nupstreams:\n  a:\n    url: ws://x/g\n",
			"line 2: server.max_queued_bytes: must not be negative"},
		{"server:\n  max_queued_bytes: 1048576\nupstreams:\n  a:\n    url: ws://x/g\n",
			"line 2: server.max_queued_bytes: is 1048576, less than upstreams.a.max_message_bytes (16777216): results that big could never be queued"},
		{"upstreams:\n  a:\n    url: ws://x/g\n    max_message_bytes: 536870912\n",
			"line 4: upstreams.a.max_message_bytes: is 536870912, more than server.max_queued_bytes (default 268435456)"},
	} {
		if _, err := Parse([]byte(tc.yaml), env(nil)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", tc.yaml, err, tc.want)
		}
	}
}
