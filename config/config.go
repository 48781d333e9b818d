// Package config loads and validates the bridge's YAML configuration
// (docs/config.md lists every key). Every error names the key and its line and says what is
// allowed. Errors never quote token values; they may quote other values
// (a misspelt subprotocol, say), including ones substituted from ${VAR}.
package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gqlbridge/gqlbridge/internal/redaction"
	"github.com/gqlbridge/gqlbridge/session"
)

// Config is the whole file.
type Config struct {
	Server    Server               `yaml:"server"`
	Upstreams map[string]*Upstream `yaml:"upstreams"`

	root *yaml.Node
}

// Server configures the listeners and process-wide limits.
type Server struct {
	// GRPCAddress is where SubscriptionService listens. Default 127.0.0.1:50051.
	GRPCAddress string `yaml:"grpc_address"`
	// AdminAddress serves /metrics, /healthz, /readyz. Default 127.0.0.1:9090;
	// "off" disables it.
	AdminAddress string `yaml:"admin_address"`
	// DrainGrace is how long open streams may continue after SIGTERM before
	// they end with UNAVAILABLE. Default 10s.
	DrainGrace time.Duration `yaml:"drain_grace"`
	// MaxSubscriptions caps open streams in the process; 0 = no cap.
	MaxSubscriptions int `yaml:"max_subscriptions"`
	// MaxQueryBytes bounds a request's query. Default 65536.
	MaxQueryBytes int `yaml:"max_query_bytes"`
	// MaxVariablesBytes bounds a request's variables+extensions JSON. Default 65536.
	MaxVariablesBytes int `yaml:"max_variables_bytes"`
	// MaxBatch is the largest SubscribeRequest.max_batch a caller may ask
	// for; a larger one is refused with INVALID_ARGUMENT. Default 1024; 1
	// refuses batching.
	MaxBatch int `yaml:"max_batch"`
	// MaxBatchBytes bounds the encoded size of one batch of results; a
	// larger result goes alone. Default 1048576 (1 MiB), under the 4 MiB
	// gRPC clients accept by default.
	MaxBatchBytes int `yaml:"max_batch_bytes"`
	// MaxQueuedBytes bounds the bytes of results held in all subscribers'
	// queues together. Default 268435456 (256 MiB).
	MaxQueuedBytes int `yaml:"max_queued_bytes"`
	// TLS serves gRPC over TLS; with client_ca_file, callers must present a
	// client certificate signed by that CA (mutual TLS). Default plaintext.
	TLS *ServerTLS `yaml:"tls"`
	// Callers, when set, requires every caller to authenticate and limits
	// each to its upstreams. Default: anyone who can reach the port.
	Callers map[string]*Caller `yaml:"callers"`
	// Pprof mounts /debug/pprof/ on the admin server. Default false.
	Pprof bool `yaml:"pprof"`
	// MemoryLimit is the Go runtime's soft memory limit: "auto" (the
	// default) sets it to 90% of the container's memory limit (cgroup v2
	// memory.max or v1 memory.limit_in_bytes) when there is one, "off"
	// leaves it alone, and a size (GOMEMLIMIT's syntax: 1800MiB, 2GiB, or
	// bytes) sets it to that. A GOMEMLIMIT in the environment wins over all
	// three.
	MemoryLimit string `yaml:"memory_limit"`
	// MemoryLimitBytes is MemoryLimit as a size; 0 for auto and off. Set
	// by validation.
	MemoryLimitBytes int64 `yaml:"-"`
	// MaxConnectionAge sends callers' HTTP/2 connections a GOAWAY after this
	// long (±10%), so clients balancing over a headless Service find new
	// replicas; streams still open on the connection end like a drain
	// (UNAVAILABLE, BRIDGE_DRAINING, RetryInfo) at 1.1 × this + drain_grace
	// after it opened, and callers resubscribe on a new connection. At least
	// 1s. Default 0: connections live for ever.
	MaxConnectionAge time.Duration `yaml:"max_connection_age"`
}

// ServerTLS configures the gRPC listener's TLS.
type ServerTLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

