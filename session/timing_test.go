package session

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/coder/websocket"
)

// Timing behaviour, proven in fake time: every test below that involves a
// connection runs in a testing/synctest bubble over memNet (memnet_test.go),
// so "the probe went out at 30s and the connection was declared dead at
// 40s" is an exact, deterministic assertion, and an hour of backoff takes no
// real time.

// TestRetrierDelays: full jitter under an exponential ceiling capped at Max.
func TestRetrierDelays(t *testing.T) {
	t.Parallel()
	b := Backoff{Initial: 100 * time.Millisecond, Max: 2 * time.Second, Multiplier: 3}
	ceilings := []time.Duration{100 * time.Millisecond, 300 * time.Millisecond, 900 * time.Millisecond, 2 * time.Second, 2 * time.Second, 2 * time.Second}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, u := range []float64{0, 0.25, 0.5, 0.999999} {
		r := newRetrier(b, func() float64 { return u })
		for i, ceil := range ceilings {
			d, ok := r.next(now.Add(time.Duration(i)*time.Hour), 0)
			if !ok {
				t.Fatalf("rand %v attempt %d: budget spent without MaxElapsed", u, i+1)
			}
			if want := time.Duration(u * float64(ceil)); d != want {
				t.Fatalf("rand %v attempt %d: delay %v, want %v (ceiling %v)", u, i+1, d, want, ceil)
			}
		}
		if r.failures != len(ceilings) {
			t.Fatalf("failures %d, want %d", r.failures, len(ceilings))
		}
	}
}

// TestRetrierJitterBounds: with the real random source every delay lies in
// [0, ceiling), and the delays are spread (not all equal).
func TestRetrierJitterBounds(t *testing.T) {
	t.Parallel()
	b := Backoff{Initial: time.Second, Max: 8 * time.Second}
	now := time.Now()
	seen := map[time.Duration]bool{}
	for range 200 {
		r := newRetrier(b, nil)
		for i, ceil := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
			d, ok := r.next(now, 0)
			if !ok || d < 0 || d >= ceil {
				t.Fatalf("attempt %d: delay %v (ok %v), want in [0, %v)", i+1, d, ok, ceil)
			}
			seen[d] = true
		}
	}
	if len(seen) < 100 {
		t.Fatalf("only %d distinct delays in 1000: no jitter", len(seen))
	}
}

// TestRetrierFloorAndMaxElapsed: Retry-After raises the delay; MaxElapsed
// ends the outage and clamps the last delay to what is left of it.
func TestRetrierFloorAndMaxElapsed(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := newRetrier(Backoff{Initial: time.Second, Max: 4 * time.Second, MaxElapsed: 10 * time.Second}, func() float64 { return 0.5 })
	if d, ok := r.next(t0, 3*time.Second); !ok || d != 3*time.Second {
		t.Fatalf("with Retry-After 3s: %v %v", d, ok)
	}
	if d, ok := r.next(t0.Add(3*time.Second), 0); !ok || d != time.Second {
		t.Fatalf("second delay %v %v, want 1s", d, ok)
	}
	if d, ok := r.next(t0.Add(9*time.Second), 0); !ok || d != time.Second {
		t.Fatalf("delay 1s before MaxElapsed: %v %v, want clamped to 1s", d, ok)
	}
	if d, ok := r.next(t0.Add(9*time.Second), time.Hour); !ok || d != time.Second {
		t.Fatalf("Retry-After past MaxElapsed: %v %v, want clamped to 1s", d, ok)
	}
	if _, ok := r.next(t0.Add(10*time.Second), 0); ok {
		t.Fatal("retrying at MaxElapsed")
	}
	// A new outage after a healthy connection starts the budget again.
	if r.healthy(time.Second) {
		t.Fatal("healthy after 1s, StableAfter defaults to 10s")
	}
	if !r.healthy(10*time.Second) || r.failures != 0 {
		t.Fatalf("not reset after StableAfter: failures %d", r.failures)
	}
	if d, ok := r.next(t0.Add(time.Hour), 0); !ok || d != 500*time.Millisecond {
		t.Fatalf("first delay of a new outage %v %v, want 500ms", d, ok)
	}
}

func TestBackoffDefaults(t *testing.T) {
	t.Parallel()
	b := Backoff{}.withDefaults()
	if b.Initial != 100*time.Millisecond || b.Max != 10*time.Second || b.Multiplier != 2 || b.StableAfter != 10*time.Second || b.MaxElapsed != 0 {
		t.Fatalf("defaults %+v", b)
	}
	b = Backoff{Initial: time.Minute, Max: time.Second, Multiplier: 0.5}.withDefaults()
	if b.Max != time.Minute || b.Multiplier != 2 {
		t.Fatalf("Max below Initial / Multiplier below 1: %+v", b)
	}
}

