package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2/toxics"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gqlbridge/gqlbridge/bridge"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
	"github.com/gqlbridge/gqlbridge/internal/rpcstatus"
	"github.com/gqlbridge/gqlbridge/internal/testpeer"
	"github.com/gqlbridge/gqlbridge/session"
)

// Gapless resubscription (SubscribeRequest.resume) under faults. Every test
// follows an upstream event log (one event every eventInterval, appended
// whether or not anyone listens, surviving the upstream's restarts) through
// the bridge, across several outages of one kind, with three callers:
//
//   - "resumed": resume set, no starting cursor (starts at the live edge);
//   - "replayed": resume set, starting from cursor 0 (replays the log first);
//   - "plain": resume unset, the baseline: after each outage the bridge
//     resubscribes at the live edge, as a graphql-ws client reconnecting on
//     its own would.
//
// The callers with resume must see every id exactly once, every time; the
// test logs what each caller lost, the figure RELIABILITY.md reports.

const (
	// eventInterval is how often the upstream's log grows.
	eventInterval = 20 * time.Millisecond
	// downtime is how long each injected outage lasts.
	downtime = 800 * time.Millisecond
	// outages is how many outages each test runs through.
	outages = 3
	// eventsQuery follows the log from $after.
	eventsQuery = `subscription ($after: Int) { events(after: $after) { id } }`
)

var eventsResume = &bridgev1.Resume{CursorVariable: "after", CursorPointer: "/data/events/id"}

// caller is one of the three callers of a test.
type caller struct {
	name string
	req  *bridgev1.SubscribeRequest
	w    *watcher
}

func callers(r *rig) []*caller {
	replay, err := structpb.NewStruct(map[string]any{"after": 0})
	if err != nil {
		r.t.Fatal(err)
	}
	cs := []*caller{
		{name: "resumed", req: &bridgev1.SubscribeRequest{Upstream: upstreamName, Query: eventsQuery, Resume: eventsResume}},
		{name: "replayed", req: &bridgev1.SubscribeRequest{Upstream: upstreamName, Query: eventsQuery, Resume: eventsResume, Variables: replay}},
		{name: "plain", req: &bridgev1.SubscribeRequest{Upstream: upstreamName, Query: eventsQuery}},
	}
	for _, c := range cs {
		c.w = r.subscribeRequest(c.name, c.req)
	}
	return cs
}

// subscribeRequest is subscribe with a whole request.
func (r *rig) subscribeRequest(name string, req *bridgev1.SubscribeRequest) *watcher {
	r.t.Helper()
	ctx, cancel := context.WithCancel(r.ctx)
	s, err := r.client.Subscribe(ctx, req)
	if err != nil {
		cancel()
		r.t.Fatal(err)
	}
	w := &watcher{name: name, cancel: cancel, done: make(chan struct{}), changed: make(chan struct{})}
	go w.read(s)
	r.t.Cleanup(func() {
		cancel()
		<-w.done
	})
	return w
}

// eventIDs returns the event ids of results, in order.
func eventIDs(t *testing.T, results []*bridgev1.Next) []int {
	t.Helper()
	ids := make([]int, 0, len(results))
	for _, n := range results {
		var r struct {
			Data struct{ Events struct{ ID int } }
		}
		if err := json.Unmarshal(n.GetResult(), &r); err != nil || r.Data.Events.ID == 0 {
			t.Fatalf("result %d is not an event (%v): %s", n.GetSequence(), err, n.GetResult())
		}
		if want := fmt.Sprint(r.Data.Events.ID); n.GetCursor() != nil && string(n.GetCursor()) != want {
			t.Fatalf("result %d: event %s with cursor %s", n.GetSequence(), want, n.GetCursor())
		}
		ids = append(ids, r.Data.Events.ID)
	}
	return ids
}

// lost counts the ids missing and repeated in a run of ids.
func lost(ids []int) (missing, repeated int) {
	for i := 1; i < len(ids); i++ {
		switch d := ids[i] - ids[i-1]; {
		case d > 1:
			missing += d - 1
		case d < 1:
			repeated += 1 - d
		}
	}
	return missing, repeated
}

