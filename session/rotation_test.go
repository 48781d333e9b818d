package session

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gqlbridge/gqlbridge/internal/testpeer"
)

// TestRotationMakeBeforeBreak: the reference graphql-ws server closes every
// connection with 4401 when its token's lifetime ends. Knowing the expiry,
// the session moves its operations to a new connection with a fresh token
// before that, so the subscription never hears Reconnecting.
func TestRotationMakeBeforeBreak(t *testing.T) {
	t.Parallel()
	const ttl = 1500 * time.Millisecond
	peer := testpeer.StartNode(t, testpeer.NodeOptions{Protocol: testpeer.TransportWS, Token: "tok", TokenTTL: ttl})
	var expiring atomic.Int32
	c := dialTest(t, Config{URL: peer.URL, RotateBefore: time.Second,
		Handshake: func(ctx context.Context, a Attempt) (Handshake, error) {
			if a.Expiring {
				expiring.Add(1)
			}
			return Handshake{InitPayload: []byte(`{"Authorization":"Bearer tok"}`), Expiry: time.Now().Add(ttl)}, nil
		}})
	rec := newRecorder()
	op, err := c.Subscribe(Request{Query: "subscription { ticker(count: 0, intervalMs: 20) { n } }"}, rec)
	if err != nil {
		t.Fatal(err)
	}
	// Run across at least two token lifetimes.
	deadline := time.Now().Add(20 * time.Second)
	for expiring.Load() < 3 {
		if time.Now().After(deadline) {
			log, _ := rec.snapshot()
			t.Fatalf("%d rotations in 20s; log %v", expiring.Load(), log)
		}
		rec.waitNexts(t, len(rec.nextsSnapshot())+1)
	}
	n := len(rec.nextsSnapshot())
	rec.waitNexts(t, n+5) // still flowing after the third rotation
	op.Stop()
	log, _ := rec.snapshot()
	if strings.Contains(strings.Join(log, ","), "reconnecting") || log[0] != "subscribed" {
		t.Fatalf("the operation noticed a rotation: %v", log)
	}
	st := peer.Stats(t)
	if st.Inits < 3 {
		t.Fatalf("upstream saw %d connection_inits, want ≥ 3", st.Inits)
	}
	// Every rotation stopped the old operation: at most the current one runs.
	peer.WaitFor(t, func(s testpeer.Stats) bool { return s.Active == 0 })
}

func (r *recorder) nextsSnapshot() []string {
	_, n := r.snapshot()
	return n
}