// stamped records state changes with the fake time they happened at.
type stamped struct {
	start time.Time
	mu    sync.Mutex
	list  []stampedChange
}

type stampedChange struct {
	StateChange
	at time.Duration
}

func newStamped() *stamped { return &stamped{start: time.Now()} }

func (s *stamped) fn(sc StateChange) {
	s.mu.Lock()
	s.list = append(s.list, stampedChange{sc, time.Since(s.start)})
	s.mu.Unlock()
}

func (s *stamped) of(st State) []stampedChange {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []stampedChange
	for _, c := range s.list {
		if c.State == st {
			out = append(out, c)
		}
	}
	return out
}

// memDial dials cfg over m inside a bubble; the Conn is closed in cleanup.
func memDial(t *testing.T, m *memNet, cfg Config) *Conn {
	t.Helper()
	cfg.URL = "ws://upstream.test/graphql"
	cfg.HTTPClient = m.client()
	c, err := Dial(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close(CodeNormal, nil)
		m.wg.Wait()
	})
	return c
}

// goodScript acknowledges, starts the operation, sends one result and
// answers pings until the connection ends.
func goodScript(proto string) func(p *memPeer) {
	sub, next := wire(proto)
	return func(p *memPeer) {
		if !p.handshake() {
			return
		}
		m, ok := p.expect(sub)
		if !ok {
			return
		}
		p.send(next, m.ID, `{"data":{"ok":true}}`)
		p.drain(true)
	}
}

// TestBackoffScheduleInFakeTime: the session waits exactly the retrier's
// delays between attempts and gives up exactly at MaxElapsed.
func TestBackoffScheduleInFakeTime(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		m := newMemNet(nil)
		m.refuse.Store(true)
		st := newStamped()
		c := memDial(t, m, Config{OnState: st.fn, Rand: func() float64 { return 0.5 },
			Backoff: Backoff{Initial: time.Second, Max: 8 * time.Second, MaxElapsed: time.Minute}})
		p := newBubbleProbe()
		subscribe(t, c, p)
		e := asError(t, p.waitDone(t))
		<-c.Done() // StateClosed is reported after the operations heard OnDone
		if e.Class != ClassTransient || !e.Exhausted {
			t.Fatalf("outcome %+v, want exhausted transient", e)
		}
		// Delays: 0.5·(1, 2, 4, 8, 8, ...) seconds, the last clamped to
		// what is left of the minute.
		var want []time.Duration
		at := time.Duration(0)
		for d := time.Second; at < time.Minute; d = min(2*d, 8*time.Second) {
			want = append(want, at)
			at += min(d/2, time.Minute-at)
		}
		want = append(want, time.Minute)
		got := st.of(StateConnecting)
		if len(got) != len(want) {
			t.Fatalf("%d attempts, want %d", len(got), len(want))
		}
		for i := range want {
			if got[i].at != want[i] || got[i].Attempt != i+1 {
				t.Fatalf("attempt %d (#%d) at %v, want #%d at %v", i+1, got[i].Attempt, got[i].at, i+1, want[i])
			}
		}
		if e.Attempts != len(want) {
			t.Fatalf("Attempts %d, want %d", e.Attempts, len(want))
		}
		if closed := st.of(StateClosed); len(closed) != 1 || closed[0].at != time.Minute {
			t.Fatalf("closed %+v, want once at 1m", closed)
		}
	})
}

