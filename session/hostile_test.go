package session_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/gqlbridge/gqlbridge/internal/scripted"
	"github.com/gqlbridge/gqlbridge/session"
)

// The hostile upstream corpus: a scripted server plays one misbehaviour on
// its first connection and behaves on later ones; each case states what the
// operation must experience, per the outcome policy (closecodes.go,
// docs/design.md §5).

type expectKind int

const (
	ignored  expectKind = iota // the operation carries on, on the same connection
	resumes                    // Reconnecting (with code), Resubscribed, then results again
	ends                       // the operation ends with an *session.Error of the class
	gqlError                   // the operation ends with a *session.GraphQLError
)

type hostileCase struct {
	name string
	// misbehave runs on the first connection. subID is the operation's
	// id there ("" if the script did not read the subscribe).
	misbehave func(p *scripted.Peer)
	opts      scripted.Options
	cfg       func(*session.Config)
	want      expectKind
	class     session.Class
	code      int // expected close code (Reconnecting or the terminal error); -1 = any
	// retries says a terminal outcome may follow retries (auth refresh,
	// budget); otherwise a terminal case must not have dialed twice.
	retries bool
}

// Building blocks for scripts.
func ackAndSubscribe(p *scripted.Peer) (string, bool) {
	if _, ok := p.Handshake(); !ok {
		return "", false
	}
	m, ok := p.Expect("subscribe")
	return m.ID, ok
}

func closeAfterAck(code int) func(p *scripted.Peer) {
	return func(p *scripted.Peer) {
		if _, ok := ackAndSubscribe(p); ok {
			p.Close(code, "scripted close")
		}
	}
}

func closeBeforeAck(code int) func(p *scripted.Peer) {
	return func(p *scripted.Peer) {
		if _, ok := p.Expect("connection_init"); ok {
			p.Close(code, "scripted close")
		}
	}
}

func sendAfterSubscribe(frames ...string) func(p *scripted.Peer) {
	return func(p *scripted.Peer) {
		id, ok := ackAndSubscribe(p)
		if !ok {
			return
		}
		for _, f := range frames {
			p.Send(strings.ReplaceAll(f, "ID", id))
		}
		p.SendMsg("next", id, `{"data":{"after":true}}`)
		p.Drain()
	}
}

// httpStatus refuses the upgrade of the first connection with code, or of
// every connection when always is set.
func httpStatus(code int, always bool, header ...string) scripted.Options {
	return scripted.Options{Subprotocols: []string{session.TransportWS}, Upgrade: func(w http.ResponseWriter, r *http.Request, n int) bool {
		if n > 1 && !always {
			return false
		}
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		http.Error(w, "scripted", code)
		return true
	}}
}

