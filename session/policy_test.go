package session

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/gqlbridge/gqlbridge/internal/scripted"
)

// The tests in this file prove the outcome policy (closecodes.go,
// docs/design.md §5) one row at a time, against the scripted server: for
// every code or event of a row the server produces it on command and the
// test asserts what the operations hear, what the credential callback is
// asked, and how many connections the session makes.

// TestDefaultClass checks the default table over every close code a peer can
// name (1000-4999), before and after the ack.
func TestDefaultClass(t *testing.T) {
	t.Parallel()
	named := map[CloseCode]Class{}
	for _, c := range []CloseCode{1001, 1005, 1006, 1012, 1013, 1014, 4408, 4500, 4504} {
		named[c] = ClassTransient
	}
	for _, c := range []CloseCode{4401, 4403, 4499, 1008} {
		named[c] = ClassAuth
	}
	for _, c := range []CloseCode{4406, 1002, 1015} {
		named[c] = ClassMisconfig
	}
	for _, c := range []CloseCode{4400, 4409, 4429, 1003, 1007, 1009, 1010, 4004, 4005} {
		named[c] = ClassBridgeFault
	}
	for code := CloseCode(1000); code <= 4999; code++ {
		for _, beforeAck := range []bool{true, false} {
			want, ok := named[code]
			if !ok {
				// 1000, 1011 and every code no row names: the server
				// refused connection_init before the ack; a lost
				// connection after it.
				want = ClassTransient
				if beforeAck {
					want = ClassAuth
				}
			}
			if got := DefaultClass(code, beforeAck); got != want {
				t.Errorf("DefaultClass(%d, beforeAck=%v) = %v, want %v", code, beforeAck, got, want)
			}
			if got := (Policy{}).Classify(code, beforeAck); got != want {
				t.Errorf("zero Policy.Classify(%d, %v) = %v, want %v", code, beforeAck, got, want)
			}
		}
	}
	// The two codes the table names only in context.
	for _, code := range []CloseCode{1000, 1011} {
		if DefaultClass(code, true) != ClassAuth || DefaultClass(code, false) != ClassTransient {
			t.Errorf("%d: want auth before the ack and transient after it", code)
		}
	}
}

func TestPolicyOverridesClassify(t *testing.T) {
	t.Parallel()
	p := Policy{Overrides: map[CloseCode]Class{4400: ClassAuth, 1000: ClassMisconfig, 4321: ClassBridgeFault}}
	for _, tc := range []struct {
		code      CloseCode
		beforeAck bool
		want      Class
	}{
		{4400, false, ClassAuth}, {4400, true, ClassAuth},
		{1000, true, ClassMisconfig}, {1000, false, ClassMisconfig},
		{4321, true, ClassBridgeFault}, {4321, false, ClassBridgeFault},
		{4403, false, ClassAuth}, // not overridden: the default
		{4322, false, ClassTransient},
	} {
		if got := p.Classify(tc.code, tc.beforeAck); got != tc.want {
			t.Errorf("Classify(%d, %v) = %v, want %v", tc.code, tc.beforeAck, got, tc.want)
		}
	}
}

func TestClassifyHTTP(t *testing.T) {
	t.Parallel()
	for status, want := range map[int]Class{
		401: ClassAuth, 403: ClassAuth,
		429: ClassTransient, 500: ClassTransient, 502: ClassTransient, 503: ClassTransient, 504: ClassTransient,
		400: ClassMisconfig, 404: ClassMisconfig, 405: ClassMisconfig, 426: ClassMisconfig, 200: ClassMisconfig,
	} {
		if got := classifyHTTP(status); got != want {
			t.Errorf("classifyHTTP(%d) = %v, want %v", status, got, want)
		}
	}
}

func TestParseClass(t *testing.T) {
	t.Parallel()
	for _, c := range []Class{ClassTransient, ClassAuth, ClassMisconfig, ClassBridgeFault} {
		got, err := ParseClass(c.String())
		if err != nil || got != c {
			t.Errorf("ParseClass(%q) = %v, %v", c.String(), got, err)
		}
	}
	if _, err := ParseClass("fatal"); err == nil || !strings.Contains(err.Error(), "bridge_fault") {
		t.Errorf("ParseClass(fatal): %v, want an error listing the allowed names", err)
	}
}

