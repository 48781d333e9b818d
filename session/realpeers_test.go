package session

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
	"github.com/gqlbridge/gqlbridge/internal/testpeer"
)

// The tests in this file run the session against real GraphQL servers: the
// reference graphql-ws server and the legacy subscriptions-transport-ws
// server in node (internal/testpeer; `make peers` installs them), and the
// gqlgen demo upstream in process. Nothing here is scripted: every close
// code, error and completion is what those libraries do.

// upstreamCounts is what a real server saw, whichever it is.
type upstreamCounts struct {
	active, started, ended, rejected int
}

// upstream is one running real server.
type upstream struct {
	name  string
	proto string
	url   string
	// errQuery is a subscription the server fails with an operation
	// "error" message (validation failure or a failing event stream,
	// depending on the library).
	errQuery string
	counts   func(t testing.TB) upstreamCounts
	node     *testpeer.Node // nil for gqlgen
}

type upstreamOptions struct {
	token string
	ttl   time.Duration
}

func startNode(t testing.TB, proto string, o upstreamOptions) *upstream {
	t.Helper()
	n := testpeer.StartNode(t, testpeer.NodeOptions{Protocol: testpeer.Protocol(proto), Token: o.token, TokenTTL: o.ttl})
	return &upstream{
		name: "node-" + proto, proto: proto, url: n.URL, node: n,
		errQuery: `subscription { failing(message: "boom") { n } }`,
		counts: func(t testing.TB) upstreamCounts {
			s := n.Stats(t)
			return upstreamCounts{active: s.Active, started: s.Started, ended: s.Ended, rejected: s.Rejected}
		},
	}
}

