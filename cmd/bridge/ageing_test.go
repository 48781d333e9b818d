package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
	"github.com/gqlbridge/gqlbridge/internal/rpcstatus"
)

// TestMaxConnectionAgeEndsStreamsLikeADrain: over a real TCP connection,
// server.max_connection_age ends the streams of an aged caller connection
// the way a drain does (UNAVAILABLE, ErrorInfo BRIDGE_DRAINING, RetryInfo,
// counted under that reason), not with the bare UNAVAILABLE of a transport
// cut after gRPC's GOAWAY; the caller's resubscribe, as docs/deploy.md
// writes it, runs on a new connection and gets results.
func TestMaxConnectionAgeEndsStreamsLikeADrain(t *testing.T) {
	demo := startDemo(t, demoupstream.Options{})
	s := startServe(t, `
server:
  grpc_address: ADDR
  admin_address: ADMIN
  drain_grace: 200ms
  max_connection_age: 1s
upstreams:
  demo:
    url: `+demo.URL()+`
`)
	conn := s.dial(t)
	client := bridgev1.NewSubscriptionServiceClient(conn)
	req := &bridgev1.SubscribeRequest{Upstream: "demo", Query: "subscription { ticker(count: 0, intervalMs: 20) { n } }"}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	// subscribeUntil reads a stream until it ends or has results results;
	// it reports the status (nil while open) and the caller's local address.
	subscribeUntil := func(results int) (*status.Status, string) {
		t.Helper()
		stream, err := client.Subscribe(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		local := ""
		if _, err := stream.Header(); err == nil {
			if p, ok := peer.FromContext(stream.Context()); ok {
				local = p.LocalAddr.String()
			}
		}
		n := 0
		for {
			r, err := stream.Recv()
			if err == io.EOF {
				t.Fatal("the endless subscription completed")
			}
			if err != nil {
				return status.Convert(err), local
			}
			if r.GetNext() != nil {
				if n++; n == results {
					return nil, local
				}
			}
		}
	}

	st, first := subscribeUntil(-1)
	if st.Code() != codes.Unavailable || rpcstatus.ErrorInfo(st).GetReason() != "BRIDGE_DRAINING" || rpcstatus.RetryInfo(st) == nil {
		t.Fatalf("the stream on the aged connection ended with %v (details %v), want UNAVAILABLE with ErrorInfo BRIDGE_DRAINING and RetryInfo", st, st.Details())
	}
	if !strings.Contains(st.Message(), "max_connection_age") {
		t.Errorf("message %q does not say the connection aged", st.Message())
	}
	// The resubscribe of docs/deploy.md, without even its delay: gRPC's
	// GOAWAY came first, so it goes to a new connection.
	if st, second := subscribeUntil(3); st != nil || second == first || first == "" {
		t.Fatalf("resubscribe: %v, from %s after %s; want results on a new connection", st, second, first)
	}

	resp, err := http.Get("http://" + s.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(b), `gqlbridge_terminations_total{code="Unavailable",reason="BRIDGE_DRAINING",upstream="demo"} 1`) {
		t.Fatalf("the aged stream is not counted as BRIDGE_DRAINING:\n%s", grep(string(b), "gqlbridge_terminations_total"))
	}
}

// grep returns the lines of s that contain substr.
func grep(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
