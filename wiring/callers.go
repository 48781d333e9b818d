package wiring

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/gqlbridge/gqlbridge/access"
	"github.com/gqlbridge/gqlbridge/bridge"
	"github.com/gqlbridge/gqlbridge/config"
)

// forwardedIdentity reads the forwarded credential of upstreams that use
// one: the caller's metadata value (without a "Bearer " prefix) becomes the
// pool key, so each caller identity gets its own upstream connections.
func forwardedIdentity(cfg *config.Config) func(context.Context, string) (string, error) {
	keys := map[string]string{}
	for name, u := range cfg.Upstreams {
		if u.Token != nil && u.Token.Forward != "" {
			keys[name] = strings.ToLower(u.Token.Forward)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	return func(ctx context.Context, upstream string) (string, error) {
		key, ok := keys[upstream]
		if !ok {
			return "", nil
		}
		md, _ := metadata.FromIncomingContext(ctx)
		vals := md.Get(key)
		if len(vals) == 0 || strings.TrimSpace(vals[0]) == "" {
			return "", &bridge.RequestError{Code: codes.Unauthenticated, Reason: bridge.ReasonCallerUnauthorized,
				Msg: fmt.Sprintf("upstream %s uses the caller's own credential: send it in the %q metadata", upstream, key)}
		}
		if tok, ok := access.Bearer(vals[0]); ok {
			return tok, nil
		}
		return strings.TrimSpace(vals[0]), nil
	}
}

// callerPolicy builds server.callers into an access policy that follows
// the callers' token files; nil when no callers are configured. A missing
// or unusable file is an error here, at startup.
func callerPolicy(cfg *config.Config, log *slog.Logger) (*callerPolicies, error) {
	if len(cfg.Server.Callers) == 0 {
		return nil, nil
	}
	c := &callerPolicies{callers: cfg.Server.Callers, log: log, every: tokenFileCheck, now: time.Now}
	p, files, err := c.build()
	if err != nil {
		return nil, err
	}
	c.current, c.files, c.checked = p, files, c.now()
	return c, nil
}

// tokenFileCheck is how often the callers' token files are read again:
// a token written to a file is accepted, and the one it replaced refused,
// within this long.
const tokenFileCheck = time.Second

// callerPolicies is the access policy of server.callers, rebuilt when a
// caller's token file changes, so that rotating a token (a Secret updated
// in place) needs no restart. The files are read again at most once per
// every, on the calls that need the policy. A change that cannot be used
// (a file gone or empty, two callers with one token) is logged once at warn
// and the last good policy stays. Streams already open are not checked
// again. token_env is read at startup only.
type callerPolicies struct {
	callers map[string]*config.Caller
	log     *slog.Logger
	every   time.Duration
	now     func() time.Time

	mu      sync.Mutex
	current *access.Policy
	files   map[string][]byte // the token files' contents current was built from
	checked time.Time
	bad     string // the last failure logged
}

// get returns the policy for a call starting now.
func (c *callerPolicies) get() *access.Policy {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if now.Sub(c.checked) < c.every {
		return c.current
	}
	c.checked = now
	p, files, err := c.build()
	if err != nil {
		if msg := err.Error(); msg != c.bad {
			c.bad = msg
			c.log.Warn("caller token files changed but cannot be used; keeping the previous ones", "error", msg)
		}
		return c.current
	}
	c.bad = ""
	if maps.EqualFunc(files, c.files, bytes.Equal) {
		return c.current
	}
	c.current, c.files = p, files
	c.log.Info("caller token files reloaded")
	return p
}

// build reads the callers' credentials and builds their policy; files are
// the token files' contents.
func (c *callerPolicies) build() (*access.Policy, map[string][]byte, error) {
	var callers []access.Caller
	files := map[string][]byte{}
	for _, name := range slices.Sorted(maps.Keys(c.callers)) {
		cc := c.callers[name]
		ac := access.Caller{Name: name, Subject: cc.Subject, Upstreams: cc.Upstreams}
		var tok string
		switch {
		case cc.TokenFile != "":
			b, err := os.ReadFile(cc.TokenFile)
			if err != nil {
				return nil, nil, fmt.Errorf("server.callers.%s.token_file: %v", name, err)
			}
			files[cc.TokenFile] = b
			tok = strings.TrimSpace(string(b))
		case cc.TokenEnv != "":
			tok = os.Getenv(cc.TokenEnv)
			if tok == "" {
				return nil, nil, fmt.Errorf("server.callers.%s.token_env: %s is not set", name, cc.TokenEnv)
			}
		}
		if tok != "" {
			sum := sha256.Sum256([]byte(tok))
			ac.TokenSHA256 = &sum
		}
		callers = append(callers, ac)
	}
	p, err := access.New(callers)
	return p, files, err
}

// authenticate is the auth interceptor's check (see interceptors): the
// caller must be one the policy knows, or the call ends with
// UNAUTHENTICATED before its request is read, so that an unknown caller
// learns nothing, not even which upstreams exist. The caller rides on the
// context to authorize.
func authenticate(policy func() *access.Policy) auth.AuthFunc {
	return func(ctx context.Context) (context.Context, error) {
		c, err := policy().Authenticate(ctx)
		if err != nil {
			return nil, bridge.Status("", &bridge.RequestError{Code: codes.Unauthenticated, Reason: bridge.ReasonCallerUnauthorized, Msg: err.Error()}).Err()
		}
		return access.NewContext(ctx, c), nil
	}
}

// authorize checks that the caller authenticate found may use the upstream
// it names: PERMISSION_DENIED if not.
func authorize(ctx context.Context, upstream string) error {
	c, ok := access.FromContext(ctx)
	if !ok { // authenticate did not run: refuse rather than let in
		return &bridge.RequestError{Code: codes.Unauthenticated, Reason: bridge.ReasonCallerUnauthorized, Msg: access.ErrUnauthenticated.Error()}
	}
	if err := c.Allows(upstream); err != nil {
		return &bridge.RequestError{Code: codes.PermissionDenied, Reason: bridge.ReasonCallerForbidden, Msg: err.Error()}
	}
	return nil
}