// fault is one thing the scripted server does to a connection.
type fault struct {
	close      int    // close with this code (1005: a close frame without status)
	reason     string // with close
	drop       bool   // cut the TCP connection without a close frame (1006)
	silent     bool   // read connection_init, never acknowledge it
	deaf       bool   // stop reading and writing: pings go unanswered
	connErr    bool   // legacy connection_error, then close 1011
	http       int    // refuse the upgrade with this status
	retryAfter string // with http: the Retry-After header
}

func (f fault) String() string {
	switch {
	case f.close != 0:
		return fmt.Sprintf("close %d", f.close)
	case f.drop:
		return "drop"
	case f.silent:
		return "no ack"
	case f.deaf:
		return "no pong"
	case f.connErr:
		return "connection_error"
	case f.http != 0:
		return fmt.Sprintf("HTTP %d", f.http)
	}
	return "none"
}

// wire returns the message types of proto: subscribe and next.
func wire(proto string) (sub, next string) {
	if proto == LegacyWS {
		return msgStart, msgData
	}
	return msgSubscribe, msgNext
}

// plan is which connections of a scripted server misbehave and how.
//
//   - A fault after the ack hits connection 1, after it acknowledged,
//     started the operation and sent one result.
//   - A fault before the ack hits connection 2; connection 1 is healthy
//     (one result) and then closes 1012, so that the operation was running
//     and must be resubscribed.
//
// The connections after the fault are healthy, or, with repeat, all have
// the fault before their ack (a rejection right after a fresh credential).
type plan struct {
	proto    string
	f        fault
	afterAck bool
	repeat   bool
}

// faultConn is the number of the connection that has the fault.
func (pl plan) faultConn() int {
	if pl.afterAck {
		return 1
	}
	return 2
}

// faulty reports whether connection n has the fault before its ack.
func (pl plan) faultyBeforeAck(n int) bool {
	if n == pl.faultConn() {
		return !pl.afterAck
	}
	return n > pl.faultConn() && pl.repeat
}

func (pl plan) start(t *testing.T) *scripted.Server {
	t.Helper()
	opts := scripted.Options{Subprotocols: []string{pl.proto}}
	opts.Upgrade = func(w http.ResponseWriter, r *http.Request, n int) bool {
		if pl.f.http == 0 || !pl.faultyBeforeAck(n) {
			return false
		}
		if pl.f.retryAfter != "" {
			w.Header().Set("Retry-After", pl.f.retryAfter)
		}
		http.Error(w, http.StatusText(pl.f.http), pl.f.http)
		return true
	}
	subType, nextType := wire(pl.proto)
	return scripted.Start(t, opts, func(p *scripted.Peer) {
		if pl.faultyBeforeAck(p.N) {
			if _, ok := p.Expect(msgConnectionInit); !ok {
				return
			}
			pl.apply(p)
			return
		}
		if _, ok := p.Handshake(); !ok {
			return
		}
		m, ok := p.Expect(subType)
		if !ok {
			return
		}
		p.SendMsg(nextType, m.ID, fmt.Sprintf(`{"data":{"conn":%d}}`, p.N))
		switch {
		case p.N == pl.faultConn() && pl.afterAck:
			pl.apply(p)
		case p.N == 1 && !pl.afterAck:
			p.Close(1012, "service restart")
		default:
			p.Drain()
		}
	})
}

func (pl plan) apply(p *scripted.Peer) {
	f := pl.f
	switch {
	case f.close != 0:
		p.Close(f.close, f.reason)
	case f.drop:
		_ = p.CloseNow()
	case f.silent:
		p.Drain()
	case f.deaf:
		<-p.Context().Done()
	case f.connErr:
		p.SendMsg(msgConnectionError, "", `{"message":"Unauthorized: invalid or missing token"}`)
		p.Close(1011, "")
	default:
		panic("no fault")
	}
}

// config is the session configuration for a plan.
func (pl plan) config(srv *scripted.Server, hs *handshakes, st *states) Config {
	cfg := Config{
		URL:          srv.URL,
		Subprotocols: []string{pl.proto},
		Handshake:    hs.fn,
		OnState:      st.fn,
		Backoff:      fastBackoff(),
	}
	if pl.f.silent {
		cfg.AckTimeout = time.Second
	}
	if pl.f.deaf {
		cfg.KeepAlive, cfg.KeepAliveTimeout = 100*time.Millisecond, time.Second
	}
	return cfg
}

