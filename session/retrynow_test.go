package session

import (
	"net/http"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// TestRetryNowInFakeTime: a Conn waiting out a long backoff (50s here)
// dials again within the first backoff step once told the upstream is back;
// a wait the upstream asked for with Retry-After is kept.
func TestRetryNowInFakeTime(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		retryAfter bool // the second attempt is refused with 503 and Retry-After: 30
		want       func(nudged, ready time.Duration) bool
		wantText   string
	}{
		{"backoff cut short", false, func(n, r time.Duration) bool { return r-n <= 100*time.Millisecond }, "within the first backoff step (100ms)"},
		{"Retry-After kept", true, func(n, r time.Duration) bool { return r >= 30*time.Second+10*time.Millisecond }, "after the 30s the upstream asked for"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				proto := TransportWS
				script := memScript(t, []string{proto}, goodScript(proto))
				m := newMemNet(func(w http.ResponseWriter, r *http.Request, n int) {
					switch n {
					case 1: // up, then restarted
						memScript(t, []string{proto}, func(p *memPeer) {
							sub, next := wire(proto)
							if !p.handshake() {
								return
							}
							if m, ok := p.expect(sub); ok {
								p.send(next, m.ID, `{"data":{"ok":true}}`)
								p.ws.Close(1012, "service restart")
							}
						})(w, r, n)
					case 2: // still down
						if tc.retryAfter {
							w.Header().Set("Retry-After", "30")
						}
						http.Error(w, "starting", http.StatusServiceUnavailable)
					default:
						script(w, r, n)
					}
				})
				st := newStamped()
				c := memDial(t, m, Config{OnState: st.fn, Rand: func() float64 { return 0.5 },
					Backoff: Backoff{Initial: 100 * time.Millisecond, Multiplier: 1000, Max: time.Hour}})
				p := newBubbleProbe()
				subscribe(t, c, p)
				// Attempt 1 waits 50ms and is refused; attempt 2 waits 50s
				// (or the 30s Retry-After).
				for len(st.of(StateBackoff)) < 2 {
					time.Sleep(time.Millisecond)
				}
				time.Sleep(time.Second)
				nudged := time.Since(st.start)
				c.RetryNow()
				p.waitFor(t, p.patience, "resubscribed", func(p *probe) bool { return slices.Contains(p.log, "resubscribed") })
				for len(st.of(StateReady)) < 2 { // OnState may report after the operation heard
					time.Sleep(time.Millisecond)
				}
				ready := st.of(StateReady)
				if len(ready) != 2 || !tc.want(nudged, ready[1].at) {
					t.Fatalf("nudged at %v, ready at %+v; want the reconnect %s", nudged, ready, tc.wantText)
				}
			})
		})
	}
}

// TestRetryNowOncePerOutage: an upstream that acknowledges every connection
// and drops it at once (1013) while its siblings keep being acknowledged
// must not turn RetryNow into a reconnect storm: a Conn heeds one nudge per
// outage, so nudged every 50 ms for five minutes it dials about as often
// as a Conn left alone.
func TestRetryNowOncePerOutage(t *testing.T) {
	t.Parallel()
	dials := func(nudge bool) int32 {
		var n int32
		synctest.Test(t, func(t *testing.T) {
			proto := TransportWS
			m := newMemNet(memScript(t, []string{proto}, func(p *memPeer) {
				if p.handshake() {
					p.ws.Close(1013, "try again later")
				}
			}))
			c := memDial(t, m, Config{Rand: func() float64 { return 0.5 }})
			subscribe(t, c, newBubbleProbe())
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					case <-time.After(50 * time.Millisecond):
						if nudge {
							c.RetryNow()
						}
					}
				}
			}()
			time.Sleep(5 * time.Minute)
			close(stop)
			<-done
			n = m.dials.Load()
		})
		return n
	}
	alone, nudged := dials(false), dials(true)
	if nudged > alone+2 {
		t.Fatalf("%d dials when nudged every 50 ms, %d when left alone: RetryNow must not defeat the backoff", nudged, alone)
	}
	t.Logf("five minutes of a flapping upstream: %d dials left alone, %d nudged every 50 ms", alone, nudged)
}