func hostileCases(t *testing.T) []hostileCase {
	cases := []hostileCase{
		// Garbage and protocol violations: the bridge closes 4400 and reconnects.
		{name: "invalid JSON", misbehave: sendAfterSubscribe(`{"type":`), want: resumes, code: 4400},
		{name: "JSON array frame", misbehave: sendAfterSubscribe(`[1,2,3]`), want: resumes, code: 4400},
		{name: "JSON string frame", misbehave: sendAfterSubscribe(`"next"`), want: resumes, code: 4400},
		{name: "missing type", misbehave: sendAfterSubscribe(`{"id":"ID","payload":{}}`), want: resumes, code: 4400},
		{name: "type is a number", misbehave: sendAfterSubscribe(`{"type":7}`), want: resumes, code: 4400},
		{name: "unknown message type", misbehave: sendAfterSubscribe(`{"type":"surprise"}`), want: resumes, code: 4400},
		{name: "client-only type subscribe from server", misbehave: sendAfterSubscribe(`{"type":"subscribe","id":"x","payload":{}}`), want: resumes, code: 4400},
		{name: "connection_init from server", misbehave: sendAfterSubscribe(`{"type":"connection_init"}`), want: resumes, code: 4400},
		{name: "legacy data on graphql-transport-ws", misbehave: sendAfterSubscribe(`{"type":"data","id":"ID","payload":{}}`), want: resumes, code: 4400},
		{name: "next without payload", misbehave: sendAfterSubscribe(`{"type":"next","id":"ID"}`), want: resumes, code: 4400},
		{name: "trailing garbage", misbehave: sendAfterSubscribe(`{"type":"pong"}xyz`), want: resumes, code: 4400},
		{name: "payload nested too deep", misbehave: sendAfterSubscribe(`{"type":"next","id":"ID","payload":` + strings.Repeat("[", 600) + strings.Repeat("]", 600) + `}`), want: resumes, code: 4400},
		{name: "bad escape in id", misbehave: sendAfterSubscribe(`{"type":"next","id":"\q","payload":{}}`), want: resumes, code: 4400},
		{name: "control character in string", misbehave: sendAfterSubscribe("{\"type\":\"next\",\"id\":\"a\x01\",\"payload\":{}}"), want: resumes, code: 4400},
		{name: "binary frame", misbehave: func(p *scripted.Peer) {
			if _, ok := ackAndSubscribe(p); ok {
				p.Conn.Write(p.Context(), websocket.MessageBinary, []byte(`{"type":"pong"}`))
				p.Drain()
			}
		}, want: resumes, code: 4400},
		// Noise the bridge tolerates.
		{name: "next for unknown id", misbehave: sendAfterSubscribe(`{"type":"next","id":"nope","payload":{"data":{}}}`), want: ignored},
		{name: "next without id", misbehave: sendAfterSubscribe(`{"type":"next","payload":{"data":{}}}`), want: ignored},
		{name: "complete for unknown id", misbehave: sendAfterSubscribe(`{"type":"complete","id":"nope"}`), want: ignored},
		{name: "error for unknown id", misbehave: sendAfterSubscribe(`{"type":"error","id":"nope","payload":[{"message":"x"}]}`), want: ignored},
		{name: "duplicate connection_ack", misbehave: sendAfterSubscribe(`{"type":"connection_ack"}`, `{"type":"connection_ack","payload":{"again":1}}`), want: ignored},
		{name: "unsolicited pong with payload", misbehave: sendAfterSubscribe(`{"type":"pong","payload":{"x":1}}`), want: ignored},
		{name: "ka on graphql-transport-ws", misbehave: sendAfterSubscribe(`{"type":"ka"}`), want: ignored},
		{name: "connection_error after ack", misbehave: sendAfterSubscribe(`{"type":"connection_error","payload":{"message":"x"}}`), want: ignored},
		{name: "ping flood", misbehave: sendAfterSubscribe(repeat(`{"type":"ping"}`, 2000)...), want: ignored},
		{name: "invalid UTF-8 in payload passes through", misbehave: sendAfterSubscribe("{\"type\":\"next\",\"id\":\"ID\",\"payload\":{\"data\":\"\xff\"}}"), want: ignored},
		{name: "payload is a JSON string", misbehave: sendAfterSubscribe(`{"type":"next","id":"ID","payload":"odd"}`), want: ignored},
		{name: "fields in odd order and spacing", misbehave: sendAfterSubscribe(" { \"payload\" : {\"data\":{}} ,\n \"id\" : \"ID\" , \"type\" : \"next\" } "), want: ignored},
		{name: "fragmented frame", misbehave: func(p *scripted.Peer) {
			id, ok := ackAndSubscribe(p)
			if !ok {
				return
			}
			w, err := p.Conn.Writer(p.Context(), websocket.MessageText)
			if err != nil {
				return
			}
			for _, part := range []string{`{"type":"ne`, `xt","id":"` + id, `","payload":{"data":{"after":true}}}`} {
				w.Write([]byte(part))
			}
			w.Close()
			p.Drain()
		}, want: ignored},
		{name: "ping before ack", misbehave: func(p *scripted.Peer) {
			if _, ok := p.Expect("connection_init"); !ok {
				return
			}
			p.SendMsg("ping", "", "")
			if m, ok := p.Read(); !ok || m.Type != "pong" {
				t.Errorf("ping before ack answered with %+v", m)
				return
			}
			p.SendMsg("connection_ack", "", "")
			m, ok := p.Expect("subscribe")
			if !ok {
				return
			}
			p.SendMsg("next", m.ID, `{"data":{"after":true}}`)
			p.Drain()
		}, want: ignored},
		{name: "next after complete of same id", misbehave: func(p *scripted.Peer) {
			id, ok := ackAndSubscribe(p)
			if !ok {
				return
			}
			p.SendMsg("error", id, `[{"message":"first"}]`)
			p.SendMsg("next", id, `{"data":{"late":true}}`)
			p.Drain()
		}, want: gqlError},
		{name: "error payload not an array", misbehave: sendAfterSubscribe(`{"type":"error","id":"ID","payload":{"message":"obj"}}`), want: gqlError},
		{name: "error payload missing", misbehave: sendAfterSubscribe(`{"type":"error","id":"ID"}`), want: gqlError},

		// Handshake misbehaviour.
		{name: "ack never sent", misbehave: func(p *scripted.Peer) { p.Drain() },
			cfg: func(c *session.Config) { c.AckTimeout = 100 * time.Millisecond }, want: resumes, code: 4504},
		{name: "silence after ack (half-open)", misbehave: func(p *scripted.Peer) {
			if _, ok := ackAndSubscribe(p); ok {
				<-p.Context().Done() // read nothing, answer nothing
			}
		}, cfg: func(c *session.Config) { c.KeepAlive, c.KeepAliveTimeout = 50*time.Millisecond, 100*time.Millisecond }, want: resumes, code: 1006},
		{name: "closes at once after upgrade with 1000", misbehave: func(p *scripted.Peer) { p.Close(1000, "bye") }, want: ends, class: session.ClassAuth, code: 1000, retries: true},
		{name: "connection_error then 1011 (legacy)", opts: scripted.Options{Subprotocols: []string{session.LegacyWS}}, misbehave: func(p *scripted.Peer) {
			if _, ok := p.Expect("connection_init"); ok {
				p.SendMsg("connection_error", "", `{"message":"bad token"}`)
				p.Close(1011, "")
			}
		}, cfg: func(c *session.Config) { c.Subprotocols = []string{session.LegacyWS} }, want: ends, class: session.ClassAuth, code: -1, retries: true},
		{name: "wrong echoed subprotocol", opts: scripted.Options{Echo: "graphql-surprise"}, misbehave: func(p *scripted.Peer) {}, want: ends, class: session.ClassMisconfig, code: 4406},
		{name: "no subprotocol echoed", opts: scripted.Options{Echo: "-"}, misbehave: func(p *scripted.Peer) { p.Drain() }, want: ends, class: session.ClassMisconfig, code: 4406},
		{name: "no subprotocol echoed, fallback configured", opts: scripted.Options{Echo: "-"}, misbehave: sendAfterSubscribe(),
			cfg: func(c *session.Config) { c.Fallback = session.TransportWS }, want: ignored},
		{name: "HTTP 401 on upgrade", opts: httpStatus(401, true), want: ends, class: session.ClassAuth, code: 0, retries: true},
		{name: "HTTP 403 on upgrade", opts: httpStatus(403, true), want: ends, class: session.ClassAuth, code: 0, retries: true},
		{name: "HTTP 404 on upgrade", opts: httpStatus(404, true), want: ends, class: session.ClassMisconfig, code: 0},
		{name: "HTTP 400 on upgrade", opts: httpStatus(400, true), want: ends, class: session.ClassMisconfig, code: 0},
		{name: "HTTP 503 then recovers", opts: httpStatus(503, false), want: resumes, code: 0},
		{name: "HTTP 502 then recovers", opts: httpStatus(502, false), want: resumes, code: 0},
		{name: "HTTP 429 with Retry-After", opts: httpStatus(429, false, "Retry-After", "1"), want: resumes, code: 0},
		{name: "oversized frame", misbehave: sendAfterSubscribe(`{"type":"next","id":"ID","payload":{"data":"` + strings.Repeat("x", 70000) + `"}}`),
			cfg: func(c *session.Config) { c.MaxMessageBytes = 65536 }, want: ends, class: session.ClassBridgeFault, code: 1009},
		{name: "drop mid-frame", misbehave: func(p *scripted.Peer) {
			if _, ok := ackAndSubscribe(p); ok {
				w, _ := p.Conn.Writer(p.Context(), websocket.MessageText)
				w.Write([]byte(`{"type":"next","id":"1","payload":{"data":`))
				p.Conn.CloseNow()
			}
		}, want: resumes, code: 1006},
		{name: "flapping: closes after every ack until the budget is spent", misbehave: closeAfterAck(1012),
			cfg: func(c *session.Config) {
				c.Backoff = session.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond, MaxElapsed: 300 * time.Millisecond, StableAfter: time.Hour}
			}, want: ends, class: session.ClassTransient, code: 1012, retries: true},
	}
	// Every close code on the wire from 1000 to 1014 and the 44xx family,
	// after the ack with an operation running.
	for code, kind := range map[int]hostileCase{
		1000: {want: resumes}, 1001: {want: resumes}, 1002: {want: ends, class: session.ClassMisconfig},
		1003: {want: ends, class: session.ClassBridgeFault}, 1007: {want: ends, class: session.ClassBridgeFault},
		1008: {want: ends, class: session.ClassAuth, retries: true}, 1009: {want: ends, class: session.ClassBridgeFault},
		1010: {want: ends, class: session.ClassBridgeFault}, 1011: {want: resumes}, 1012: {want: resumes},
		1013: {want: resumes}, 1014: {want: resumes},
		4400: {want: ends, class: session.ClassBridgeFault}, 4401: {want: ends, class: session.ClassAuth, retries: true},
		4403: {want: ends, class: session.ClassAuth, retries: true}, 4406: {want: ends, class: session.ClassMisconfig},
		4408: {want: resumes}, 4409: {want: ends, class: session.ClassBridgeFault}, 4429: {want: ends, class: session.ClassBridgeFault},
		4499: {want: ends, class: session.ClassAuth, retries: true}, 4500: {want: resumes}, 4504: {want: resumes},
		4004: {want: ends, class: session.ClassBridgeFault}, 4005: {want: ends, class: session.ClassBridgeFault},
		4321: {want: resumes},
	} {
		kind.name = fmt.Sprintf("close %d after ack", code)
		kind.misbehave = closeAfterAck(code)
		kind.code = code
		if kind.class == session.ClassAuth {
			kind.misbehave = closeAlways(code) // a fresh credential is rejected too
		}
		cases = append(cases, kind)
	}
	// Before the ack, 1000/1011/unnamed codes mean the init was refused.
	for _, code := range []int{1000, 1011, 4321} {
		cases = append(cases, hostileCase{name: fmt.Sprintf("close %d before ack", code), misbehave: closeBeforeAck(code),
			want: ends, class: session.ClassAuth, code: code, retries: true})
	}
	return cases
}