// expectedLog is what the operation hears until it runs again.
func (pl plan) expectedLog(code int) []string {
	rc := fmt.Sprintf("reconnecting:%d", code)
	if pl.afterAck {
		return []string{"subscribed", "next", rc, "resubscribed", "next"}
	}
	return []string{"subscribed", "next", "reconnecting:1012", rc, "resubscribed", "next"}
}

// cause is the Error a plan's fault produces: the Cause of the backoff it
// leads to.
func causeOf(t *testing.T, st *states, pl plan) *Error {
	t.Helper()
	bo := st.backoffs()
	i := 0
	if !pl.afterAck {
		i = 1 // after the priming 1012
		if len(bo) == 0 || bo[0].Cause == nil || bo[0].Cause.Code != 1012 {
			t.Fatalf("first backoff %+v, want the priming 1012", bo)
		}
	}
	if len(bo) <= i || bo[i].Cause == nil {
		t.Fatalf("backoffs %+v: no backoff for the fault", bo)
	}
	return bo[i].Cause
}

type policyCase struct {
	name     string
	f        fault
	afterAck bool
	code     int    // Event.Code / Error.Code the fault reports (0: none)
	reason   string // a substring of the reported reason, when set
}

// closeCases turns codes into cases that close with them.
func closeCases(codes []int, afterAck bool) []policyCase {
	var out []policyCase
	for _, code := range codes {
		when := "before-ack"
		if afterAck {
			when = "after-ack"
		}
		out = append(out, policyCase{name: fmt.Sprintf("%d-%s", code, when), f: fault{close: code, reason: "scripted"}, afterAck: afterAck, code: code})
	}
	return out
}

func protocols() []string { return []string{TransportWS, LegacyWS} }

// TestPolicyTransient: every transient event keeps the operation, which
// hears Reconnecting with the code, then Resubscribed, then results again;
// no credential refresh is asked for.
func TestPolicyTransient(t *testing.T) {
	t.Parallel()
	anyTime := []int{1001, 1005, 1012, 1013, 1014, 4408, 4500}
	cases := append(closeCases(anyTime, true), closeCases(anyTime, false)...)
	cases = append(cases, closeCases([]int{
		1011, // after an ack: an internal error, not a refused init
		1000, // after an ack while operations are active
		4321, // a code no row names, after the ack
		3000, // likewise
	}, true)...)
	cases = append(cases,
		policyCase{name: "1006-drop-after-ack", f: fault{drop: true}, afterAck: true, code: 1006},
		policyCase{name: "1006-drop-before-ack", f: fault{drop: true}, code: 1006},
		policyCase{name: "4504-ack-timeout", f: fault{silent: true}, code: 4504, reason: "acknowledgement timeout"},
		policyCase{name: "keep-alive-timeout", f: fault{deaf: true}, afterAck: true, code: 1006, reason: "keep-alive timeout"},
		policyCase{name: "http-502", f: fault{http: 502}, reason: "502"},
		policyCase{name: "http-503-retry-after", f: fault{http: 503, retryAfter: "1"}, reason: "503"},
		policyCase{name: "http-429", f: fault{http: 429}, reason: "429"},
	)
	for _, proto := range protocols() {
		for _, tc := range cases {
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				pl := plan{proto: proto, f: tc.f, afterAck: tc.afterAck}
				srv := pl.start(t)
				hs, st := &handshakes{}, &states{}
				c := dialTest(t, pl.config(srv, hs, st))
				p := newProbe()
				subscribe(t, c, p)
				p.waitNexts(t, 2)
				expectLogPrefix(t, p, pl.expectedLog(tc.code)...)
				_, nexts, _ := p.snap()
				if want := fmt.Sprintf(`{"data":{"conn":%d}}`, pl.faultConn()+1); nexts[1] != want {
					t.Fatalf("second result %s, want %s", nexts[1], want)
				}

				e := causeOf(t, st, pl)
				if e.Class != ClassTransient || e.Code != CloseCode(tc.code) || e.HTTPStatus != tc.f.http || e.BeforeAck == tc.afterAck {
					t.Fatalf("cause %+v, want transient code %d HTTP %d beforeAck %v", e, tc.code, tc.f.http, !tc.afterAck)
				}
				if tc.reason != "" && !strings.Contains(e.Reason, tc.reason) {
					t.Fatalf("cause reason %q, want it to mention %q", e.Reason, tc.reason)
				}
				if tc.f.retryAfter != "" {
					if e.RetryAfter != time.Second {
						t.Fatalf("RetryAfter %v, want 1s", e.RetryAfter)
					}
					for _, b := range st.backoffs() {
						if b.Cause.HTTPStatus == 503 && b.Delay < time.Second {
							t.Fatalf("backoff after Retry-After: 1 was %v", b.Delay)
						}
					}
				}
				if r := hs.refreshes(); len(r) != 0 {
					t.Fatalf("transient outcome asked for a fresh credential: %+v", r)
				}
				for _, ev := range p.Events() {
					if ev.Kind == Reconnecting && ev.Code == CloseCode(tc.code) && tc.reason != "" && !strings.Contains(ev.Reason, tc.reason) {
						t.Fatalf("Reconnecting reason %q, want it to mention %q", ev.Reason, tc.reason)
					}
				}
				if p.doneCount() != 0 {
					t.Fatalf("the operation ended: %v", p.dones)
				}
				checkAttempts(t, p)
			})
		}
	}
}

