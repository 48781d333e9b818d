package bridge_test

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gqlbridge/gqlbridge/bridge"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
)

const tickQuery = "subscription Tick($count: Int, $interval: Int) { ticker(count: $count, intervalMs: $interval) { n } }"

func mustStruct(t *testing.T, js string) *structpb.Struct {
	t.Helper()
	var st structpb.Struct
	if err := protojson.Unmarshal([]byte(js), &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

func waitDemo(t *testing.T, demo *demoupstream.Server, what string, cond func(demoupstream.Stats) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	if err := demo.WaitFor(ctx, cond); err != nil {
		t.Fatalf("upstream: timed out waiting for %s: %+v", what, demo.Stats())
	}
}

func expectStats(t *testing.T, svc *bridge.Server, upstream string, want bridge.UpstreamStats) {
	t.Helper()
	if got := svc.Stats()[upstream]; got != want {
		t.Fatalf("bridge stats for %s: %+v, want %+v", upstream, got, want)
	}
}

// TestDedupSharesOneOperation: identical subscriptions (variables in a
// different key order included) run as one upstream operation; every
// subscriber gets every event with its own sequence; the operation ends when
// its last subscriber leaves, not before, and the bridge stops it itself
// (the connection stays: its idle grace period is an hour here;
// TestPoolIdleTimeout covers the close).
func TestDedupSharesOneOperation(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{})
	g := newGate()
	sc := fast(demo.URL())
	sc.Handshake = g.handshake
	cfg := bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: sc, Dedup: true, IdleTimeout: time.Hour}}}
	reg := withMetrics(&cfg)
	e := startBridge(t, inMemory, cfg)

	vars := []string{
		`{"count": 0, "interval": 10, "meta": {"a": 1, "b": [1, {"x": true, "y": null}]}}`,
		`{"interval": 10, "count": 0, "meta": {"b": [1, {"y": null, "x": true}], "a": 1}}`,
		`{"meta": {"a": 1.0, "b": [1, {"x": true, "y": null}]}, "interval": 10, "count": 0}`,
		`{"count": 0, "meta": {"b": [1e0, {"x": true, "y": null}], "a": 1}, "interval": 1e1}`,
		`{"interval": 10, "meta": {"a": 1, "b": [1, {"x": true, "y": null}]}, "count": 0}`,
	}
	streams := make([]*stream, len(vars))
	for i, v := range vars {
		streams[i] = e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "demo", Query: tickQuery, OperationName: "Tick", Variables: mustStruct(t, v)})
	}
	waitUntil(t, "5 subscribers", func() bool { return subscribers(t, reg, "demo") == 5 })
	expectStats(t, e.svc, "demo", bridge.UpstreamStats{Connections: 1, Operations: 1, Shared: 1})
	close(g.open)

	// Every subscriber sees the same first three results, numbered 1, 2, 3.
	var first [][]byte
	for i, s := range streams {
		s.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
		for seq := uint64(1); seq <= 3; seq++ {
			n := s.expectNext()
			if n.Sequence != seq || tickN(t, n) != int(seq) {
				t.Fatalf("subscriber %d: result %q has sequence %d, want %d", i, n.Result, n.Sequence, seq)
			}
			if i == 0 {
				first = append(first, n.Result)
			} else if !bytes.Equal(n.Result, first[seq-1]) {
				t.Fatalf("subscriber %d got %q, subscriber 0 got %q", i, n.Result, first[seq-1])
			}
		}
	}
	if st := demo.Stats(); st.SubscriptionsStarted != 1 || st.ActiveSubscriptions != 1 {
		t.Fatalf("upstream ran %d operations (%d active), want 1", st.SubscriptionsStarted, st.ActiveSubscriptions)
	}

	// readOn checks that a stream keeps receiving in order. The sequence
	// equals the tick number: this subscriber saw the operation from its start.
	readOn := func(i int, s *stream) {
		t.Helper()
		prev := uint64(0)
		for range 2 {
			n := s.expectNext()
			if n.Sequence <= prev || tickN(t, n) != int(n.Sequence) {
				t.Fatalf("subscriber %d: result %q with sequence %d after %d", i, n.Result, n.Sequence, prev)
			}
			prev = n.Sequence
		}
	}

	// The first leaver does not end the upstream operation.
	streams[0].cancel()
	waitUntil(t, "the first subscriber to leave", func() bool { return subscribers(t, reg, "demo") == 4 })
	for i, s := range streams[1:] {
		readOn(i+1, s)
	}
	if st := demo.Stats(); st.ActiveSubscriptions != 1 || st.SubscriptionsEnded != 0 || st.SubscriptionsStarted != 1 {
		t.Fatalf("upstream after the first leaver: %+v", st)
	}
	// Nor do the next three.
	for _, s := range streams[1:4] {
		s.cancel()
	}
	waitUntil(t, "three more subscribers to leave", func() bool { return subscribers(t, reg, "demo") == 1 })
	readOn(4, streams[4])
	if st := demo.Stats(); st.ActiveSubscriptions != 1 || st.SubscriptionsEnded != 0 || st.SubscriptionsStarted != 1 {
		t.Fatalf("upstream with one subscriber left: %+v", st)
	}
	// One subscriber left: the operation is no longer shared.
	expectStats(t, e.svc, "demo", bridge.UpstreamStats{Connections: 1, Operations: 1, Shared: 0})

	// The last leaver ends it: the bridge stops the operation on the open
	// connection.
	streams[4].cancel()
	waitDemo(t, demo, "the operation to end", func(st demoupstream.Stats) bool {
		return st.ActiveSubscriptions == 0 && st.SubscriptionsEnded == 1
	})
	if st := demo.Stats(); st.Connections != 1 {
		t.Fatalf("upstream %+v: the connection closed, want only the operation stopped", st)
	}
	waitUntil(t, "the pool to drop the operation", func() bool {
		return e.svc.Stats()["demo"] == bridge.UpstreamStats{Connections: 1}
	})
	if n := g.dials.Load(); n != 1 {
		t.Fatalf("%d dials, want 1", n)
	}
}

