package session

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gqlbridge/gqlbridge/internal/scripted"
)

// recorder is a Handler that keeps everything it hears.
type recorder struct {
	mu     sync.Mutex
	log    []string
	nexts  []string
	notify chan struct{}
	done   chan error
}

func newRecorder() *recorder {
	return &recorder{notify: make(chan struct{}, 1), done: make(chan error, 1)}
}

func (r *recorder) OnNext(p []byte) {
	r.mu.Lock()
	r.nexts = append(r.nexts, string(p))
	r.log = append(r.log, "next")
	r.mu.Unlock()
	r.poke()
}

func (r *recorder) OnEvent(ev Event) {
	r.mu.Lock()
	switch ev.Kind {
	case Subscribed:
		r.log = append(r.log, "subscribed")
	case Reconnecting:
		r.log = append(r.log, fmt.Sprintf("reconnecting:%d", ev.Code))
	case Resubscribed:
		r.log = append(r.log, "resubscribed")
	}
	r.mu.Unlock()
	r.poke()
}

func (r *recorder) OnDone(err error) { r.done <- err }

func (r *recorder) poke() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder) snapshot() ([]string, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.log...), append([]string(nil), r.nexts...)
}

// waitNexts waits until n results arrived.
func (r *recorder) waitNexts(t *testing.T, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for {
		_, nexts := r.snapshot()
		if len(nexts) >= n {
			return nexts
		}
		select {
		case <-r.notify:
		case <-ctx.Done():
			log, _ := r.snapshot()
			t.Fatalf("waiting for %d results: got %d; log %v", n, len(nexts), log)
		}
	}
}

func (r *recorder) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		return err
	case <-time.After(15 * time.Second):
		log, _ := r.snapshot()
		t.Fatalf("operation never ended; log %v", log)
		return nil
	}
}

func fastBackoff() Backoff {
	return Backoff{Initial: time.Millisecond, Max: 20 * time.Millisecond, StableAfter: time.Hour}
}

func dialTest(t *testing.T, cfg Config) *Conn {
	t.Helper()
	if cfg.Backoff == (Backoff{}) {
		cfg.Backoff = fastBackoff()
	}
	c, err := Dial(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(CodeNormal, nil) })
	return c
}

var tws = scripted.Options{Subprotocols: []string{TransportWS}}

func TestStreamAndComplete(t *testing.T) {
	t.Parallel()
	srv := scripted.Start(t, tws, func(p *scripted.Peer) {
		if _, ok := p.Handshake(); !ok {
			return
		}
		m, ok := p.Expect("subscribe")
		if !ok {
			return
		}
		for i := 1; i <= 3; i++ {
			p.SendMsg("next", m.ID, fmt.Sprintf(`{"data":{"n":%d}}`, i))
		}
		p.SendMsg("complete", m.ID, "")
		p.Drain()
	})
	c := dialTest(t, Config{URL: srv.URL})
	rec := newRecorder()
	if _, err := c.Subscribe(Request{Query: "subscription { n }"}, rec); err != nil {
		t.Fatal(err)
	}
	if err := rec.wait(t); err != nil {
		t.Fatalf("outcome %v, want nil", err)
	}
	log, nexts := rec.snapshot()
	if strings.Join(log, ",") != "subscribed,next,next,next" {
		t.Fatalf("log %v", log)
	}
	if nexts[2] != `{"data":{"n":3}}` {
		t.Fatalf("payload not passed through: %q", nexts[2])
	}
	if c.Len() != 0 {
		t.Fatalf("completed operation still live")
	}
}

func TestOperationError(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ proto, payload, want string }{
		{TransportWS, `[{"message":"boom"}]`, `[{"message":"boom"}]`},
		{LegacyWS, `{"message":"boom"}`, `[{"message":"boom"}]`},
	} {
		srv := scripted.Start(t, scripted.Options{Subprotocols: []string{tc.proto}}, func(p *scripted.Peer) {
			if _, ok := p.Handshake(); !ok {
				return
			}
			typ := "subscribe"
			if tc.proto == LegacyWS {
				typ = "start"
			}
			m, ok := p.Expect(typ)
			if !ok {
				return
			}
			p.SendMsg("error", m.ID, tc.payload)
			p.Drain()
		})
		c := dialTest(t, Config{URL: srv.URL, Subprotocols: []string{tc.proto}})
		rec := newRecorder()
		if _, err := c.Subscribe(Request{Query: "subscription { n }"}, rec); err != nil {
			t.Fatal(err)
		}
		var gerr *GraphQLError
		if err := rec.wait(t); !errors.As(err, &gerr) || string(gerr.Errors) != tc.want {
			t.Fatalf("%s: outcome %v, want GraphQL error %s", tc.proto, err, tc.want)
		}
	}
}

