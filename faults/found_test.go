package faults

import (
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2/toxics"

	"github.com/gqlbridge/gqlbridge/bridge"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// The tests in this file reproduce bugs that fault injection found; each
// failed before its fix (RELIABILITY.md, "Bugs found").

// TestOneWayBlackholeDetected: the bridge → upstream half of the connection
// goes dead (every byte the bridge sends is swallowed, nothing is closed)
// while the upstream keeps sending results. The connection is useless: a
// subscription started on it is never seen by the upstream, and a cancel
// never reaches it. The keep-alive must find out, as it does for the other
// half (TestBlackholeDetectedByKeepAlive).
//
// Found by this test: the keep-alive used to probe only after an interval
// with no inbound frame and count any inbound frame as proof of life, so the
// upstream's own results kept alive a connection that could not carry a
// single message upstream, and the late subscription heard STATE_SUBSCRIBED
// and then nothing, for ever. Now a probe goes out every interval and only
// its answer counts.
func TestOneWayBlackholeDetected(t *testing.T) {
	t.Parallel()
	demo := startDemo(t)
	px := startProxy(t, hostOf(t, demo.URL()))
	cfg := sessionConfig(px.url("/graphql"))
	cfg.KeepAlive, cfg.KeepAliveTimeout = 200*time.Millisecond, 300*time.Millisecond
	cfg.DialTimeout, cfg.AckTimeout = 500*time.Millisecond, 500*time.Millisecond
	r := startBridge(t, &bridge.Upstream{Session: cfg})
	ws := r.subscribeN(subscriptions, infinite)
	waitAll(t, r, ws, "first results", flowing(3))

	px.add("oneway", "timeout", "upstream", toxics.TimeoutToxic{Timeout: 0})
	late := r.subscribe("late", infinite)
	ws = append(ws, late)
	waitAll(t, r, ws, "STATE_RECONNECTING (the dead half detected)", reconnecting)
	px.remove("oneway")
	waitAll(t, r, ws, "results after the reconnect", func(v view) bool {
		rc := v.last(bridgev1.Lifecycle_STATE_RECONNECTING)
		return rc >= 0 && len(v.results(rc)) >= 3
	})
}

// TestSharedOperationNotYetStarted: the upstream does not answer at first.
// A subscriber that joins a shared (deduplicated) operation which has never
// started upstream must not hear STATE_SUBSCRIBED ("the upstream operation
// is started", docs/design.md §1) until it has; then, like the first subscriber,
// it hears it exactly once.
//
// Found by this test: fanout.OnEvent used to mark the operation subscribed
// on any lifecycle event, STATE_RECONNECTING from a failed first dial
// included, so the late joiner heard STATE_SUBSCRIBED at once and again
// when the operation really started: two subscribers of one operation were
// told different histories.
func TestSharedOperationNotYetStarted(t *testing.T) {
	t.Parallel()
	demo := startDemo(t)
	px := startProxy(t, hostOf(t, demo.URL()))
	// The upgrade request reaches the upstream; its answer never comes back.
	px.add("unanswered", "timeout", "downstream", toxics.TimeoutToxic{Timeout: 0})
	cfg := sessionConfig(px.url("/graphql"))
	cfg.DialTimeout = 200 * time.Millisecond
	r := startBridge(t, &bridge.Upstream{Session: cfg, Dedup: true})
	first := r.subscribe("first", infinite)
	first.waitFor(t, r, "STATE_RECONNECTING", reconnecting)
	joiner := r.subscribe("joiner", infinite)
	joiner.waitFor(t, r, "STATE_RECONNECTING", reconnecting)

	px.remove("unanswered")
	for _, w := range []*watcher{first, joiner} {
		v := w.waitFor(t, r, "results", func(v view) bool { return len(v.results(-1)) >= 3 })
		if n := v.count(bridgev1.Lifecycle_STATE_SUBSCRIBED); n != 1 {
			t.Errorf("%s heard STATE_SUBSCRIBED %d times, want once: %s", w.name, n, v)
		}
		if v.last(bridgev1.Lifecycle_STATE_SUBSCRIBED) < v.last(bridgev1.Lifecycle_STATE_RECONNECTING) {
			t.Errorf("%s heard STATE_SUBSCRIBED before the operation started: %s", w.name, v)
		}
	}
	if got := demo.Stats().ActiveSubscriptions; got != 1 {
		t.Errorf("the upstream runs %d operations, want 1 (shared)", got)
	}
}