// checkAttempts: Reconnecting counts the reconnect attempts 1, 2, ... and
// Resubscribed carries the number of the one that succeeded.
func checkAttempts(t *testing.T, p *probe) {
	t.Helper()
	n := 0
	for _, ev := range p.Events() {
		switch ev.Kind {
		case Reconnecting:
			n++
			if ev.Attempt != n {
				t.Fatalf("events %+v: Reconnecting attempt %d, want %d", p.Events(), ev.Attempt, n)
			}
		case Resubscribed:
			if ev.Attempt != n || n == 0 {
				t.Fatalf("events %+v: Resubscribed attempt %d, want %d", p.Events(), ev.Attempt, n)
			}
			return
		}
	}
	t.Fatalf("events %+v: never resubscribed", p.Events())
}

// authCases are the auth row's events for proto.
func authCases(proto string) []policyCase {
	codes := []int{4401, 4403, 4499, 1008}
	cases := append(closeCases(codes, true), closeCases(codes, false)...)
	// A close before the ack with 1000, 1011 or a code no row names: the
	// server refused connection_init (gqlgen closes 1000, legacy 1011).
	cases = append(cases, closeCases([]int{1000, 1011, 4321}, false)...)
	cases = append(cases,
		policyCase{name: "http-401", f: fault{http: 401}, reason: "401"},
		policyCase{name: "http-403", f: fault{http: 403}, reason: "403"},
	)
	if proto == LegacyWS {
		cases = append(cases, policyCase{name: "connection_error", f: fault{connErr: true}, reason: "connection_error"})
	}
	return cases
}

// TestPolicyAuth: an auth event asks the credential callback for exactly
// one fresh credential; with it the connection recovers and the operation
// resumes.
func TestPolicyAuth(t *testing.T) {
	t.Parallel()
	for _, proto := range protocols() {
		for _, tc := range authCases(proto) {
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				pl := plan{proto: proto, f: tc.f, afterAck: tc.afterAck}
				srv := pl.start(t)
				hs, st := &handshakes{}, &states{}
				c := dialTest(t, pl.config(srv, hs, st))
				p := newProbe()
				subscribe(t, c, p)
				p.waitNexts(t, 2)
				expectLogPrefix(t, p, pl.expectedLog(tc.code)...)

				all, refreshes := hs.list(), hs.refreshes()
				if len(refreshes) != 1 {
					t.Fatalf("%d refreshes (%+v), want exactly 1", len(refreshes), all)
				}
				want := pl.faultConn() + 1 // the refresh is asked for the connection after the fault
				if len(all) != want || !all[want-1].Refresh {
					t.Fatalf("handshakes %+v, want %d with the last one refreshing", all, want)
				}
				e := all[want-1].Cause
				if e == nil || e.Class != ClassAuth || e.Code != CloseCode(tc.code) || e.HTTPStatus != tc.f.http {
					t.Fatalf("refresh cause %+v, want auth code %d HTTP %d", e, tc.code, tc.f.http)
				}
				if tc.reason != "" && !strings.Contains(e.Reason, tc.reason) {
					t.Fatalf("refresh cause reason %q, want it to mention %q", e.Reason, tc.reason)
				}
			})
		}
	}
}

