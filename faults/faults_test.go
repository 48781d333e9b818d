package faults

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2/toxics"
	"google.golang.org/grpc/codes"

	"github.com/gqlbridge/gqlbridge/bridge"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/rpcstatus"
	"github.com/gqlbridge/gqlbridge/internal/testpeer"
	"github.com/gqlbridge/gqlbridge/session"
)

// Every test below runs subscriptions through the bridge and a toxiproxy
// proxy to a real upstream, injects one fault and asserts the outcome. The
// waits are on conditions (lifecycle events, result counts, upstream
// counters), each bounded by waitTimeout so a hang fails instead of blocking;
// no test asserts how long anything took.

// infinite is a ticker that never completes.
const infinite = "subscription { ticker(count: 0, intervalMs: 20) { n } }"

// TestLatencySpikes: a 200 ms ± 100 ms latency spike on everything the
// upstream sends delays results but loses none and costs no reconnect. The
// ticker never completes, so however slow the machine, the spike always
// lands on a running stream: the test waits for results during and after
// it, then checks that every stream counts the ticker from 1 without a gap.
func TestLatencySpikes(t *testing.T) {
	t.Parallel()
	demo := startDemo(t)
	px := startProxy(t, hostOf(t, demo.URL()))
	r := startBridge(t, &bridge.Upstream{Session: withoutKeepAlive(sessionConfig(px.url("/graphql")))})
	ws := r.subscribeN(subscriptions, infinite)
	waitAll(t, r, ws, "first results", flowing(3))

	px.add("spike", "latency", "downstream", toxics.LatencyToxic{Latency: 200, Jitter: 100})
	// Results keep arriving through the spike...
	for _, w := range ws {
		k := len(w.view().results(-1))
		w.waitFor(t, r, "results during the spike", func(v view) bool { return len(v.results(-1)) >= k+5 })
	}
	px.remove("spike")
	// ...and after it, in order, none lost.
	for _, w := range ws {
		k := len(w.view().results(-1))
		v := w.waitFor(t, r, "results after the spike", func(v view) bool { return len(v.results(-1)) >= k+5 })
		checkSequences(t, w, v)
		checkTicks(t, w, v.results(-1))
	}
	checkNoReconnect(t, r, ws)
}

// TestBandwidthLimit: a 50 KB/s cap with 1 KiB events slows results down;
// every one still arrives intact and the connection stays up.
func TestBandwidthLimit(t *testing.T) {
	t.Parallel()
	demo := startDemo(t)
	px := startProxy(t, hostOf(t, demo.URL()))
	px.add("cap", "bandwidth", "downstream", toxics.BandwidthToxic{Rate: 50}) // KB/s
	r := startBridge(t, &bridge.Upstream{Session: withoutKeepAlive(sessionConfig(px.url("/graphql")))})
	const count, size = 20, 1024
	ws := r.subscribeN(subscriptions, fmt.Sprintf("subscription { ticker(count: %d, intervalMs: 10, size: %d) { n payload } }", count, size))
	want := strings.Repeat("x", size)
	for _, w := range ws {
		v := w.waitEnd(t, r)
		if v.st.Code() != codes.OK {
			t.Fatalf("%s ended with %v, want OK; received %s", w.name, v.st, v)
		}
		results := v.results(-1)
		if len(results) != count {
			t.Fatalf("%s: %d results, want %d; received %s", w.name, len(results), count, v)
		}
		checkSequences(t, w, v)
		checkTicks(t, w, results)
		for _, n := range results {
			if got := string(n.GetResult()); !strings.Contains(got, `"payload":"`+want+`"`) {
				t.Fatalf("%s: result %d lost its payload: %.120q", w.name, n.GetSequence(), got)
			}
		}
	}
	checkNoReconnect(t, r, ws)
}

