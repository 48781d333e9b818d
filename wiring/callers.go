package wiring

import (
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

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

// callerPolicy builds server.callers into an access policy; nil when no
// callers are configured.
func callerPolicy(cfg *config.Config) (*access.Policy, error) {
	if len(cfg.Server.Callers) == 0 {
		return nil, nil
	}
	var callers []access.Caller
	for _, name := range slices.Sorted(maps.Keys(cfg.Server.Callers)) {
		c := cfg.Server.Callers[name]
		ac := access.Caller{Name: name, Subject: c.Subject, Upstreams: c.Upstreams}
		var tok string
		switch {
		case c.TokenFile != "":
			b, err := os.ReadFile(c.TokenFile)
			if err != nil {
				return nil, fmt.Errorf("server.callers.%s.token_file: %v", name, err)
			}
			tok = strings.TrimSpace(string(b))
		case c.TokenEnv != "":
			tok = os.Getenv(c.TokenEnv)
			if tok == "" {
				return nil, fmt.Errorf("server.callers.%s.token_env: %s is not set", name, c.TokenEnv)
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
func authenticate(p *access.Policy) auth.AuthFunc {
	return func(ctx context.Context) (context.Context, error) {
		c, err := p.Authenticate(ctx)
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
