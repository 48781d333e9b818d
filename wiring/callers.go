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
	"sync/atomic"
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
// file, or an unusable set of callers, is an error here, at startup.
func callerPolicy(cfg *config.Config, log *slog.Logger) (*callerPolicies, error) {
	if len(cfg.Server.Callers) == 0 {
		return nil, nil
	}
	c := &callerPolicies{callers: cfg.Server.Callers, envTokens: map[string]string{}, log: log, now: time.Now}
	for name, cc := range cfg.Server.Callers {
		if cc.TokenFile == "" && cc.TokenEnv != "" {
			tok := os.Getenv(cc.TokenEnv)
			if tok == "" {
				return nil, fmt.Errorf("server.callers.%s.token_env: %s is not set", name, cc.TokenEnv)
			}
			c.envTokens[name] = tok
		}
	}
	files, err := c.readFiles()
	if err != nil {
		return nil, err
	}
	p, err := c.build(files, false)
	if err != nil {
		return nil, err
	}
	c.current.Store(p)
	c.files = files
	c.checked.Store(c.now().UnixNano())
	return c, nil
}

// tokenFileCheck is how often the callers' token files are read again:
// a token written to a file is accepted, and the one it replaced refused,
// within this long.
const tokenFileCheck = time.Second

// callerPolicies is the access policy of server.callers, rebuilt when a
// caller's token file changes, so that rotating a token (a Secret updated
// in place) needs no restart. The files are read again at most once per
// tokenFileCheck, by one of the calls that need the policy while the others go on
// with the current one. A change that cannot be used (a file gone or
// emptied, two callers with one token) is logged once at warn and the last
// good policy stays. Streams already open are not checked again.
// token_env is read at startup only.
type callerPolicies struct {
	callers   map[string]*config.Caller
	envTokens map[string]string // token_env values, by caller
	log       *slog.Logger
	now       func() time.Time

	current atomic.Pointer[access.Policy]
	checked atomic.Int64 // UnixNano of the last check

	mu    sync.Mutex        // one check at a time; guards the fields below
	files map[string][]byte // the token files' contents current was built from
	bad   string            // the last failure logged
}

// get returns the policy for a call starting now.
func (c *callerPolicies) get() *access.Policy {
	now := c.now()
	if now.UnixNano()-c.checked.Load() < int64(tokenFileCheck) || !c.mu.TryLock() {
		return c.current.Load()
	}
	defer c.mu.Unlock()
	if now.UnixNano()-c.checked.Load() < int64(tokenFileCheck) { // checked meanwhile
		return c.current.Load()
	}
	c.checked.Store(now.UnixNano())
	files, err := c.readFiles()
	if err == nil && maps.EqualFunc(files, c.files, bytes.Equal) {
		c.bad = ""
		return c.current.Load()
	}
	var p *access.Policy
	if err == nil {
		p, err = c.build(files, true)
	}
	if err != nil {
		if msg := err.Error(); msg != c.bad {
			c.bad = msg
			c.log.Warn("caller token files changed but cannot be used; keeping the previous ones", "error", msg)
		}
		return c.current.Load()
	}
	c.bad = ""
	c.current.Store(p)
	c.files = files
	c.log.Info("caller token files reloaded")
	return p
}

// readFiles reads the callers' token files, by path.
func (c *callerPolicies) readFiles() (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, name := range slices.Sorted(maps.Keys(c.callers)) {
		if f := c.callers[name].TokenFile; f != "" {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("server.callers.%s.token_file: %v", name, err)
			}
			files[f] = b
		}
	}
	return files, nil
}

// build makes the policy of the callers with the token files' contents.
// At startup an empty token file leaves its caller its subject alone; once
// running, an emptied file is a file caught half written, not a token to
// drop.
func (c *callerPolicies) build(files map[string][]byte, running bool) (*access.Policy, error) {
	var callers []access.Caller
	for _, name := range slices.Sorted(maps.Keys(c.callers)) {
		cc := c.callers[name]
		ac := access.Caller{Name: name, Subject: cc.Subject, Upstreams: cc.Upstreams}
		tok := c.envTokens[name]
		if cc.TokenFile != "" {
			tok = strings.TrimSpace(string(files[cc.TokenFile]))
			if tok == "" && running {
				return nil, fmt.Errorf("server.callers.%s.token_file: %s is empty", name, cc.TokenFile)
			}
		}
		if tok != "" {
			sum := sha256.Sum256([]byte(tok))
			ac.TokenSHA256 = &sum
		}
		callers = append(callers, ac)
	}
	return access.New(callers)
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