// TestAttemptsAfterHealthyConnection: an outage that follows a healthy
// connection counts its own attempts: the exhausted error's Attempts is the
// number of redials, and the backoff starts again from Initial.
func TestAttemptsAfterHealthyConnection(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var m *memNet
		m = newMemNet(memScript(t, []string{TransportWS}, func(p *memPeer) {
			if !p.handshake() {
				return
			}
			s, ok := p.expect(msgSubscribe)
			if !ok {
				return
			}
			p.send(msgNext, s.ID, `{"data":{}}`)
			time.Sleep(time.Minute) // healthy: up longer than StableAfter
			m.refuse.Store(true)    // from now on the upstream is down
			_ = p.ws.Close(websocket.StatusServiceRestart, "restart")
		}))
		st := newStamped()
		c := memDial(t, m, Config{OnState: st.fn, Rand: func() float64 { return 0.5 }, KeepAlive: -1,
			Backoff: Backoff{Initial: time.Second, Max: 4 * time.Second, MaxElapsed: 10 * time.Second, StableAfter: 30 * time.Second}})
		p := newBubbleProbe()
		subscribe(t, c, p)
		e := asError(t, p.waitDone(t))
		<-c.Done() // StateClosed is reported after the operations heard OnDone
		redials := len(st.of(StateConnecting)) - 1
		if !e.Exhausted || e.Attempts != redials || redials < 2 {
			t.Fatalf("outcome %+v after %d redials, want Attempts %d", e, redials, redials)
		}
		// Outage from 1m: 1012, then delays 0.5s, 1s, 2s, 2s, 2s, 2s,
		// 0.5s (clamped): redials at +0.5s ... +10s.
		bo := st.of(StateBackoff)
		if bo[0].Cause.Code != 1012 || bo[0].Delay != 500*time.Millisecond || bo[0].at != time.Minute {
			t.Fatalf("first backoff %+v, want 500ms at 1m after the 1012", bo[0])
		}
		if last := st.of(StateClosed); len(last) != 1 || last[0].at != time.Minute+10*time.Second {
			t.Fatalf("closed %+v, want at 1m10s", last)
		}
	})
}

// TestRetryAfterInFakeTime: a refused upgrade's Retry-After (seconds or an
// HTTP date) delays the next attempt exactly that long, whatever the jitter.
func TestRetryAfterInFakeTime(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, header string
		want         time.Duration
	}{
		{"seconds", "30", 30 * time.Second},
		{"http-date", "Sat, 01 Jan 2000 00:00:45 GMT", 45 * time.Second}, // the bubble starts at 2000-01-01 00:00:00 UTC
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				m := newMemNet(func(w http.ResponseWriter, r *http.Request, n int) {
					if n == 1 {
						w.Header().Set("Retry-After", tc.header)
						http.Error(w, "overloaded", http.StatusTooManyRequests)
						return
					}
					memScript(t, []string{TransportWS}, goodScript(TransportWS))(w, r, n)
				})
				st, hs := newStamped(), &handshakes{gate: make(chan struct{})} // the operation hears every failure
				c := memDial(t, m, Config{OnState: st.fn, Rand: func() float64 { return 0 }, Handshake: hs.fn})
				p := newBubbleProbe()
				subscribe(t, c, p)
				close(hs.gate)
				p.waitNexts(t, 1)
				conns := st.of(StateConnecting)
				if len(conns) != 2 || conns[1].at != tc.want {
					t.Fatalf("attempts %+v, want the second at %v", conns, tc.want)
				}
				if bo := st.of(StateBackoff); len(bo) != 1 || bo[0].Delay != tc.want || bo[0].Cause.RetryAfter != tc.want || bo[0].Cause.HTTPStatus != 429 {
					t.Fatalf("backoff %+v, want %v after HTTP 429", bo, tc.want)
				}
				expectLogPrefix(t, p, "reconnecting:0", "subscribed", "next")
			})
		})
	}
}

// TestAckTimeoutInFakeTime: no connection_ack within AckTimeout ends the
// attempt at exactly AckTimeout with 4504 (sent to the upstream too); an ack
// just in time is accepted.
func TestAckTimeoutInFakeTime(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const ackTimeout = 7 * time.Second
		sawClose := make(chan int, 1)
		m := newMemNet(memScript(t, []string{TransportWS}, func(p *memPeer) {
			switch p.n {
			case 1: // never acknowledges
				if _, ok := p.expect(msgConnectionInit); !ok {
					return
				}
				_, _, err := p.ws.Read(t.Context())
				sawClose <- int(websocket.CloseStatus(err))
			case 2: // acknowledges 1ms before the deadline
				if _, ok := p.expect(msgConnectionInit); !ok {
					return
				}
				time.Sleep(ackTimeout - time.Millisecond)
				p.send(msgConnectionAck, "", "")
				goodAfterAck(p, TransportWS)
			}
		}))
		st := newStamped()
		c := memDial(t, m, Config{OnState: st.fn, AckTimeout: ackTimeout, Rand: func() float64 { return 0 }})
		p := newBubbleProbe()
		subscribe(t, c, p)
		p.waitNexts(t, 1)
		bo := st.of(StateBackoff)
		if len(bo) != 1 || bo[0].at != ackTimeout || bo[0].Cause.Code != CodeAckTimeout || bo[0].Cause.Class != ClassTransient {
			t.Fatalf("backoffs %+v, want one at %v for 4504", bo, ackTimeout)
		}
		if code := <-sawClose; code != int(CodeAckTimeout) {
			t.Fatalf("the upstream saw close %d, want 4504", code)
		}
		ready := st.of(StateReady)
		if len(ready) != 1 || ready[0].at != 2*ackTimeout-time.Millisecond || ready[0].AckLatency != ackTimeout-time.Millisecond {
			t.Fatalf("ready %+v, want the late ack accepted", ready)
		}
		expectLogPrefix(t, p, "reconnecting:4504", "subscribed", "next")
	})
}

