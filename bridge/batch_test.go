package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gqlbridge/gqlbridge/bridge"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
)

// Tests of batched delivery (SubscribeRequest.max_batch) against the demo
// upstream. Which results share a batch depends on what is queued when the
// stream is ready to send; to make that deterministic, a valve holds the
// bridge's sends until the bridge has counted the results the test needs
// queued behind them.

// valve holds the messages the bridge sends on its streams, after the
// first pass of each stream, until it is released: the stream's pump
// blocks in Send as it does for a caller whose flow-control window is full,
// and the upstream's results queue behind it.
type valve struct {
	pass    int
	open    chan struct{}
	holding chan struct{} // closed when a send first waits
	once    sync.Once
	hold    sync.Once
}

func newValve(pass int) *valve {
	return &valve{pass: pass, open: make(chan struct{}), holding: make(chan struct{})}
}

func (v *valve) option() grpc.ServerOption {
	return grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return h(srv, &valveStream{ServerStream: ss, v: v})
	})
}

func (v *valve) release() { v.once.Do(func() { close(v.open) }) }

type valveStream struct {
	grpc.ServerStream
	v    *valve
	sent int
}

func (s *valveStream) SendMsg(m any) error {
	if s.sent >= s.v.pass {
		s.v.hold.Do(func() { close(s.v.holding) })
		select {
		case <-s.v.open:
		case <-s.Context().Done():
			return s.Context().Err()
		}
	}
	s.sent++
	return s.ServerStream.SendMsg(m)
}

// eventsIn is the bridge's count of results read from upstream. A result
// is counted once it is queued for the subscriber (or dropped).
func eventsIn(t *testing.T, reg *prometheus.Registry, upstream string) int {
	return int(metricValue(t, reg, "gqlbridge_events_in_total", map[string]string{"upstream": upstream}))
}

// batched opens a Subscribe call asking for max_batch.
func batched(t *testing.T, addr, upstream, query string, maxBatch uint32, opts ...grpc.DialOption) *stream {
	t.Helper()
	return open(t, bridgev1.NewSubscriptionServiceClient(dial(t, addr, opts...)),
		&bridgev1.SubscribeRequest{Upstream: upstream, Query: query, MaxBatch: maxBatch})
}

// readEvents reads until the stream ends (or stop says to stop, after the
// event it was given), returning every event and the status (nil when
// stopped).
func readEvents(t *testing.T, s *stream, stop func(*bridgev1.SubscribeResponse) bool) ([]*bridgev1.SubscribeResponse, *status.Status) {
	t.Helper()
	var events []*bridgev1.SubscribeResponse
	for {
		r, err := s.next()
		if errors.Is(err, io.EOF) {
			return events, status.New(codes.OK, "")
		}
		if err != nil {
			return events, status.Convert(err)
		}
		events = append(events, r)
		if stop != nil && stop(r) {
			return events, nil
		}
	}
}

// results checks that every event is a lifecycle or a batch of 1..max
// results, never a lone next, and returns the results in the order
// received and the size of each batch.
func results(t *testing.T, events []*bridgev1.SubscribeResponse, maxBatch int) (all []*bridgev1.Next, sizes []int) {
	t.Helper()
	for i, ev := range events {
		switch {
		case ev.GetBatch() != nil:
			n := len(ev.GetBatch().GetNexts())
			if n < 1 || n > maxBatch {
				t.Fatalf("event %d: a batch of %d results, want 1 to %d", i, n, maxBatch)
			}
			all = append(all, ev.GetBatch().GetNexts()...)
			sizes = append(sizes, n)
		case ev.GetLifecycle() != nil:
		default:
			t.Fatalf("event %d is %v: with max_batch %d every result comes in a batch", i, ev, maxBatch)
		}
	}
	return all, sizes
}