// Caller is one client of the bridge.
type Caller struct {
	// TokenFile or TokenEnv holds the bearer token the caller presents in
	// the authorization metadata.
	TokenFile string `yaml:"token_file"`
	TokenEnv  string `yaml:"token_env"`
	// Subject matches the caller's client certificate (Common Name, DNS SAN
	// or URI SAN such as a SPIFFE ID), with mutual TLS.
	Subject string `yaml:"subject"`
	// Upstreams the caller may name; ["*"] allows all. Required.
	Upstreams []string `yaml:"upstreams"`
}

// UpstreamTLS configures wss:// connections.
type UpstreamTLS struct {
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Upstream is one upstream GraphQL server.
type Upstream struct {
	// URL is the ws:// or wss:// endpoint. Required.
	URL string `yaml:"url"`
	// Subprotocols are offered in order (wire names). Default
	// [graphql-transport-ws, graphql-ws].
	Subprotocols []string `yaml:"subprotocols"`
	// FallbackSubprotocol is spoken when the server agrees to none. Default none.
	FallbackSubprotocol string `yaml:"fallback_subprotocol"`
	// Token is the credential source; optional.
	Token *Token `yaml:"token"`
	// ConnectionParams is the connection_init payload; "{{token}}" in any
	// string is replaced by the token.
	ConnectionParams map[string]any `yaml:"connection_params"`
	// Headers are added to the upgrade request, with the same substitution.
	Headers map[string]string `yaml:"headers"`
	// TLS configures wss:// (custom CA, client certificate, server name).
	TLS *UpstreamTLS `yaml:"tls"`

	DialTimeout      time.Duration `yaml:"dial_timeout"`       // default 10s
	AckTimeout       time.Duration `yaml:"ack_timeout"`        // default 10s
	KeepAlive        time.Duration `yaml:"keep_alive"`         // default 15s; negative disables
	KeepAliveTimeout time.Duration `yaml:"keep_alive_timeout"` // default 10s
	MaxMessageBytes  int64         `yaml:"max_message_bytes"`  // default 16 MiB
	Retry            Retry         `yaml:"retry"`
	// CloseCodes overrides the outcome class of close codes (1000-4999):
	// transient, auth, misconfiguration or bridge_fault. The default classes
	// are the table in session/closecodes.go.
	CloseCodes map[int]string `yaml:"close_codes"`

	// MaxOperationsPerConnection opens another connection when reached. Default 1000.
	MaxOperationsPerConnection int `yaml:"max_operations_per_connection"`
	// Dedup shares identical subscriptions as one upstream operation. Default true.
	Dedup *bool `yaml:"dedup"`
	// Queue is each subscriber's queue.
	Queue Queue `yaml:"queue"`
	// IdleTimeout closes a connection without operations. Default 30s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxSubscriptions caps open streams on this upstream; 0 = no cap.
	MaxSubscriptions int `yaml:"max_subscriptions"`
}

// Token names exactly one credential source.
type Token struct {
	Value string `yaml:"value"`
	Env   string `yaml:"env"`
	// File is read on every connection attempt (rotated files are picked up).
	File string `yaml:"file"`
	// Command runs for every token: it prints the token, or JSON
	// {"token","expires_at"}.
	Command        []string      `yaml:"command"`
	CommandTimeout time.Duration `yaml:"command_timeout"` // default 10s
	// OAuth2 uses the client-credentials grant.
	OAuth2 *OAuth2 `yaml:"oauth2"`
	// Callback calls a TokenService (graphqlbridge.v1) over gRPC.
	Callback *Callback `yaml:"callback"`
	// Forward takes each caller's own credential from this gRPC metadata
	// key (for example authorization); connections are then kept per
	// caller identity, and a rejection ends the caller's stream.
	Forward string `yaml:"forward"`
	// RotateBefore moves connections to a fresh token this long before a
	// known expiry (JWT exp or the source's). Default 1m.
	RotateBefore time.Duration `yaml:"rotate_before"`
}

// OAuth2 is the client-credentials grant.
type OAuth2 struct {
	TokenURL         string            `yaml:"token_url"`
	ClientID         string            `yaml:"client_id"`
	ClientSecret     string            `yaml:"client_secret"`
	ClientSecretFile string            `yaml:"client_secret_file"`
	Scopes           []string          `yaml:"scopes"`
	Params           map[string]string `yaml:"params"`
}

// Callback is a TokenService reached over gRPC (plaintext inside the
// cluster unless ca_file is set).
type Callback struct {
	Target  string        `yaml:"target"`
	Timeout time.Duration `yaml:"timeout"` // default 10s
	CAFile  string        `yaml:"ca_file"`
}

// Retry is the reconnect budget.
type Retry struct {
	Initial     time.Duration `yaml:"initial"`      // default 100ms
	Max         time.Duration `yaml:"max"`          // default 10s
	Multiplier  float64       `yaml:"multiplier"`   // default 2
	MaxElapsed  time.Duration `yaml:"max_elapsed"`  // default 0: keep trying
	StableAfter time.Duration `yaml:"stable_after"` // default 10s
}

// Queue configures per-subscriber queues.
type Queue struct {
	Size     int    `yaml:"size"`      // default 262144 (bridge.DefaultQueueSize)
	MaxBytes int    `yaml:"max_bytes"` // default 268435456 (256 MiB)
	Policy   string `yaml:"policy"`    // drop_oldest (default) or fail
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// Load reads and validates a configuration file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %v", err)
	}
	cfg, err := Parse(b, os.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse validates a configuration. ${VAR} in any string value is replaced
// from lookup (comments are left alone); an unset variable is an error.
func Parse(b []byte, lookup func(string) (string, bool)) (*Config, error) {
	// A strict decode first: unknown keys and wrong types, with lines.
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&Config{}); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty: it needs at least an upstreams section")
		}
		return nil, fmt.Errorf("%s (see docs/config.md for the allowed keys)", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	// A second document would be ignored: refuse it (an empty one, a
	// trailing "---", is harmless).
	var next yaml.Node
	if err := dec.Decode(&next); err == nil && !emptyDocument(&next) {
		return nil, fmt.Errorf("line %d: a second YAML document starts here: the file holds one document; remove the \"---\" and merge the two", next.Line)
	} else if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, err
	}
	if err := substitute(&root, lookup); err != nil {
		return nil, err
	}
	cfg := &Config{root: &root}
	if err := root.Decode(cfg); err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// emptyDocument reports whether a document holds nothing (null).
func emptyDocument(n *yaml.Node) bool {
	return n.Kind == yaml.DocumentNode && len(n.Content) == 1 && n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null"
}

// substitute replaces ${VAR} in every scalar under n.
func substitute(n *yaml.Node, lookup func(string) (string, bool)) error {
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "${") {
		var missing []string
		n.Value = envRef.ReplaceAllStringFunc(n.Value, func(m string) string {
			name := m[2 : len(m)-1]
			v, ok := lookup(name)
			if !ok {
				missing = append(missing, name)
			}
			return v
		})
		if len(missing) > 0 {
			return fmt.Errorf("line %d: environment variable %s is not set", n.Line, strings.Join(missing, ", "))
		}
	}
	for _, c := range n.Content {
		if err := substitute(c, lookup); err != nil {
			return err
		}
	}
	return nil
}

