package wiring

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gqlbridge/gqlbridge/bridge"
	"github.com/gqlbridge/gqlbridge/config"
	"github.com/gqlbridge/gqlbridge/credential"
	"github.com/gqlbridge/gqlbridge/session"
)

// tokenPlaceholder is replaced by the token in connection_params and headers.
const tokenPlaceholder = "{{token}}"

// upstreams turns the configuration into the service's upstreams, whose
// connections log to log; onState, when set, hears their state changes.
func (s *Service) upstreams(log *slog.Logger, onState func(string, session.StateChange)) (map[string]*bridge.Upstream, error) {
	out := make(map[string]*bridge.Upstream, len(s.cfg.Upstreams))
	for name, u := range s.cfg.Upstreams {
		src, err := s.tokenSource(name, u.Token, log.With("upstream", name))
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", name, err)
		}
		hs, err := handshake(name, u, src, "")
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", name, err)
		}
		client, err := upstreamHTTPClient(u.TLS, log.With("upstream", name))
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", name, err)
		}
		var handshakeFor func(string) session.HandshakeFunc
		if u.Token != nil && u.Token.Forward != "" {
			handshakeFor = func(identity string) session.HandshakeFunc {
				f, _ := handshake(name, u, nil, identity)
				return f
			}
		}
		rotate := time.Duration(0)
		if u.Token != nil {
			rotate = u.Token.RotateBefore
		}
		overrides := map[session.CloseCode]session.Class{}
		for code, class := range u.CloseCodes {
			cc, c, err := session.ParseOverride(code, class)
			if err != nil {
				return nil, fmt.Errorf("upstream %s: close_codes: %w", name, err)
			}
			overrides[cc] = c
		}
		policy := bridge.DropOldest
		if u.Queue.Policy == "fail" {
			policy = bridge.Fail
		}
		var hook func(session.StateChange)
		if onState != nil {
			hook = func(sc session.StateChange) { onState(name, sc) }
		}
		out[name] = &bridge.Upstream{
			Session: session.Config{
				URL:              u.URL,
				Subprotocols:     u.Subprotocols,
				Fallback:         u.FallbackSubprotocol,
				Handshake:        hs,
				HTTPClient:       client,
				RotateBefore:     rotate,
				DialTimeout:      u.DialTimeout,
				AckTimeout:       u.AckTimeout,
				KeepAlive:        u.KeepAlive,
				KeepAliveTimeout: u.KeepAliveTimeout,
				MaxMessageBytes:  u.MaxMessageBytes,
				Backoff: session.Backoff{Initial: u.Retry.Initial, Max: u.Retry.Max, Multiplier: u.Retry.Multiplier,
					MaxElapsed: u.Retry.MaxElapsed, StableAfter: u.Retry.StableAfter},
				Policy:  session.Policy{Overrides: overrides},
				OnState: hook,
				Logger:  log.With("upstream", name),
			},
			HandshakeFor:     handshakeFor,
			MaxOpsPerConn:    u.MaxOperationsPerConnection,
			Dedup:            *u.Dedup,
			QueueSize:        u.Queue.Size,
			QueueMaxBytes:    u.Queue.MaxBytes,
			SlowPolicy:       policy,
			IdleTimeout:      u.IdleTimeout,
			MaxSubscriptions: u.MaxSubscriptions,
		}
	}
	return out, nil
}

