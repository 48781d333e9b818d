// Package access decides who may call the bridge and which upstreams each
// caller may name: callers authenticate with a bearer token or a TLS client
// certificate (mutual TLS), and each has an allowlist of upstreams. It never
// keeps a caller's token, only its SHA-256, and never logs one.
package access

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// Caller is one configured caller.
type Caller struct {
	Name string
	// TokenSHA256 is the hash of the bearer token the caller presents, if
	// it authenticates with a token.
	TokenSHA256 *[32]byte
	// Subject names the caller's client certificate: its Common Name, a DNS
	// name or a URI (SPIFFE ID) among its SANs.
	Subject string
	// Upstreams the caller may name; "*" allows all.
	Upstreams []string
}

var (
	// ErrUnauthenticated: the caller presented no credential the bridge knows.
	ErrUnauthenticated = errors.New("caller not authenticated")
	// ErrForbidden: the caller may not use the upstream.
	ErrForbidden = errors.New("caller may not use this upstream")
)

// Policy authenticates callers.
type Policy struct {
	byToken   map[[32]byte]*Caller
	bySubject map[string]*Caller
}

// New builds a policy; names, tokens and subjects must be unique.
func New(callers []Caller) (*Policy, error) {
	p := &Policy{byToken: map[[32]byte]*Caller{}, bySubject: map[string]*Caller{}}
	for i := range callers {
		c := &callers[i]
		if c.TokenSHA256 == nil && c.Subject == "" {
			return nil, fmt.Errorf("caller %s: needs a token or a certificate subject", c.Name)
		}
		if c.TokenSHA256 != nil {
			if other, dup := p.byToken[*c.TokenSHA256]; dup {
				return nil, fmt.Errorf("callers %s and %s share a token", other.Name, c.Name)
			}
			p.byToken[*c.TokenSHA256] = c
		}
		if c.Subject != "" {
			if other, dup := p.bySubject[c.Subject]; dup {
				return nil, fmt.Errorf("callers %s and %s share the subject %q", other.Name, c.Name, c.Subject)
			}
			p.bySubject[c.Subject] = c
		}
	}
	return p, nil
}

// Authenticate finds the caller of ctx: by a verified client certificate
// first, else by "authorization: Bearer TOKEN" metadata. Its error wraps
// ErrUnauthenticated and never quotes what the caller presented.
func (p *Policy) Authenticate(ctx context.Context) (*Caller, error) {
	if pr, ok := peer.FromContext(ctx); ok {
		if ti, ok := pr.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
			for _, s := range subjects(ti.State.VerifiedChains[0][0]) {
				if c := p.bySubject[s]; c != nil {
					return c, nil
				}
			}
		}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		tok, ok := Bearer(v)
		if !ok {
			continue
		}
		if c := p.byToken[sha256.Sum256([]byte(tok))]; c != nil {
			return c, nil
		}
	}
	return nil, fmt.Errorf("%w: present a bearer token in the authorization metadata or a client certificate the bridge knows", ErrUnauthenticated)
}

// Bearer returns the token of an authorization value "Bearer TOKEN" (or
// "bearer TOKEN"), without surrounding space; ok is false for any other
// value.
func Bearer(v string) (token string, ok bool) {
	tok, ok := strings.CutPrefix(v, "Bearer ")
	if !ok {
		tok, ok = strings.CutPrefix(v, "bearer ")
	}
	return strings.TrimSpace(tok), ok
}

// Allows checks that the caller may use upstream. Its error wraps
// ErrForbidden and names the caller, never its credential.
func (c *Caller) Allows(upstream string) error {
	if !slices.Contains(c.Upstreams, "*") && !slices.Contains(c.Upstreams, upstream) {
		return fmt.Errorf("%w: caller %s may use %s", ErrForbidden, c.Name, strings.Join(c.Upstreams, ", "))
	}
	return nil
}

type callerKey struct{}

// NewContext returns ctx carrying the authenticated caller c.
func NewContext(ctx context.Context, c *Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// FromContext returns the caller NewContext put in ctx, if any.
func FromContext(ctx context.Context) (*Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(*Caller)
	return c, ok
}

func subjects(cert *x509.Certificate) []string {
	out := []string{}
	if cert.Subject.CommonName != "" {
		out = append(out, cert.Subject.CommonName)
	}
	out = append(out, cert.DNSNames...)
	for _, u := range cert.URIs {
		out = append(out, u.String())
	}
	return out
}