// TestDedupDistinguishes: different variables or operation names are
// different operations; an identical request joins the running one.
func TestDedupDistinguishes(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{})
	cfg := bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL()), Dedup: true}}}
	reg := withMetrics(&cfg)
	e := startBridge(t, inMemory, cfg)
	const twoOps = "subscription A { ticker(count: 0, intervalMs: 10) { n } } subscription B { ticker(count: 0, intervalMs: 10) { n } }"
	reqs := []*bridgev1.SubscribeRequest{
		{Upstream: "demo", Query: tickQuery, Variables: mustStruct(t, `{"count": 0, "interval": 10}`)},
		{Upstream: "demo", Query: tickQuery, Variables: mustStruct(t, `{"count": 0, "interval": 11}`)},
		{Upstream: "demo", Query: twoOps, OperationName: "A"},
		{Upstream: "demo", Query: twoOps, OperationName: "B"},
		{Upstream: "demo", Query: tickQuery, Variables: mustStruct(t, `{"interval": 10, "count": 0}`)}, // = the first
	}
	for i, r := range reqs {
		s := e.subscribe(t, r)
		s.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
		s.expectNext()
		if want := min(i+1, 4); int(demo.Stats().SubscriptionsStarted) != want {
			t.Fatalf("after request %d the upstream ran %d operations, want %d", i, demo.Stats().SubscriptionsStarted, want)
		}
	}
	if n := subscribers(t, reg, "demo"); n != 5 {
		t.Fatalf("%d subscribers, want 5", n)
	}
	// Of the four operations only the first has two subscribers: the others
	// are deduplicable but shared with no one.
	expectStats(t, e.svc, "demo", bridge.UpstreamStats{Connections: 1, Operations: 4, Shared: 1})
}

// TestDedupOff: without deduplication identical subscriptions are separate
// upstream operations on one connection.
func TestDedupOff(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{})
	e := startBridge(t, inMemory, bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL())}}})
	for range 5 {
		s := e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "demo", Query: infiniteTicker})
		s.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
		if n := s.expectNext(); n.Sequence != 1 || tickN(t, n) != 1 {
			t.Fatalf("first result %q, sequence %d", n.Result, n.Sequence)
		}
	}
	if st := demo.Stats(); st.SubscriptionsStarted != 5 || st.ActiveSubscriptions != 5 || st.Connections != 1 {
		t.Fatalf("upstream %+v, want 5 operations on 1 connection", st)
	}
	expectStats(t, e.svc, "demo", bridge.UpstreamStats{Connections: 1, Operations: 5, Shared: 0})
}

// TestDedupLateJoiner documents what a subscriber joining a running
// deduplicated operation sees: STATE_SUBSCRIBED at once (the operation is
// already running upstream), then the live events from the moment it
// joined, numbered from 1 in its own sequence. Nothing is replayed: the
// events it missed are gone (a subscription has no history). Had the
// operation been reconnecting, STATE_RECONNECTING would follow.
func TestDedupLateJoiner(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{})
	e := startBridge(t, inMemory, bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL()), Dedup: true}}})
	req := &bridgev1.SubscribeRequest{Upstream: "demo", Query: infiniteTicker}
	a := e.subscribe(t, req)
	a.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
	a.expectNext()
	a.expectNext()

	b := e.subscribe(t, req)
	b.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
	nb := b.expectNext()
	joinedAt := tickN(t, nb)
	if nb.Sequence != 1 || joinedAt < 3 {
		t.Fatalf("late joiner's first result: tick %d with sequence %d; want a live tick (>= 3) numbered 1", joinedAt, nb.Sequence)
	}
	nb2 := b.expectNext()
	if nb2.Sequence != 2 || tickN(t, nb2) != joinedAt+1 {
		t.Fatalf("late joiner's second result: tick %d with sequence %d", tickN(t, nb2), nb2.Sequence)
	}
	// The first subscriber saw the same tick under its own sequence.
	for {
		na := a.expectNext()
		if n := tickN(t, na); n == joinedAt {
			if na.Sequence != uint64(joinedAt) || !bytes.Equal(na.Result, nb.Result) {
				t.Fatalf("first subscriber: %q with sequence %d, late joiner %q", na.Result, na.Sequence, nb.Result)
			}
			break
		} else if n > joinedAt {
			t.Fatalf("first subscriber skipped tick %d", joinedAt)
		}
	}
	if st := demo.Stats(); st.SubscriptionsStarted != 1 {
		t.Fatalf("upstream ran %d operations, want 1", st.SubscriptionsStarted)
	}
}

