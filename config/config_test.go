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
		{"server:\n  drain_grace: 1s\n", "upstreams: at least one upstream is required"},
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

// TestURLSchemeInAnyCase: the scheme is case-insensitive (RFC 3986 §3.1):
// WS:// and Wss:// load, with the scheme lowered for the session; the rest
// of the URL is kept as written.
func TestURLSchemeInAnyCase(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"WS://Orders.internal/GraphQL?Key=V": "ws://Orders.internal/GraphQL?Key=V",
		"Wss://orders.internal:8443/graphql": "wss://orders.internal:8443/graphql",
	} {
		cfg, err := Parse([]byte("upstreams:\n  a:\n    url: "+in+"\n"), env(nil))
		if err != nil {
			t.Fatalf("url %s: %v", in, err)
		}
		if got := cfg.Upstreams["a"].URL; got != want {
			t.Errorf("url %s loaded as %s, want %s", in, got, want)
		}
	}
}

// TestValidationGaps: values that used to pass check-config silently. Each
// is refused with the line of its own key, the key's path, and what is
// allowed.
func TestValidationGaps(t *testing.T) {
	t.Parallel()
	const up = "upstreams:\n  a:\n    url: ws://x/g\n"
	cases := []struct{ name, yaml, want string }{
		{"port out of range", "server:\n  grpc_address: 127.0.0.1:99999\n" + up,
			`line 2: server.grpc_address: port "99999" is out of range (allowed: a number from 0 to 65535)`},
		{"admin port out of range", "server:\n  grpc_address: :50051\n  admin_address: \"[::1]:70000\"\n" + up,
			`line 3: server.admin_address: port "70000" is out of range (allowed: a number from 0 to 65535) (or "off")`},
		{"address without port", "server:\n  grpc_address: localhost\n" + up,
			`line 2: server.grpc_address: "localhost" is not HOST:PORT (allowed: 127.0.0.1:50051`},
		{"upstream port out of range", "upstreams:\n  a:\n    url: ws://x:99999/g\n",
			"line 3: upstreams.a.url: port 99999 is out of range: use 1 to 65535"},
		{"keep_alive 1ms", up + "    keep_alive: 1ms\n    keep_alive_timeout: 1ms\n",
			"line 4: upstreams.a.keep_alive: 1ms is too short (allowed: at least 1s, 0s for the default 15s, or negative to disable probing)"},
		{"keep_alive_timeout 1ms", up + "    keep_alive: 5s\n    keep_alive_timeout: 1ms\n",
			"line 5: upstreams.a.keep_alive_timeout: 1ms is too short (allowed: at least 1s, or 0s for the default 10s)"},
		{"keep_alive_timeout over keep_alive", up + "    keep_alive: 5s\n    keep_alive_timeout: 30s\n",
			"line 5: upstreams.a.keep_alive_timeout: 30s is longer than keep_alive (5s): a probe must be answered before the next is due (allowed: 1s to 5s)"},
		{"keep_alive under the default timeout", up + "    keep_alive: 5s\n",
			"line 4: upstreams.a.keep_alive: 5s is shorter than keep_alive_timeout (10s, the default): a probe must be answered before the next is due; set keep_alive_timeout to at most 5s"},
		{"second document", up + "---\nupstreams:\n  b:\n    url: ws://y/g\n",
			`line 4: a second YAML document starts here: the file holds one document`},
		{"headers differing in case", up + "    headers:\n      X-A: one\n      x-a: two\n",
			"line 6: upstreams.a.headers.x-a: repeats header X-A (line 5): header names are case-insensitive; keep one"},
		{"header name with a space", up + "    headers:\n      \"X A\": one\n",
			`line 5: upstreams.a.headers.X A: "X A" is not an HTTP header name`},
		{"header value with a line break", up + "    headers:\n      X-A: \"one\\r\\nX-B: two\"\n",
			"line 5: upstreams.a.headers.X-A: the value holds a line break or NUL"},
		{"server max_subscriptions", "server:\n  max_subscriptions: -1\n" + up,
			"line 2: server.max_subscriptions: must not be negative (0 means no cap)"},
		{"server max_query_bytes", "server:\n  max_query_bytes: -1\n" + up,
			"line 2: server.max_query_bytes: must not be negative (0 means the default, 65536)"},
		{"max_message_bytes", up + "    max_message_bytes: -5\n",
			"line 4: upstreams.a.max_message_bytes: must not be negative (0 means the default, 16777216)"},
		{"max_operations_per_connection", up + "    dedup: true\n    max_operations_per_connection: -1\n",
			"line 5: upstreams.a.max_operations_per_connection: must not be negative (0 means the default, 1000)"},
		{"upstream max_subscriptions", up + "    max_subscriptions: -1\n",
			"line 4: upstreams.a.max_subscriptions: must not be negative (0 means no cap)"},
		{"queue size", up + "    queue:\n      size: -1\n",
			"line 5: upstreams.a.queue.size: must not be negative (0 means the default, 262144)"},
		{"close code out of range", up + "    close_codes:\n      4400: auth\n      999: auth\n",
			"line 6: upstreams.a.close_codes.999: 999 is not a WebSocket close code (allowed: 1000-4999)"},
		{"max_connection_age too short", "server:\n  max_connection_age: 10ms\n" + up,
			"line 2: server.max_connection_age: 10ms is out of range (allowed: at least 1s, or 0s: connections live for ever)"},
		{"retry duration", up + "    retry:\n      initial: 1s\n      max: -1s\n",
			"line 6: upstreams.a.retry.max: must not be negative (0s means the default, 10s)"},
	}
	for _, tc := range cases {
		_, err := Parse([]byte(tc.yaml), env(nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Parse(%q) = %v,\nwant an error containing %q", tc.name, tc.yaml, err, tc.want)
		}
	}
	// What these checks must still accept.
	for _, ok := range []string{
		"server:\n  grpc_address: \":0\"\n  admin_address: \"off\"\n" + up,
		up + "    keep_alive: -1s\n    keep_alive_timeout: 1h\n",
		up + "    keep_alive: 1s\n    keep_alive_timeout: 1s\n",
		up + "    keep_alive: 30s\n",
		up + "    headers:\n      X-A: one\n      X-B: two\n",
		up + "---\n",
	} {
		if _, err := Parse([]byte(ok), env(nil)); err != nil {
			t.Errorf("Parse(%q) = %v, want it accepted", ok, err)
		}
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

// TestParseMemoryLimit: server.memory_limit is auto when absent, off or a
// size in GOMEMLIMIT's syntax; anything else is an error naming the key
// and its line.
func TestParseMemoryLimit(t *testing.T) {
	t.Parallel()
	const up = "upstreams:\n  a:\n    url: ws://x/g\n"
	for in, want := range map[string]struct {
		mode  string
		bytes int64
	}{
		"":                                    {"auto", 0},
		"server:\n  memory_limit: auto\n":     {"auto", 0},
		"server:\n  memory_limit: off\n":      {"off", 0},
		"server:\n  memory_limit: 1800MiB\n":  {"1800MiB", 1800 << 20},
		"server:\n  memory_limit: 2GiB\n":     {"2GiB", 2 << 30},
		"server:\n  memory_limit: 67108864\n": {"67108864", 64 << 20},
		"server:\n  memory_limit: 65536KiB\n": {"65536KiB", 64 << 20},
		"server:\n  memory_limit: 1TiB\n":     {"1TiB", 1 << 40},
	} {
		cfg, err := Parse([]byte(in+up), env(nil))
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if cfg.Server.MemoryLimit != want.mode || cfg.Server.MemoryLimitBytes != want.bytes {
			t.Errorf("%q: memory_limit %q (%d bytes), want %q (%d)", in, cfg.Server.MemoryLimit, cfg.Server.MemoryLimitBytes, want.mode, want.bytes)
		}
	}
	for bad, msg := range map[string]string{
		"2GB":        `unknown unit "GB"`,
		"1.5GiB":     "is not a size",
		"-1MiB":      "is not a size",
		"MiB":        "is not a size",
		"on":         "is not a size",
		"1MiB":       "is below 16MiB",
		"0":          "is below 16MiB",
		"9999999TiB": "too large",
	} {
		_, err := Parse([]byte("server:\n  grpc_address: 127.0.0.1:1\n  memory_limit: "+bad+"\n"+up), env(nil))
		want := "line 3: server.memory_limit: "
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), msg) || !strings.Contains(err.Error(), "allowed: auto, off") {
			t.Errorf("memory_limit %q: %v, want %q and %q", bad, err, want, msg)
		}
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
