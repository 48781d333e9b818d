package bridge_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gqlbridge/gqlbridge/bridge"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
)

// TestThousandSubscribers runs 1,000 concurrent Subscribe calls through one
// bridge against the demo upstream: 500 on a deduplicating upstream (50
// distinct operations, 10 subscribers each) and 500 distinct ones. Every
// call must get STATE_SUBSCRIBED, its 3 results numbered 1..3, and OK; then
// the pool is empty and nothing leaks (the package's goleak check).
func TestThousandSubscribers(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 subscribers: not in -short")
	}
	t.Parallel()
	const (
		perHalf = 500
		groups  = 50
	)
	dedupDemo := startDemo(t, demoupstream.Options{})
	plainDemo := startDemo(t, demoupstream.Options{})
	// The gate holds both upstream connections until every subscriber
	// joined: all 1,000 calls are open at once, and each deduplicated one
	// sees its operation from the start.
	g := newGate()
	dsc, psc := fast(dedupDemo.URL()), fast(plainDemo.URL())
	dsc.Handshake, psc.Handshake = g.handshake, g.handshake
	cfg := bridge.Config{Upstreams: map[string]*bridge.Upstream{
		"dedup": {Session: dsc, Dedup: true},
		"plain": {Session: psc},
	}}
	reg := withMetrics(&cfg)
	e := startBridge(t, inMemory, cfg)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const query = "subscription($size: Int) { ticker(count: 3, intervalMs: 10, size: $size) { n } }"
	run := func(up string, size int) error {
		vars, err := structpb.NewStruct(map[string]any{"size": size})
		if err != nil {
			return err
		}
		s, err := e.client.Subscribe(ctx, &bridgev1.SubscribeRequest{Upstream: up, Query: query, Variables: vars})
		if err != nil {
			return err
		}
		r, err := s.Recv()
		if err != nil || r.GetLifecycle().GetState() != bridgev1.Lifecycle_STATE_SUBSCRIBED {
			return fmt.Errorf("%s: first event %v, %v", up, r, err)
		}
		for seq := uint64(1); seq <= 3; seq++ {
			r, err := s.Recv()
			if err != nil || r.GetNext().GetSequence() != seq || !bytes.Equal(compact(r.GetNext().GetResult()), fmt.Appendf(nil, `{"data":{"ticker":{"n":%d}}}`, seq)) {
				return fmt.Errorf("%s: want result %d, got %v, %v", up, seq, r, err)
			}
		}
		if r, err := s.Recv(); !errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: want OK after 3 results, got %v, %v", up, r, err)
		}
		return nil
	}

	errs := make(chan error, 2*perHalf)
	var wg sync.WaitGroup
	for i := range perHalf {
		wg.Go(func() { errs <- run("dedup", i%groups) })
		wg.Go(func() { errs <- run("plain", i) })
	}
	waitUntil(t, "1,000 subscribers to join", func() bool {
		return subscribers(t, reg, "dedup") == perHalf && subscribers(t, reg, "plain") == perHalf
	})
	if st := e.svc.Stats(); st["dedup"] != (bridge.UpstreamStats{Connections: 1, Operations: groups, Shared: groups}) ||
		st["plain"] != (bridge.UpstreamStats{Connections: 1, Operations: perHalf}) {
		t.Fatalf("pool before the upstreams answer: %+v", st)
	}
	close(g.open)
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			if failed++; failed <= 5 {
				t.Error(err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d subscribers failed", failed, 2*perHalf)
	}

	if st := dedupDemo.Stats(); st.SubscriptionsStarted != groups {
		t.Fatalf("dedup upstream ran %d operations, want %d", st.SubscriptionsStarted, groups)
	}
	if st := plainDemo.Stats(); st.SubscriptionsStarted != perHalf || st.Connections != 1 {
		t.Fatalf("plain upstream ran %d operations on %d connections, want %d on 1", st.SubscriptionsStarted, st.Connections, perHalf)
	}
	for _, up := range []string{"dedup", "plain"} {
		waitUntil(t, up+" to have no operations", func() bool {
			st := e.svc.Stats()[up]
			return st.Operations == 0 && st.Shared == 0 && subscribers(t, reg, up) == 0
		})
	}
	waitDemo(t, dedupDemo, "no active operations", func(st demoupstream.Stats) bool { return st.ActiveSubscriptions == 0 })
	waitDemo(t, plainDemo, "no active operations", func(st demoupstream.Stats) bool { return st.ActiveSubscriptions == 0 })
}

// compact removes insignificant whitespace from JSON (nil if invalid).
func compact(b []byte) []byte {
	var out bytes.Buffer
	if json.Compact(&out, b) != nil {
		return nil
	}
	return out.Bytes()
}
