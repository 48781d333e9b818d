package main

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
	"github.com/gqlbridge/gqlbridge/internal/rpcstatus"
)

// consume runs one subscription to its end and returns results, lifecycle
// states and the final status.
func consume(ctx context.Context, t *testing.T, conn *grpc.ClientConn, req *bridgev1.SubscribeRequest) (results int, states []string, st *status.Status) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	stream, err := bridgev1.NewSubscriptionServiceClient(conn).Subscribe(ctx, req)
	if err != nil {
		return 0, nil, status.Convert(err)
	}
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return results, states, status.New(codes.OK, "")
		}
		if err != nil {
			return results, states, status.Convert(err)
		}
		if r.GetNext() != nil {
			results++
		} else {
			states = append(states, r.GetLifecycle().GetState().String())
		}
	}
}

// TestCallerAuthAndMTLS: with mutual TLS and configured callers, a caller
// is known by its client certificate or its bearer token, may use only its
// upstreams, and secrets reach neither the logs nor the errors.
func TestCallerAuthAndMTLS(t *testing.T) {
	demo := startDemo(t, demoupstream.Options{Token: "upstream-secret-1"})
	pki := newPKI(t, "billing.svc", "stranger.svc", "reports.svc")
	tokenFile := filepath.Join(t.TempDir(), "reports-token")
	os.WriteFile(tokenFile, []byte("caller-secret-2\n"), 0o600)
	s := startServe(t, `
server:
  grpc_address: ADDR
  admin_address: "off"
  drain_grace: 100ms
  tls:
    cert_file: `+pki.serverCert+`
    key_file: `+pki.serverKey+`
    client_ca_file: `+pki.caFile+`
  callers:
    billing:
      subject: billing.svc
      upstreams: [demo]
    reports:
      token_file: `+tokenFile+`
      upstreams: [other]
upstreams:
  demo:
    url: `+demo.URL()+`
    token: {value: upstream-secret-1}
    connection_params: {Authorization: "Bearer {{token}}"}
  other:
    url: `+demo.URL()+`
    token: {value: upstream-secret-1}
    connection_params: {Authorization: "Bearer {{token}}"}
`, pki.dialTLS("billing.svc"))
	req := &bridgev1.SubscribeRequest{Upstream: "demo", Query: "subscription { ticker(count: 2, intervalMs: 5) { n } }"}
	dial := func(cn string) *grpc.ClientConn {
		c, err := grpc.NewClient(s.addr, pki.dialTLS(cn))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	if n, _, st := consume(t.Context(), t, dial("billing.svc"), req); st.Code() != codes.OK || n != 2 {
		t.Fatalf("billing (client certificate): %d results, %v", n, st)
	}
	// A valid certificate of an unknown caller.
	if _, _, st := consume(t.Context(), t, dial("stranger.svc"), req); st.Code() != codes.Unauthenticated || rpcstatus.ErrorInfo(st).GetReason() != "CALLER_UNAUTHENTICATED" {
		t.Fatalf("stranger: %v", st)
	}
	// Authentication comes before validation: a stranger cannot probe for
	// upstream names through NOT_FOUND.
	probe := &bridgev1.SubscribeRequest{Upstream: "no-such-upstream", Query: req.Query}
	if _, _, st := consume(t.Context(), t, dial("stranger.svc"), probe); st.Code() != codes.Unauthenticated {
		t.Fatalf("stranger asking for an unknown upstream: %v, want UNAUTHENTICATED", st)
	}
	// reports authenticates with its bearer token but may use only "other".
	withToken := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer caller-secret-2")
	if _, _, st := consume(withToken, t, dial("stranger.svc"), req); st.Code() != codes.PermissionDenied || rpcstatus.ErrorInfo(st).GetReason() != "CALLER_NOT_ALLOWED" {
		t.Fatalf("reports on demo: %v", st)
	}
	other := &bridgev1.SubscribeRequest{Upstream: "other", Query: req.Query}
	if n, _, st := consume(withToken, t, dial("stranger.svc"), other); st.Code() != codes.OK || n != 2 {
		t.Fatalf("reports on other: %d, %v", n, st)
	}
	wrong := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer guess")
	_, _, st := consume(wrong, t, dial("stranger.svc"), other)
	if st.Code() != codes.Unauthenticated || strings.Contains(st.Message(), "guess") {
		t.Fatalf("wrong token: %v", st)
	}
	// Without a client certificate the TLS handshake itself fails.
	if _, _, st := consume(t.Context(), t, dial(""), req); st.Code() != codes.Unavailable {
		t.Fatalf("no client certificate: %v", st)
	}
	s.stop()
	for _, secret := range []string{"upstream-secret-1", "caller-secret-2"} {
		if strings.Contains(s.logs.String(), secret) {
			t.Fatalf("secret %q reached the logs:\n%s", secret, s.logs.String())
		}
	}
}

// TestForwardedCredentials: the caller's own credential is used upstream;
// callers with different credentials get different connections, and a
// rejected forwarded credential ends the stream with UNAUTHENTICATED without
// a refresh loop.
func TestForwardedCredentials(t *testing.T) {
	demo := startDemo(t, demoupstream.Options{Token: "alice-token"})
	s := startServe(t, `
server:
  grpc_address: ADDR
  admin_address: "off"
  drain_grace: 100ms
upstreams:
  demo:
    url: `+demo.URL()+`
    token: {forward: authorization}
    connection_params: {Authorization: "Bearer {{token}}"}
`)
	conn := s.dial(t)
	req := &bridgev1.SubscribeRequest{Upstream: "demo", Query: "subscription { ticker(count: 2, intervalMs: 5) { n } }"}
	alice := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer alice-token")
	if n, _, st := consume(alice, t, conn, req); st.Code() != codes.OK || n != 2 {
		t.Fatalf("alice: %d, %v", n, st)
	}
	mallory := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer mallory-token")
	if _, _, st := consume(mallory, t, conn, req); st.Code() != codes.PermissionDenied && st.Code() != codes.Unauthenticated {
		t.Fatalf("mallory: %v", st)
	}
	if got := demo.Stats().InitsRejected; got != 1 {
		t.Fatalf("upstream rejected %d inits, want exactly 1 (no refresh of a forwarded credential)", got)
	}
	if _, _, st := consume(t.Context(), t, conn, req); st.Code() != codes.Unauthenticated {
		t.Fatalf("no credential: %v", st)
	}
	s.stop()
	if strings.Contains(s.logs.String(), "alice-token") || strings.Contains(s.logs.String(), "mallory-token") {
		t.Fatal("a forwarded credential reached the logs")
	}
}

// TestTokenRotationWithoutReconnect: the upstream closes every connection
// with 4401 when its token expires; the token source (a command printing
// JSON with expires_in) says when, and the bridge rotates the connection
// before that, so the stream never sees STATE_RECONNECTING.
func TestTokenRotationWithoutReconnect(t *testing.T) {
	demo := startDemo(t, demoupstream.Options{Token: "rot", TokenTTL: 1500 * time.Millisecond})
	s := startServe(t, `
server:
  grpc_address: ADDR
  admin_address: "off"
  drain_grace: 100ms
upstreams:
  demo:
    url: `+demo.URL()+`
    token:
      command: [sh, -c, 'echo "{\"token\":\"rot\",\"expires_in\":1.5}"']
      rotate_before: 1s
    connection_params: {Authorization: "Bearer {{token}}"}
`)
	conn := s.dial(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	stream, err := bridgev1.NewSubscriptionServiceClient(conn).Subscribe(ctx, &bridgev1.SubscribeRequest{Upstream: "demo",
		Query: "subscription { ticker(count: 0, intervalMs: 20) { n } }"})
	if err != nil {
		t.Fatal(err)
	}
	// Read over three token lifetimes.
	var states []string
	results := 0
	for strings.Count(s.logs.String(), "rotated to a fresh credential") < 3 {
		r, err := stream.Recv()
		if err != nil {
			t.Fatalf("stream ended: %v; logs:\n%s", err, s.logs.String())
		}
		if r.GetNext() != nil {
			results++
		} else {
			states = append(states, r.GetLifecycle().GetState().String())
		}
	}
	cancel()
	if len(states) != 1 || states[0] != "STATE_SUBSCRIBED" {
		t.Fatalf("lifecycle %v: the rotation was visible", states)
	}
	if results < 50 {
		t.Fatalf("%d results over three rotations", results)
	}
	if !strings.Contains(s.logs.String(), "rotated") {
		t.Fatalf("no rotation logged:\n%s", s.logs.String())
	}
}

// TestDrainWithCallerThatNeverReads: a caller that stops reading fills its
// HTTP/2 window and blocks its handler in Send, where the drain cannot reach
// it; serve must still stop (the gRPC server's Stop frees the handler) and
// close the upstream.
func TestDrainWithCallerThatNeverReads(t *testing.T) {
	demo := startDemo(t, demoupstream.Options{})
	s := startServe(t, `
server:
  grpc_address: ADDR
  admin_address: "off"
  drain_grace: 100ms
upstreams:
  demo:
    url: `+demo.URL()+`
    queue: {size: 100000}
`)
	conn := s.dial(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if _, err := bridgev1.NewSubscriptionServiceClient(conn).Subscribe(ctx, &bridgev1.SubscribeRequest{Upstream: "demo",
		Query: "subscription { ticker(count: 0, intervalMs: 1, size: 4096) { n payload } }"}); err != nil {
		t.Fatal(err)
	}
	// Never Recv: wait until the upstream has produced far more than the
	// HTTP/2 windows hold.
	ctxw, cancelw := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancelw()
	if err := demo.WaitFor(ctxw, func(st demoupstream.Stats) bool { return st.ActiveSubscriptions == 1 }); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // let about 500 results (2 MB) pile up; a liveness setup, not a timing check
	s.stop()                           // fails the test if serve does not return
	if err := demo.WaitFor(ctxw, func(st demoupstream.Stats) bool { return st.Connections == 0 }); err != nil {
		t.Fatalf("upstream still connected after serve stopped: %+v", demo.Stats())
	}
}
