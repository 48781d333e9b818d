package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/gqlbridge/gqlbridge/access"

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
		src, err := tokenSource(name, u.Token)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", name, err)
		}
		hs, err := handshake(name, u, src, "")
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", name, err)
		}
		client, err := upstreamHTTPClient(u.TLS)
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
				Policy: session.Policy{Overrides: overrides},
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
func tokenSource(name string, t *config.Token) (credential.Source, error) {
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
		secret := o.ClientSecret
		if o.ClientSecretFile != "" {
			b, err := os.ReadFile(o.ClientSecretFile)
			if err != nil {
				return nil, fmt.Errorf("token.oauth2.client_secret_file: %v", err)
			}
			secret = strings.TrimSpace(string(b))
		}
		params := map[string][]string{}
		for k, v := range o.Params {
			params[k] = []string{v}
		}
		src = credential.NewOAuth2(o.TokenURL, o.ClientID, secret, o.Scopes, params, nil)
	case t.Callback != nil:
		creds := insecure.NewCredentials()
		if t.Callback.CAFile != "" {
			tc, err := credentials.NewClientTLSFromFile(t.Callback.CAFile, "")
			if err != nil {
				return nil, fmt.Errorf("token.callback.ca_file: %v", err)
			}
			creds = tc
		}
		conn, err := grpc.NewClient(t.Callback.Target, grpc.WithTransportCredentials(creds))
		if err != nil {
			return nil, fmt.Errorf("token.callback.target: %v", err)
		}
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

// upstreamHTTPClient carries an upstream's TLS settings.
func upstreamHTTPClient(t *config.UpstreamTLS) (*http.Client, error) {
	if t == nil {
		return nil, nil
	}
	tc := &tls.Config{ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file %s holds no PEM certificate", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file/key_file: %v", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	return &http.Client{Transport: tr}, nil
}

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
		v, found := strings.CutPrefix(vals[0], "Bearer ")
		if !found {
			v, _ = strings.CutPrefix(vals[0], "bearer ")
		}
		return strings.TrimSpace(v), nil
	}
}

// callerPolicy builds server.callers into an access policy; nil when no
// callers are configured.
func callerPolicy(cfg *config.Config) (*access.Policy, error) {
	if len(cfg.Server.Callers) == 0 {
		return nil, nil
	}
	var callers []access.Caller
	for _, name := range sortedKeys(cfg.Server.Callers) {
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

// authorize maps the access policy's decisions to request errors.
func authorize(p *access.Policy) func(context.Context, string) error {
	return func(ctx context.Context, upstream string) error {
		_, err := p.Authorize(ctx, upstream)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, access.ErrForbidden):
			return &bridge.RequestError{Code: codes.PermissionDenied, Reason: bridge.ReasonCallerForbidden, Msg: err.Error()}
		default:
			return &bridge.RequestError{Code: codes.Unauthenticated, Reason: bridge.ReasonCallerUnauthorized, Msg: err.Error()}
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// serverCredentials is TLS, and mutual TLS with client_ca_file.
func serverCredentials(t *config.ServerTLS) (credentials.TransportCredentials, error) {
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("server.tls: %v", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.ClientCAFile != "" {
		pem, err := os.ReadFile(t.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("server.tls.client_ca_file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("server.tls.client_ca_file %s holds no PEM certificate", t.ClientCAFile)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return credentials.NewTLS(tc), nil
}
