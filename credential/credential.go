// Package credential obtains the tokens the bridge presents to upstreams: a
// literal value, an environment variable, a file read on every request
// (Kubernetes rotates projected tokens in place), a command, the OAuth 2.0
// client-credentials grant, or a TokenService called over gRPC. [Cache]
// collapses concurrent refreshes and knows expiries (from the source or a
// JWT's exp). It never logs a token and never puts one in an error.
package credential

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Request says why a token is needed.
type Request struct {
	Upstream string
	// Refresh is set when the upstream rejected the previous token.
	Refresh bool
	// Expiring is set when the current token is about to expire.
	Expiring bool
	// CloseCode and CloseReason describe the rejection, with Refresh.
	CloseCode   int
	CloseReason string
	// Identity is an opaque, stable identity of the caller whose credential
	// is needed (forwarded credentials); empty otherwise.
	Identity string
}

// Token is a credential and, when known, its expiry.
type Token struct {
	Value  string
	Expiry time.Time
}

// Source yields tokens. Implementations are safe for concurrent use.
type Source interface {
	Token(ctx context.Context, req Request) (Token, error)
}

// Value is a fixed token.
type Value string

// Token returns the value.
func (v Value) Token(context.Context, Request) (Token, error) {
	return Token{Value: string(v), Expiry: jwtExpiry(string(v))}, nil
}

// Env reads the token from an environment variable on every request.
type Env string

// Token reads the variable.
func (e Env) Token(context.Context, Request) (Token, error) {
	v, ok := os.LookupEnv(string(e))
	if !ok || v == "" {
		return Token{}, fmt.Errorf("credential: environment variable %s is not set", string(e))
	}
	return Token{Value: v, Expiry: jwtExpiry(v)}, nil
}

// File reads the token from a file on every request, trimming surrounding
// white space, so a rotated file is picked up on the next connection.
type File string

// Token reads the file.
func (f File) Token(context.Context, Request) (Token, error) {
	b, err := os.ReadFile(string(f))
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return Token{}, fmt.Errorf("credential: read token file %s: %v", string(f), pe.Err)
		}
		return Token{}, fmt.Errorf("credential: read token file %s: %v", string(f), err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return Token{}, fmt.Errorf("credential: token file %s is empty", string(f))
	}
	return Token{Value: v, Expiry: jwtExpiry(v)}, nil
}