// TestBatchOrderAcrossBatches: 100 results queued behind a stalled stream
// arrive in batches of exactly max_batch (the last holds the rest), in
// order, numbered 1 to 100 without a gap; the stream then ends with OK.
func TestBatchOrderAcrossBatches(t *testing.T) {
	t.Parallel()
	const total, maxBatch = 100, 8
	demo := startDemo(t, demoupstream.Options{})
	cfg := bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL()), QueueSize: total}}}
	reg := withMetrics(&cfg)
	v := newValve(0)
	_, addr := serveTCP(t, cfg, v.option())
	s := batched(t, addr, "demo", fmt.Sprintf("subscription { ticker(count: %d, intervalMs: 0) { n } }", total), maxBatch)
	waitUntil(t, "every result queued", func() bool { return eventsIn(t, reg, "demo") == total })
	v.release()

	events, st := readEvents(t, s, nil)
	if st.Code() != codes.OK {
		t.Fatalf("status %v", st)
	}
	if events[0].GetLifecycle().GetState() != bridgev1.Lifecycle_STATE_SUBSCRIBED {
		t.Fatalf("first event %v", events[0])
	}
	all, sizes := results(t, events, maxBatch)
	checkOrdered(t, "batched caller", all, true, total)
	if len(all) != total {
		t.Fatalf("%d results, want %d", len(all), total)
	}
	want := []int{8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 4}
	if fmt.Sprint(sizes) != fmt.Sprint(want) {
		t.Fatalf("batch sizes %v, want %v", sizes, want)
	}
}

// TestBatchNeverWaits: at a low rate a batch holds the one result there is
// and arrives at once: the ticker's second tick is an hour away.
func TestBatchNeverWaits(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{})
	_, addr := serveTCP(t, bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL())}}})
	s := batched(t, addr, "demo", "subscription { ticker(count: 0, intervalMs: 3600000) { n } }", 16)
	s.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
	r, err := s.next()
	if err != nil {
		t.Fatal(err)
	}
	if b := r.GetBatch().GetNexts(); len(b) != 1 || b[0].Sequence != 1 || tickN(t, b[0]) != 1 {
		t.Fatalf("got %v, want a batch of tick 1 alone", r)
	}
}

// TestBatchByteCap: batches stop at server max_batch_bytes, well before
// max_batch: with 1 KiB results and a 4 KiB cap each batch holds three;
// each is at most the cap and one more result would have gone over it. A
// result larger than the cap travels alone.
func TestBatchByteCap(t *testing.T) {
	t.Parallel()
	const total, maxBytes = 40, 4096
	for _, tc := range []struct {
		name  string
		size  int
		sizes []int
	}{
		{"1 KiB results", 1000, []int{3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 1}},
		{"results over the cap", maxBytes + 1, slicesRepeat(1, total)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			demo := startDemo(t, demoupstream.Options{})
			cfg := bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL()), QueueSize: total}}, MaxBatchBytes: maxBytes}
			reg := withMetrics(&cfg)
			v := newValve(0)
			_, addr := serveTCP(t, cfg, v.option())
			s := batched(t, addr, "demo", fmt.Sprintf("subscription { ticker(count: %d, intervalMs: 0, size: %d) { n payload } }", total, tc.size), 16)
			waitUntil(t, "every result queued", func() bool { return eventsIn(t, reg, "demo") == total })
			v.release()
			events, st := readEvents(t, s, nil)
			if st.Code() != codes.OK {
				t.Fatalf("status %v", st)
			}
			all, sizes := results(t, events, 16)
			checkOrdered(t, "batched caller", all, true, total)
			if fmt.Sprint(sizes) != fmt.Sprint(tc.sizes) {
				t.Fatalf("batch sizes %v, want %v", sizes, tc.sizes)
			}
			var batches []*bridgev1.SubscribeResponse
			for _, ev := range events {
				if ev.GetBatch() != nil {
					batches = append(batches, ev)
				}
			}
			for i, b := range batches {
				n := proto.Size(b)
				if len(b.GetBatch().GetNexts()) == 1 {
					if tc.size > maxBytes && n <= maxBytes {
						t.Fatalf("batch %d: %d bytes, want a result over the %d-byte cap", i, n, maxBytes)
					}
					continue
				}
				if n > maxBytes {
					t.Fatalf("batch %d of %d results is %d bytes, over the %d-byte cap", i, len(b.GetBatch().GetNexts()), n, maxBytes)
				}
				if i+1 < len(batches) {
					grown := proto.Clone(b).(*bridgev1.SubscribeResponse)
					grown.GetBatch().Nexts = append(grown.GetBatch().Nexts, batches[i+1].GetBatch().GetNexts()[0])
					if proto.Size(grown) <= maxBytes {
						t.Fatalf("batch %d (%d bytes) ended although the next result fitted under the cap", i, n)
					}
				}
			}
		})
	}
}

