package wiring

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/scripted"
	"github.com/gqlbridge/gqlbridge/session"
)

// TestSessionLogsReachTheServiceLogger: what an upstream connection logs
// itself (here: a connection_error after the ack, which it tolerates) goes
// to the service's logger, in its format, not to slog's default.
func TestSessionLogsReachTheServiceLogger(t *testing.T) {
	t.Parallel()
	up := scripted.Start(t, scripted.Options{Subprotocols: []string{session.TransportWS}}, func(p *scripted.Peer) {
		if _, ok := p.Handshake(); !ok {
			return
		}
		m, ok := p.Expect("subscribe")
		if !ok {
			return
		}
		p.SendMsg("connection_error", "", `{"message":"scripted"}`)
		p.SendMsg("next", m.ID, `{"data":{"n":1}}`)
		p.Drain()
	})
	logs := &syncBuffer{}
	conn := serveConfig(t, `
server:
  admin_address: "off"
upstreams:
  a: {url: "`+up.URL+`"}
`, Options{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stream, err := bridgev1.NewSubscriptionServiceClient(conn).Subscribe(ctx,
		&bridgev1.SubscribeRequest{Upstream: "a", Query: "subscription { n }"})
	if err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("no result: %v", err)
		}
		if resp.GetNext() != nil {
			break // the connection_error came first, on the same connection
		}
	}
	if !strings.Contains(logs.String(), `"msg":"upstream sent connection_error after ack"`) {
		t.Fatalf("the session's warning is not in the service's log:\n%s", logs.String())
	}
}
