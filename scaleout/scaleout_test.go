package scaleout

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/gqlbridge/gqlbridge/internal/testpeer"
)

const (
	replicas = 3
	goSubs   = 250
	nodeSubs = 50
	// The subscriptions tick every 300 ms (the first) to 599 ms (the last).
	firstInterval = 300
	// waitTimeout bounds each wait for a condition, to detect a hang only.
	waitTimeout = 45 * time.Second
)

// TestScaleOut runs three `bridge serve` processes in front of one real
// upstream (the graphql-ws reference server), with 250 Go subscriptions
// (package client) and 50 Node ones (@grpc/grpc-js through
// examples/clients/node/bridge-client.cjs), every caller balancing over the
// three with round robin. Then:
//
//   - drain: SIGTERM one replica. Exactly its subscribers see UNAVAILABLE
//     BRIDGE_DRAINING with RetryInfo (delays not all equal), resubscribe on
//     the others and receive again; it closes its upstream sockets with 1001
//     and exits 0; the upstream runs one operation per subscription.
//   - rolling restart: each replica in turn is stopped and replaced by a new
//     process on its address, the next one only once the new one's /readyz
//     answers; no subscription is lost and no caller sees a terminal error.
//   - crash: SIGKILL a replica. Its subscribers see UNAVAILABLE without
//     ErrorInfo (their transport's, not the bridge's) and recover.
//
// Durations (time to resubscribe, drain to exit) are measured and logged,
// never asserted; RELIABILITY.md records them.
func TestScaleOut(t *testing.T) {
	upstream := testpeer.StartNode(t, testpeer.NodeOptions{Protocol: testpeer.TransportWS})
	ips := loopbackIPs(replicas)
	gen := make([]int, replicas)
	tag := func(i int) string { gen[i]++; return fmt.Sprintf("r%d.%d", i, gen[i]) }
	reps := make([]*replica, replicas)
	for i := range reps {
		reps[i] = startReplica(t, ips[i], "", upstream.URL, tag(i))
	}
	addrs := make([]string, replicas)
	for i, r := range reps {
		addrs[i] = r.addr
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	f := &fleet{}
	conn := dialReplicas(ctx, t, addrs)
	subCtx, stopSubs := context.WithCancel(ctx)
	defer stopSubs()
	waitGo := startGoCallers(subCtx, t, conn, f, goSubs, firstInterval)
	node := startNodeCaller(t, "ipv4:"+strings.Join(addrs, ","), f, nodeSubs, firstInterval+goSubs)

	f.waitAll(t, "every subscription live", waitTimeout, func(s snapshot) bool { return s.results > 0 && s.peer != "" })
	spread := map[string]map[string]int{}
	for _, s := range f.snaps() {
		if spread[s.peer] == nil {
			spread[s.peer] = map[string]int{}
		}
		spread[s.peer][s.lang]++
	}
	t.Logf("subscriptions per replica: %v", spread)
	// Distinct variables: no deduplication, one upstream operation each.
	upstream.WaitFor(t, func(s testpeer.Stats) bool { return s.Active == goSubs+nodeSubs })

	var downs = map[string][]time.Duration{}
	var drainExit []time.Duration

	// Drain: SIGTERM replica 0.
	{
		victim := reps[0]
		victims := map[int]bool{}
		for _, s := range f.snaps() {
			if s.peer == victim.addr {
				victims[s.id] = true
			}
		}
		if len(victims) == 0 {
			t.Fatalf("no subscription on %s to drain; spread %v", victim.addr, spread)
		}
		mark := time.Now()
		d := victim.terminate(t)
		drainExit = append(drainExit, d)
		exited := time.Now()
		f.waitAll(t, "every subscription receives after the drained replica exited", waitTimeout, func(s snapshot) bool {
			return s.lastResult.After(exited) && s.peer != "" && s.peer != victim.addr
		})
		delays := map[time.Duration]bool{}
		for _, s := range f.snaps() {
			retries := s.retriesSince(mark)
			if !victims[s.id] {
				if len(retries) > 0 {
					t.Errorf("%s#%d was not on the drained replica but retried: %+v", s.lang, s.id, retries)
				}
				continue
			}
			if len(retries) == 0 {
				t.Errorf("%s#%d was on the drained replica and never retried", s.lang, s.id)
				continue
			}
			r := retries[0]
			if r.code != codes.Unavailable || r.reason != "BRIDGE_DRAINING" || !r.retryInfo || r.retryDelay <= 0 || r.peer != victim.addr {
				t.Errorf("%s#%d: first end after SIGTERM %+v, want UNAVAILABLE BRIDGE_DRAINING with RetryInfo from %s", s.lang, s.id, r, victim.addr)
			}
			delays[r.retryDelay] = true
			for _, rs := range s.resubsSince(mark) {
				downs["drain"] = append(downs["drain"], rs.down)
			}
		}
		if len(delays) < 2 {
			t.Errorf("the drained replica's %d subscribers all got the same RetryInfo delay %v: resubscribes are not spread", len(victims), slices.Collect(maps.Keys(delays)))
		}
		checkUpstream(t, upstream, victim.tag, true, 1001)
		t.Logf("drain: %d subscriptions moved off %s (%d distinct RetryInfo delays); drain to exit %s", len(victims), victim.tag, len(delays), ms(d))
		// Scale back to three: a new process on the same address.
		reps[0] = startReplica(t, ips[0], victim.addr, upstream.URL, tag(0))
	}

	// Rolling restart, one replica at a time, gated on readiness. The
	// replica restarted after the drain serves nobody yet: it goes last.
	{
		mark := time.Now()
		var old []string
		for _, i := range []int{1, 2, 0} {
			r := reps[i]
			d := r.terminate(t)
			drainExit = append(drainExit, d)
			reps[i] = startReplica(t, ips[i], r.addr, upstream.URL, tag(i))
			old = append(old, r.tag)
			t.Logf("rolling restart: %s replaced by %s; SIGTERM to exit %s", r.tag, reps[i].tag, ms(d))
		}
		done := time.Now()
		f.waitAll(t, "every subscription receives after the rolling restart", waitTimeout, func(s snapshot) bool {
			return s.lastResult.After(done) && s.peer != ""
		})
		for _, tag := range old {
			checkUpstream(t, upstream, tag, false, 1001)
		}
		for _, s := range f.snaps() {
			if s.ended {
				t.Errorf("%s#%d ended during the rolling restart: %s", s.lang, s.id, s.end)
			}
			for _, rs := range s.resubsSince(mark) {
				downs["rolling restart"] = append(downs["rolling restart"], rs.down)
			}
		}
	}

	// Crash: SIGKILL the replica that serves the most subscriptions.
	{
		count := map[string]int{}
		for _, s := range f.snaps() {
			count[s.peer]++
		}
		victim := reps[0]
		for _, r := range reps {
			if count[r.addr] > count[victim.addr] {
				victim = r
			}
		}
		victims := map[int]bool{}
		for _, s := range f.snaps() {
			if s.peer == victim.addr {
				victims[s.id] = true
			}
		}
		if len(victims) == 0 {
			t.Fatalf("no subscription on any replica: %v", count)
		}
		mark := time.Now()
		victim.kill(t)
		killed := time.Now()
		f.waitAll(t, "every subscription receives after the crash", waitTimeout, func(s snapshot) bool {
			return s.lastResult.After(killed) && s.peer != "" && s.peer != victim.addr
		})
		for _, s := range f.snaps() {
			retries := s.retriesSince(mark)
			if !victims[s.id] {
				if len(retries) > 0 {
					t.Errorf("%s#%d was not on the killed replica but retried: %+v", s.lang, s.id, retries)
				}
				continue
			}
			if len(retries) == 0 || retries[0].code != codes.Unavailable || retries[0].reason != "" || retries[0].retryInfo {
				t.Errorf("%s#%d was on the killed replica: ends %+v, want UNAVAILABLE from its own transport first", s.lang, s.id, retries)
			}
			for _, rs := range s.resubsSince(mark) {
				downs["crash"] = append(downs["crash"], rs.down)
			}
		}
		checkUpstream(t, upstream, victim.tag, true, 1006)
		t.Logf("crash: %d subscriptions moved off %s", len(victims), victim.tag)
	}

	for _, phase := range []string{"drain", "rolling restart", "crash"} {
		p50, p99, worst := percentiles(downs[phase])
		t.Logf("time to resubscribe after %s: n=%d p50=%s p99=%s max=%s", phase, len(downs[phase]), ms(p50), ms(p99), ms(worst))
	}
	p50, p99, worst := percentiles(drainExit)
	t.Logf("SIGTERM to exit: n=%d p50=%s p99=%s max=%s (drain_grace %s)", len(drainExit), ms(p50), ms(p99), ms(worst), drainGrace)

	// Every caller ends by cancelling, never with an error.
	node.stop(t)
	stopSubs()
	waitGo()
	for _, s := range f.snaps() {
		want := "context canceled"
		if s.lang == "node" {
			want = "cancelled"
		}
		if !s.ended || s.end != want {
			t.Errorf("%s#%d ended %v %s, want %s", s.lang, s.id, s.ended, s.end, want)
		}
	}
	for _, r := range reps {
		select {
		case <-r.done: // the killed one
		default:
			r.terminate(t)
		}
	}
}

// checkUpstream waits until the upstream has no open socket of the replica
// tagged tag (and saw at least one end when served is set), and runs
// exactly one operation per subscription; then every socket of that
// replica must have ended with code.
func checkUpstream(t *testing.T, upstream *testpeer.Node, tag string, served bool, code int) {
	t.Helper()
	upstream.WaitFor(t, func(s testpeer.Stats) bool {
		open, closes := upstreamTags(t, s)
		return open[tag] == 0 && (!served || len(closes[tag]) > 0) && s.Active == goSubs+nodeSubs
	})
	_, closes := upstreamTags(t, upstream.Stats(t))
	for _, c := range closes[tag] {
		if c != code {
			t.Errorf("an upstream socket of %s ended with %d, want %d (all: %v)", tag, c, code, closes[tag])
		}
	}
}