func startGQLGen(t testing.TB, proto string, o upstreamOptions) *upstream {
	t.Helper()
	s, err := demoupstream.Start(demoupstream.Options{Token: o.token, TokenTTL: o.ttl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return &upstream{
		name: "gqlgen-" + proto, proto: proto, url: s.URL(),
		errQuery: `subscription { nope }`,
		counts: func(testing.TB) upstreamCounts {
			st := s.Stats()
			return upstreamCounts{active: st.ActiveSubscriptions, started: int(st.SubscriptionsStarted),
				ended: int(st.SubscriptionsEnded), rejected: int(st.InitsRejected)}
		},
	}
}

// everyUpstream is the four real servers a test runs against: both node
// libraries and gqlgen on both subprotocols.
var everyUpstream = []struct {
	name  string
	start func(t testing.TB, o upstreamOptions) *upstream
}{
	{"node-" + TransportWS, func(t testing.TB, o upstreamOptions) *upstream { return startNode(t, TransportWS, o) }},
	{"node-" + LegacyWS, func(t testing.TB, o upstreamOptions) *upstream { return startNode(t, LegacyWS, o) }},
	{"gqlgen-" + TransportWS, func(t testing.TB, o upstreamOptions) *upstream { return startGQLGen(t, TransportWS, o) }},
	{"gqlgen-" + LegacyWS, func(t testing.TB, o upstreamOptions) *upstream { return startGQLGen(t, LegacyWS, o) }},
}

// waitCounts polls the server until cond holds.
func (u *upstream) waitCounts(t testing.TB, what string, cond func(upstreamCounts) bool) upstreamCounts {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c := u.counts(t)
		if cond(c) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: waiting for %s; last counts %+v", u.name, what, c)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ticker(count, intervalMs int) Request {
	return Request{Query: fmt.Sprintf("subscription { ticker(count: %d, intervalMs: %d) { n } }", count, intervalMs)}
}

// tickN decodes the n of a ticker result.
func tickN(t testing.TB, payload string) int {
	t.Helper()
	var r struct {
		Data struct {
			Ticker struct{ N int } `json:"ticker"`
		} `json:"data"`
		Errors json.RawMessage `json:"errors"`
	}
	if err := json.Unmarshal([]byte(payload), &r); err != nil || r.Errors != nil || r.Data.Ticker.N == 0 {
		t.Fatalf("result %s is not a tick (%v)", payload, err)
	}
	return r.Data.Ticker.N
}

func bearer(token string) json.RawMessage {
	return json.RawMessage(`{"Authorization":"Bearer ` + token + `"}`)
}

func (u *upstream) config(hs *handshakes, st *states) Config {
	cfg := Config{URL: u.url, Subprotocols: []string{u.proto}, Backoff: Backoff{Initial: 5 * time.Millisecond, Max: 100 * time.Millisecond, StableAfter: time.Hour}}
	if hs != nil {
		cfg.Handshake = hs.fn
	}
	if st != nil {
		cfg.OnState = st.fn
	}
	return cfg
}

// TestRealStreamCompleteAndError: each real server streams and completes an
// operation, ends another with an operation error without disturbing the
// first, and completes one at once.
func TestRealStreamCompleteAndError(t *testing.T) {
	t.Parallel()
	for _, up := range everyUpstream {
		t.Run(up.name, func(t *testing.T) {
			t.Parallel()
			u := up.start(t, upstreamOptions{})
			st := &states{}
			c := dialTest(t, u.config(nil, st))
			stream, failing, instant := newProbe(), newProbe(), newProbe()
			if _, err := c.Subscribe(ticker(3, 30), stream); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Subscribe(Request{Query: u.errQuery}, failing); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Subscribe(Request{Query: "subscription { completeImmediately { n } }"}, instant); err != nil {
				t.Fatal(err)
			}
			var gerr *GraphQLError
			if err := failing.waitDone(t); !errors.As(err, &gerr) || !json.Valid(gerr.Errors) || !strings.HasPrefix(string(gerr.Errors), "[") {
				t.Fatalf("failing operation: outcome %v, want GraphQL errors", err)
			}
			if err := instant.waitDone(t); err != nil {
				t.Fatalf("completeImmediately: outcome %v, want nil", err)
			}
			if err := stream.waitDone(t); err != nil {
				t.Fatalf("ticker: outcome %v, want nil", err)
			}
			log, nexts, _ := stream.snap()
			if joinLog(log) != "subscribed,next,next,next,done" {
				t.Fatalf("ticker log %v", log)
			}
			for i, p := range nexts {
				if tickN(t, p) != i+1 {
					t.Fatalf("results %v", nexts)
				}
			}
			for _, p := range []*probe{failing, instant} {
				if log, _, _ := p.snap(); joinLog(log) != "subscribed,done" {
					t.Fatalf("log %v, want subscribed,done", log)
				}
			}
			if c.Len() != 0 || st.count(StateBackoff) != 0 || st.count(StateReady) != 1 {
				t.Fatalf("live %d, backoffs %d, ready %d: want 0, 0, 1", c.Len(), st.count(StateBackoff), st.count(StateReady))
			}
			for _, sc := range st.list() {
				if sc.State == StateReady && sc.Subprotocol != u.proto {
					t.Fatalf("spoke %q, want %q", sc.Subprotocol, u.proto)
				}
			}
			u.waitCounts(t, "every operation ended", func(c upstreamCounts) bool { return c.active == 0 })
		})
	}
}

// TestRealStop: Stop tells the server at once, which ends the operation;
// the other operation on the connection keeps running; Close ends the rest.
func TestRealStop(t *testing.T) {
	t.Parallel()
	for _, up := range everyUpstream {
		t.Run(up.name, func(t *testing.T) {
			t.Parallel()
			u := up.start(t, upstreamOptions{})
			c := dialTest(t, u.config(nil, nil))
			a, b := newProbe(), newProbe()
			opA, err := c.Subscribe(ticker(0, 10), a)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Subscribe(ticker(0, 10), b); err != nil {
				t.Fatal(err)
			}
			a.waitNexts(t, 2)
			b.waitNexts(t, 2)
			u.waitCounts(t, "two operations", func(c upstreamCounts) bool { return c.active == 2 })
			opA.Stop()
			u.waitCounts(t, "the stopped operation to end", func(c upstreamCounts) bool { return c.active == 1 && c.ended == 1 })
			_, seen, _ := b.snap()
			b.waitNexts(t, len(seen)+3)
			if a.doneCount() != 0 {
				t.Fatalf("OnDone after Stop: %v", a.dones)
			}
			if c.Len() != 1 {
				t.Fatalf("%d live operations, want 1", c.Len())
			}
			c.Close(CodeGoingAway, nil)
			if err := b.waitDone(t); !errors.Is(err, ErrClosed) {
				t.Fatalf("outcome %v, want ErrClosed", err)
			}
			u.waitCounts(t, "Close to end every operation", func(c upstreamCounts) bool { return c.active == 0 && c.ended == 2 })
		})
	}
}

// tokens is a credential source: a fresh token is a new version.
type tokens struct {
	mu      sync.Mutex
	version int
	fixed   string // when set, every version is this token
}

func (s *tokens) payload(a Attempt) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a.Refresh || s.version == 0 {
		s.version++
	}
	tok := s.fixed
	if tok == "" {
		tok = fmt.Sprintf("t%d", min(s.version, 2)) // the node peer accepts t2 after SetToken
	}
	return string(bearer(tok))
}

// TestRealTokenExpiry: the server closes 4401 when the token expires; the
// session asks for exactly one fresh token, reconnects with it and the
// same operations continue.
func TestRealTokenExpiry(t *testing.T) {
	t.Parallel()
	for _, up := range everyUpstream {
		t.Run(up.name, func(t *testing.T) {
			t.Parallel()
			toks := &tokens{}
			if strings.HasPrefix(up.name, "gqlgen") {
				toks.fixed = "t1" // the demo upstream accepts one token; it still expires
			}
			u := up.start(t, upstreamOptions{token: "t1", ttl: 1500 * time.Millisecond})
			hs, st := &handshakes{payload: toks.payload}, &states{}
			cfg := u.config(hs, st)
			cfg.Backoff.StableAfter = 100 * time.Millisecond // the token lives longer
			c := dialTest(t, cfg)
			ops := []*probe{newProbe(), newProbe()}
			for _, p := range ops {
				if _, err := c.Subscribe(ticker(0, 20), p); err != nil {
					t.Fatal(err)
				}
			}
			for _, p := range ops {
				p.waitNexts(t, 1)
			}
			if u.node != nil {
				// From now on only the next token passes: a reconnect
				// without a refresh would be rejected.
				u.node.SetToken(t, "t2")
			}
			for _, p := range ops {
				p.waitFor(t, 20*time.Second, "resubscribed after expiry", func(p *probe) bool { return slices.Contains(p.log, "resubscribed") })
				_, seen, _ := p.snap()
				p.waitNexts(t, len(seen)+3) // results keep arriving
			}
			for _, p := range ops {
				log, _, dones := p.snap()
				if len(dones) != 0 {
					t.Fatalf("operation ended: %v", dones)
				}
				i := slices.Index(log, "resubscribed")
				if i < 2 || log[i-1] != "reconnecting:4401" || log[0] != "subscribed" {
					t.Fatalf("log %v, want Reconnecting 4401 right before Resubscribed", log)
				}
				for _, ev := range p.Events() {
					if ev.Kind == Reconnecting && (ev.Code != 4401 || !strings.Contains(ev.Reason, "expired")) {
						t.Fatalf("Reconnecting %+v, want only token expiry (4401)", ev)
					}
				}
			}
			// Exactly one refresh per expiry, asked because of the 4401:
			// every attempt after the first asked for a fresh token.
			// (Closing first settles the counts; Close may interrupt the
			// backoff of a later expiry before its attempt.)
			c.Close(CodeNormal, nil)
			expiries := 0
			for _, b := range st.backoffs() {
				if b.Cause.Code != 4401 || b.Cause.Class != ClassAuth || b.Cause.BeforeAck {
					t.Fatalf("backoff cause %+v, want only auth 4401 after the ack", b.Cause)
				}
				expiries++
			}
			all, refreshes := hs.list(), hs.refreshes()
			if expiries == 0 || len(refreshes) != len(all)-1 || all[0].Refresh || len(all)-1 != expiries && len(all) != expiries {
				t.Fatalf("%d expiries, handshakes %+v: want one refresh each", expiries, all)
			}
			for _, a := range refreshes {
				if a.Cause == nil || a.Cause.Code != 4401 {
					t.Fatalf("refresh cause %+v, want 4401", a.Cause)
				}
			}
			if n := u.counts(t).rejected; n != 0 {
				t.Fatalf("the server rejected %d connection_init: a stale token was sent", n)
			}
		})
	}
}

// TestRealInvalidToken: a token the server never accepts ends in a
// terminal auth error after exactly one refresh.
func TestRealInvalidToken(t *testing.T) {
	t.Parallel()
	for _, up := range everyUpstream {
		t.Run(up.name, func(t *testing.T) {
			t.Parallel()
			u := up.start(t, upstreamOptions{token: "right"})
			hs := &handshakes{payload: func(Attempt) string { return string(bearer("wrong")) }, gate: make(chan struct{})}
			c := dialTest(t, u.config(hs, nil))
			p := newProbe()
			subscribe(t, c, p)
			close(hs.gate)
			e := asError(t, p.waitDone(t))
			<-c.Done()
			if e.Class != ClassAuth || !e.BeforeAck || e.Exhausted {
				t.Fatalf("outcome %+v, want terminal auth before the ack", e)
			}
			switch {
			case u.proto == LegacyWS:
				// Both legacy servers send connection_error first (then
				// close 1011, or 4403 for gqlgen).
				if !strings.HasPrefix(e.Reason, "connection_error") {
					t.Fatalf("reason %q, want connection_error", e.Reason)
				}
			case e.Code != 4403:
				t.Fatalf("code %d, want 4403", e.Code)
			}
			if r := hs.refreshes(); len(r) != 1 || len(hs.list()) != 2 {
				t.Fatalf("handshakes %+v, want 2 with exactly one refresh", hs.list())
			}
			if log, _, _ := p.snap(); len(log) != 2 || !strings.HasPrefix(log[0], "reconnecting:") || log[1] != "done" {
				t.Fatalf("log %v, want one Reconnecting then done", log)
			}
			u.waitCounts(t, "two rejections", func(c upstreamCounts) bool { return c.rejected == 2 })
		})
	}
}

// TestRealRestart: the upstream is killed and started again under several
// live operations: every operation is resubscribed, with ids the server
// never saw before, and runs exactly once.
func TestRealRestart(t *testing.T) {
	t.Parallel()
	const n = 5
	for _, proto := range protocols() {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			u := startNode(t, proto, upstreamOptions{})
			st := &states{}
			c := dialTest(t, u.config(nil, st))
			ops := make([]*probe, n)
			for i := range ops {
				ops[i] = newProbe()
				if _, err := c.Subscribe(ticker(0, 20), ops[i]); err != nil {
					t.Fatal(err)
				}
			}
			for _, p := range ops {
				p.waitNexts(t, 1)
			}
			before := u.node.Stats(t)
			if before.Active != n || len(before.SubscribeIDs) != n {
				t.Fatalf("before the restart: %+v", before)
			}
			u.node.Restart(t)
			for _, p := range ops {
				p.waitFor(t, 20*time.Second, "resubscribed", func(p *probe) bool { return slices.Contains(p.log, "resubscribed") })
				_, seen, _ := p.snap()
				p.waitNexts(t, len(seen)+2)
			}
			after := u.node.Stats(t)
			if after.Active != n || after.Started != n || len(after.SubscribeIDs) != n {
				t.Fatalf("after the restart: %+v, want exactly %d operations", after, n)
			}
			for _, id := range after.SubscribeIDs {
				if slices.Contains(before.SubscribeIDs, id) {
					t.Fatalf("id %q reused after the restart (before %v, after %v)", id, before.SubscribeIDs, after.SubscribeIDs)
				}
			}
			for _, p := range ops {
				log, _, _ := p.snap()
				i := slices.Index(log, "resubscribed")
				if !slices.Contains(log[:i], "reconnecting:1006") || slices.Contains(log[i+1:], "resubscribed") || p.doneCount() != 0 {
					t.Fatalf("log %v, want Reconnecting 1006 then one Resubscribed", log)
				}
			}
			if bo := st.backoffs(); len(bo) == 0 || bo[0].Cause.Code != CodeAbnormal {
				t.Fatalf("backoffs %+v, want the first caused by 1006", bo)
			}
		})
	}
}

