package session

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/coder/websocket"

	"github.com/gqlbridge/gqlbridge/internal/scripted"
)

// TestCloseFrameDecidesOverFailedWrite: the upstream acknowledges and
// closes at once, before the session has written the subscribe of the
// operation waiting for the ack. The reader receives the close frame, and
// the subscribe written meanwhile fails on the closed socket; whatever the
// order, the close code and reason decide the outcome, never the failed
// write (which would report a transient 1006 and reconnect to an upstream
// that said "forbidden"). Each code runs many times over: which of the
// reader and the writer comes first varies from run to run.
func TestCloseFrameDecidesOverFailedWrite(t *testing.T) {
	t.Parallel()
	const runs = 50
	for _, code := range []int{4403, 4406, 4400, 1014, 4500} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			t.Parallel()
			want := DefaultClass(CloseCode(code), false)
			for run := range runs {
				e := closeAfterAckOutcome(t, code)
				if e.Code != CloseCode(code) || e.Class != want || e.Reason != "scripted" || e.BeforeAck {
					t.Fatalf("run %d: outcome %+v (%v), want %v close %d (scripted) after the ack", run, e, e, want, code)
				}
			}
		})
	}
}

// closeAfterAckOutcome runs one connection that the upstream acknowledges
// and closes at once with code, and returns what the session made of it:
// the cause of the reconnect, or the terminal outcome. The connections
// after the first are healthy.
func closeAfterAckOutcome(t *testing.T, code int) *Error {
	t.Helper()
	srv := scripted.Start(t, tws, func(p *scripted.Peer) {
		if _, ok := p.Handshake(); !ok {
			return
		}
		if p.N == 1 {
			p.Close(code, "scripted")
			return
		}
		m, ok := p.Expect(msgSubscribe)
		if !ok {
			return
		}
		p.SendMsg(msgNext, m.ID, `{"data":{}}`)
		p.Drain()
	})
	hs, st := &handshakes{gate: make(chan struct{})}, &states{}
	c := dialTest(t, Config{URL: srv.URL, Handshake: hs.fn, OnState: st.fn, KeepAlive: -1})
	defer c.Close(CodeNormal, nil)
	// Live before the ack: their subscribes follow the ack at once, and
	// the more there are, the likelier one is written after the close.
	// One probe hears them all.
	p := newProbe()
	for range 20 {
		subscribe(t, c, p)
	}
	close(hs.gate)
	p.waitFor(t, p.patience, "a result or the outcome", func(p *probe) bool { return len(p.nexts) > 0 || len(p.dones) > 0 })
	if _, _, dones := p.snap(); len(dones) > 0 {
		e := asError(t, dones[0])
		if n := srv.Conns(); n != 1 && e.Class != ClassAuth {
			t.Fatalf("%d connections for a terminal %v", n, e)
		}
		return e
	}
	bo := st.backoffs()
	if len(bo) == 0 || bo[0].Cause == nil {
		t.Fatalf("resumed without a backoff: %+v", st.list())
	}
	return bo[0].Cause
}

// TestCloseFrameAfterFailedWriteInFakeTime: a write fails before the reader
// has seen anything (a reset racing ahead of the upstream's close frame);
// the close frame arrives after the failure and still decides the outcome,
// whether the failed write was the subscribe after the ack or the
// connection_init itself. The upstream here sends its close only once the
// session's write has failed, so a session that closes the socket at the
// failed write never sees it.
func TestCloseFrameAfterFailedWriteInFakeTime(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		beforeAck bool // the failed write is connection_init
		code      int
		reason    string
	}{
		{"subscribe", false, 4406, "Subprotocol not acceptable"},
		{"connection_init", true, 4403, "Forbidden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				// Before the ack the failing write is connection_init, the
				// client's first after the upgrade: it fails from the
				// start, since the client may write it before the script
				// runs.
				var broken atomic.Bool
				broken.Store(tc.beforeAck)
				failed := make(chan struct{})
				var once sync.Once
				m := newMemNet(memScript(t, []string{TransportWS}, func(p *memPeer) {
					if p.n > 1 {
						goodScript(TransportWS)(p)
						return
					}
					if !tc.beforeAck {
						if _, ok := p.expect(msgConnectionInit); !ok {
							return
						}
						broken.Store(true) // the subscribe after the ack fails
						p.send(msgConnectionAck, "", "")
					}
					<-failed
					_ = p.ws.Close(websocket.StatusCode(tc.code), tc.reason)
				}))
				m.clientWrites = func(n int, b []byte) error {
					if n != 1 || !broken.Load() || bytes.HasPrefix(b, []byte("GET ")) {
						return nil
					}
					once.Do(func() { close(failed) })
					return errors.New("memconn: connection reset by peer")
				}
				st := &states{}
				c := memDial(t, m, Config{OnState: st.fn, KeepAlive: -1})
				p := newBubbleProbe()
				subscribe(t, c, p)
				p.waitFor(t, p.patience, "a result or the outcome", func(p *probe) bool { return len(p.nexts) > 0 || len(p.dones) > 0 })
				var e *Error
				if _, _, dones := p.snap(); len(dones) > 0 {
					e = asError(t, dones[0])
				} else if bo := st.backoffs(); len(bo) > 0 {
					e = bo[0].Cause
				}
				if e == nil || e.Code != CloseCode(tc.code) || e.Reason != tc.reason || e.Class != DefaultClass(CloseCode(tc.code), tc.beforeAck) || e.BeforeAck != tc.beforeAck {
					t.Fatalf("outcome %+v, want close %d %q (%v), before the ack %v", e, tc.code, tc.reason, DefaultClass(CloseCode(tc.code), tc.beforeAck), tc.beforeAck)
				}
			})
		})
	}
}

// TestFailedWriteWithoutCloseFrameInFakeTime: after a failed write the
// session waits for the reader, but no longer than the write timeout: an
// upstream that neither closes nor resets is cut off then, and the failed
// write is the outcome.
func TestFailedWriteWithoutCloseFrameInFakeTime(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const writeTimeout = 3 * time.Second
		var broken atomic.Bool
		m := newMemNet(memScript(t, []string{TransportWS}, func(p *memPeer) {
			if p.n > 1 {
				goodScript(TransportWS)(p)
				return
			}
			if _, ok := p.expect(msgConnectionInit); !ok {
				return
			}
			broken.Store(true)
			p.send(msgConnectionAck, "", "")
			p.drain(false) // says nothing, until the session hangs up
		}))
		m.clientWrites = func(n int, b []byte) error {
			if n == 1 && broken.Load() {
				return errors.New("memconn: broken pipe")
			}
			return nil
		}
		st := newStamped()
		c := memDial(t, m, Config{OnState: st.fn, KeepAlive: -1, WriteTimeout: writeTimeout, Rand: func() float64 { return 0 }})
		p := newBubbleProbe()
		subscribe(t, c, p)
		p.waitNexts(t, 1)
		bo := st.of(StateBackoff)
		if len(bo) != 1 || bo[0].at != writeTimeout || bo[0].Cause.Code != CodeAbnormal || bo[0].Cause.Class != ClassTransient ||
			!strings.Contains(bo[0].Cause.Reason, "write failed: ") || !strings.Contains(bo[0].Cause.Reason, "broken pipe") {
			t.Fatalf("backoffs %+v, want one at %v for the failed write", bo, writeTimeout)
		}
	})
}