func slicesRepeat(v, n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = v
	}
	return s
}

// TestBatchLifecycleBetweenBatches: results queue behind a stalled stream,
// then the upstream restarts: STATE_RECONNECTING (close 1001) and
// STATE_RESUBSCRIBED are queued after the results from before the restart
// and before those after it. Each lifecycle event ends the batch in
// progress and arrives as a lifecycle message between batches, in order;
// sequences go on across it without a gap while the ticks start over.
func TestBatchLifecycleBetweenBatches(t *testing.T) {
	t.Parallel()
	const maxBatch, before, after = 8, 20, 20
	demo := startDemo(t, demoupstream.Options{})
	addr := strings.TrimSuffix(strings.TrimPrefix(demo.URL(), "ws://"), "/graphql")
	cfg := bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL()), QueueSize: 1 << 20}}}
	reg := withMetrics(&cfg)
	v := newValve(0)
	_, baddr := serveTCP(t, cfg, v.option())
	s := batched(t, baddr, "demo", "subscription { ticker(count: 0, intervalMs: 1) { n } }", maxBatch)
	waitUntil(t, "results before the restart", func() bool { return eventsIn(t, reg, "demo") >= before })
	demo.Close()
	demo2 := startDemo(t, demoupstream.Options{Addr: addr})
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	if err := demo2.WaitFor(ctx, func(st demoupstream.Stats) bool { return st.SubscriptionsStarted == 1 }); err != nil {
		t.Fatalf("the operation did not restart: %v", err)
	}
	n0 := eventsIn(t, reg, "demo")
	waitUntil(t, "results after the restart", func() bool { return eventsIn(t, reg, "demo") >= n0+after })
	v.release()

	// Read until two full batches after STATE_RESUBSCRIBED.
	resubscribed, full := false, 0
	events, st := readEvents(t, s, func(r *bridgev1.SubscribeResponse) bool {
		if r.GetLifecycle().GetState() == bridgev1.Lifecycle_STATE_RESUBSCRIBED {
			resubscribed = true
		}
		if resubscribed && len(r.GetBatch().GetNexts()) == maxBatch {
			full++
		}
		return full == 2
	})
	if st != nil {
		t.Fatalf("stream ended: %v", st)
	}
	// SUBSCRIBED, full batches, the last one of the first run (full or
	// not), RECONNECTING (more of them if a redial failed), RESUBSCRIBED,
	// full batches.
	if events[0].GetLifecycle().GetState() != bridgev1.Lifecycle_STATE_SUBSCRIBED {
		t.Fatalf("first event %v", events[0])
	}
	i := 1
	seq, tick := uint64(0), 0
	for ; events[i].GetBatch() != nil; i++ {
		b := events[i].GetBatch().GetNexts()
		if len(b) != maxBatch && events[i+1].GetBatch() != nil {
			t.Fatalf("event %d: a batch of %d results before more results were sent: a batch ends only at max_batch or a lifecycle event", i, len(b))
		}
		for _, n := range b {
			seq++
			tick++
			if n.Sequence != seq || tickN(t, n) != tick {
				t.Fatalf("before the restart: sequence %d tick %d, want %d and %d", n.Sequence, tickN(t, n), seq, tick)
			}
		}
	}
	if seq < before {
		t.Fatalf("%d results before the restart, want at least %d", seq, before)
	}
	rc := events[i].GetLifecycle()
	if rc.GetState() != bridgev1.Lifecycle_STATE_RECONNECTING || rc.CloseCode != 1001 || rc.Attempt != 1 {
		t.Fatalf("event %d: %v, want STATE_RECONNECTING with close 1001, attempt 1", i, events[i])
	}
	for i++; events[i].GetLifecycle().GetState() == bridgev1.Lifecycle_STATE_RECONNECTING; i++ {
	}
	if events[i].GetLifecycle().GetState() != bridgev1.Lifecycle_STATE_RESUBSCRIBED {
		t.Fatalf("event %d: %v, want STATE_RESUBSCRIBED", i, events[i])
	}
	tick = 0
	for i++; i < len(events); i++ {
		b := events[i].GetBatch().GetNexts()
		if len(b) != maxBatch {
			t.Fatalf("event %d after STATE_RESUBSCRIBED: %v, want a full batch (%d results were queued)", i, events[i], after)
		}
		for _, n := range b {
			seq++
			tick++
			if n.Sequence != seq || tickN(t, n) != tick {
				t.Fatalf("after the restart: sequence %d tick %d, want %d and %d", n.Sequence, tickN(t, n), seq, tick)
			}
		}
	}
}