// line finds the line of the node at path, or of its nearest ancestor.
func (c *Config) line(path ...string) int {
	n := c.root
	if n == nil {
		return 0
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	last := n.Line
	for _, key := range path {
		if n.Kind != yaml.MappingNode {
			break
		}
		found := false
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				last = n.Content[i].Line
				n = n.Content[i+1]
				found = true
				break
			}
		}
		if !found {
			break
		}
	}
	return last
}

func (c *Config) errorf(path []string, format string, args ...any) error {
	return fmt.Errorf("line %d: %s: %s", c.line(path...), strings.Join(path, "."), fmt.Sprintf(format, args...))
}

var knownSubprotocols = []string{"graphql-transport-ws", "graphql-ws"}

func (c *Config) validate() error {
	s := &c.Server
	if s.GRPCAddress == "" {
		s.GRPCAddress = defaultGRPCAddress
	}
	if s.AdminAddress == "" {
		s.AdminAddress = defaultAdminAddress
	}
	if s.DrainGrace == 0 {
		s.DrainGrace = defaultDrainGrace
	}
	if err := checkAddress(s.GRPCAddress); err != nil {
		return c.errorf([]string{"server", "grpc_address"}, "%v", err)
	}
	if s.AdminAddress != "off" {
		if err := checkAddress(s.AdminAddress); err != nil {
			return c.errorf([]string{"server", "admin_address"}, "%v (or \"off\")", err)
		}
	}
	if s.MaxConnectionAge < 0 || s.MaxConnectionAge > 0 && s.MaxConnectionAge < time.Second {
		return c.errorf([]string{"server", "max_connection_age"}, "%s is out of range (allowed: at least 1s, or 0s: connections live for ever)", s.MaxConnectionAge)
	}
	if s.DrainGrace < 0 {
		return c.errorf([]string{"server", "drain_grace"}, "must not be negative (%s)", orDefault(defaultDrainGrace))
	}
	for _, f := range []field[int]{{"max_subscriptions", s.MaxSubscriptions}, {"max_query_bytes", s.MaxQueryBytes}, {"max_variables_bytes", s.MaxVariablesBytes},
		{"max_batch", s.MaxBatch}, {"max_batch_bytes", s.MaxBatchBytes}, {"max_queued_bytes", s.MaxQueuedBytes}} {
		if f.v < 0 {
			return c.errorf([]string{"server", f.key}, "must not be negative (%s)", zeroMeans[f.key])
		}
	}
	switch s.MemoryLimit {
	case "":
		s.MemoryLimit = "auto"
	case "auto", "off":
	default:
		n, err := ParseSize(s.MemoryLimit)
		if err != nil {
			return c.errorf([]string{"server", "memory_limit"}, "%v (allowed: auto, off, or a size such as 1800MiB or 2GiB)", err)
		}
		if n < minMemoryLimit {
			return c.errorf([]string{"server", "memory_limit"}, "%s is below %s, too little for the Go runtime to run in (allowed: auto, off, or a size of at least %s)", s.MemoryLimit, "16MiB", "16MiB")
		}
		s.MemoryLimitBytes = n
	}
	if t := s.TLS; t != nil && (t.CertFile == "" || t.KeyFile == "") {
		return c.errorf([]string{"server", "tls"}, "cert_file and key_file are required")
	}
	for name, cl := range s.Callers {
		p := []string{"server", "callers", name}
		if cl == nil || len(cl.Upstreams) == 0 {
			return c.errorf(p, "upstreams is required: the upstreams this caller may name, or [\"*\"]")
		}
		if cl.TokenFile == "" && cl.TokenEnv == "" && cl.Subject == "" {
			return c.errorf(p, "needs token_file, token_env or subject (client certificate)")
		}
		if cl.Subject != "" && (s.TLS == nil || s.TLS.ClientCAFile == "") {
			return c.errorf(append(p, "subject"), "client certificates need server.tls.client_ca_file")
		}
		for _, up := range cl.Upstreams {
			if _, ok := c.Upstreams[up]; !ok && up != "*" {
				return c.errorf(append(p, "upstreams"), "unknown upstream %q", up)
			}
		}
	}
	if len(c.Upstreams) == 0 {
		return c.errorf([]string{"upstreams"}, "at least one upstream is required, e.g.\n  upstreams:\n    orders:\n      url: wss://orders.internal/graphql")
	}
	for _, name := range c.Names() {
		u := c.Upstreams[name]
		p := func(k ...string) []string { return append([]string{"upstreams", name}, k...) }
		if u == nil {
			return c.errorf(p(), "is empty: an upstream needs at least a url")
		}
		if name == "" {
			return c.errorf(p(), "upstream names must not be empty")
		}
		if u.URL == "" {
			return c.errorf(p(), "url is required (ws:// or wss://)")
		}
		// The session's own check: what loads is what it dials.
		norm, err := session.CheckURL(u.URL)
		if err != nil {
			return c.errorf(p("url"), "%v (allowed: ws://HOST[:PORT]/PATH or wss://HOST[:PORT]/PATH)", err)
		}
		u.URL = norm
		for _, sp := range u.Subprotocols {
			if !slices.Contains(knownSubprotocols, sp) {
				return c.errorf(p("subprotocols"), "unknown subprotocol %q (allowed: %s; these are wire names)", sp, strings.Join(knownSubprotocols, ", "))
			}
		}
		if u.FallbackSubprotocol != "" && !slices.Contains(knownSubprotocols, u.FallbackSubprotocol) {
			return c.errorf(p("fallback_subprotocol"), "unknown subprotocol %q (allowed: %s)", u.FallbackSubprotocol, strings.Join(knownSubprotocols, ", "))
		}
		if t := u.Token; t != nil {
			n := 0
			for _, set := range []bool{t.Value != "", t.Env != "", t.File != "", len(t.Command) > 0, t.OAuth2 != nil, t.Callback != nil, t.Forward != ""} {
				if set {
					n++
				}
			}
			if n != 1 {
				return c.errorf(p("token"), "name exactly one source: value, env, file, command, oauth2, callback or forward")
			}
			if o := t.OAuth2; o != nil {
				if o.TokenURL == "" || o.ClientID == "" || (o.ClientSecret == "") == (o.ClientSecretFile == "") {
					return c.errorf(p("token", "oauth2"), "needs token_url, client_id, and one of client_secret or client_secret_file")
				}
			}
			if cb := t.Callback; cb != nil && cb.Target == "" {
				return c.errorf(p("token", "callback"), "target is required (host:port of a graphqlbridge.v1.TokenService)")
			}
		}
		if tl := u.TLS; tl != nil && (tl.CertFile == "") != (tl.KeyFile == "") {
			return c.errorf(p("tls"), "cert_file and key_file go together")
		}
		if err := c.checkHeaders(u.Headers, p("headers")); err != nil {
			return err
		}
		for _, code := range slices.Sorted(maps.Keys(u.CloseCodes)) {
			if _, _, err := session.ParseOverride(code, u.CloseCodes[code]); err != nil {
				return c.errorf(p("close_codes", strconv.Itoa(code)), "%v", err)
			}
		}
		switch u.Queue.Policy {
		case "":
			u.Queue.Policy = "drop_oldest"
		case "drop_oldest", "fail":
		default:
			return c.errorf(p("queue", "policy"), "unknown policy %q (allowed: drop_oldest, fail)", u.Queue.Policy)
		}
		if u.Queue.Size < 0 {
			return c.errorf(p("queue", "size"), "must not be negative (%s)", orDefault(defaultQueueSize))
		}
		if u.Queue.MaxBytes < 0 {
			return c.errorf(p("queue", "max_bytes"), "must not be negative (%s)", orDefault(defaultQueueMaxBytes))
		}
		// A result over the process's bound could never be queued.
		queued, message := int64(s.MaxQueuedBytes), u.MaxMessageBytes
		if queued == 0 {
			queued = defaultMaxQueuedBytes
		}
		if message <= 0 {
			message = session.DefaultMaxMessageBytes
		}
		switch {
		case queued >= message:
		case s.MaxQueuedBytes == 0:
			return c.errorf(p("max_message_bytes"), "is %d, more than server.max_queued_bytes (default %d): results that big could never be queued", message, queued)
		default:
			return c.errorf([]string{"server", "max_queued_bytes"}, "is %d, less than upstreams.%s.max_message_bytes (%d): results that big could never be queued", queued, name, message)
		}
		for _, f := range []field[time.Duration]{{"dial_timeout", u.DialTimeout}, {"ack_timeout", u.AckTimeout},
			{"keep_alive_timeout", u.KeepAliveTimeout}, {"idle_timeout", u.IdleTimeout}} {
			if f.v < 0 {
				return c.errorf(p(f.key), "must not be negative (%s)", zeroMeans[f.key])
			}
		}
		if err := c.checkKeepAlive(u, p); err != nil {
			return err
		}
		if u.Token != nil && u.Token.RotateBefore < 0 {
			return c.errorf(p("token", "rotate_before"), "must not be negative (%s)", orDefault(session.DefaultRotateBefore))
		}
		for _, f := range []field[int64]{{"max_message_bytes", u.MaxMessageBytes},
			{"max_operations_per_connection", int64(u.MaxOperationsPerConnection)}, {"max_subscriptions", int64(u.MaxSubscriptions)}} {
			if f.v < 0 {
				return c.errorf(p(f.key), "must not be negative (%s)", zeroMeans[f.key])
			}
		}
		if u.Retry.Multiplier != 0 && u.Retry.Multiplier < 1 {
			return c.errorf(p("retry", "multiplier"), "must be at least 1 (%s)", orDefault(session.DefaultBackoffMultiplier))
		}
		for _, f := range []field[time.Duration]{{"initial", u.Retry.Initial}, {"max", u.Retry.Max},
			{"max_elapsed", u.Retry.MaxElapsed}, {"stable_after", u.Retry.StableAfter}} {
			if f.v < 0 {
				return c.errorf(p("retry", f.key), "must not be negative (%s)", zeroMeans["retry."+f.key])
			}
		}
		if u.Dedup == nil {
			t := true
			u.Dedup = &t
		}
	}
	return nil
}