// resubscribedN holds once the stream heard n STATE_RESUBSCRIBED and then
// at least k results.
func resubscribedN(n, k int) func(view) bool {
	return func(v view) bool {
		return v.count(bridgev1.Lifecycle_STATE_RESUBSCRIBED) >= n && len(v.results(v.last(bridgev1.Lifecycle_STATE_RESUBSCRIBED))) >= k
	}
}

// hold keeps a fault in place for d: the outage's length is part of the
// fault injected, not a wait for something to happen.
func hold(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	<-t.C
}

// catchUp waits until the callers with resume, which may still be
// replaying what the outages held back, reach the last event the plain
// caller (at the live edge) received, so that the figures compare the same
// stretch of the log.
func catchUp(t *testing.T, r *rig, cs []*caller) {
	t.Helper()
	var edge int
	for _, c := range cs {
		if c.req.GetResume() == nil {
			ids := eventIDs(t, c.w.view().results(-1))
			edge = ids[len(ids)-1]
		}
	}
	for _, c := range cs {
		if c.req.GetResume() != nil {
			c.w.waitFor(t, r, fmt.Sprintf("event %d", edge), func(v view) bool {
				res := v.results(-1)
				return len(res) > 0 && eventIDs(t, res[len(res)-1:])[0] >= edge
			})
		}
	}
}

// report checks the callers after the outages: the ones with resume lost
// and repeated nothing, and every STATE_RESUBSCRIBED said so; the plain one
// heard gapless false. It logs the figures.
func report(t *testing.T, what string, cs []*caller) {
	t.Helper()
	for _, c := range cs {
		v := c.w.view()
		ids := eventIDs(t, v.results(-1))
		missing, repeated := lost(ids)
		resubs := 0
		for _, e := range v.events {
			if lc := e.GetLifecycle(); lc.GetState() == bridgev1.Lifecycle_STATE_RESUBSCRIBED {
				resubs++
				if lc.GetGapless() != (c.req.GetResume() != nil) {
					t.Fatalf("%s: STATE_RESUBSCRIBED with gapless %v; received %s", c.name, lc.GetGapless(), v)
				}
			}
		}
		t.Logf("%s, %s: %d events received, %d missing, %d repeated, over %d resubscriptions", what, c.name, len(ids), missing, repeated, resubs)
		if c.req.GetResume() != nil && (missing != 0 || repeated != 0) {
			t.Fatalf("%s with resume: %d events missing, %d repeated; received %s", c.name, missing, repeated, v)
		}
		if c.name == "replayed" && ids[0] != 1 {
			t.Fatalf("replayed from cursor 0, the first event is %d", ids[0])
		}
	}
}

// TestResumeUpstreamKilled: the reference server (Node) is killed and
// started again on its port; the proxy in front of it resets every
// connection until the downtime has passed since the kill (or the restart
// took longer). Its log goes on meanwhile.
func TestResumeUpstreamKilled(t *testing.T) {
	t.Parallel()
	peer := testpeer.StartNode(t, testpeer.NodeOptions{Protocol: testpeer.TransportWS, EventInterval: eventInterval})
	px := startProxy(t, hostOf(t, peer.URL))
	r := startBridge(t, &bridge.Upstream{Session: sessionConfig(px.url("/graphql")), Dedup: true})
	cs := callers(r)
	for _, c := range cs {
		c.w.waitFor(t, r, "first results", flowing(5))
	}
	for i := 1; i <= outages; i++ {
		px.add("down", "reset_peer", "downstream", toxics.ResetToxic{})
		px.add("down-up", "reset_peer", "upstream", toxics.ResetToxic{})
		down := time.Now()
		peer.Restart(t)
		if d := downtime - time.Since(down); d > 0 { // down for downtime, or the restart if longer
			hold(d)
		}
		px.remove("down")
		px.remove("down-up")
		for _, c := range cs {
			c.w.waitFor(t, r, fmt.Sprintf("resubscription %d", i), resubscribedN(i, 5))
		}
	}
	catchUp(t, r, cs)
	report(t, fmt.Sprintf("%d upstream kills (at least %v down each)", outages, downtime), cs)
}

