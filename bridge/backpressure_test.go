package bridge_test

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/gqlbridge/gqlbridge/bridge"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
	"github.com/gqlbridge/gqlbridge/internal/rpcstatus"
	"github.com/gqlbridge/gqlbridge/internal/scripted"
	"github.com/gqlbridge/gqlbridge/session"
)

// How much a caller that never reads can hold before its queue in the bridge
// fills: gRPC flow control lets the server send one stream window (pinned
// to 64 KiB by smallWindows; grpc-go would otherwise grow it with its BDP
// estimate) and buffer another 64 KiB of write quota before Send blocks.
// With 1 KiB results that is ~130 results plus the queue; the tests send
// several times more.
var smallWindows = []grpc.DialOption{
	grpc.WithStaticStreamWindowSize(64 << 10),
	grpc.WithStaticConnWindowSize(64 << 10),
}

// checkOrdered checks that results are in increasing order, each with the
// tick of its sequence (the subscriber saw the operation from its start),
// the first being 1 when from1, the last being last when > 0, and returns
// how many gaps there are.
func checkOrdered(t *testing.T, who string, results []*bridgev1.Next, from1 bool, last int) (gaps int) {
	t.Helper()
	if len(results) == 0 {
		t.Fatalf("%s: no results", who)
	}
	prev := uint64(0)
	for i, r := range results {
		if r.Sequence <= prev || tickN(t, r) != int(r.Sequence) {
			t.Fatalf("%s: result with sequence %d (tick %d) after %d", who, r.Sequence, tickN(t, r), prev)
		}
		if r.Sequence != prev+1 && i > 0 {
			gaps++
		}
		prev = r.Sequence
	}
	if from1 && results[0].Sequence != 1 {
		t.Fatalf("%s: first sequence %d, want 1", who, results[0].Sequence)
	}
	if last > 0 && prev != uint64(last) {
		t.Fatalf("%s: last sequence %d, want %d", who, prev, last)
	}
	return gaps
}

// TestBackpressureDropOldestDemo: against the demo upstream, a caller that
// does not read does not hold back the other subscriber of the same
// operation; when it reads at last it sees what was kept, with gaps in
// sequence where results were dropped, and the latest result.
func TestBackpressureDropOldestDemo(t *testing.T) {
	t.Parallel()
	const total = 2000
	demo := startDemo(t, demoupstream.Options{})
	g := newGate()
	sc := fast(demo.URL())
	sc.Handshake = g.handshake
	cfg := bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: sc, Dedup: true, QueueSize: 8, SlowPolicy: bridge.DropOldest}}}
	reg := withMetrics(&cfg)
	_, addr := serveTCP(t, cfg)
	req := &bridgev1.SubscribeRequest{Upstream: "demo", Query: fmt.Sprintf("subscription { ticker(count: %d, intervalMs: 0, size: 1024) { n payload } }", total)}
	slow := open(t, bridgev1.NewSubscriptionServiceClient(dial(t, addr, smallWindows...)), req)
	fastS := open(t, bridgev1.NewSubscriptionServiceClient(dial(t, addr, smallWindows...)), req)
	waitUntil(t, "both subscribers", func() bool { return subscribers(t, reg, "demo") == 2 })
	close(g.open)

	fastS.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
	fastResults, st := fastS.end()
	if st.Code() != codes.OK {
		t.Fatalf("fast subscriber: %v", st)
	}
	// In order, up to the last result. (Whether it lost any depends on how
	// its stream's goroutine was scheduled against the unpaced upstream, not
	// on the slow subscriber: TestBackpressureLockstep proves that.)
	fastGaps := checkOrdered(t, "fast subscriber", fastResults, false, total)

	slow.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
	slowResults, st := slow.end()
	if st.Code() != codes.OK {
		t.Fatalf("slow subscriber: %v", st)
	}
	if gaps := checkOrdered(t, "slow subscriber", slowResults, false, total); gaps == 0 && slowResults[0].Sequence == 1 {
		t.Fatalf("slow subscriber received all %d results: nothing was dropped", len(slowResults))
	}
	if len(slowResults) > total/2 {
		t.Fatalf("slow subscriber received %d of %d results: gRPC buffered more than expected", len(slowResults), total)
	}
	dropped := metricValue(t, reg, "gqlbridge_events_dropped_total", map[string]string{"upstream": "demo"})
	if want := 2*total - len(slowResults) - len(fastResults); dropped != float64(want) {
		t.Fatalf("dropped counter %v, want %d (slow got %d, fast got %d with %d gaps)", dropped, want, len(slowResults), len(fastResults), fastGaps)
	}
	if st := demo.Stats(); st.SubscriptionsStarted != 1 {
		t.Fatalf("upstream ran %d operations, want 1", st.SubscriptionsStarted)
	}
}