// minMemoryLimit is the smallest server.memory_limit accepted as a size.
const minMemoryLimit = 16 << 20

// ParseSize reads a size in the syntax of GOMEMLIMIT: a whole number of
// bytes, optionally followed by B, KiB, MiB, GiB or TiB.
func ParseSize(s string) (int64, error) {
	digits := strings.TrimRight(s, "BKMGTi")
	unit := s[len(digits):]
	shift := map[string]uint{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}
	sh, ok := shift[unit]
	if !ok {
		return 0, fmt.Errorf("%q has an unknown unit %q (allowed: B, KiB, MiB, GiB, TiB)", s, unit)
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n < 0 || digits[0] == '+' {
		return 0, fmt.Errorf("%q is not a size: a whole number of bytes, optionally followed by a unit", s)
	}
	if n > math.MaxInt64>>sh {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n << sh, nil
}

// field is a key and its value, for checks that loop over several keys.
type field[T any] struct {
	key string
	v   T
}

// zeroMeans says what 0 means for the keys that must not be negative, for
// their errors.
var zeroMeans = map[string]string{
	"max_subscriptions":             "0 means no cap",
	"max_query_bytes":               orDefault(defaultMaxQueryBytes),
	"max_variables_bytes":           orDefault(defaultMaxVariablesBytes),
	"max_batch":                     orDefault(defaultMaxBatch),
	"max_batch_bytes":               orDefault(defaultMaxBatchBytes),
	"max_queued_bytes":              orDefault(defaultMaxQueuedBytes),
	"dial_timeout":                  orDefault(session.DefaultDialTimeout),
	"ack_timeout":                   orDefault(session.DefaultAckTimeout),
	"keep_alive_timeout":            orDefault(session.DefaultKeepAliveTimeout),
	"idle_timeout":                  orDefault(defaultIdleTimeout),
	"max_message_bytes":             orDefault(session.DefaultMaxMessageBytes),
	"max_operations_per_connection": orDefault(defaultMaxOpsPerConn),
	"retry.initial":                 orDefault(session.DefaultBackoffInitial),
	"retry.max":                     orDefault(session.DefaultBackoffMax),
	"retry.max_elapsed":             "0s means never give up",
	"retry.stable_after":            orDefault(session.DefaultStableAfter),
}

// checkAddress accepts what net.Listen("tcp", addr) takes with a numeric
// port: HOST:PORT or :PORT, the port 0 (any free port) to 65535.
func checkAddress(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT (allowed: 127.0.0.1:50051, :50051, [::1]:50051)", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is out of range (allowed: a number from 0 to 65535)", port)
	}
	return nil
}

