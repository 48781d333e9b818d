package wiring

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gqlbridge/gqlbridge/config"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/rpcstatus"
)

// serveConfig builds the service of a configuration file with o and serves
// it on loopback until the test ends; it returns a client connection.
func serveConfig(t *testing.T, yaml string, o Options) *grpc.ClientConn {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	svc, err := New(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { _ = svc.GRPC.Serve(lis); close(served) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		svc.Close()
		<-served
	})
	return conn
}

// subscribeStatus runs one Subscribe to its end and returns its status.
func subscribeStatus(ctx context.Context, conn *grpc.ClientConn, upstream string) *status.Status {
	stream, err := bridgev1.NewSubscriptionServiceClient(conn).Subscribe(ctx,
		&bridgev1.SubscribeRequest{Upstream: upstream, Query: "subscription { n }"})
	for err == nil {
		_, err = stream.Recv()
	}
	if errors.Is(err, io.EOF) {
		return status.New(codes.OK, "")
	}
	return status.Convert(err)
}

// TestCallerAuthenticationCoversOnlySubscriptions: with server.callers,
// the auth interceptor refuses an unknown caller with UNAUTHENTICATED
// (CALLER_UNAUTHENTICATED), whatever upstream it names, and a known caller
// naming an upstream outside its list with PERMISSION_DENIED
// (CALLER_NOT_ALLOWED); health checks need no credential, as probes bring
// none.
func TestCallerAuthenticationCoversOnlySubscriptions(t *testing.T) {
	t.Parallel()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("caller-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conn := serveConfig(t, `
server:
  admin_address: "off"
  callers:
    reports:
      token_file: `+tokenFile+`
      upstreams: [a]
upstreams:
  a: {url: "ws://127.0.0.1:1/graphql"}
  b: {url: "ws://127.0.0.1:1/graphql"}
`, Options{})
	h, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health without a credential: %v, %v", h, err)
	}
	for _, upstream := range []string{"a", "no-such-upstream"} {
		st := subscribeStatus(t.Context(), conn, upstream)
		if st.Code() != codes.Unauthenticated || rpcstatus.ErrorInfo(st).GetReason() != "CALLER_UNAUTHENTICATED" {
			t.Errorf("no credential, upstream %s: %v, want UNAUTHENTICATED (CALLER_UNAUTHENTICATED)", upstream, st)
		}
	}
	withToken := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer caller-token")
	if st := subscribeStatus(withToken, conn, "b"); st.Code() != codes.PermissionDenied || rpcstatus.ErrorInfo(st).GetReason() != "CALLER_NOT_ALLOWED" {
		t.Errorf("reports on b: %v, want PERMISSION_DENIED (CALLER_NOT_ALLOWED)", st)
	}
}