// TestPolicyAuthRejectedAgain: rejected again right after the fresh
// credential, the outcome is terminal: a *Error of class auth, after exactly
// one refresh and no further connection.
func TestPolicyAuthRejectedAgain(t *testing.T) {
	t.Parallel()
	for _, proto := range protocols() {
		for _, tc := range authCases(proto) {
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				pl := plan{proto: proto, f: tc.f, afterAck: tc.afterAck, repeat: true}
				srv := pl.start(t)
				hs, st := &handshakes{}, &states{}
				c := dialTest(t, pl.config(srv, hs, st))
				p := newProbe()
				subscribe(t, c, p)
				e := asError(t, p.waitDone(t))
				<-c.Done()

				// The fresh credential is rejected before the ack, with
				// the same code.
				code := tc.code
				if e.Class != ClassAuth || e.Code != CloseCode(code) || e.HTTPStatus != tc.f.http || !e.BeforeAck || e.Exhausted {
					t.Fatalf("outcome %+v (%v), want terminal auth code %d HTTP %d before the ack", e, e, code, tc.f.http)
				}
				if tc.reason != "" && !strings.Contains(e.Reason, tc.reason) {
					t.Fatalf("reason %q, want it to mention %q", e.Reason, tc.reason)
				}
				all, refreshes := hs.list(), hs.refreshes()
				if len(refreshes) != 1 || len(all) != pl.faultConn()+1 {
					t.Fatalf("handshakes %+v, want %d with exactly one refresh", all, pl.faultConn()+1)
				}
				if n := srv.Conns(); n != pl.faultConn()+1 {
					t.Fatalf("%d connections, want %d", n, pl.faultConn()+1)
				}
				if c.Err() != error(e) {
					t.Fatalf("Conn.Err %v, want the operation's outcome %v", c.Err(), e)
				}
				if p.doneCount() != 1 || c.State() != StateClosed {
					t.Fatalf("OnDone called %d times, state %v", p.doneCount(), c.State())
				}
			})
		}
	}
}

// terminalCase runs a plan whose fault is terminal and returns the outcome,
// after checking that no connection followed the faulty one.
func terminalCase(t *testing.T, pl plan, cfgMod func(*Config)) (*Error, *handshakes) {
	t.Helper()
	srv := pl.start(t)
	hs, st := &handshakes{}, &states{}
	cfg := pl.config(srv, hs, st)
	if cfgMod != nil {
		cfgMod(&cfg)
	}
	c := dialTest(t, cfg)
	p := newProbe()
	subscribe(t, c, p)
	e := asError(t, p.waitDone(t))
	<-c.Done()
	if n := srv.Conns(); n != pl.faultConn() {
		t.Fatalf("%d connections, want %d: a terminal outcome must not be retried", n, pl.faultConn())
	}
	if len(hs.list()) != pl.faultConn() || len(hs.refreshes()) != 0 {
		t.Fatalf("handshakes %+v, want %d without refresh", hs.list(), pl.faultConn())
	}
	if e.Exhausted || p.doneCount() != 1 {
		t.Fatalf("outcome %+v, OnDone called %d times", e, p.doneCount())
	}
	if pl.afterAck {
		expectLogPrefix(t, p, "subscribed", "next", "done")
	} else {
		expectLogPrefix(t, p, "subscribed", "next", "reconnecting:1012", "done")
	}
	return e, hs
}

// TestPolicyMisconfig: the upstream will not work as configured: every
// operation ends with ClassMisconfig and the session does not retry.
func TestPolicyMisconfig(t *testing.T) {
	t.Parallel()
	cases := append(closeCases([]int{4406, 1002}, true), closeCases([]int{4406, 1002}, false)...)
	cases = append(cases, policyCase{name: "http-404", f: fault{http: 404}, reason: "404"})
	for _, proto := range protocols() {
		for _, tc := range cases {
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				e, _ := terminalCase(t, plan{proto: proto, f: tc.f, afterAck: tc.afterAck}, nil)
				if e.Class != ClassMisconfig || e.Code != CloseCode(tc.code) || e.HTTPStatus != tc.f.http {
					t.Fatalf("outcome %+v, want misconfiguration code %d HTTP %d", e, tc.code, tc.f.http)
				}
			})
		}
	}
}