// TestBatchDropsShowAsGaps: a caller that asks for batches and does not
// read, on an upstream with a queue of 8 under drop_oldest, sees when it
// reads at last what gRPC had buffered and what the queue kept: in order,
// in batches of at most max_batch, with gaps in sequence where results
// were dropped (between batches or inside one), each counted.
func TestBatchDropsShowAsGaps(t *testing.T) {
	t.Parallel()
	const total, maxBatch = 2000, 16
	demo := startDemo(t, demoupstream.Options{})
	cfg := bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL()), QueueSize: 8, SlowPolicy: bridge.DropOldest}}}
	reg := withMetrics(&cfg)
	_, addr := serveTCP(t, cfg)
	s := batched(t, addr, "demo", fmt.Sprintf("subscription { ticker(count: %d, intervalMs: 0, size: 1024) { n payload } }", total), maxBatch, smallWindows...)
	// Nothing is read until the upstream sent everything.
	waitUntil(t, "every result read from upstream", func() bool { return eventsIn(t, reg, "demo") == total })

	events, st := readEvents(t, s, nil)
	if st.Code() != codes.OK {
		t.Fatalf("status %v", st)
	}
	all, _ := results(t, events, maxBatch)
	gaps := checkOrdered(t, "slow batched caller", all, false, total)
	if gaps == 0 && all[0].Sequence == 1 {
		t.Fatalf("received all %d results: nothing was dropped", len(all))
	}
	inside := 0
	for _, ev := range events {
		b := ev.GetBatch().GetNexts()
		for i := 1; i < len(b); i++ {
			if b[i].Sequence != b[i-1].Sequence+1 {
				inside++
			}
		}
	}
	t.Logf("%d results in %d events, %d gaps, %d of them inside a batch", len(all), len(events), gaps, inside)
	dropped := metricValue(t, reg, "gqlbridge_events_dropped_total", map[string]string{"upstream": "demo"})
	if dropped != float64(total-len(all)) {
		t.Fatalf("dropped counter %v, want %d", dropped, total-len(all))
	}
}