// closeAlways closes every connection right after subscribe with code.
func closeAlways(code int) func(p *scripted.Peer) { return closeAfterAck(code) }

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// hostileRecorder records what an operation hears.
type hostileRecorder struct {
	mu     sync.Mutex
	events []session.Event
	nexts  []string
	done   chan error
	poke   chan struct{}
}

func (r *hostileRecorder) OnNext(p []byte) {
	r.mu.Lock()
	r.nexts = append(r.nexts, string(p))
	r.mu.Unlock()
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

func (r *hostileRecorder) OnEvent(ev session.Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
}

func (r *hostileRecorder) OnDone(err error) { r.done <- err }

func (r *hostileRecorder) sawAfter() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.nexts {
		if strings.Contains(n, `"after":true`) {
			return true
		}
	}
	return false
}

func TestHostileUpstreamCorpus(t *testing.T) {
	t.Parallel()
	cases := hostileCases(t)
	if len(cases) < 50 {
		t.Fatalf("the corpus has %d misbehaviours; keep at least 50", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := tc.opts
			if opts.Subprotocols == nil && opts.Echo == "" {
				opts.Subprotocols = []string{session.TransportWS}
			}
			legacy := len(opts.Subprotocols) > 0 && opts.Subprotocols[0] == session.LegacyWS
			srv := scripted.Start(t, opts, func(p *scripted.Peer) {
				if p.N == 1 && tc.misbehave != nil {
					tc.misbehave(p)
					return
				}
				if tc.want == ends && !tc.retries {
					return // a terminal case must not reach here
				}
				if tc.want == ends && tc.misbehave != nil {
					tc.misbehave(p) // persistent misbehaviour
					return
				}
				if _, ok := p.Handshake(); !ok {
					return
				}
				typ := "subscribe"
				if legacy {
					typ = "start"
				}
				m, ok := p.Expect(typ)
				if !ok {
					return
				}
				p.SendMsg("next", m.ID, `{"data":{"after":true}}`)
				p.Drain()
			})
			cfg := session.Config{URL: srv.URL, AckTimeout: 2 * time.Second, KeepAlive: -1,
				Backoff: session.Backoff{Initial: time.Millisecond, Max: 20 * time.Millisecond, MaxElapsed: 20 * time.Second, StableAfter: time.Hour}}
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			// Hold the first attempt until the operation is subscribed: a
			// Conn that already failed terminally refuses Subscribe.
			gate, handshake := make(chan struct{}), cfg.Handshake
			cfg.Handshake = func(ctx context.Context, a session.Attempt) (session.Handshake, error) {
				<-gate
				if handshake != nil {
					return handshake(ctx, a)
				}
				return session.Handshake{}, nil
			}
			c, err := session.Dial(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(session.CodeNormal, nil)
			rec := &hostileRecorder{done: make(chan error, 1), poke: make(chan struct{}, 1)}
			if _, err := c.Subscribe(session.Request{Query: "subscription { x }"}, rec); err != nil {
				t.Fatal(err)
			}
			close(gate)
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			switch tc.want {
			case ignored, resumes:
				for !rec.sawAfter() {
					select {
					case <-rec.poke:
					case err := <-rec.done:
						t.Fatalf("operation ended: %v", err)
					case <-ctx.Done():
						t.Fatalf("no result after the misbehaviour; events %+v", rec.events)
					}
				}
				rec.mu.Lock()
				events := append([]session.Event(nil), rec.events...)
				rec.mu.Unlock()
				reconnects := 0
				for _, ev := range events {
					if ev.Kind == session.Reconnecting {
						reconnects++
						if reconnects == 1 && tc.code >= 0 && ev.Code != session.CloseCode(tc.code) {
							t.Fatalf("Reconnecting with code %d (%s), want %d", ev.Code, ev.Reason, tc.code)
						}
					}
				}
				if tc.want == ignored && (reconnects != 0 || srv.Conns() != 1) {
					t.Fatalf("a tolerated misbehaviour caused %d reconnects, %d connections: %+v", reconnects, srv.Conns(), events)
				}
				// An operation that never ran upstream before hears
				// Subscribed rather than Resubscribed.
				if last := events[len(events)-1].Kind; tc.want == resumes && (reconnects == 0 || last != session.Resubscribed && last != session.Subscribed) {
					t.Fatalf("did not resume: %+v", events)
				}
			case ends, gqlError:
				var err error
				select {
				case err = <-rec.done:
				case <-ctx.Done():
					t.Fatalf("operation never ended; events %+v", rec.events)
				}
				if tc.want == gqlError {
					var ge *session.GraphQLError
					if !errors.As(err, &ge) || !strings.HasPrefix(string(ge.Errors), "[") {
						t.Fatalf("outcome %v, want a GraphQL error array", err)
					}
					if rec.sawAfter() || len(rec.nexts) > 0 {
						t.Fatalf("results after the error: %v", rec.nexts)
					}
					return
				}
				var se *session.Error
				if !errors.As(err, &se) {
					t.Fatalf("outcome %v (%T), want *session.Error", err, err)
				}
				if se.Class != tc.class || (tc.code >= 0 && se.Code != session.CloseCode(tc.code)) {
					t.Fatalf("outcome %v: class %v code %d, want %v %d", se, se.Class, se.Code, tc.class, tc.code)
				}
				if !tc.retries && srv.Conns() != 1 {
					t.Fatalf("a non-retryable outcome dialed %d times", srv.Conns())
				}
			}
		})
	}
}

// TestAcceptsTCPButNeverUpgrades: a listener that accepts and then says
// nothing costs one dial timeout per attempt, and Close ends it at once.
func TestAcceptsTCPButNeverUpgrades(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		lis.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	c, err := session.Dial(session.Config{URL: "ws://" + lis.Addr().String() + "/graphql", DialTimeout: 100 * time.Millisecond,
		Backoff: session.Backoff{Initial: time.Millisecond, Max: 10 * time.Millisecond, MaxElapsed: 400 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	rec := &hostileRecorder{done: make(chan error, 1), poke: make(chan struct{}, 1)}
	if _, err := c.Subscribe(session.Request{Query: "subscription { x }"}, rec); err != nil {
		t.Fatal(err)
	}
	var se *session.Error
	select {
	case err := <-rec.done:
		if !errors.As(err, &se) || se.Class != session.ClassTransient || !se.Exhausted {
			t.Fatalf("outcome %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("never gave up")
	}
	c.Close(session.CodeNormal, nil)
}
