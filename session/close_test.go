package session

import (
	"errors"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/coder/websocket"
)

// TestCloseFromEveryState: Close while dialing, awaiting the ack, open,
// backing off, or after the Conn already ended is prompt (no fake time
// passes), idempotent and safe to call concurrently; every live operation
// hears OnDone exactly once, a stopped one never; nothing is left running
// (the synctest bubble fails the test if a goroutine of the Conn or of the
// in-memory network outlives it).
func TestCloseFromEveryState(t *testing.T) {
	t.Parallel()
	errDrain := errors.New("bridge draining")
	for _, tc := range []struct {
		name  string
		proto string
		// outcome is what Close is given (nil: ErrClosed).
		outcome error
		// already says the Conn ended by itself before Close.
		already bool
		// upstreamSees is the close code the upstream hears (0: not checked).
		upstreamSees int
		// setup builds the network; reach blocks until the Conn is in the
		// state under test.
		setup func(t *testing.T, released <-chan struct{}, seen chan<- []string) *memNet
		reach func(t *testing.T, c *Conn, st *stamped)
	}{
		{
			name: "dialing", proto: TransportWS,
			setup: func(t *testing.T, released <-chan struct{}, seen chan<- []string) *memNet {
				return newMemNet(func(w http.ResponseWriter, r *http.Request, n int) {
					<-released // never answers the upgrade
				})
			},
			reach: func(t *testing.T, c *Conn, st *stamped) {
				synctest.Wait()
				if c.State() != StateConnecting || len(st.of(StateConnecting)) != 1 {
					t.Fatalf("state %v, want dialing", c.State())
				}
			},
		},
		{
			name: "awaiting-ack", proto: LegacyWS,
			setup: func(t *testing.T, released <-chan struct{}, seen chan<- []string) *memNet {
				return newMemNet(memScript(t, []string{LegacyWS}, func(p *memPeer) {
					if _, ok := p.expect(msgConnectionInit); !ok {
						return
					}
					p.drain(false) // never acknowledges
					seen <- nil
				}))
			},
			reach: func(t *testing.T, c *Conn, st *stamped) {
				synctest.Wait()
				if c.State() != StateConnecting || len(st.of(StateReady)) != 0 {
					t.Fatalf("state %v, want awaiting the ack", c.State())
				}
			},
		},
		{
			name: "open", proto: TransportWS, outcome: errDrain, upstreamSees: 1001,
			setup: openUpstream(TransportWS),
			reach: waitReadyAndSubscribed,
		},
		{
			name: "open-legacy", proto: LegacyWS, upstreamSees: 1001,
			setup: openUpstream(LegacyWS),
			reach: waitReadyAndSubscribed,
		},
		{
			name: "backoff", proto: TransportWS,
			setup: func(t *testing.T, released <-chan struct{}, seen chan<- []string) *memNet {
				m := newMemNet(nil)
				m.refuse.Store(true)
				return m
			},
			reach: func(t *testing.T, c *Conn, st *stamped) {
				synctest.Wait()
				if c.State() != StateBackoff {
					t.Fatalf("state %v, want backoff", c.State())
				}
			},
		},
		{
			name: "already-closed", proto: TransportWS, already: true,
			setup: func(t *testing.T, released <-chan struct{}, seen chan<- []string) *memNet {
				return newMemNet(memScript(t, []string{TransportWS}, func(p *memPeer) {
					if p.handshake() {
						_ = p.ws.Close(4406, "Subprotocol not acceptable")
					}
				}))
			},
			reach: func(t *testing.T, c *Conn, st *stamped) { <-c.Done() },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				released := make(chan struct{})
				seen := make(chan []string, 1)
				m := tc.setup(t, released, seen)
				st := newStamped()
				var closedStates int
				var mu sync.Mutex
				// Nothing happens upstream before every Subscribe and Stop.
				hs := &handshakes{gate: make(chan struct{})}
				c, err := Dial(Config{URL: "ws://upstream.test/graphql", HTTPClient: m.client(), Subprotocols: []string{tc.proto}, Handshake: hs.fn,
					DialTimeout: time.Hour, AckTimeout: time.Hour, Backoff: Backoff{Initial: time.Hour, Max: time.Hour},
					Rand: func() float64 { return 0.5 },
					OnState: func(sc StateChange) {
						st.fn(sc)
						if sc.State == StateClosed {
							mu.Lock()
							closedStates++
							mu.Unlock()
						}
					}})
				if err != nil {
					t.Fatal(err)
				}
				ops := []*probe{newBubbleProbe(), newBubbleProbe(), newBubbleProbe()}
				var handles []*Operation
				for _, p := range ops {
					op, err := c.Subscribe(Request{Query: "subscription { n }"}, p)
					if err != nil {
						t.Fatal(err)
					}
					handles = append(handles, op)
				}
				stopped := newBubbleProbe()
				stopOp, err := c.Subscribe(Request{Query: "subscription { stopped }"}, stopped)
				if err != nil {
					t.Fatal(err)
				}
				stopOp.Stop()
				close(hs.gate)
				tc.reach(t, c, st)

				// Close three times at once, then once more.
				start := time.Now()
				var wg sync.WaitGroup
				for range 3 {
					wg.Go(func() { c.Close(CodeGoingAway, tc.outcome) })
				}
				wg.Wait()
				c.Close(CodeNormal, errors.New("a later Close changes nothing"))
				if d := time.Since(start); d != 0 {
					t.Fatalf("Close took %v of fake time", d)
				}
				select {
				case <-c.Done():
				default:
					t.Fatal("Done not closed after Close")
				}

				want := tc.outcome
				if want == nil {
					want = ErrClosed
				}
				if tc.already {
					var e *Error
					if !errors.As(c.Err(), &e) || e.Class != ClassMisconfig || e.Code != 4406 {
						t.Fatalf("Err %v, want the earlier 4406 outcome", c.Err())
					}
					want = c.Err()
				}
				if c.Err() != want || c.State() != StateClosed || c.Len() != 0 {
					t.Fatalf("Err %v, state %v, live %d: want %v, closed, 0", c.Err(), c.State(), c.Len(), want)
				}
				for i, p := range ops {
					_, _, dones := p.snap()
					if len(dones) != 1 || dones[0] != want {
						t.Fatalf("operation %d: OnDone %v, want exactly once %v", i, dones, want)
					}
				}
				if log, _, _ := stopped.snap(); len(log) != 0 {
					t.Fatalf("the stopped operation heard %v", log)
				}
				mu.Lock()
				if closedStates != 1 {
					t.Fatalf("StateClosed reported %d times", closedStates)
				}
				mu.Unlock()

				// After Close: nothing starts, nothing is heard again.
				if _, err := c.Subscribe(Request{Query: "subscription { late }"}, newBubbleProbe()); err != want {
					t.Fatalf("Subscribe after Close: %v, want %v", err, want)
				}
				for _, op := range handles {
					op.Stop()
				}
				for i, p := range ops {
					if p.doneCount() != 1 {
						t.Fatalf("operation %d: OnDone %d times after Stop", i, p.doneCount())
					}
				}

				close(released)
				m.wg.Wait()
				if tc.upstreamSees != 0 {
					msgs := <-seen
					last := msgs[len(msgs)-1]
					if last != closeName(tc.upstreamSees) {
						t.Fatalf("the upstream saw %v, want it to end with %s", msgs, closeName(tc.upstreamSees))
					}
					if tc.proto == LegacyWS && !containsStr(msgs, msgConnectionTerminate) {
						t.Fatalf("the legacy upstream saw %v, want connection_terminate before the close", msgs)
					}
				}
			})
		})
	}
}

