package bridge_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gqlbridge/gqlbridge/bridge"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/scripted"
	"github.com/gqlbridge/gqlbridge/internal/testpeer"
	"github.com/gqlbridge/gqlbridge/session"
)

// TestLifecycleReconnectInOrder: the reference graphql-ws server closes the
// connection with 1012 mid-stream; the caller's stream stays open and shows,
// in order, STATE_RECONNECTING (with the close code, reason and attempt 1),
// STATE_RESUBSCRIBED, then results again, numbered on without a gap.
func TestLifecycleReconnectInOrder(t *testing.T) {
	t.Parallel()
	node := testpeer.StartNode(t, testpeer.NodeOptions{Protocol: testpeer.TransportWS})
	cfg := bridge.Config{Upstreams: map[string]*bridge.Upstream{"node": {Session: fast(node.URL)}}}
	reg := withMetrics(&cfg)
	e := startBridge(t, inMemory, cfg)
	s := e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "node", Query: "subscription { ticker(count: 0, intervalMs: 20) { n } }"})
	s.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
	seq := uint64(0)
	for range 2 {
		n := s.expectNext()
		seq++
		if n.Sequence != seq || tickN(t, n) != int(seq) {
			t.Fatalf("result %q with sequence %d, want %d", n.Result, n.Sequence, seq)
		}
	}

	if closed := node.CloseAll(t, 1012, "service restart"); closed != 1 {
		t.Fatalf("closed %d upstream connections, want 1", closed)
	}
	// Results already under way may arrive first; then the lifecycle events.
	var rc *bridgev1.Lifecycle
	for rc == nil {
		r, err := s.next()
		if err != nil {
			t.Fatalf("stream ended: %v", err)
		}
		switch {
		case r.GetNext() != nil:
			seq++
			if r.GetNext().Sequence != seq {
				t.Fatalf("sequence %d, want %d", r.GetNext().Sequence, seq)
			}
		case r.GetLifecycle().GetState() == bridgev1.Lifecycle_STATE_RECONNECTING:
			rc = r.GetLifecycle()
		default:
			t.Fatalf("before STATE_RECONNECTING: %v", r)
		}
	}
	if rc.CloseCode != 1012 || rc.CloseReason != "service restart" || rc.Attempt != 1 {
		t.Fatalf("STATE_RECONNECTING %v, want close_code 1012, close_reason %q, attempt 1", rc, "service restart")
	}
	if rs := s.expectLifecycle(bridgev1.Lifecycle_STATE_RESUBSCRIBED); rs.CloseCode != 0 || rs.CloseReason != "" || rs.Attempt == 0 {
		t.Fatalf("STATE_RESUBSCRIBED %v, want an attempt and no close code", rs)
	}
	// The operation runs again from its start upstream (ticks from 1), and
	// the caller's sequence goes on.
	for i := 1; i <= 3; i++ {
		n := s.expectNext()
		seq++
		if n.Sequence != seq || tickN(t, n) != i {
			t.Fatalf("after resubscribing: result %q with sequence %d, want tick %d with sequence %d", n.Result, n.Sequence, i, seq)
		}
	}
	if st := node.Stats(t); st.Started != 2 || st.Active != 1 || st.Connections != 1 {
		t.Fatalf("upstream %+v, want the operation started twice, running once, on one connection", st)
	}
	if got := metricValue(t, reg, "gqlbridge_reconnects_total", map[string]string{"upstream": "node", "close_code": "1012", "class": "transient"}); got != 1 {
		t.Fatalf("reconnects{1012} = %v, want 1", got)
	}
}