// TestRealDropAll: the server's sockets die without a close frame; the
// session hears 1006 and resubscribes.
func TestRealDropAll(t *testing.T) {
	t.Parallel()
	for _, proto := range protocols() {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			u := startNode(t, proto, upstreamOptions{})
			c := dialTest(t, u.config(nil, nil))
			ops := []*probe{newProbe(), newProbe()}
			for _, p := range ops {
				if _, err := c.Subscribe(ticker(0, 20), p); err != nil {
					t.Fatal(err)
				}
				p.waitNexts(t, 1)
			}
			u.node.DropAll(t)
			for _, p := range ops {
				p.waitFor(t, 20*time.Second, "resubscribed", func(p *probe) bool { return slices.Contains(p.log, "resubscribed") })
				_, seen, _ := p.snap()
				p.waitNexts(t, len(seen)+2)
				log, _, _ := p.snap()
				i := slices.Index(log, "resubscribed")
				if log[i-1] != "reconnecting:1006" {
					t.Fatalf("log %v, want Reconnecting 1006 then Resubscribed", log)
				}
			}
			u.node.WaitFor(t, func(s testpeer.Stats) bool { return s.Active == 2 && s.Connections == 1 })
		})
	}
}

// TestRealSubprotocolDisagreement: offered only the other subprotocol, a
// reference server refuses it (graphql-ws closes 4406, the legacy server
// 1002): a misconfiguration, never retried.
func TestRealSubprotocolDisagreement(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		server, offer string
		code          int
	}{
		{TransportWS, LegacyWS, 4406},
		{LegacyWS, TransportWS, 1002},
	} {
		t.Run(tc.server+"-offered-"+tc.offer, func(t *testing.T) {
			t.Parallel()
			u := startNode(t, tc.server, upstreamOptions{})
			dc, st := &dialCounter{}, &states{}
			hs := &handshakes{gate: make(chan struct{})}
			c := dialTest(t, Config{URL: u.url, Subprotocols: []string{tc.offer}, HTTPClient: dc.client(), OnState: st.fn, Handshake: hs.fn})
			p := newProbe()
			subscribe(t, c, p)
			close(hs.gate)
			e := asError(t, p.waitDone(t))
			<-c.Done()
			if e.Class != ClassMisconfig || e.Code != CloseCode(tc.code) {
				t.Fatalf("outcome %+v, want misconfiguration %d", e, tc.code)
			}
			if dc.n.Load() != 1 || st.count(StateBackoff) != 0 || len(hs.list()) != 1 {
				t.Fatalf("%d dials, %d backoffs, %d handshakes: want 1, 0, 1", dc.n.Load(), st.count(StateBackoff), len(hs.list()))
			}
		})
	}
}