// lockstepUpstream is a scripted graphql-transport-ws upstream that sends
// one result per value received on next (0 completes the operation).
func lockstepUpstream(t *testing.T) (url string, next chan<- int) {
	return lockstepUpstreamSized(t, 1024)
}

// lockstepUpstreamSized is lockstepUpstream with results padded by size bytes.
func lockstepUpstreamSized(t *testing.T, size int) (url string, next chan<- int) {
	ch := make(chan int)
	pad := strings.Repeat("x", size)
	srv := scripted.Start(t, scripted.Options{Subprotocols: []string{session.TransportWS}}, func(p *scripted.Peer) {
		if _, ok := p.Handshake(); !ok {
			return
		}
		m, ok := p.Expect("subscribe")
		if !ok {
			return
		}
		for {
			select {
			case <-p.Context().Done():
				return
			case n := <-ch:
				if n == 0 {
					p.SendMsg("complete", m.ID, "")
					p.Drain()
					return
				}
				p.SendMsg("next", m.ID, fmt.Sprintf(`{"data":{"ticker":{"n":%d,"payload":"%s"}}}`, n, pad))
			}
		}
	})
	return srv.URL, ch
}

// TestBackpressureLockstep: the upstream sends each result only once the
// fast subscriber received the previous one, so the fast subscriber's queue
// never holds more than one result; meanwhile a subscriber of the same
// operation never reads. The fast one must get every result, in order, with
// no gap, and complete with OK whatever the policy. The slow one, when it
// reads at last, sees gaps (DropOldest) or ends with RESOURCE_EXHAUSTED /
// SLOW_CONSUMER after what gRPC had buffered (Fail).
func TestBackpressureLockstep(t *testing.T) {
	t.Parallel()
	const total = 1000
	for _, policy := range []bridge.SlowPolicy{bridge.DropOldest, bridge.Fail} {
		name := map[bridge.SlowPolicy]string{bridge.DropOldest: "DropOldest", bridge.Fail: "Fail"}[policy]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			url, next := lockstepUpstream(t)
			cfg := bridge.Config{Upstreams: map[string]*bridge.Upstream{"up": {Session: fast(url), Dedup: true, QueueSize: 8, SlowPolicy: policy}}}
			reg := withMetrics(&cfg)
			_, addr := serveTCP(t, cfg)
			req := &bridgev1.SubscribeRequest{Upstream: "up", Query: "subscription { ticker { n payload } }"}
			slow := open(t, bridgev1.NewSubscriptionServiceClient(dial(t, addr, smallWindows...)), req)
			fastS := open(t, bridgev1.NewSubscriptionServiceClient(dial(t, addr, smallWindows...)), req)
			waitUntil(t, "both subscribers", func() bool { return subscribers(t, reg, "up") == 2 })
			fastS.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)

			for k := 1; k <= total; k++ {
				select {
				case next <- k:
				case <-t.Context().Done():
					t.Fatal("upstream script gone")
				}
				r := fastS.expectNext()
				if r.Sequence != uint64(k) || tickN(t, r) != k {
					t.Fatalf("fast subscriber: result %d has sequence %d, tick %d", k, r.Sequence, tickN(t, r))
				}
			}
			next <- 0
			if rest, st := fastS.end(); st.Code() != codes.OK || len(rest) != 0 {
				t.Fatalf("fast subscriber ended with %d more results and %v", len(rest), st)
			}

			slow.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
			results, st := slow.end()
			dropped := metricValue(t, reg, "gqlbridge_events_dropped_total", map[string]string{"upstream": "up"})
			switch policy {
			case bridge.DropOldest:
				if st.Code() != codes.OK {
					t.Fatalf("slow subscriber: %v", st)
				}
				if gaps := checkOrdered(t, "slow subscriber", results, false, total); gaps == 0 && results[0].Sequence == 1 {
					t.Fatalf("slow subscriber received all %d results: nothing was dropped", len(results))
				}
				// Only the slow subscriber dropped.
				if dropped != float64(total-len(results)) {
					t.Fatalf("dropped counter %v, want %d", dropped, total-len(results))
				}
			case bridge.Fail:
				if st.Code() != codes.ResourceExhausted {
					t.Fatalf("slow subscriber: %v, want RESOURCE_EXHAUSTED", st)
				}
				if info := rpcstatus.ErrorInfo(st); info == nil || info.Domain != "gqlbridge" || info.Reason != bridge.ReasonSlowConsumer || info.Metadata["upstream"] != "up" {
					t.Fatalf("slow subscriber's ErrorInfo %v", info)
				}
				if st.Message() != bridge.ErrSlowConsumer.Error() {
					t.Fatalf("message %q", st.Message())
				}
				// What it received before the end is 1, 2, 3...: Fail never
				// drops. (Normally gRPC's buffers; none if its stream's
				// goroutine never ran before the queue filled.)
				if len(results) >= total {
					t.Fatalf("slow subscriber received all %d results", len(results))
				}
				if len(results) > 0 {
					if gaps := checkOrdered(t, "slow subscriber", results, true, 0); gaps != 0 {
						t.Fatalf("slow subscriber received %d results with %d gaps", len(results), gaps)
					}
				}
				if dropped != 0 {
					t.Fatalf("dropped counter %v under the fail policy", dropped)
				}
			}
		})
	}
}