// Keep-alive bounds: a probe needs time to be answered, and probing faster
// than that only reconnects healthy connections.
const (
	minKeepAlive        = time.Second
	minKeepAliveTimeout = time.Second
	defKeepAlive        = session.DefaultKeepAlive
	defKeepAliveTimeout = session.DefaultKeepAliveTimeout
)

// checkKeepAlive checks keep_alive and keep_alive_timeout, with the
// session's defaults for the one not set: each at least a second, and a
// probe must be answered before the next is due.
func (c *Config) checkKeepAlive(u *Upstream, p func(...string) []string) error {
	if u.KeepAlive < 0 {
		return nil // probing disabled: the timeout is unused
	}
	if u.KeepAlive > 0 && u.KeepAlive < minKeepAlive {
		return c.errorf(p("keep_alive"), "%s is too short (allowed: at least %s, 0s for the default %s, or negative to disable probing)", u.KeepAlive, minKeepAlive, defKeepAlive)
	}
	if u.KeepAliveTimeout > 0 && u.KeepAliveTimeout < minKeepAliveTimeout {
		return c.errorf(p("keep_alive_timeout"), "%s is too short (allowed: at least %s, or 0s for the default %s)", u.KeepAliveTimeout, minKeepAliveTimeout, defKeepAliveTimeout)
	}
	every, timeout := cmp.Or(u.KeepAlive, defKeepAlive), cmp.Or(u.KeepAliveTimeout, defKeepAliveTimeout)
	if timeout <= every {
		return nil
	}
	if u.KeepAliveTimeout == 0 {
		return c.errorf(p("keep_alive"), "%s is shorter than keep_alive_timeout (%s, the default): a probe must be answered before the next is due; set keep_alive_timeout to at most %s", every, timeout, every)
	}
	return c.errorf(p("keep_alive_timeout"), "%s is longer than keep_alive (%s): a probe must be answered before the next is due (allowed: %s to %s)", timeout, every, minKeepAliveTimeout, every)
}

