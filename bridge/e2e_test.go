package bridge_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/gqlbridge/gqlbridge/bridge"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
	"github.com/gqlbridge/gqlbridge/internal/rpcstatus"
	"github.com/gqlbridge/gqlbridge/session"
)

func startDemo(t *testing.T, opts demoupstream.Options) *demoupstream.Server {
	t.Helper()
	srv, err := demoupstream.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// TestEndToEndDemo runs subscriptions through the bridge against the gqlgen
// demo upstream, in memory and over TCP, on both subprotocols.
func TestEndToEndDemo(t *testing.T) {
	t.Parallel()
	for _, tr := range []transport{inMemory, overTCP} {
		for _, proto := range []string{session.TransportWS, session.LegacyWS} {
			t.Run(proto, func(t *testing.T) {
				demo := startDemo(t, demoupstream.Options{})
				cfg := fast(demo.URL())
				cfg.Subprotocols = []string{proto}
				e := startBridge(t, tr, bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: cfg}}})
				s := e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "demo", Query: "subscription { ticker(count: 3, intervalMs: 5) { n } }"})
				s.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
				results, st := s.end()
				if st.Code() != codes.OK {
					t.Fatalf("status %v", st)
				}
				if len(results) != 3 {
					t.Fatalf("%d results, want 3", len(results))
				}
				for i, r := range results {
					if r.Sequence != uint64(i+1) {
						t.Fatalf("result %d has sequence %d", i, r.Sequence)
					}
					want := `{"data":{"ticker":{"n":` + string(rune('1'+i)) + `}}}`
					if got := strings.Join(strings.Fields(string(r.Result)), ""); got != want {
						t.Fatalf("result %d = %s, want %s", i, r.Result, want)
					}
				}
			})
		}
	}
}

// TestCancelStopsUpstreamOperation: the caller cancelling makes the
// upstream see the operation end.
func TestCancelStopsUpstreamOperation(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{})
	e := startBridge(t, overTCP, bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL())}}})
	s := e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "demo", Query: "subscription { ticker(count: 0, intervalMs: 5) { n } }"})
	s.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
	s.expectNext()
	s.expectNext()
	if got := demo.Stats().ActiveSubscriptions; got != 1 {
		t.Fatalf("upstream has %d active subscriptions, want 1", got)
	}
	s.cancel()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := demo.WaitFor(ctx, func(st demoupstream.Stats) bool { return st.ActiveSubscriptions == 0 && st.SubscriptionsEnded == 1 }); err != nil {
		t.Fatalf("upstream operation did not end after cancel: %+v", demo.Stats())
	}
}

func TestGraphQLErrorBecomesInvalidArgument(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{})
	e := startBridge(t, inMemory, bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL())}}})
	// gqlgen answers an invalid operation with an "error" message.
	s := e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "demo", Query: `subscription { nope { n } }`})
	_, st := s.end()
	if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "nope") {
		t.Fatalf("status %v", st)
	}
	info := rpcstatus.ErrorInfo(st)
	if info == nil || info.Reason != bridge.ReasonGraphQLError || info.Domain != "gqlbridge" || !strings.Contains(info.Metadata["graphql_errors"], "nope") {
		t.Fatalf("error info %v", info)
	}
}

func TestTokenInConnectionParams(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{Token: "s3cret"})
	good := fast(demo.URL())
	good.Handshake = func(context.Context, session.Attempt) (session.Handshake, error) {
		return session.Handshake{InitPayload: []byte(`{"Authorization":"Bearer s3cret"}`)}, nil
	}
	bad := fast(demo.URL())
	bad.Handshake = func(context.Context, session.Attempt) (session.Handshake, error) {
		return session.Handshake{InitPayload: []byte(`{"Authorization":"Bearer wrong"}`)}, nil
	}
	e := startBridge(t, inMemory, bridge.Config{Upstreams: map[string]*bridge.Upstream{"good": {Session: good}, "bad": {Session: bad}}})
	s := e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "good", Query: "subscription { ticker(count: 1, intervalMs: 1) { n } }"})
	if results, st := s.end(); st.Code() != codes.OK || len(results) != 1 {
		t.Fatalf("good token: %d results, %v", len(results), st)
	}
	s = e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "bad", Query: "subscription { ticker(count: 1, intervalMs: 1) { n } }"})
	_, st := s.end()
	if st.Code() != codes.Unauthenticated && st.Code() != codes.PermissionDenied {
		t.Fatalf("bad token: status %v", st)
	}
	if info := rpcstatus.ErrorInfo(st); info == nil || info.Metadata["upstream"] != "bad" || info.Metadata["close_code"] == "" {
		t.Fatalf("error info %v", info)
	}
}

// TestDrain: once draining, new Subscribes are refused with UNAVAILABLE and
// RetryInfo, open streams end the same way after the grace period, and the
// upstream sees its operations and connection end.
func TestDrain(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{})
	e := startBridge(t, inMemory, bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL())}}})
	s := e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "demo", Query: "subscription { ticker(count: 0, intervalMs: 5) { n } }"})
	s.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
	s.expectNext()
	drained := make(chan struct{})
	go func() { e.svc.Drain(context.Background(), 200*time.Millisecond); close(drained) }()

	// Refused while draining (poll until Drain has begun).
	for {
		r := e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "demo", Query: "subscription { ticker { n } }"})
		_, st := r.end()
		if st.Code() == codes.Unavailable {
			if info := rpcstatus.ErrorInfo(st); info == nil || info.Reason != bridge.ReasonDraining || rpcstatus.RetryInfo(st) == nil {
				t.Fatalf("refusal details %v", st.Details())
			}
			break
		}
		r.cancel()
	}
	_, st := s.end()
	if st.Code() != codes.Unavailable || rpcstatus.RetryInfo(st) == nil || rpcstatus.ErrorInfo(st).GetReason() != bridge.ReasonDraining {
		t.Fatalf("open stream ended with %v %v", st, st.Details())
	}
	<-drained
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := demo.WaitFor(ctx, func(st demoupstream.Stats) bool { return st.Connections == 0 && st.ActiveSubscriptions == 0 }); err != nil {
		t.Fatalf("upstream still has work after drain: %+v", demo.Stats())
	}
}
