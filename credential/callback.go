package credential

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// Callback asks an operator-run TokenService over gRPC, so a backend in any
// language can mint tokens.
type Callback struct {
	Client  bridgev1.TokenServiceClient
	Timeout time.Duration // per call; default 10s
}

// NewCallback wraps a connection to a TokenService.
func NewCallback(conn grpc.ClientConnInterface, timeout time.Duration) *Callback {
	return &Callback{Client: bridgev1.NewTokenServiceClient(conn), Timeout: timeout}
}

// Token calls GetToken.
func (c *Callback) Token(ctx context.Context, req Request) (Token, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r := &bridgev1.GetTokenRequest{Upstream: req.Upstream, Reason: bridgev1.GetTokenRequest_REASON_FIRST_CONNECT,
		Identity: req.Identity}
	switch {
	case req.Expiring:
		r.Reason = bridgev1.GetTokenRequest_REASON_EXPIRING
	case req.Refresh:
		r.Reason = bridgev1.GetTokenRequest_REASON_REJECTED
		r.CloseCode = uint32(req.CloseCode)
		r.CloseReason = req.CloseReason
	}
	resp, err := c.Client.GetToken(ctx, r)
	if err != nil {
		return Token{}, fmt.Errorf("credential: TokenService.GetToken: %w", err)
	}
	if resp.GetToken() == "" {
		return Token{}, fmt.Errorf("credential: TokenService.GetToken returned an empty token")
	}
	t := Token{Value: resp.GetToken()}
	if resp.GetExpiresAt() != nil {
		t.Expiry = resp.GetExpiresAt().AsTime()
	} else {
		t.Expiry = jwtExpiry(t.Value)
	}
	return t, nil
}