// goodAfterAck starts the operation, sends one result and answers pings.
func goodAfterAck(p *memPeer, proto string) {
	sub, next := wire(proto)
	m, ok := p.expect(sub)
	if !ok {
		return
	}
	p.send(next, m.ID, `{"data":{"ok":true}}`)
	p.drain(true)
}

// TestKeepAliveTimeoutInFakeTime: the connection is probed every interval,
// even while results keep arriving (they prove only the inbound half: here
// the upstream sends a result every 5s but never answers a probe, as when
// the bridge→upstream half is dead); a probe unanswered for
// KeepAliveTimeout ends it (1006, "keep-alive timeout") and the operation is
// resubscribed. Both protocols: a ping message on graphql-transport-ws, a
// WebSocket ping frame on legacy.
func TestKeepAliveTimeoutInFakeTime(t *testing.T) {
	t.Parallel()
	for _, proto := range protocols() {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				var (
					mu    sync.Mutex
					pings []time.Duration
				)
				sub, next := wire(proto)
				record := func() {
					mu.Lock()
					pings = append(pings, time.Since(start))
					mu.Unlock()
				}
				opts := websocket.AcceptOptions{Subprotocols: []string{proto}, OnPingReceived: func(_ context.Context, _ []byte) bool {
					record() // a WebSocket ping frame (legacy keep-alive)
					return false
				}}
				m := newMemNet(memScriptWith(t, opts, func(p *memPeer) {
					if p.n > 1 {
						goodScript(proto)(p)
						return
					}
					if !p.handshake() {
						return
					}
					s, ok := p.expect(sub)
					if !ok {
						return
					}
					var wg sync.WaitGroup
					defer wg.Wait()
					wg.Go(func() { // results every 5s until the socket ends
						for i := 1; ; i++ {
							time.Sleep(time.Second)
							if !p.send(next, s.ID, fmt.Sprintf(`{"data":{"n":%d}}`, i)) {
								return
							}
							time.Sleep(4 * time.Second)
						}
					})
					for { // reading, but never answering
						m, ok := p.read()
						if !ok {
							return
						}
						if m.Type == msgPing {
							record() // a ping message (graphql-transport-ws keep-alive)
						}
					}
				}))
				st := newStamped()
				c := memDial(t, m, Config{OnState: st.fn, KeepAlive: 15 * time.Second, KeepAliveTimeout: 10 * time.Second, Rand: func() float64 { return 0 }})
				p := newBubbleProbe()
				subscribe(t, c, p)
				p.waitNexts(t, 6)
				// Ready at 0; results at 1s, 6s, 11s, 16s, 21s; probe at
				// 15s whatever arrived; unanswered, dead at 25s.
				expectLogPrefix(t, p, "subscribed", "next", "next", "next", "next", "next", "reconnecting:1006", "resubscribed", "next")
				bo := st.of(StateBackoff)
				if len(bo) != 1 || bo[0].at != 25*time.Second || bo[0].Cause.Code != CodeAbnormal || bo[0].Cause.Reason != "keep-alive timeout: no answer within 10s" {
					t.Fatalf("backoffs %+v, want one at 25s for the keep-alive timeout", bo)
				}
				mu.Lock()
				defer mu.Unlock()
				if len(pings) != 1 || pings[0] != 15*time.Second {
					t.Fatalf("pings at %v, want one at 15s", pings)
				}
			})
		})
	}
}