// TestRealUnreachable: nothing listens: retries are bounded by MaxElapsed,
// then the outcome is an exhausted transient error.
func TestRealUnreachable(t *testing.T) {
	t.Parallel()
	addr := deadAddr(t)
	dc, st := &dialCounter{}, &states{}
	hs := &handshakes{gate: make(chan struct{})} // the operation hears every failure
	c := dialTest(t, Config{URL: "ws://" + addr + "/graphql", HTTPClient: dc.client(), OnState: st.fn, Handshake: hs.fn,
		Backoff: Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, MaxElapsed: 300 * time.Millisecond}})
	p := newProbe()
	subscribe(t, c, p)
	close(hs.gate)
	e := asError(t, p.waitDone(t))
	<-c.Done()
	if e.Class != ClassTransient || !e.Exhausted || e.Code != 0 || e.HTTPStatus != 0 || e.Err == nil {
		t.Fatalf("outcome %+v, want an exhausted transient dial error", e)
	}
	dials := int(dc.n.Load())
	if dials < 2 || e.Attempts != dials {
		t.Fatalf("%d dials, Attempts %d: want several, and equal", dials, e.Attempts)
	}
	log, _, _ := p.snap()
	if len(log) != dials || log[len(log)-1] != "done" || log[0] != "reconnecting:0" {
		t.Fatalf("log %v, want %d Reconnecting then done", log, dials-1)
	}
	if c.State() != StateClosed || st.list()[len(st.list())-1].State != StateClosed {
		t.Fatalf("state %v", c.State())
	}
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t testing.TB) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// TestRealCloseWhileBackingOff: Close during a long backoff returns at once
// and the operation ends with ErrClosed.
func TestRealCloseWhileBackingOff(t *testing.T) {
	t.Parallel()
	st := &states{}
	backingOff := make(chan struct{})
	var once sync.Once
	c := dialTest(t, Config{URL: "ws://" + deadAddr(t) + "/graphql",
		Backoff: Backoff{Initial: time.Hour, Max: time.Hour},
		Rand:    func() float64 { return 0.99 },
		OnState: func(sc StateChange) {
			st.fn(sc)
			if sc.State == StateBackoff {
				once.Do(func() { close(backingOff) })
			}
		}})
	p := newProbe()
	subscribe(t, c, p)
	select {
	case <-backingOff:
	case <-t.Context().Done():
	}
	if bo := st.backoffs(); len(bo) != 1 || bo[0].Delay < 50*time.Minute {
		t.Fatalf("backoffs %+v, want one long delay", bo)
	}
	closed := make(chan struct{})
	go func() {
		c.Close(CodeGoingAway, nil)
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for the backoff")
	}
	if err := p.waitDone(t); !errors.Is(err, ErrClosed) || p.doneCount() != 1 {
		t.Fatalf("outcome %v (OnDone %d times), want ErrClosed once", err, p.doneCount())
	}
}