// TestCancelWhileReconnecting: the upstream accepts every connection and
// closes it with 1012 right after the subscribe, so the bridge is always
// reconnecting. A caller that cancels then ends at once, the operation
// leaves the pool, the connection stops retrying and closes, and nothing
// leaks (the package's goleak check). Two cases: cancelled while the
// session dials and redials (short backoff), and while it waits out a long
// backoff.
func TestCancelWhileReconnecting(t *testing.T) {
	t.Parallel()
	for name, backoff := range map[string]session.Backoff{
		"redialling":   {Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond},
		"long backoff": {Initial: time.Hour, Max: time.Hour},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := scripted.Start(t, scripted.Options{Subprotocols: []string{session.TransportWS}}, func(p *scripted.Peer) {
				if _, ok := p.Handshake(); !ok {
					return
				}
				if _, ok := p.Expect("subscribe"); !ok {
					return
				}
				p.Close(1012, "restarting")
			})
			sc := fast(srv.URL)
			ownHTTP(t, &sc) // it cancels dials
			sc.Backoff = backoff
			sc.Rand = func() float64 { return 0.5 } // the long backoff waits half an hour
			cfg := bridge.Config{Upstreams: map[string]*bridge.Upstream{"up": {Session: sc, IdleTimeout: 10 * time.Millisecond}}}
			reg := withMetrics(&cfg)
			e := startBridge(t, inMemory, cfg)
			s := e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "up", Query: "subscription { ticker { n } }"})
			s.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
			if rc := s.expectLifecycle(bridgev1.Lifecycle_STATE_RECONNECTING); rc.CloseCode != 1012 || rc.Attempt != 1 {
				t.Fatalf("STATE_RECONNECTING %v", rc)
			}
			if name == "redialling" {
				// Let it go round a few times: resubscribed, closed again.
				for range 2 {
					s.expectLifecycle(bridgev1.Lifecycle_STATE_RESUBSCRIBED)
					s.expectLifecycle(bridgev1.Lifecycle_STATE_RECONNECTING)
				}
			}
			s.cancel()
			// Events the bridge sent before the cancel may still be read
			// (the redialling case produces them all the time); the stream
			// then ends with Canceled.
			var err error
			for err == nil {
				_, err = s.next()
			}
			if status.Code(err) != codes.Canceled {
				t.Fatalf("after cancel: %v", err)
			}
			// The server side ended too: the call is counted as cancelled, the
			// operation left, and the idle connection closed, which stops
			// the reconnect loop (its goroutines are checked by goleak).
			waitUntil(t, "the call to end in the bridge", func() bool {
				return metricValue(t, reg, "gqlbridge_terminations_total", map[string]string{"upstream": "up", "code": "Canceled", "reason": ""}) == 1
			})
			waitUntil(t, "the connection to close", func() bool { return e.svc.Stats()["up"] == bridge.UpstreamStats{} })
			if n := subscribers(t, reg, "up"); n != 0 {
				t.Fatalf("%d subscribers left", n)
			}
		})
	}
}

// TestLifecycleResubscribedAttempt: STATE_RESUBSCRIBED carries the number
// of the reconnect attempt that succeeded, counted like STATE_RECONNECTING's
// (subscription.proto: "the reconnect attempt, counted from 1 since the
// connection was last healthy"). After one close and one successful
// reconnect both say 1.
func TestLifecycleResubscribedAttempt(t *testing.T) {
	t.Parallel()
	srv := scripted.Start(t, scripted.Options{Subprotocols: []string{session.TransportWS}}, func(p *scripted.Peer) {
		if _, ok := p.Handshake(); !ok {
			return
		}
		m, ok := p.Expect("subscribe")
		if !ok {
			return
		}
		if p.N == 1 {
			p.Close(1012, "restarting")
			return
		}
		p.SendMsg("next", m.ID, `{"data":{"ticker":{"n":1}}}`)
		p.Drain()
	})
	e := startBridge(t, inMemory, bridge.Config{Upstreams: map[string]*bridge.Upstream{"up": {Session: fast(srv.URL)}}})
	s := e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "up", Query: "subscription { ticker { n } }"})
	s.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
	rc := s.expectLifecycle(bridgev1.Lifecycle_STATE_RECONNECTING)
	rs := s.expectLifecycle(bridgev1.Lifecycle_STATE_RESUBSCRIBED)
	if rc.Attempt != 1 || rs.Attempt != 1 {
		t.Errorf("STATE_RECONNECTING attempt %d then STATE_RESUBSCRIBED attempt %d; want 1 and 1 (one reconnect, which succeeded)", rc.Attempt, rs.Attempt)
	}
	if n := s.expectNext(); n.Sequence != 1 {
		t.Fatalf("result after resubscribing: sequence %d", n.Sequence)
	}
}