// TestBackpressureByteBoundDemo: against the demo upstream, a caller that
// never reads, on results of 64 KiB, holds at most its queue's max bytes
// in the bridge (the result its stream is blocked sending included), not
// queue size × result size; every result dropped to stay within is counted
// and shows as a gap when it reads at last, and nothing stays counted once
// its stream ends. The queue's byte count is read from the server and the
// gqlbridge_queued_bytes gauge.
func TestBackpressureByteBoundDemo(t *testing.T) {
	t.Parallel()
	const total, maxBytes = 200, 256 << 10
	demo := startDemo(t, demoupstream.Options{})
	cfg := bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL()), QueueSize: 128, QueueMaxBytes: maxBytes}}}
	reg := withMetrics(&cfg)
	svc, addr := serveTCP(t, cfg)
	req := &bridgev1.SubscribeRequest{Upstream: "demo", Query: fmt.Sprintf("subscription { ticker(count: %d, intervalMs: 0, size: 65536) { n payload } }", total)}
	slow := open(t, bridgev1.NewSubscriptionServiceClient(dial(t, addr, smallWindows...)), req)

	peak := int64(0)
	waitUntil(t, "every result read from the upstream", func() bool {
		peak = max(peak, svc.QueuedBytes())
		return metricValue(t, reg, "gqlbridge_events_in_total", map[string]string{"upstream": "demo"}) == total
	})
	held := svc.QueuedBytes()
	t.Logf("a caller that does not read: %d bytes queued (%d at most while polling), bound %d", held, peak, maxBytes)
	if held > maxBytes || peak > maxBytes {
		t.Fatalf("%d bytes queued (%d seen), over the queue's %d", held, peak, maxBytes)
	}
	if held == 0 {
		t.Fatal("nothing queued for a caller that does not read")
	}
	if g := metricValue(t, reg, "gqlbridge_queued_bytes", nil); g != float64(held) {
		t.Fatalf("gqlbridge_queued_bytes %v, server says %d", g, held)
	}

	slow.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
	results, st := slow.end()
	if st.Code() != codes.OK {
		t.Fatalf("slow subscriber: %v", st)
	}
	if gaps := checkOrdered(t, "slow subscriber", results, false, total); gaps == 0 && results[0].Sequence == 1 {
		t.Fatalf("slow subscriber received all %d results: nothing was dropped", len(results))
	}
	if dropped := metricValue(t, reg, "gqlbridge_events_dropped_total", map[string]string{"upstream": "demo"}); dropped != float64(total-len(results)) {
		t.Fatalf("dropped counter %v, want %d", dropped, total-len(results))
	}
	if n := svc.QueuedBytes(); n != 0 {
		t.Fatalf("%d bytes still counted after the stream ended", n)
	}
}

