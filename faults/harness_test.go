package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/gqlbridge/gqlbridge/bridge"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
	"github.com/gqlbridge/gqlbridge/session"
)

const (
	// upstreamName is the one upstream every test's bridge serves.
	upstreamName = "up"
	// testBudget bounds one fault test from its first subscription.
	testBudget = 15 * time.Second
	// waitTimeout bounds one wait on a condition. It detects a hang; it is
	// never a performance assertion.
	waitTimeout = 10 * time.Second
	// subscriptions is how many subscriptions each fault runs.
	subscriptions = 5
)

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// sessionConfig is the upstream connection template of the tests: short
// timeouts, keep-alive and backoff so a fault shows within a test's budget.
func sessionConfig(url string) session.Config {
	return session.Config{
		URL:              url,
		DialTimeout:      time.Second,
		AckTimeout:       time.Second,
		KeepAlive:        2 * time.Second,
		KeepAliveTimeout: 2 * time.Second,
		Backoff:          session.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		Logger:           quietLogger(),
	}
}

// withoutKeepAlive turns the keep-alive off for a test whose fault delays
// what the upstream sends without breaking the connection (latency, a
// bandwidth cap, sliced frames) and which asserts that no reconnect
// happens. Such a fault queues the answer to a keep-alive probe behind
// every result already in flight, in the proxy and in the socket buffers:
// up to seconds of them on a loaded machine (TestSlicedFrames pushes 50 KB
// through 8-byte slices), which is longer than the short keep-alive timeout
// of sessionConfig. A keep-alive that then gives up on the connection is
// right to, so the test would fail without a bug; the keep-alive has tests
// of its own (TestBlackholeDetectedByKeepAlive, TestOneWayBlackholeDetected).
func withoutKeepAlive(cfg session.Config) session.Config {
	cfg.KeepAlive = -1
	return cfg
}

// startDemo runs the gqlgen demo upstream; it is closed in t.Cleanup (and
// may be closed earlier: Close is idempotent).
func startDemo(t *testing.T) *demoupstream.Server {
	t.Helper()
	srv, err := demoupstream.Start(demoupstream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

// hostOf returns host:port of a ws:// URL.
func hostOf(t *testing.T, wsURL string) string {
	t.Helper()
	rest, ok := strings.CutPrefix(wsURL, "ws://")
	if !ok {
		t.Fatalf("not a ws:// URL: %s", wsURL)
	}
	host, _, _ := strings.Cut(rest, "/")
	return host
}

// proxy is a toxiproxy proxy from a free port of 127.0.0.1 to an upstream.
type proxy struct {
	t *testing.T
	p *toxiproxy.Proxy
}

// startProxy starts an in-process toxiproxy proxy in front of upstream
// (host:port). It is stopped in t.Cleanup: its listener closes and every
// proxied connection with it.
func startProxy(t *testing.T, upstream string) *proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, t.Name(), "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return &proxy{t: t, p: p}
}

// url is the WebSocket URL of the upstream through the proxy.
func (p *proxy) url(path string) string { return "ws://" + p.p.Listen + path }

// add installs a toxic on one direction: "downstream" is upstream → bridge,
// "upstream" is bridge → upstream. attrs is the toxic's attribute struct
// from package toxics. Existing connections get it at once.
func (p *proxy) add(name, typ, stream string, attrs any) {
	p.t.Helper()
	body, err := json.Marshal(map[string]any{"name": name, "type": typ, "stream": stream, "toxicity": 1.0, "attributes": attrs})
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.p.Toxics.AddToxicJson(bytes.NewReader(body)); err != nil {
		p.t.Fatalf("add toxic %s: %v", name, err)
	}
}

// remove uninstalls a toxic.
func (p *proxy) remove(name string) {
	p.t.Helper()
	if err := p.p.Toxics.RemoveToxic(context.Background(), name); err != nil {
		p.t.Fatalf("remove toxic %s: %v", name, err)
	}
}

// rig is a bridge serving one upstream over gRPC on bufconn, and a client.
type rig struct {
	t      *testing.T
	svc    *bridge.Server
	client bridgev1.SubscriptionServiceClient
	ctx    context.Context // bounds the test
}

// startBridge serves up as upstreamName. Everything stops in t.Cleanup.
func startBridge(t *testing.T, up *bridge.Upstream) *rig {
	t.Helper()
	svc, err := bridge.New(bridge.Config{Upstreams: map[string]*bridge.Upstream{upstreamName: up}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(svc.Codec()) // with the request limits, as wiring/grpc.go installs it
	bridgev1.RegisterSubscriptionServiceServer(gs, svc)
	lis := bufconn.Listen(1 << 20)
	served := make(chan struct{})
	go func() { _ = gs.Serve(lis); close(served) }()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		svc.Close()
		gs.Stop()
		<-served
	})
	ctx, cancel := context.WithTimeout(t.Context(), testBudget)
	t.Cleanup(cancel)
	return &rig{t: t, svc: svc, client: bridgev1.NewSubscriptionServiceClient(conn), ctx: ctx}
}

// snapshot describes the upstream's pool, for failure messages.
func (r *rig) snapshot() string {
	s := r.svc.Snapshot()
	if len(s.Upstreams) == 0 {
		return "no upstreams"
	}
	u := s.Upstreams[0]
	var b strings.Builder
	fmt.Fprintf(&b, "subscriptions=%d operations=%d connections=%+v events:", u.Subscriptions, u.Operations, u.Connections)
	for _, e := range u.Events {
		fmt.Fprintf(&b, "\n  %s code=%d class=%s attempt=%d reason=%q", e.Kind, e.Code, e.Class, e.Attempt, e.Reason)
	}
	return b.String()
}

// reconnects counts the reconnect events the pool recorded.
func (r *rig) reconnects() int {
	n := 0
	for _, e := range r.svc.Snapshot().Upstreams[0].Events {
		if e.Kind == bridge.EventReconnect || e.Kind == bridge.EventRefresh {
			n++
		}
	}
	return n
}

// watcher reads one Subscribe stream on its own goroutine and keeps
// everything it received, so a test can wait on conditions over the stream
// without ever blocking on Recv.
type watcher struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	events  []*bridgev1.SubscribeResponse
	st      *status.Status // the outcome, once the stream ended
	changed chan struct{}  // closed and replaced on every change
}