// TestResumeConnectionReset: the proxy resets the connection to the gqlgen
// upstream, and every new one, for the downtime; the upstream process lives.
func TestResumeConnectionReset(t *testing.T) {
	t.Parallel()
	demo, err := demoupstream.Start(demoupstream.Options{EventInterval: eventInterval})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = demo.Close() })
	px := startProxy(t, hostOf(t, demo.URL()))
	r := startBridge(t, &bridge.Upstream{Session: sessionConfig(px.url("/graphql"))})
	cs := callers(r)
	for _, c := range cs {
		c.w.waitFor(t, r, "first results", flowing(5))
	}
	for i := 1; i <= outages; i++ {
		px.add("down", "reset_peer", "downstream", toxics.ResetToxic{})
		px.add("down-up", "reset_peer", "upstream", toxics.ResetToxic{})
		hold(downtime)
		px.remove("down")
		px.remove("down-up")
		for _, c := range cs {
			c.w.waitFor(t, r, fmt.Sprintf("resubscription %d", i), resubscribedN(i, 5))
		}
	}
	catchUp(t, r, cs)
	report(t, fmt.Sprintf("%d connection resets (%v down each)", outages, downtime), cs)
}

// TestResumeTokenExpiry: gqlgen closes every connection with 4401 when its
// token expires; the bridge refreshes the credential and resubscribes.
func TestResumeTokenExpiry(t *testing.T) {
	t.Parallel()
	demo, err := demoupstream.Start(demoupstream.Options{EventInterval: eventInterval, Token: "tok", TokenTTL: 700 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = demo.Close() })
	cfg := sessionConfig(demo.URL())
	var refreshes atomic.Int32
	cfg.Handshake = func(_ context.Context, a session.Attempt) (session.Handshake, error) {
		if a.Refresh {
			refreshes.Add(1)
		}
		return session.Handshake{InitPayload: json.RawMessage(`{"Authorization":"Bearer tok"}`)}, nil
	}
	r := startBridge(t, &bridge.Upstream{Session: cfg})
	cs := callers(r)
	for i := 1; i <= outages; i++ {
		for _, c := range cs {
			c.w.waitFor(t, r, fmt.Sprintf("resubscription %d", i), resubscribedN(i, 5))
		}
	}
	if n := refreshes.Load(); n < outages {
		t.Fatalf("%d credential refreshes, want ≥ %d", n, outages)
	}
	for _, c := range cs {
		if lc := c.w.view().first(bridgev1.Lifecycle_STATE_RECONNECTING); lc.GetCloseCode() != 4401 {
			t.Fatalf("%s: reconnect caused by %v, want 4401", c.name, lc)
		}
	}
	catchUp(t, r, cs)
	report(t, fmt.Sprintf("%d token expiries (4401)", outages), cs)
}

// TestResumeRotation: the credential's expiry is known, so the bridge moves
// every operation to a connection with a fresh credential before it
// expires, make-before-break. The callers hear nothing; with resume the
// new subscription continues exactly where the old one stopped.
func TestResumeRotation(t *testing.T) {
	t.Parallel()
	const ttl = 1200 * time.Millisecond
	peer := testpeer.StartNode(t, testpeer.NodeOptions{Protocol: testpeer.TransportWS, EventInterval: eventInterval, Token: "tok", TokenTTL: ttl})
	cfg := sessionConfig(peer.URL)
	cfg.RotateBefore = time.Second
	cfg.Handshake = func(context.Context, session.Attempt) (session.Handshake, error) {
		return session.Handshake{InitPayload: json.RawMessage(`{"Authorization":"Bearer tok"}`), Expiry: time.Now().Add(ttl)}, nil
	}
	r := startBridge(t, &bridge.Upstream{Session: cfg})
	cs := callers(r)
	rotations := func() int {
		n := 0
		for _, e := range r.svc.Snapshot().Upstreams[0].Events {
			if e.Kind == bridge.EventRotated {
				n++
			}
		}
		return n
	}
	for i := 1; i <= outages; i++ {
		waitUntil(t, fmt.Sprintf("rotation %d", i), func() bool { return rotations() >= i })
		for _, c := range cs {
			n := len(c.w.view().results(-1))
			c.w.waitFor(t, r, "results after the rotation", func(v view) bool { return len(v.results(-1)) >= n+5 })
		}
	}
	for _, c := range cs {
		if v := c.w.view(); v.count(bridgev1.Lifecycle_STATE_RECONNECTING) > 0 {
			t.Fatalf("%s heard a rotation: %s", c.name, v)
		}
	}
	catchUp(t, r, cs)
	report(t, fmt.Sprintf("%d credential rotations", outages), cs)
}