// TestPolicyMisconfigSubprotocol: no agreed subprotocol without a fallback,
// or a subprotocol that was never offered, is a misconfiguration on the
// first connection, never retried.
func TestPolicyMisconfigSubprotocol(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, echo string
		offer      []string
		want       string // in the reason
	}{
		{"none-agreed", "-", []string{TransportWS, LegacyWS}, "agreed to none and no fallback"},
		{"none-agreed-single", "-", []string{TransportWS}, "agreed to none and no fallback"},
		{"wrong-echo", "bogus-protocol", []string{TransportWS, LegacyWS}, `"bogus-protocol"`},
		{"echo-not-offered", LegacyWS, []string{TransportWS}, `"graphql-ws"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// The script ends at once: the server cuts the socket, as a
			// server would that the client left.
			srv := scripted.Start(t, scripted.Options{Echo: tc.echo}, func(p *scripted.Peer) {})
			hs, st := &handshakes{gate: make(chan struct{})}, &states{}
			c := dialTest(t, Config{URL: srv.URL, Subprotocols: tc.offer, Handshake: hs.fn, OnState: st.fn})
			p := newProbe()
			subscribe(t, c, p)
			close(hs.gate)
			e := asError(t, p.waitDone(t))
			<-c.Done()
			if e.Class != ClassMisconfig || e.Code != CodeSubprotocolRefused || !e.BeforeAck {
				t.Fatalf("outcome %+v, want misconfiguration 4406 before the ack", e)
			}
			if !strings.Contains(e.Reason, tc.want) || !strings.Contains(e.Reason, "offered "+strings.Join(tc.offer, ", ")) {
				t.Fatalf("reason %q, want it to name what was offered and %s", e.Reason, tc.want)
			}
			if tc.echo == "-" && !errors.Is(e, ErrNoSubprotocol) {
				t.Fatalf("outcome %v does not wrap ErrNoSubprotocol", e)
			}
			if srv.Conns() != 1 || len(hs.list()) != 1 || st.count(StateBackoff) != 0 {
				t.Fatalf("%d connections, %d handshakes, %d backoffs: want 1, 1, 0", srv.Conns(), len(hs.list()), st.count(StateBackoff))
			}
			if log, _, _ := p.snap(); joinLog(log) != "done" {
				t.Fatalf("log %v, want only done", log)
			}
		})
	}
}

// TestFallbackSubprotocol: a server that omits the header is spoken the
// configured fallback.
func TestFallbackSubprotocol(t *testing.T) {
	t.Parallel()
	for _, fb := range protocols() {
		t.Run(fb, func(t *testing.T) {
			t.Parallel()
			subType, nextType := wire(fb)
			srv := scripted.Start(t, scripted.Options{Echo: "-"}, func(p *scripted.Peer) {
				if _, ok := p.Handshake(); !ok {
					return
				}
				m, ok := p.Expect(subType)
				if !ok {
					return
				}
				p.SendMsg(nextType, m.ID, `{"data":{"ok":true}}`)
				p.SendMsg(msgComplete, m.ID, "")
				p.Drain()
			})
			st := &states{}
			c := dialTest(t, Config{URL: srv.URL, Fallback: fb, OnState: st.fn})
			p := newProbe()
			subscribe(t, c, p)
			if err := p.waitDone(t); err != nil {
				t.Fatalf("outcome %v, want nil", err)
			}
			for _, sc := range st.list() {
				if sc.State == StateReady && sc.Subprotocol != fb {
					t.Fatalf("ready with %q, want the fallback %q", sc.Subprotocol, fb)
				}
			}
		})
	}
}

// TestPolicyMisconfigTLS: a certificate the bridge does not trust is 1015,
// a misconfiguration, not retried.
func TestPolicyMisconfigTLS(t *testing.T) {
	t.Parallel()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("the upgrade request reached the server")
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused TLS handshake
	srv.StartTLS()
	t.Cleanup(srv.Close)
	st, hs := &states{}, &handshakes{gate: make(chan struct{})}
	dc := &dialCounter{}
	c := dialTest(t, Config{URL: "wss://" + srv.Listener.Addr().String() + "/graphql", HTTPClient: dc.client(), OnState: st.fn, Handshake: hs.fn})
	p := newProbe()
	subscribe(t, c, p)
	close(hs.gate)
	e := asError(t, p.waitDone(t))
	<-c.Done()
	if e.Class != ClassMisconfig || e.Code != 1015 {
		t.Fatalf("outcome %+v, want misconfiguration 1015", e)
	}
	if dc.n.Load() != 1 || st.count(StateBackoff) != 0 {
		t.Fatalf("%d dials, %d backoffs: want 1 and 0", dc.n.Load(), st.count(StateBackoff))
	}
}

// TestPolicyBridgeFault: the upstream says the bridge broke the protocol:
// every operation ends with ClassBridgeFault and nothing is retried.
func TestPolicyBridgeFault(t *testing.T) {
	t.Parallel()
	codes := []int{4400, 4409, 4429, 1003, 1007, 1009, 1010, 4004, 4005}
	cases := append(closeCases(codes, true), closeCases(codes, false)...)
	for _, proto := range protocols() {
		for _, tc := range cases {
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				e, _ := terminalCase(t, plan{proto: proto, f: tc.f, afterAck: tc.afterAck}, nil)
				if e.Class != ClassBridgeFault || e.Code != CloseCode(tc.code) || e.BeforeAck == tc.afterAck || e.Reason != "scripted" {
					t.Fatalf("outcome %+v, want bridge fault %d", e, tc.code)
				}
			})
		}
	}
}

// TestMessageTooBig: a message over MaxMessageBytes ends the connection
// with 1009, a bridge fault (the limit is the bridge's), without retry.
func TestMessageTooBig(t *testing.T) {
	t.Parallel()
	got := make(chan websocket.StatusCode, 1)
	srv := scripted.Start(t, tws, func(p *scripted.Peer) {
		if _, ok := p.Handshake(); !ok {
			return
		}
		m, ok := p.Expect(msgSubscribe)
		if !ok {
			return
		}
		p.SendMsg(msgNext, m.ID, `{"data":{"s":"`+strings.Repeat("x", 2048)+`"}}`)
		_, _, err := p.Conn.Read(p.Context())
		got <- websocket.CloseStatus(err)
	})
	c := dialTest(t, Config{URL: srv.URL, MaxMessageBytes: 1024})
	p := newProbe()
	subscribe(t, c, p)
	e := asError(t, p.waitDone(t))
	if e.Class != ClassBridgeFault || e.Code != 1009 {
		t.Fatalf("outcome %+v, want bridge fault 1009", e)
	}
	if code := <-got; code != websocket.StatusMessageTooBig {
		t.Fatalf("the upstream saw close %d, want 1009", code)
	}
	<-c.Done()
	if srv.Conns() != 1 {
		t.Fatalf("%d connections, want 1", srv.Conns())
	}
}

// TestPolicyOverrides: Config.Policy.Overrides changes the outcome of a
// code on a live connection.
func TestPolicyOverrides(t *testing.T) {
	t.Parallel()
	t.Run("auth-code-made-transient", func(t *testing.T) {
		t.Parallel()
		pl := plan{proto: TransportWS, f: fault{close: 4403}, afterAck: true}
		srv := pl.start(t)
		hs, st := &handshakes{}, &states{}
		cfg := pl.config(srv, hs, st)
		cfg.Policy.Overrides = map[CloseCode]Class{4403: ClassTransient}
		c := dialTest(t, cfg)
		p := newProbe()
		subscribe(t, c, p)
		p.waitNexts(t, 2)
		expectLogPrefix(t, p, pl.expectedLog(4403)...)
		if len(hs.refreshes()) != 0 {
			t.Fatalf("refreshed a credential for a code overridden to transient: %+v", hs.list())
		}
	})
	t.Run("bridge-fault-made-auth", func(t *testing.T) {
		t.Parallel()
		// Hasura closes 4400 when a JWT expired.
		pl := plan{proto: TransportWS, f: fault{close: 4400}, afterAck: true}
		srv := pl.start(t)
		hs, st := &handshakes{}, &states{}
		cfg := pl.config(srv, hs, st)
		cfg.Policy.Overrides = map[CloseCode]Class{4400: ClassAuth}
		c := dialTest(t, cfg)
		p := newProbe()
		subscribe(t, c, p)
		p.waitNexts(t, 2)
		expectLogPrefix(t, p, pl.expectedLog(4400)...)
		if r := hs.refreshes(); len(r) != 1 || r[0].Cause.Code != 4400 {
			t.Fatalf("refreshes %+v, want one for 4400", r)
		}
	})
	t.Run("transient-made-misconfig", func(t *testing.T) {
		t.Parallel()
		e, _ := terminalCase(t, plan{proto: TransportWS, f: fault{close: 1012}, afterAck: true}, func(cfg *Config) {
			cfg.Policy.Overrides = map[CloseCode]Class{1012: ClassMisconfig}
		})
		if e.Class != ClassMisconfig || e.Code != 1012 {
			t.Fatalf("outcome %+v, want misconfiguration 1012", e)
		}
	})
	t.Run("unnamed-before-ack-made-bridge-fault", func(t *testing.T) {
		t.Parallel()
		e, _ := terminalCase(t, plan{proto: TransportWS, f: fault{close: 4321}}, func(cfg *Config) {
			cfg.Policy.Overrides = map[CloseCode]Class{4321: ClassBridgeFault}
		})
		if e.Class != ClassBridgeFault || e.Code != 4321 {
			t.Fatalf("outcome %+v, want bridge fault 4321", e)
		}
	})
	t.Run("abnormal-made-misconfig", func(t *testing.T) {
		t.Parallel()
		e, _ := terminalCase(t, plan{proto: TransportWS, f: fault{drop: true}, afterAck: true}, func(cfg *Config) {
			cfg.Policy.Overrides = map[CloseCode]Class{1006: ClassMisconfig}
		})
		if e.Class != ClassMisconfig || e.Code != 1006 {
			t.Fatalf("outcome %+v, want misconfiguration 1006", e)
		}
	})
}

// TestOperationOutcomes: an operation's "error" or "complete" ends that
// operation only; another operation on the same connection keeps running.
func TestOperationOutcomes(t *testing.T) {
	t.Parallel()
	for _, proto := range protocols() {
		for _, kind := range []string{msgError, msgComplete} {
			t.Run(proto+"/"+kind, func(t *testing.T) {
				t.Parallel()
				subType, nextType := wire(proto)
				errPayload := `[{"message":"bad field"}]`
				if proto == LegacyWS {
					errPayload = `{"message":"bad field"}`
				}
				srv := scripted.Start(t, scripted.Options{Subprotocols: []string{proto}}, func(p *scripted.Peer) {
					if _, ok := p.Handshake(); !ok {
						return
					}
					// Operations queued before the ack start in any order:
					// tell them apart by their query.
					a, ok := p.Expect(subType)
					if !ok {
						return
					}
					b, ok := p.Expect(subType)
					if !ok {
						return
					}
					if strings.Contains(string(a.Payload), "{ b }") {
						a, b = b, a
					}
					p.SendMsg(nextType, a.ID, `{"data":{"op":"a"}}`)
					p.SendMsg(nextType, b.ID, `{"data":{"op":"b","n":1}}`)
					if kind == msgError {
						p.SendMsg(msgError, a.ID, errPayload)
					} else {
						p.SendMsg(msgComplete, a.ID, "")
					}
					// Late messages for the ended operation are ignored.
					p.SendMsg(nextType, a.ID, `{"data":{"op":"a","late":true}}`)
					p.SendMsg(nextType, b.ID, `{"data":{"op":"b","n":2}}`)
					p.SendMsg(nextType, b.ID, `{"data":{"op":"b","n":3}}`)
					p.Drain()
				})
				st := &states{}
				c := dialTest(t, Config{URL: srv.URL, Subprotocols: []string{proto}, OnState: st.fn})
				pa, pb := newProbe(), newProbe()
				if _, err := c.Subscribe(Request{Query: "subscription { a }"}, pa); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Subscribe(Request{Query: "subscription { b }"}, pb); err != nil {
					t.Fatal(err)
				}
				err := pa.waitDone(t)
				if kind == msgError {
					var gerr *GraphQLError
					if !errors.As(err, &gerr) || string(gerr.Errors) != `[{"message":"bad field"}]` {
						t.Fatalf("outcome %v, want the GraphQL errors", err)
					}
				} else if err != nil {
					t.Fatalf("outcome %v, want nil", err)
				}
				pb.waitNexts(t, 3)
				if log, nexts, _ := pa.snap(); joinLog(log) != "subscribed,next,done" || len(nexts) != 1 {
					t.Fatalf("ended operation heard %v %v", log, nexts)
				}
				if log, nexts, _ := pb.snap(); joinLog(log) != "subscribed,next,next,next" || nexts[2] != `{"data":{"op":"b","n":3}}` {
					t.Fatalf("other operation heard %v %v", log, nexts)
				}
				if c.Len() != 1 || c.State() != StateReady || st.count(StateBackoff) != 0 {
					t.Fatalf("live %d, state %v, backoffs %d: the connection should be untouched", c.Len(), c.State(), st.count(StateBackoff))
				}
			})
		}
	}
}