// TestBackpressureProcessBoundDemo: callers that never read, each within
// its queue's bounds, together hold at most the server's max queued bytes;
// a caller that keeps up, on another upstream, still gets every result
// with no gap: the queues holding the most give way, not its. When every
// stream has ended, nothing stays counted.
func TestBackpressureProcessBoundDemo(t *testing.T) {
	t.Parallel()
	const total, budget = 100, 512 << 10
	demo := startDemo(t, demoupstream.Options{})
	// The reader's results are as big as the others': they fit only where
	// another queue gives way.
	url, next := lockstepUpstreamSized(t, 65536)
	cfg := bridge.Config{
		Upstreams: map[string]*bridge.Upstream{
			"demo": {Session: fast(demo.URL()), QueueSize: 128, QueueMaxBytes: 1 << 20},
			"up":   {Session: fast(url), QueueSize: 128, QueueMaxBytes: 1 << 20},
		},
		MaxQueuedBytes: budget,
	}
	reg := withMetrics(&cfg)
	svc, addr := serveTCP(t, cfg)
	var stuck []*stream
	for i := range 3 {
		// Different operations: nothing is shared.
		req := &bridgev1.SubscribeRequest{Upstream: "demo", Query: fmt.Sprintf("subscription { ticker(count: %d, intervalMs: 0, size: %d) { n payload } }", total, 65536+i)}
		stuck = append(stuck, open(t, bridgev1.NewSubscriptionServiceClient(dial(t, addr, smallWindows...)), req))
	}
	waitUntil(t, "every result read from the upstream", func() bool {
		return metricValue(t, reg, "gqlbridge_events_in_total", map[string]string{"upstream": "demo"}) == 3*total
	})
	if n := svc.QueuedBytes(); n > budget || n < budget/2 {
		t.Fatalf("three callers that do not read: %d bytes queued; want at most %d, and near it", n, budget)
	}
	if metricValue(t, reg, "gqlbridge_events_dropped_total", map[string]string{"upstream": "demo"}) == 0 {
		t.Fatal("nothing dropped for the callers that do not read")
	}

	reader := open(t, bridgev1.NewSubscriptionServiceClient(dial(t, addr)), &bridgev1.SubscribeRequest{Upstream: "up", Query: "subscription { ticker { n payload } }"})
	reader.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
	for k := 1; k <= total; k++ {
		select {
		case next <- k:
		case <-t.Context().Done():
			t.Fatal("upstream script gone")
		}
		up := map[string]string{"upstream": "up"}
		waitUntil(t, "the result read from the upstream", func() bool { return metricValue(t, reg, "gqlbridge_events_in_total", up) == float64(k) })
		if d := metricValue(t, reg, "gqlbridge_events_dropped_total", up); d != 0 {
			t.Fatalf("result %d: %v results dropped for the caller that reads", k, d)
		}
		if r := reader.expectNext(); r.Sequence != uint64(k) || tickN(t, r) != k {
			t.Fatalf("the caller that reads: result %d has sequence %d, tick %d", k, r.Sequence, tickN(t, r))
		}
		if n := svc.QueuedBytes(); n > budget {
			t.Fatalf("%d bytes queued, over %d", n, budget)
		}
	}
	next <- 0
	if rest, st := reader.end(); st.Code() != codes.OK || len(rest) != 0 {
		t.Fatalf("the caller that reads ended with %d more results and %v", len(rest), st)
	}
	if d := metricValue(t, reg, "gqlbridge_events_dropped_total", map[string]string{"upstream": "up"}); d != 0 {
		t.Fatalf("%v results dropped for the caller that reads", d)
	}
	for _, s := range stuck {
		s.cancel()
	}
	waitUntil(t, "the queues to empty", func() bool { return svc.QueuedBytes() == 0 })
	if g := metricValue(t, reg, "gqlbridge_queued_bytes", nil); g != 0 {
		t.Fatalf("gqlbridge_queued_bytes %v after every stream ended", g)
	}
}