// TestBlackholeDetectedByKeepAlive: the upstream's bytes stop arriving but
// the connection is never closed (half-open). Only the keep-alive can tell,
// on either subprotocol (a ping message on graphql-transport-ws, a WebSocket
// ping on the legacy graphql-ws): every subscription hears
// STATE_RECONNECTING; once the black hole is gone they are resubscribed and
// results flow again.
func TestBlackholeDetectedByKeepAlive(t *testing.T) {
	t.Parallel()
	for _, proto := range []string{session.TransportWS, session.LegacyWS} {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			demo := startDemo(t)
			px := startProxy(t, hostOf(t, demo.URL()))
			cfg := sessionConfig(px.url("/graphql"))
			cfg.Subprotocols = []string{proto}
			cfg.KeepAlive, cfg.KeepAliveTimeout = 200*time.Millisecond, 300*time.Millisecond
			cfg.DialTimeout, cfg.AckTimeout = 500*time.Millisecond, 500*time.Millisecond
			r := startBridge(t, &bridge.Upstream{Session: cfg})
			ws := r.subscribeN(subscriptions, infinite)
			waitAll(t, r, ws, "first results", flowing(3))

			// timeout 0: swallow every byte, never close.
			px.add("blackhole", "timeout", "downstream", toxics.TimeoutToxic{Timeout: 0})
			waitAll(t, r, ws, "STATE_RECONNECTING", reconnecting)
			for _, w := range ws {
				lc := w.view().first(bridgev1.Lifecycle_STATE_RECONNECTING)
				if !strings.Contains(lc.GetCloseReason(), "keep-alive") {
					t.Fatalf("%s: reconnect caused by %d %q, want the keep-alive timeout", w.name, lc.GetCloseCode(), lc.GetCloseReason())
				}
			}
			px.remove("blackhole")
			waitAll(t, r, ws, "STATE_RESUBSCRIBED and results", resumed(3))
			for _, w := range ws {
				v := w.view()
				checkSequences(t, w, v)
				checkTicks(t, w, v.results(v.last(bridgev1.Lifecycle_STATE_RESUBSCRIBED)))
			}
			// The upstream runs exactly one operation per subscription again.
			waitUntil(t, "one upstream operation per subscription", func() bool {
				return demo.Stats().ActiveSubscriptions == subscriptions
			})
		})
	}
}

// TestResetPeer: the proxy resets the connection (RST, no close frame) on
// the next bytes from the upstream. Every subscription reconnects and
// resumes once resets stop.
func TestResetPeer(t *testing.T) {
	t.Parallel()
	testCut(t, "reset_peer", toxics.ResetToxic{Timeout: 0})
}

// TestCutMidFrame: the proxy forwards 1000 more bytes, then closes; with
// results of about 300 bytes the cut falls inside a WebSocket frame. Every
// subscription reconnects and resumes once the cuts stop.
func TestCutMidFrame(t *testing.T) {
	t.Parallel()
	testCut(t, "limit_data", toxics.LimitDataToxic{Bytes: 1000})
}

func testCut(t *testing.T, typ string, attrs any) {
	demo := startDemo(t)
	px := startProxy(t, hostOf(t, demo.URL()))
	r := startBridge(t, &bridge.Upstream{Session: sessionConfig(px.url("/graphql"))})
	ws := r.subscribeN(subscriptions, "subscription { ticker(count: 0, intervalMs: 10, size: 256) { n payload } }")
	waitAll(t, r, ws, "first results", flowing(3))

	px.add("cut", typ, "downstream", attrs)
	waitAll(t, r, ws, "STATE_RECONNECTING", reconnecting)
	px.remove("cut")
	waitAll(t, r, ws, "STATE_RESUBSCRIBED and results", resumed(3))
	for _, w := range ws {
		v := w.view()
		lc := v.first(bridgev1.Lifecycle_STATE_RECONNECTING)
		if lc.GetCloseCode() != uint32(session.CodeAbnormal) {
			t.Fatalf("%s: reconnect caused by %d %q, want %d (connection lost)", w.name, lc.GetCloseCode(), lc.GetCloseReason(), session.CodeAbnormal)
		}
		checkSequences(t, w, v)
		checkTicks(t, w, v.results(v.last(bridgev1.Lifecycle_STATE_RESUBSCRIBED)))
	}
	waitUntil(t, "one upstream operation per subscription", func() bool {
		return demo.Stats().ActiveSubscriptions == subscriptions
	})
}

