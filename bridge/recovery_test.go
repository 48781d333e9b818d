package bridge_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gqlbridge/gqlbridge/bridge"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
	"github.com/gqlbridge/gqlbridge/session"
)

// TestFirstConnectionBackBringsTheOthers: after an outage, the upstream's
// connections wait out long backoffs (an hour here, longer than the test's
// 30 s stream deadline); as soon as one connection to it is acknowledged
// again, the others retry at once instead of each finding out on its own up
// to the backoff cap later. Without that, the streams below would never hear
// STATE_RESUBSCRIBED and the test would fail at its deadline; no duration is
// measured, so a slow machine cannot fail it.
func TestFirstConnectionBackBringsTheOthers(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{})
	addr := strings.TrimSuffix(strings.TrimPrefix(demo.URL(), "ws://"), "/graphql")
	cfg := session.Config{URL: demo.URL(), Rand: func() float64 { return 0.99 },
		// Attempt 1 after 20 ms, attempt 2 after an hour.
		Backoff: session.Backoff{Initial: 20 * time.Millisecond, Multiplier: 180_000, Max: time.Hour}}
	up := &bridge.Upstream{Session: cfg, MaxOpsPerConn: 1}
	e := startBridge(t, overTCP, bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": up}})
	query := func(ms int) *bridgev1.SubscribeRequest {
		return &bridgev1.SubscribeRequest{Upstream: "demo", Query: "subscription { ticker(count: 0, intervalMs: " + strconv.Itoa(ms) + ") { n } }"}
	}
	a, b := e.subscribe(t, query(50)), e.subscribe(t, query(51))
	a.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
	b.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)

	demo.Close()
	waitFor(t, func() bool { // both connections in their hour-long wait
		conns := e.svc.Snapshot().Upstreams[0].Connections
		return len(conns) == 2 && conns[0].State == session.StateBackoff && conns[0].Attempt >= 2 && conns[1].State == session.StateBackoff && conns[1].Attempt >= 2
	})
	startDemo(t, demoupstream.Options{Addr: addr})
	// A new subscriber needs a third connection: it dials at once and is
	// acknowledged; the other two follow.
	c := e.subscribe(t, query(52))
	c.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
	for _, s := range []*stream{a, b} {
		for {
			r, err := s.next()
			if err != nil {
				t.Fatal(err)
			}
			if r.GetLifecycle().GetState() == bridgev1.Lifecycle_STATE_RESUBSCRIBED {
				break
			}
		}
	}
}
