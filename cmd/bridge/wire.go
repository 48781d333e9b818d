package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/gqlbridge/gqlbridge/bridge"
	"github.com/gqlbridge/gqlbridge/config"
	"github.com/gqlbridge/gqlbridge/credential"
	"github.com/gqlbridge/gqlbridge/session"
)

// tokenPlaceholder is replaced by the token in connection_params and headers.
const tokenPlaceholder = "{{token}}"

// upstreams turns the configuration into the service's upstreams.
func upstreams(cfg *config.Config) (map[string]*bridge.Upstream, error) {
	out := make(map[string]*bridge.Upstream, len(cfg.Upstreams))
	for name, u := range cfg.Upstreams {
		hs, err := handshake(name, u)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", name, err)
		}
		overrides := map[int]session.Class{}
		for code, class := range u.CloseCodes {
			c, err := session.ParseClass(class)
			if err != nil {
				return nil, fmt.Errorf("upstream %s: close_codes: %w", name, err)
			}
			overrides[code] = c
		}
		policy := bridge.DropOldest
		if u.Queue.Policy == "fail" {
			policy = bridge.Fail
		}
		out[name] = &bridge.Upstream{
			Session: session.Config{
				URL:              u.URL,
				Subprotocols:     u.Subprotocols,
				Fallback:         u.FallbackSubprotocol,
				Handshake:        hs,
				DialTimeout:      u.DialTimeout,
				AckTimeout:       u.AckTimeout,
				KeepAlive:        u.KeepAlive,
				KeepAliveTimeout: u.KeepAliveTimeout,
				MaxMessageBytes:  u.MaxMessageBytes,
				Backoff: session.Backoff{Initial: u.Retry.Initial, Max: u.Retry.Max, Multiplier: u.Retry.Multiplier,
					MaxElapsed: u.Retry.MaxElapsed, StableAfter: u.Retry.StableAfter},
				Policy: session.Policy{Overrides: overrides},
			},
			MaxOpsPerConn:    u.MaxOperationsPerConnection,
			Dedup:            *u.Dedup,
			QueueSize:        u.Queue.Size,
			SlowPolicy:       policy,
			IdleTimeout:      u.IdleTimeout,
			MaxSubscriptions: u.MaxSubscriptions,
		}
	}
	return out, nil
}

func tokenSource(t *config.Token) credential.Source {
	switch {
	case t == nil:
		return nil
	case t.Value != "":
		return credential.Value(t.Value)
	case t.Env != "":
		return credential.Env(t.Env)
	case t.File != "":
		return credential.File(t.File)
	}
	return nil
}

// handshake builds the per-attempt handshake of an upstream: the token is
// fetched on every attempt (fresh after a rejection) and substituted into
// the connection_init payload and the upgrade headers.
func handshake(name string, u *config.Upstream) (func(context.Context, session.Attempt) (session.Handshake, error), error) {
	var params []byte
	if u.ConnectionParams != nil {
		b, err := json.Marshal(u.ConnectionParams)
		if err != nil {
			return nil, fmt.Errorf("connection_params: %w", err)
		}
		params = b
	}
	src := tokenSource(u.Token)
	usesToken := bytes.Contains(params, []byte(tokenPlaceholder))
	for _, v := range u.Headers {
		usesToken = usesToken || strings.Contains(v, tokenPlaceholder)
	}
	if usesToken && src == nil {
		return nil, fmt.Errorf("connection_params or headers use %s but no token source is configured", tokenPlaceholder)
	}
	return func(ctx context.Context, a session.Attempt) (session.Handshake, error) {
		var hs session.Handshake
		token := ""
		if src != nil {
			req := credential.Request{Upstream: name, Refresh: a.Refresh}
			if a.Cause != nil {
				req.CloseCode = max(a.Cause.Code, a.Cause.HTTPStatus)
			}
			t, err := src.Token(ctx, req)
			if err != nil {
				return hs, err
			}
			token = t.Value
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