// TestKeepAliveAnsweredInFakeTime: probes that are answered keep a silent
// connection up indefinitely; traffic from the upstream (unsolicited pongs,
// legacy "ka") neither replaces a probe nor confuses it.
func TestKeepAliveAnsweredInFakeTime(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, proto string
		heartbeat   string // sent by the upstream every 10s; "" for none
		wantPings   int    // probes (ping messages or frames) in 10 minutes
	}{
		// A probe at every tick, 15s apart, with or without other traffic.
		{"pong-answers", TransportWS, "", 40},
		{"legacy-pong-frames", LegacyWS, "", 40},
		{"unsolicited-pong", TransportWS, msgPong, 40},
		{"legacy-ka", LegacyWS, msgKeepAlive, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				var (
					mu    sync.Mutex
					pings int
				)
				count := func() {
					mu.Lock()
					pings++
					mu.Unlock()
				}
				sub, next := wire(tc.proto)
				release := make(chan struct{})
				opts := websocket.AcceptOptions{Subprotocols: []string{tc.proto}, OnPingReceived: func(context.Context, []byte) bool {
					count()
					return true
				}}
				m := newMemNet(memScriptWith(t, opts, func(p *memPeer) {
					if !p.handshake() {
						return
					}
					s, ok := p.expect(sub)
					if !ok {
						return
					}
					var wg sync.WaitGroup
					defer wg.Wait()
					wg.Go(func() {
						for {
							select {
							case <-release:
								p.send(next, s.ID, `{"data":{"late":true}}`)
								return
							case <-time.After(10 * time.Second):
								if tc.heartbeat != "" {
									p.send(tc.heartbeat, "", "")
								}
							}
						}
					})
					for { // answers ping messages; the library answers ping frames
						m, ok := p.read()
						if !ok {
							return
						}
						if m.Type == msgPing {
							count()
							p.send(msgPong, "", "")
						}
					}
				}))
				st := newStamped()
				c := memDial(t, m, Config{OnState: st.fn, KeepAlive: 15 * time.Second, KeepAliveTimeout: 10 * time.Second})
				p := newBubbleProbe()
				subscribe(t, c, p)
				time.Sleep(10*time.Minute + time.Second) // probes at 15s, 30s, ... 600s
				close(release)
				p.waitNexts(t, 1)
				if bo := st.of(StateBackoff); len(bo) != 0 {
					t.Fatalf("the connection was declared dead: %+v", bo)
				}
				if log, _, _ := p.snap(); joinLog(log) != "subscribed,next" {
					t.Fatalf("log %v", log)
				}
				mu.Lock()
				defer mu.Unlock()
				if pings != tc.wantPings {
					t.Fatalf("%d pings in 10 minutes, want %d", pings, tc.wantPings)
				}
			})
		})
	}
}

// TestKeepAliveHeartbeatPongsAreNotAnswers: an upstream that echoes the
// ping's payload (as the reference server and gqlgen do) has shown it
// echoes; when its inbound half then dies (pings no longer answered) while
// it keeps sending unsolicited heartbeat pongs, those pongs do not pass for
// answers: the probe at 30s goes unanswered and the connection is declared
// dead at 40s.
func TestKeepAliveHeartbeatPongsAreNotAnswers(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		proto := TransportWS
		sub, _ := wire(proto)
		m := newMemNet(memScript(t, []string{proto}, func(p *memPeer) {
			if p.n > 1 {
				goodScript(proto)(p)
				return
			}
			if !p.handshake() {
				return
			}
			if _, ok := p.expect(sub); !ok {
				return
			}
			var wg sync.WaitGroup
			defer wg.Wait()
			stop := make(chan struct{})
			defer close(stop)
			wg.Go(func() { // a heartbeat pong every 5s
				for {
					select {
					case <-stop:
						return
					case <-time.After(5 * time.Second):
						if !p.send(msgPong, "", "") {
							return
						}
					}
				}
			})
			pings := 0
			for {
				m, ok := p.read()
				if !ok {
					return
				}
				if m.Type == msgPing {
					if pings++; pings == 1 {
						p.send(msgPong, "", string(m.Payload)) // the first one is echoed
					}
				}
			}
		}))
		st := newStamped()
		c := memDial(t, m, Config{OnState: st.fn, KeepAlive: 15 * time.Second, KeepAliveTimeout: 10 * time.Second, Rand: func() float64 { return 0 }})
		p := newBubbleProbe()
		subscribe(t, c, p)
		p.waitFor(t, p.patience, "resubscribed", func(p *probe) bool { return slices.Contains(p.log, "resubscribed") })
		bo := st.of(StateBackoff)
		if len(bo) != 1 || bo[0].at != 40*time.Second || bo[0].Cause.Reason != "keep-alive timeout: no answer within 10s" {
			t.Fatalf("backoffs %+v, want one at 40s for the keep-alive timeout", bo)
		}
	})
}