func closeName(code int) string { return "close:" + websocket.StatusCode(code).String() }

func containsStr(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// openUpstream acknowledges, starts every operation, and reports what it
// read after that: message types, then "close:<status>".
func openUpstream(proto string) func(t *testing.T, released <-chan struct{}, seen chan<- []string) *memNet {
	return func(t *testing.T, released <-chan struct{}, seen chan<- []string) *memNet {
		sub, next := wire(proto)
		return newMemNet(memScript(t, []string{proto}, func(p *memPeer) {
			if !p.handshake() {
				return
			}
			var msgs []string
			for {
				_, b, err := p.ws.Read(t.Context())
				if err != nil {
					seen <- append(msgs, closeName(int(websocket.CloseStatus(err))))
					return
				}
				m := decodeWire(t, b)
				msgs = append(msgs, m.Type)
				if m.Type == sub {
					p.send(next, m.ID, `{"data":{}}`)
				}
			}
		}))
	}
}

func decodeWire(t *testing.T, b []byte) wireMsg {
	t.Helper()
	env, err := decodeEnvelope(b)
	if err != nil {
		t.Fatalf("client sent %q: %v", b, err)
	}
	return wireMsg{Type: env.typ, ID: string(env.id)}
}

func waitReadyAndSubscribed(t *testing.T, c *Conn, st *stamped) {
	synctest.Wait()
	if c.State() != StateReady || c.Len() != 3 {
		t.Fatalf("state %v with %d operations, want ready with 3", c.State(), c.Len())
	}
}