// tokenSource builds the credential source of an upstream. Sources that
// cost a request (command, oauth2, callback) are cached so that concurrent
// refreshes collapse. Forwarded
// credentials have no source: the caller brings them.
func (s *Service) tokenSource(name string, t *config.Token, log *slog.Logger) (credential.Source, error) {
	var src credential.Source
	switch {
	case t == nil, t.Forward != "":
		return nil, nil
	// Values, variables and files are cheap to read: they are read on every
	// connection attempt, so a rotated file is picked up at once.
	case t.Value != "":
		return credential.Value(t.Value), nil
	case t.Env != "":
		return credential.Env(t.Env), nil
	case t.File != "":
		return credential.File(t.File), nil
	case len(t.Command) > 0:
		src = credential.Command{Argv: t.Command, Timeout: t.CommandTimeout}
	case t.OAuth2 != nil:
		o := t.OAuth2
		params := map[string][]string{}
		for k, v := range o.Params {
			params[k] = []string{v}
		}
		if o.ClientSecretFile == "" {
			src = credential.NewOAuth2(o.TokenURL, o.ClientID, o.ClientSecret, o.Scopes, params, nil)
			break
		}
		// Read at startup to refuse a missing file there, and again for
		// every token: a rotated secret needs no restart.
		if _, err := os.ReadFile(o.ClientSecretFile); err != nil {
			return nil, fmt.Errorf("token.oauth2.client_secret_file: %v", err)
		}
		src = credential.NewOAuth2SecretFile(o.TokenURL, o.ClientID, o.ClientSecretFile, o.Scopes, params, nil)
	case t.Callback != nil:
		creds := insecure.NewCredentials()
		if t.Callback.CAFile != "" {
			var err error
			if creds, err = callbackCredentials(t.Callback.CAFile, log); err != nil {
				return nil, err
			}
		}
		conn, err := grpc.NewClient(t.Callback.Target, grpc.WithTransportCredentials(creds))
		if err != nil {
			return nil, fmt.Errorf("token.callback.target: %v", err)
		}
		s.closers = append(s.closers, conn.Close)
		src = credential.NewCallback(conn, t.Callback.Timeout)
	default:
		return nil, nil
	}
	return credential.NewCache(src), nil
}

// handshake builds the per-attempt handshake of an upstream: the token is
// fetched on every attempt (fresh after a rejection or before expiry) and
// substituted into the connection_init payload and the upgrade headers.
// fixed, when not empty, is a forwarded caller credential used instead.
func handshake(name string, u *config.Upstream, src credential.Source, fixed string) (session.HandshakeFunc, error) {
	var params []byte
	if u.ConnectionParams != nil {
		b, err := json.Marshal(u.ConnectionParams)
		if err != nil {
			return nil, fmt.Errorf("connection_params: %w", err)
		}
		params = b
	}
	usesToken := bytes.Contains(params, []byte(tokenPlaceholder))
	for _, v := range u.Headers {
		usesToken = usesToken || strings.Contains(v, tokenPlaceholder)
	}
	if usesToken && src == nil && (u.Token == nil || u.Token.Forward == "") {
		return nil, fmt.Errorf("connection_params or headers use %s but no token source is configured", tokenPlaceholder)
	}
	return func(ctx context.Context, a session.Attempt) (session.Handshake, error) {
		var hs session.Handshake
		token := fixed
		if fixed != "" && a.Refresh {
			return hs, fmt.Errorf("the caller's forwarded credential was rejected: %w", session.ErrCannotRefresh)
		}
		if src != nil {
			req := credential.Request{Upstream: name, Refresh: a.Refresh, Expiring: a.Expiring}
			if a.Cause != nil {
				req.CloseCode = max(int(a.Cause.Code), a.Cause.HTTPStatus)
				req.CloseReason = a.Cause.Reason
			}
			t, err := src.Token(ctx, req)
			if err != nil {
				return hs, err
			}
			token, hs.Expiry = t.Value, t.Expiry
		}
		if params != nil {
			quoted, _ := json.Marshal(token)
			hs.InitPayload = bytes.ReplaceAll(params, []byte(tokenPlaceholder), quoted[1:len(quoted)-1])
		}
		if len(u.Headers) > 0 {
			hs.Header = http.Header{}
			for k, v := range u.Headers {
				hs.Header.Set(k, strings.ReplaceAll(v, tokenPlaceholder, token))
			}
		}
		return hs, nil
	}, nil
}