// TestBatchCancelMidBatch: the caller cancels while the bridge is sending a
// batch and holds more results queued; the call ends, and so does the
// upstream operation.
func TestBatchCancelMidBatch(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{})
	cfg := bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL()), QueueSize: 1 << 20}}}
	reg := withMetrics(&cfg)
	v := newValve(2) // SUBSCRIBED and the first batch; the second is held
	_, addr := serveTCP(t, cfg, v.option())
	s := batched(t, addr, "demo", "subscription { ticker(count: 0, intervalMs: 1) { n } }", 4)
	s.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
	if r, err := s.next(); err != nil || r.GetBatch() == nil {
		t.Fatalf("want a batch, got %v, %v", r, err)
	}
	<-v.holding
	waitUntil(t, "more results queued", func() bool { return eventsIn(t, reg, "demo") >= 20 })
	s.cancel()
	if _, err := s.next(); status.Code(err) != codes.Canceled {
		t.Fatalf("after cancel: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	if err := demo.WaitFor(ctx, func(st demoupstream.Stats) bool { return st.ActiveSubscriptions == 0 && st.SubscriptionsEnded == 1 }); err != nil {
		t.Fatalf("upstream operation did not end after cancel: %+v", demo.Stats())
	}
	waitUntil(t, "the call to end in the bridge", func() bool { return subscribers(t, reg, "demo") == 0 })
}

// TestBatchOverMaximum: max_batch above server max_batch is refused with
// INVALID_ARGUMENT naming the maximum; the maximum itself is accepted.
func TestBatchOverMaximum(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{})
	up := map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL())}}
	_, configured := serveTCP(t, bridge.Config{Upstreams: up, MaxBatch: 64})
	_, defaults := serveTCP(t, bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL())}}})
	const query = "subscription { ticker(count: 1, intervalMs: 0) { n } }"
	for _, tc := range []struct {
		addr     string
		maxBatch uint32
		max      int
	}{
		{configured, 65, 64},
		{configured, 1 << 31, 64},
		{configured, 1<<32 - 1, 64},
		{defaults, 1025, 1024},
	} {
		_, st := batched(t, tc.addr, "demo", query, tc.maxBatch).end()
		want := fmt.Sprintf("max_batch is %d; this bridge sends at most %d results per batch: ask for %d or fewer (0 or 1 for no batches)", tc.maxBatch, tc.max, tc.max)
		expectRefusal(t, st, codes.InvalidArgument, bridge.ReasonInvalidRequest, "demo", want, false)
	}
	for addr, maxBatch := range map[string]uint32{configured: 64, defaults: 1024} {
		if all, st := batched(t, addr, "demo", query, maxBatch).end(); st.Code() != codes.OK || len(all) != 0 {
			t.Fatalf("max_batch %d: %d lone results, %v", maxBatch, len(all), st)
		}
	}
}

// TestBatchOffSendsNext: a caller that leaves max_batch at 0 or sets 1 gets
// every result as its own next event, as before batching existed, even
// with many results queued.
func TestBatchOffSendsNext(t *testing.T) {
	t.Parallel()
	const total = 20
	for _, maxBatch := range []uint32{0, 1} {
		t.Run(fmt.Sprint(maxBatch), func(t *testing.T) {
			t.Parallel()
			demo := startDemo(t, demoupstream.Options{})
			cfg := bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL()), QueueSize: total}}}
			reg := withMetrics(&cfg)
			v := newValve(0)
			_, addr := serveTCP(t, cfg, v.option())
			s := batched(t, addr, "demo", fmt.Sprintf("subscription { ticker(count: %d, intervalMs: 0) { n } }", total), maxBatch)
			waitUntil(t, "every result queued", func() bool { return eventsIn(t, reg, "demo") == total })
			v.release()
			events, st := readEvents(t, s, nil)
			if st.Code() != codes.OK || len(events) != total+1 {
				t.Fatalf("%d events, status %v", len(events), st)
			}
			var all []*bridgev1.Next
			for _, ev := range events[1:] {
				if ev.GetNext() == nil {
					t.Fatalf("event %v, want next", ev)
				}
				all = append(all, ev.GetNext())
			}
			checkOrdered(t, "unbatched caller", all, true, total)
		})
	}
}
