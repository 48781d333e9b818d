package wiring

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gqlbridge/gqlbridge/access"
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

// TestCallerTokenFilesReloaded: a token written to a caller's token_file
// is accepted, and the one it replaced refused, from the first call after
// the next check (at most tokenFileCheck later), without a restart. A
// change that cannot be used (two callers with one token, an emptied file)
// keeps the last good tokens and is logged once.
func TestCallerTokenFilesReloaded(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fileA, fileB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	replace(t, fileA, []byte("token-a1\n"))
	replace(t, fileB, []byte("token-b\n"))
	cfg, err := config.Parse([]byte(`
server:
  callers:
    a: {token_file: `+fileA+`, upstreams: [x]}
    b: {token_file: `+fileB+`, upstreams: [x]}
upstreams:
  x: {url: "ws://127.0.0.1:1/graphql"}
`), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	c, err := callerPolicy(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	c.now = func() time.Time { return clock }
	c.checked.Store(clock.UnixNano())
	auth := authenticate(c.get)
	// caller returns the caller a call with token is let in as, "" when
	// it is refused.
	caller := func(token string) string {
		t.Helper()
		ctx := metadata.NewIncomingContext(t.Context(), metadata.Pairs("authorization", "Bearer "+token))
		ctx, err := auth(ctx)
		if err != nil {
			if status.Code(err) != codes.Unauthenticated {
				t.Fatalf("token %s: %v, want UNAUTHENTICATED", token, err)
			}
			return ""
		}
		who, _ := access.FromContext(ctx)
		return who.Name
	}
	expect := func(when string, want map[string]string) {
		t.Helper()
		for token, name := range want {
			if got := caller(token); got != name {
				t.Errorf("%s: token %s let in as %q, want %q", when, token, got, name)
			}
		}
	}
	expect("at start", map[string]string{"token-a1": "a", "token-b": "b", "token-a2": ""})

	replace(t, fileA, []byte("token-a2\n"))
	clock = clock.Add(tokenFileCheck - time.Millisecond)
	expect("before the next check", map[string]string{"token-a1": "a", "token-a2": ""})
	clock = clock.Add(time.Millisecond)
	expect("after the next check", map[string]string{"token-a1": "", "token-a2": "a", "token-b": "b"})

	for _, bad := range []string{"token-b\n", "\n"} {
		replace(t, fileA, []byte(bad))
		for range 2 {
			clock = clock.Add(tokenFileCheck)
			expect("with "+strconv.Quote(bad)+" in a's file", map[string]string{"token-a2": "a", "token-b": "b"})
		}
	}
	for _, want := range []string{"callers a and b share a token", "server.callers.a.token_file: " + fileA + " is empty"} {
		if n := strings.Count(logs.String(), want); n != 1 {
			t.Errorf("%q logged %d times, want once:\n%s", want, n, logs.String())
		}
	}

	// Calls arriving together after a change: one of them reads the files,
	// the others go on with the policy they find, and it is rebuilt once.
	replace(t, fileA, []byte("token-a3\n"))
	clock = clock.Add(tokenFileCheck)
	reloads := strings.Count(logs.String(), "reloaded")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { c.get() })
	}
	wg.Wait()
	if n := strings.Count(logs.String(), "reloaded") - reloads; n != 1 {
		t.Errorf("8 calls together after a change rebuilt the policy %d times, want once", n)
	}
	expect("after calls together", map[string]string{"token-a3": "a", "token-a2": ""})

	if strings.Contains(logs.String(), "token-") {
		t.Errorf("a token reached the log:\n%s", logs.String())
	}
}