// subscribe opens a Subscribe stream for query; it is cancelled and its
// reader joined in t.Cleanup.
func (r *rig) subscribe(name, query string) *watcher {
	r.t.Helper()
	ctx, cancel := context.WithCancel(r.ctx)
	s, err := r.client.Subscribe(ctx, &bridgev1.SubscribeRequest{Upstream: upstreamName, Query: query})
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

// subscribeN opens n identical subscriptions.
func (r *rig) subscribeN(n int, query string) []*watcher {
	ws := make([]*watcher, n)
	for i := range ws {
		ws[i] = r.subscribe(fmt.Sprintf("sub%d", i), query)
	}
	return ws
}

func (w *watcher) read(s grpc.ServerStreamingClient[bridgev1.SubscribeResponse]) {
	defer close(w.done)
	for {
		resp, err := s.Recv()
		w.mu.Lock()
		if err != nil {
			w.st = status.New(codes.OK, "")
			if !errors.Is(err, io.EOF) {
				w.st = status.Convert(err)
			}
		} else {
			w.events = append(w.events, resp)
		}
		close(w.changed)
		w.changed = make(chan struct{})
		w.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// view is what a watcher received so far.
type view struct {
	events []*bridgev1.SubscribeResponse
	st     *status.Status // nil while the stream is open
}

func (w *watcher) view() view {
	w.mu.Lock()
	defer w.mu.Unlock()
	return view{events: w.events[:len(w.events):len(w.events)], st: w.st}
}

// waitFor waits until cond holds for what the stream received, failing the
// test when the stream ends first or after waitTimeout.
func (w *watcher) waitFor(t *testing.T, r *rig, what string, cond func(view) bool) view {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		w.mu.Lock()
		v := view{events: w.events[:len(w.events):len(w.events)], st: w.st}
		changed := w.changed
		w.mu.Unlock()
		if cond(v) {
			return v
		}
		if v.st != nil {
			t.Fatalf("%s: stream ended with %v before %s; received %s\nbridge: %s", w.name, v.st, what, v, r.snapshot())
		}
		select {
		case <-changed:
		case <-timer.C:
			t.Fatalf("%s: no %s within %v; received %s\nbridge: %s", w.name, what, waitTimeout, v, r.snapshot())
		}
	}
}

// waitEnd waits for the stream's outcome.
func (w *watcher) waitEnd(t *testing.T, r *rig) view {
	t.Helper()
	return w.waitFor(t, r, "end of stream", func(v view) bool { return v.st != nil })
}

// waitAll waits for cond on every watcher.
func waitAll(t *testing.T, r *rig, ws []*watcher, what string, cond func(view) bool) {
	t.Helper()
	for _, w := range ws {
		w.waitFor(t, r, what, cond)
	}
}

func (v view) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d events [", len(v.events))
	for i, e := range v.events {
		if i > 0 {
			b.WriteString(" ")
		}
		if lc := e.GetLifecycle(); lc != nil {
			fmt.Fprintf(&b, "%s(code=%d %q)", strings.TrimPrefix(lc.GetState().String(), "STATE_"), lc.GetCloseCode(), lc.GetCloseReason())
		} else {
			fmt.Fprintf(&b, "#%d", e.GetNext().GetSequence())
		}
	}
	b.WriteString("]")
	if v.st != nil {
		fmt.Fprintf(&b, " ended %v", v.st)
	}
	return b.String()
}

// count counts the lifecycle events in state.
func (v view) count(state bridgev1.Lifecycle_State) int {
	n := 0
	for _, e := range v.events {
		if lc := e.GetLifecycle(); lc != nil && lc.GetState() == state {
			n++
		}
	}
	return n
}

// last returns the index of the last lifecycle event in state, or -1.
func (v view) last(state bridgev1.Lifecycle_State) int {
	for i := len(v.events) - 1; i >= 0; i-- {
		if lc := v.events[i].GetLifecycle(); lc != nil && lc.GetState() == state {
			return i
		}
	}
	return -1
}

// first returns the first lifecycle event in state, or nil.
func (v view) first(state bridgev1.Lifecycle_State) *bridgev1.Lifecycle {
	for _, e := range v.events {
		if lc := e.GetLifecycle(); lc != nil && lc.GetState() == state {
			return lc
		}
	}
	return nil
}

// results returns the results received after index from (exclusive; -1 for
// all).
func (v view) results(from int) []*bridgev1.Next {
	var out []*bridgev1.Next
	for _, e := range v.events[from+1:] {
		if n := e.GetNext(); n != nil {
			out = append(out, n)
		}
	}
	return out
}

// resumed holds once the stream was resubscribed after its last reconnect
// and received at least k results since.
func resumed(k int) func(view) bool {
	return func(v view) bool {
		rc, rs := v.last(bridgev1.Lifecycle_STATE_RECONNECTING), v.last(bridgev1.Lifecycle_STATE_RESUBSCRIBED)
		return rc >= 0 && rs > rc && len(v.results(rs)) >= k
	}
}

// flowing holds once the stream was subscribed and received k results.
func flowing(k int) func(view) bool {
	return func(v view) bool {
		return v.count(bridgev1.Lifecycle_STATE_SUBSCRIBED) == 1 && len(v.results(-1)) >= k
	}
}

// reconnecting holds once the stream heard STATE_RECONNECTING.
func reconnecting(v view) bool { return v.count(bridgev1.Lifecycle_STATE_RECONNECTING) > 0 }

// tick is the ticker subscription's result.
type tick struct {
	Data struct {
		Ticker struct {
			N       int     `json:"n"`
			Payload *string `json:"payload"`
		} `json:"ticker"`
	} `json:"data"`
}

func tickN(t *testing.T, n *bridgev1.Next) int {
	t.Helper()
	var tk tick
	if err := json.Unmarshal(n.GetResult(), &tk); err != nil {
		t.Fatalf("result %d is not a tick: %v: %q", n.GetSequence(), err, n.GetResult())
	}
	return tk.Data.Ticker.N
}

// checkSequences checks that result sequences grow by one from 1: nothing
// was dropped or repeated on the way to the caller.
func checkSequences(t *testing.T, w *watcher, v view) {
	t.Helper()
	for i, n := range v.results(-1) {
		if n.GetSequence() != uint64(i+1) {
			t.Fatalf("%s: result %d has sequence %d; received %s", w.name, i, n.GetSequence(), v)
		}
	}
}

// checkTicks checks that results count the ticker from 1 without a gap.
func checkTicks(t *testing.T, w *watcher, results []*bridgev1.Next) {
	t.Helper()
	for i, n := range results {
		if got := tickN(t, n); got != i+1 {
			t.Fatalf("%s: result %d is tick %d, want %d", w.name, i, got, i+1)
		}
	}
}

// checkNoReconnect checks that the fault did not cost a reconnect.
func checkNoReconnect(t *testing.T, r *rig, ws []*watcher) {
	t.Helper()
	for _, w := range ws {
		if v := w.view(); v.count(bridgev1.Lifecycle_STATE_RECONNECTING) > 0 {
			t.Fatalf("%s reconnected: %s\nbridge: %s", w.name, v, r.snapshot())
		}
	}
	if n := r.reconnects(); n > 0 {
		t.Fatalf("the bridge reconnected %d times\nbridge: %s", n, r.snapshot())
	}
}

// waitUntil waits for cond, which the test cannot be notified about, by
// polling; the interval is not a synchronisation, only cond is.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("no %s within %v", what, waitTimeout)
		case <-tick.C:
		}
	}
}