// checkHeaders refuses header names that are not HTTP field names, and two
// names that differ only in case: HTTP names are case-insensitive, and one
// would silently replace the other.
func (c *Config) checkHeaders(h map[string]string, path []string) error {
	key := func(name string) []string { return append(slices.Clip(path), name) }
	seen := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(h)) {
		if !validFieldName(name) {
			return c.errorf(key(name), "%q is not an HTTP header name (allowed: letters, digits and !#$%%&'*+-.^_`|~)", name)
		}
		if strings.ContainsAny(h[name], "\r\n\x00") {
			return c.errorf(key(name), "the value holds a line break or NUL, which HTTP headers cannot carry")
		}
		canon := http.CanonicalHeaderKey(name)
		if other, dup := seen[canon]; dup {
			// Report the later of the two lines.
			first, second := other, name
			if c.line(key(first)...) > c.line(key(second)...) {
				first, second = second, first
			}
			return c.errorf(key(second), "repeats header %s (line %d): header names are case-insensitive; keep one", first, c.line(key(first)...))
		}
		seen[canon] = name
	}
	return nil
}

// validFieldName reports whether s is an RFC 9110 token.
func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("!#$%&'*+-.^_`|~", r):
		default:
			return false
		}
	}
	return true
}

// Names returns the upstream names, sorted.
func (c *Config) Names() []string { return slices.Sorted(maps.Keys(c.Upstreams)) }

// String describes a token source without its secret.
func (t *Token) String() string {
	switch {
	case t == nil:
		return "none"
	case t.Value != "":
		return "value (" + strconv.Itoa(len(t.Value)) + " bytes)"
	case t.Env != "":
		return "env " + t.Env
	case t.File != "":
		return "file " + t.File
	case len(t.Command) > 0:
		return "command " + t.Command[0]
	case t.OAuth2 != nil:
		return "oauth2 " + redaction.URL(t.OAuth2.TokenURL)
	case t.Callback != nil:
		return "callback " + t.Callback.Target
	case t.Forward != "":
		return "forwarded from caller metadata " + t.Forward
	}
	return "none"
}
