package main

import (
	"context"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// soakConfig is the bridge's configuration file: three upstreams on the
// one demo server at upstreamURL. "shared" deduplicates identical
// subscriptions and "direct" does not; both get their token from the
// TokenService at tokens, which says when it expires. "refresh" has a fixed
// token whose expiry is unknown: the upstream closes the connection with
// 4401 when it expires, and the session refreshes it and reconnects.
func soakConfig(upstreamURL, tokens string) string {
	return fmt.Sprintf(`
server:
  grpc_address: 127.0.0.1:0
  admin_address: "off"
upstreams:
  shared:
    url: %[1]s
    token: {callback: {target: %[2]q}}
    connection_params: {Authorization: "Bearer {{token}}"}
  direct:
    url: %[1]s
    dedup: false
    queue: {policy: drop_oldest}
    token: {callback: {target: %[2]q}}
    connection_params: {Authorization: "Bearer {{token}}"}
  refresh:
    url: %[1]s
    dedup: false
    token: {value: %[3]q}
    connection_params: {Authorization: "Bearer {{token}}"}
`, upstreamURL, tokens, token)
}

// tokenService is a TokenService (graphqlbridge.v1) on loopback that hands
// out the upstream's token with its expiry, ttl from now.
type tokenService struct {
	bridgev1.UnimplementedTokenServiceServer
	addr   string
	ttl    time.Duration
	gs     *grpc.Server
	served chan struct{}
}

func startTokenService(ttl time.Duration) (*tokenService, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &tokenService{addr: lis.Addr().String(), ttl: ttl, gs: grpc.NewServer(), served: make(chan struct{})}
	bridgev1.RegisterTokenServiceServer(t.gs, t)
	go func() { _ = t.gs.Serve(lis); close(t.served) }()
	return t, nil
}

func (t *tokenService) GetToken(context.Context, *bridgev1.GetTokenRequest) (*bridgev1.GetTokenResponse, error) {
	return &bridgev1.GetTokenResponse{Token: token, ExpiresAt: timestamppb.New(time.Now().Add(t.ttl))}, nil
}

func (t *tokenService) stop() {
	t.gs.Stop()
	<-t.served
}