// TestRealCloseWhileDialing: the upstream accepted the TCP connection but
// never answers the upgrade; Close abandons the dial at once, and the
// upstream sees the socket closed (the dial was cancelled, not left
// dangling).
func TestRealCloseWhileDialing(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := lis.Accept()
		if err == nil {
			accepted <- conn
		}
	}()
	// Go's http.Transport lets a dial the request no longer wants finish
	// and pools the connection; without keep-alives it closes it instead.
	dc := &dialCounter{}
	c := dialTest(t, Config{URL: "ws://" + lis.Addr().String() + "/graphql", DialTimeout: time.Hour, HTTPClient: dc.client()})
	p := newProbe()
	subscribe(t, c, p)
	var conn net.Conn
	select {
	case conn = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("the session never dialed")
	}
	defer conn.Close()
	if s := c.State(); s != StateConnecting {
		t.Fatalf("state %v, want connecting", s)
	}
	closed := make(chan struct{})
	go func() {
		c.Close(CodeGoingAway, nil)
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for the dial")
	}
	if err := p.waitDone(t); !errors.Is(err, ErrClosed) || p.doneCount() != 1 {
		t.Fatalf("outcome %v (OnDone %d times), want ErrClosed once", err, p.doneCount())
	}
	// The upstream sees the abandoned socket end: read the request, then EOF.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	total := 0
	for {
		n, err := conn.Read(buf)
		total += n
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the abandoned dial's socket is still open (read %d bytes)", total)
			}
			break
		}
	}
}