// TestResubscribeWithFreshIDs: a transient close keeps the operation, which
// hears Reconnecting and Resubscribed and runs again under a new id.
func TestResubscribeWithFreshIDs(t *testing.T) {
	t.Parallel()
	ids := make(chan string, 2)
	srv := scripted.Start(t, tws, func(p *scripted.Peer) {
		if _, ok := p.Handshake(); !ok {
			return
		}
		m, ok := p.Expect("subscribe")
		if !ok {
			return
		}
		ids <- m.ID
		p.SendMsg("next", m.ID, fmt.Sprintf(`{"data":{"conn":%d}}`, p.N))
		if p.N == 1 {
			p.Close(1012, "service restart")
			return
		}
		p.Drain()
	})
	c := dialTest(t, Config{URL: srv.URL})
	rec := newRecorder()
	if _, err := c.Subscribe(Request{Query: "subscription { n }"}, rec); err != nil {
		t.Fatal(err)
	}
	nexts := rec.waitNexts(t, 2)
	if nexts[0] != `{"data":{"conn":1}}` || nexts[1] != `{"data":{"conn":2}}` {
		t.Fatalf("results %v", nexts)
	}
	if a, b := <-ids, <-ids; a == b {
		t.Fatalf("resubscribed with the same id %q", a)
	}
	log, _ := rec.snapshot()
	if got := strings.Join(log, ","); got != "subscribed,next,reconnecting:1012,resubscribed,next" {
		t.Fatalf("log %v", got)
	}
}

// TestAuthRefreshThenTerminal: an auth close asks for exactly one fresh
// credential; a rejection right after it is terminal.
func TestAuthRefreshThenTerminal(t *testing.T) {
	t.Parallel()
	srv := scripted.Start(t, tws, func(p *scripted.Peer) {
		if _, ok := p.Expect("connection_init"); !ok {
			return
		}
		p.Close(4403, "Forbidden")
	})
	var refreshes, attempts atomic.Int32
	gate := make(chan struct{}) // a Conn that already failed would refuse Subscribe
	c := dialTest(t, Config{URL: srv.URL, Handshake: func(ctx context.Context, a Attempt) (Handshake, error) {
		<-gate
		attempts.Add(1)
		if a.Refresh {
			refreshes.Add(1)
		}
		return Handshake{InitPayload: []byte(`{"Authorization":"Bearer t"}`)}, nil
	}})
	rec := newRecorder()
	if _, err := c.Subscribe(Request{Query: "subscription { n }"}, rec); err != nil {
		t.Fatal(err)
	}
	close(gate)
	var e *Error
	if err := rec.wait(t); !errors.As(err, &e) || e.Class != ClassAuth || e.Code != 4403 {
		t.Fatalf("outcome %v, want auth 4403", err)
	}
	if refreshes.Load() != 1 || attempts.Load() != 2 {
		t.Fatalf("refreshes %d attempts %d, want 1 and 2", refreshes.Load(), attempts.Load())
	}
	<-c.Done()
}

func TestUnreachableCloseWhileDialing(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens here now
	var backoffs atomic.Int32
	gate := make(chan struct{}) // no dial before the operation is live: it hears every failure
	c := dialTest(t, Config{URL: "ws://" + addr + "/graphql", OnState: func(sc StateChange) {
		if sc.State == StateBackoff {
			backoffs.Add(1)
		}
	}, Handshake: func(ctx context.Context, a Attempt) (Handshake, error) {
		<-gate
		return Handshake{}, nil
	}})
	rec := newRecorder()
	if _, err := c.Subscribe(Request{Query: "subscription { n }"}, rec); err != nil {
		t.Fatal(err)
	}
	close(gate)
	for backoffs.Load() < 3 {
		time.Sleep(time.Millisecond)
	}
	c.Close(CodeGoingAway, nil)
	if err := rec.wait(t); !errors.Is(err, ErrClosed) {
		t.Fatalf("outcome %v, want ErrClosed", err)
	}
	log, _ := rec.snapshot()
	if len(log) < 3 || log[0] != "reconnecting:0" {
		t.Fatalf("log %v", log)
	}
}

func TestRetryBudgetExhausted(t *testing.T) {
	t.Parallel()
	srv := scripted.Start(t, scripted.Options{Upgrade: func(w http.ResponseWriter, r *http.Request, n int) bool {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return true
	}}, nil)
	c := dialTest(t, Config{URL: srv.URL, Backoff: Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond, MaxElapsed: 50 * time.Millisecond}})
	rec := newRecorder()
	if _, err := c.Subscribe(Request{Query: "subscription { n }"}, rec); err != nil {
		t.Fatal(err)
	}
	var e *Error
	if err := rec.wait(t); !errors.As(err, &e) || !e.Exhausted || e.HTTPStatus != 503 || e.Class != ClassTransient {
		t.Fatalf("outcome %v, want exhausted transient 503", err)
	}
}

func TestStopSendsComplete(t *testing.T) {
	t.Parallel()
	got := make(chan scripted.Msg, 1)
	srv := scripted.Start(t, tws, func(p *scripted.Peer) {
		if _, ok := p.Handshake(); !ok {
			return
		}
		m, ok := p.Expect("subscribe")
		if !ok {
			return
		}
		p.SendMsg("next", m.ID, `{"data":{}}`)
		if c, ok := p.Expect("complete"); ok {
			got <- c
		}
		p.Drain()
	})
	c := dialTest(t, Config{URL: srv.URL})
	rec := newRecorder()
	op, err := c.Subscribe(Request{Query: "subscription { n }"}, rec)
	if err != nil {
		t.Fatal(err)
	}
	rec.waitNexts(t, 1)
	op.Stop()
	select {
	case m := <-got:
		if m.ID != "1" {
			t.Fatalf("complete for %q", m.ID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("upstream never saw complete")
	}
	select {
	case err := <-rec.done:
		t.Fatalf("OnDone(%v) after Stop", err)
	default:
	}
}