// TestSlicedFrames: every byte each way crosses the proxy in segments of
// 4-12 bytes. Results arrive byte-for-byte as the upstream sent them, and
// the connection stays up.
func TestSlicedFrames(t *testing.T) {
	t.Parallel()
	demo := startDemo(t)
	px := startProxy(t, hostOf(t, demo.URL()))
	slices := toxics.SlicerToxic{AverageSize: 8, SizeVariation: 4, Delay: 20} // delay in µs
	px.add("slice_down", "slicer", "downstream", slices)
	px.add("slice_up", "slicer", "upstream", slices)
	r := startBridge(t, &bridge.Upstream{Session: withoutKeepAlive(sessionConfig(px.url("/graphql")))})
	const count, size = 20, 500
	ws := r.subscribeN(subscriptions, fmt.Sprintf("subscription { ticker(count: %d, intervalMs: 1, size: %d) { n payload } }", count, size))
	pad := strings.Repeat("x", size)
	for _, w := range ws {
		v := w.waitEnd(t, r)
		if v.st.Code() != codes.OK {
			t.Fatalf("%s ended with %v, want OK; received %s", w.name, v.st, v)
		}
		results := v.results(-1)
		if len(results) != count {
			t.Fatalf("%s: %d results, want %d; received %s", w.name, len(results), count, v)
		}
		checkSequences(t, w, v)
		for i, n := range results {
			want := fmt.Sprintf(`{"data":{"ticker":{"n":%d,"payload":"%s"}}}`, i+1, pad)
			if got := string(n.GetResult()); got != want {
				t.Fatalf("%s: result %d is\n%.200q\nwant\n%.200q", w.name, i, got, want)
			}
		}
	}
	checkNoReconnect(t, r, ws)
}

// TestUpstreamKilledAndRestarted: the reference graphql-ws server (Node) is
// killed with SIGKILL and started again on the same port, behind the proxy.
// Every subscription, shared ones included, hears STATE_RECONNECTING, then
// STATE_RESUBSCRIBED, and results continue; the new process runs each
// upstream operation exactly once.
func TestUpstreamKilledAndRestarted(t *testing.T) {
	t.Parallel()
	peer := testpeer.StartNode(t, testpeer.NodeOptions{Protocol: testpeer.TransportWS})
	px := startProxy(t, hostOf(t, peer.URL))
	r := startBridge(t, &bridge.Upstream{Session: sessionConfig(px.url("/graphql")), Dedup: true})
	// Five subscriptions, three upstream operations: three subscriptions share one.
	ws := append(r.subscribeN(3, infinite),
		r.subscribe("other0", "subscription { ticker(count: 0, intervalMs: 25) { n } }"),
		r.subscribe("other1", "subscription { ticker(count: 0, intervalMs: 30) { n } }"))
	waitAll(t, r, ws, "first results", func(v view) bool { return len(v.results(-1)) >= 3 })
	const ops = 3
	peer.WaitFor(t, func(s testpeer.Stats) bool { return s.Active == ops })

	peer.Restart(t)
	waitAll(t, r, ws, "STATE_RESUBSCRIBED and results", resumed(3))
	for _, w := range ws {
		checkSequences(t, w, w.view())
	}
	peer.WaitFor(t, func(s testpeer.Stats) bool { return s.Active == ops })
	if st := peer.Stats(t); st.Started != ops {
		t.Fatalf("the restarted upstream started %d operations, want %d (one per upstream operation)", st.Started, ops)
	}
}

// holder accepts TCP connections and never answers: an upstream whose
// process is alive but stuck before the WebSocket upgrade.
type holder struct {
	ln net.Listener
	wg sync.WaitGroup

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	accepted int
}