// TestResumeOnAnotherReplica: the bridge replica serving the callers drains;
// each caller's stream ends with UNAVAILABLE and RetryInfo, and the caller
// subscribes again on another replica (another bridge.Server) after the
// delay RetryInfo asks for, with variables.after set to the cursor of the
// last result it received when it has resume. The replicas share nothing
// but the upstream.
func TestResumeOnAnotherReplica(t *testing.T) {
	t.Parallel()
	demo, err := demoupstream.Start(demoupstream.Options{EventInterval: eventInterval})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = demo.Close() })
	replica := func() *rig { return startBridge(t, &bridge.Upstream{Session: sessionConfig(demo.URL()), Dedup: true}) }
	r := replica()
	cs := callers(r)
	// What each caller received on the replicas drained so far.
	got := map[*caller][]*bridgev1.Next{}
	for i := 1; i <= outages; i++ {
		for _, c := range cs {
			c.w.waitFor(t, r, "results", func(v view) bool { return len(v.results(-1)) >= 5 })
		}
		next := replica()
		r.svc.Drain(context.Background(), 0)
		drained := time.Now()
		for _, c := range cs {
			v := c.w.waitEnd(t, r)
			if v.st.Code() != codes.Unavailable || !strings.Contains(v.st.Message(), "subscribe again") {
				t.Fatalf("%s: the drained stream ended with %v", c.name, v.st)
			}
			results := v.results(-1)
			got[c] = append(got[c], results...)
			if ri := rpcstatus.RetryInfo(v.st); ri != nil {
				// Each caller honours its own RetryInfo, counted from the
				// drain (not after the callers handled before it).
				if d := time.Until(drained.Add(ri.GetRetryDelay().AsDuration())); d > 0 {
					hold(d)
				}
			}
			req := c.req
			if req.GetResume() != nil {
				// Resume where this stream stopped, from the cursor of its
				// last result.
				var cursor any
				if err := json.Unmarshal(results[len(results)-1].GetCursor(), &cursor); err != nil {
					t.Fatal(err)
				}
				vars, err := structpb.NewStruct(map[string]any{"after": cursor})
				if err != nil {
					t.Fatal(err)
				}
				req = &bridgev1.SubscribeRequest{Upstream: req.GetUpstream(), Query: req.GetQuery(), Resume: req.GetResume(), Variables: vars}
			}
			c.w = next.subscribeRequest(c.name, req)
		}
		r = next
	}
	for _, c := range cs {
		c.w.waitFor(t, r, "results on the last replica", func(v view) bool { return len(v.results(-1)) >= 5 })
	}
	catchUp(t, r, cs)
	for _, c := range cs {
		v := c.w.view()
		ids := eventIDs(t, append(got[c], v.results(-1)...))
		missing, repeated := lost(ids)
		t.Logf("%d replica drains, %s: %d events received, %d missing, %d repeated", outages, c.name, len(ids), missing, repeated)
		if c.req.GetResume() != nil && (missing != 0 || repeated != 0) {
			t.Fatalf("%s with resume: %d events missing, %d repeated across the replicas", c.name, missing, repeated)
		}
	}
}