// TestPoolMaxOpsPerConn: a full connection makes the pool open another.
func TestPoolMaxOpsPerConn(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{})
	e := startBridge(t, inMemory, bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL()), MaxOpsPerConn: 2}}})
	for i := range 5 {
		s := e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "demo", Query: tickQuery,
			Variables: mustStruct(t, `{"count": 0, "interval": `+string(rune('1'+i))+`0}`)})
		s.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
		s.expectNext()
	}
	if st := demo.Stats(); st.Connections != 3 || st.ActiveSubscriptions != 5 {
		t.Fatalf("upstream %+v, want 5 operations on 3 connections", st)
	}
	expectStats(t, e.svc, "demo", bridge.UpstreamStats{Connections: 3, Operations: 5})
	var perConn []int
	for _, c := range e.svc.Snapshot().Upstreams[0].Connections {
		perConn = append(perConn, c.Operations)
	}
	slices.Sort(perConn)
	if !slices.Equal(perConn, []int{1, 2, 2}) {
		t.Fatalf("operations per connection %v, want [1 2 2]", perConn)
	}
}

// TestPoolConcurrentFirstSubscribers: 20 subscribers arriving together while
// the first connection is still being made share that one dial.
func TestPoolConcurrentFirstSubscribers(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{})
	g := newGate()
	sc := fast(demo.URL())
	sc.Handshake = g.handshake
	cfg := bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: sc}}}
	reg := withMetrics(&cfg)
	e := startBridge(t, inMemory, cfg)

	const n = 20
	start := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-start
			s, err := e.client.Subscribe(t.Context(), &bridgev1.SubscribeRequest{Upstream: "demo", Query: infiniteTicker})
			if err != nil {
				errs <- err
				return
			}
			for range 2 { // STATE_SUBSCRIBED, then a result
				if _, err := s.Recv(); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		})
	}
	close(start)
	waitUntil(t, "20 subscribers", func() bool { return subscribers(t, reg, "demo") == n })
	// All attached while the first connection waits in its handshake.
	expectStats(t, e.svc, "demo", bridge.UpstreamStats{Connections: 1, Operations: n})
	close(g.open)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if st := demo.Stats(); st.Connections != 1 || st.ActiveSubscriptions != n {
		t.Fatalf("upstream %+v, want %d operations on 1 connection", st, n)
	}
	if d := g.dials.Load(); d != 1 {
		t.Fatalf("%d dials, want 1", d)
	}
	expectStats(t, e.svc, "demo", bridge.UpstreamStats{Connections: 1, Operations: n})
	t.Cleanup(wg.Wait) // the streams end with the test's context
}

// TestPoolIdleTimeout: a connection without operations closes after the
// idle grace period, and is reused while the period runs.
func TestPoolIdleTimeout(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{})
	short, long := newGate(), newGate()
	close(short.open)
	close(long.open)
	shortSC, longSC := fast(demo.URL()), fast(demo.URL())
	shortSC.Handshake, longSC.Handshake = short.handshake, long.handshake
	e := startBridge(t, inMemory, bridge.Config{Upstreams: map[string]*bridge.Upstream{
		"short": {Session: shortSC, IdleTimeout: 100 * time.Millisecond},
		"long":  {Session: longSC, IdleTimeout: time.Hour},
	}})
	once := &bridgev1.SubscribeRequest{Query: "subscription { ticker(count: 2, intervalMs: 1) { n } }"}
	run := func(up string) {
		t.Helper()
		once.Upstream = up
		if res, st := e.subscribe(t, once).end(); st.Err() != nil || len(res) != 2 {
			t.Fatalf("%s: %d results, %v", up, len(res), st)
		}
	}

	run("long")
	waitUntil(t, "the operation to leave the pool", func() bool { return e.svc.Stats()["long"].Operations == 0 })
	// Within the grace period (an hour) the connection stays and is reused.
	expectStats(t, e.svc, "long", bridge.UpstreamStats{Connections: 1})
	run("long")
	if d := long.dials.Load(); d != 1 {
		t.Fatalf("long: %d dials, want 1 (the idle connection reused)", d)
	}

	run("short")
	waitUntil(t, "the idle connection to close", func() bool { return e.svc.Stats()["short"] == bridge.UpstreamStats{} })
	waitDemo(t, demo, "only the long-lived connection to remain", func(st demoupstream.Stats) bool { return st.Connections == 1 })
	// The next subscription dials again.
	run("short")
	if d := short.dials.Load(); d != 2 {
		t.Fatalf("short: %d dials, want 2", d)
	}
}