func startHolder(t *testing.T) *holder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &holder{ln: ln, conns: map[net.Conn]struct{}{}}
	h.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns[c] = struct{}{}
			h.accepted++
			h.mu.Unlock()
			h.wg.Go(func() {
				_, _ = io.Copy(io.Discard, c) // until the bridge gives up on it
				h.mu.Lock()
				delete(h.conns, c)
				h.mu.Unlock()
				_ = c.Close()
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		h.mu.Lock()
		for c := range h.conns {
			_ = c.Close()
		}
		h.mu.Unlock()
		h.wg.Wait()
	})
	return h
}

// counts returns the connections open now and accepted in total.
func (h *holder) counts() (open, accepted int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns), h.accepted
}

// TestUpgradeNeverAnswered: the upstream accepts TCP and never answers the
// upgrade. Each dial times out after DialTimeout and is abandoned (its
// socket closed); when the retry budget is spent every subscription ends
// with UNAVAILABLE and RetryInfo. Before that, a caller that cancels is
// released at once.
func TestUpgradeNeverAnswered(t *testing.T) {
	t.Parallel()
	t.Run("budget spent", func(t *testing.T) {
		t.Parallel()
		h := startHolder(t)
		cfg := sessionConfig("ws://" + h.ln.Addr().String() + "/graphql")
		cfg.DialTimeout = 200 * time.Millisecond
		cfg.Backoff = session.Backoff{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond, MaxElapsed: time.Second}
		r := startBridge(t, &bridge.Upstream{Session: cfg})
		ws := r.subscribeN(subscriptions, infinite)
		for _, w := range ws {
			v := w.waitEnd(t, r)
			if v.st.Code() != codes.Unavailable {
				t.Fatalf("%s ended with %v, want UNAVAILABLE; received %s", w.name, v.st, v)
			}
			if info := rpcstatus.ErrorInfo(v.st); info.GetReason() != bridge.ReasonUpstreamUnavailable || info.GetDomain() != bridge.Domain {
				t.Fatalf("%s: ErrorInfo %v, want reason %s", w.name, info, bridge.ReasonUpstreamUnavailable)
			}
			if ri := rpcstatus.RetryInfo(v.st); ri == nil || ri.GetRetryDelay().AsDuration() <= 0 {
				t.Fatalf("%s: RetryInfo %v, want a positive delay", w.name, ri)
			}
			if v.count(bridgev1.Lifecycle_STATE_SUBSCRIBED) != 0 || !reconnecting(v) {
				t.Fatalf("%s: want STATE_RECONNECTING and never STATE_SUBSCRIBED; received %s", w.name, v)
			}
		}
		if _, accepted := h.counts(); accepted < 2 {
			t.Fatalf("the upstream saw %d dials, want retries", accepted)
		}
		// Every dial that timed out was abandoned: none holds a socket.
		waitUntil(t, "abandoned dials to close their sockets", func() bool {
			open, _ := h.counts()
			return open == 0
		})
	})
	t.Run("caller cancels", func(t *testing.T) {
		t.Parallel()
		h := startHolder(t)
		cfg := sessionConfig("ws://" + h.ln.Addr().String() + "/graphql")
		cfg.DialTimeout = 200 * time.Millisecond
		// A budget far beyond the test: only the cancel can end the streams.
		cfg.Backoff = session.Backoff{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond, MaxElapsed: time.Minute}
		r := startBridge(t, &bridge.Upstream{Session: cfg, IdleTimeout: 100 * time.Millisecond})
		ws := r.subscribeN(subscriptions, infinite)
		waitAll(t, r, ws, "STATE_RECONNECTING", reconnecting)
		for _, w := range ws {
			w.cancel()
		}
		for _, w := range ws {
			if v := w.waitEnd(t, r); v.st.Code() != codes.Canceled {
				t.Fatalf("%s ended with %v, want CANCELED", w.name, v.st)
			}
		}
		// The bridge let go of the streams and their operations, and the
		// connection, left without operations, stopped dialing.
		waitUntil(t, "the bridge to release every stream and its connection", func() bool {
			u := r.svc.Snapshot().Upstreams[0]
			open, _ := h.counts()
			return u.Subscriptions == 0 && u.Operations == 0 && len(u.Connections) == 0 && open == 0
		})
	})
}
