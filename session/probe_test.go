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
)

// probe is a Handler that records everything it hears, counts OnDone calls
// (a second one is a bug the tests must see, not a deadlock) and lets a test
// wait for a condition. It works inside and outside synctest bubbles (create
// it where it is used).
type probe struct {
	mu      sync.Mutex
	log     []string // "subscribed", "next", "reconnecting:CODE", "resubscribed", "done"
	events  []Event
	nexts   []string
	dones   []error
	changed chan struct{} // closed and replaced on every change
	// patience bounds waitNexts and waitDone: 20s of real time, or a
	// week of fake time in a synctest bubble (where time flies whenever
	// everything waits, and a deadlock is reported anyway).
	patience time.Duration
}

func newProbe() *probe { return &probe{changed: make(chan struct{}), patience: 20 * time.Second} }

// newBubbleProbe is a probe for a synctest bubble.
func newBubbleProbe() *probe {
	return &probe{changed: make(chan struct{}), patience: 7 * 24 * time.Hour}
}

func (p *probe) update(f func()) {
	p.mu.Lock()
	f()
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

func (p *probe) OnNext(b []byte) {
	p.update(func() {
		p.nexts = append(p.nexts, string(b))
		p.log = append(p.log, "next")
	})
}

func (p *probe) OnEvent(ev Event) {
	p.update(func() {
		p.events = append(p.events, ev)
		switch ev.Kind {
		case Subscribed:
			p.log = append(p.log, "subscribed")
		case Reconnecting:
			p.log = append(p.log, fmt.Sprintf("reconnecting:%d", ev.Code))
		case Resubscribed:
			p.log = append(p.log, "resubscribed")
		default:
			p.log = append(p.log, fmt.Sprintf("event:%d", ev.Kind))
		}
	})
}

func (p *probe) OnDone(err error) {
	p.update(func() {
		p.dones = append(p.dones, err)
		p.log = append(p.log, "done")
	})
}

// snap returns copies of what the probe heard.
func (p *probe) snap() (log []string, nexts []string, dones []error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.log...), append([]string(nil), p.nexts...), append([]error(nil), p.dones...)
}

func (p *probe) Events() []Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Event(nil), p.events...)
}

// waitFor waits up to d for cond, which is evaluated under the probe's lock
// on every change.
func (p *probe) waitFor(t testing.TB, d time.Duration, what string, cond func(p *probe) bool) {
	t.Helper()
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	for {
		p.mu.Lock()
		ok, ch := cond(p), p.changed
		p.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-timeout.C:
			log, _, _ := p.snap()
			_, nexts, _ := p.snap()
			t.Fatalf("timed out after %v waiting for %s; log %v; results %q", d, what, log, nexts)
		}
	}
}

func (p *probe) waitNexts(t testing.TB, n int) {
	t.Helper()
	p.waitFor(t, p.patience, fmt.Sprintf("%d results", n), func(p *probe) bool { return len(p.nexts) >= n })
}

// waitDone waits for the outcome and returns it.
func (p *probe) waitDone(t testing.TB) error {
	t.Helper()
	p.waitFor(t, p.patience, "the outcome", func(p *probe) bool { return len(p.dones) > 0 })
	_, _, dones := p.snap()
	return dones[0]
}

// doneCount is how many times OnDone was called.
func (p *probe) doneCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.dones)
}

// hasPrefix reports whether log starts with want.
func hasPrefix(log []string, want ...string) bool {
	if len(log) < len(want) {
		return false
	}
	for i, w := range want {
		if log[i] != w {
			return false
		}
	}
	return true
}

func expectLogPrefix(t testing.TB, p *probe, want ...string) {
	t.Helper()
	if log, _, _ := p.snap(); !hasPrefix(log, want...) {
		t.Fatalf("log %v, want it to start with %v", log, want)
	}
}

// handshakes records every call of Config.Handshake.
type handshakes struct {
	mu       sync.Mutex
	attempts []Attempt
	// payload returns the connection_init payload of an attempt; nil sends
	// none.
	payload func(a Attempt) string
	// gate, when set, holds the first attempt until it is closed: a test
	// whose first connection fails terminally subscribes first (Subscribe
	// on a Conn that already failed returns the failure instead).
	gate chan struct{}
}

func (h *handshakes) fn(ctx context.Context, a Attempt) (Handshake, error) {
	if h.gate != nil {
		select {
		case <-h.gate:
		case <-ctx.Done():
			return Handshake{}, ctx.Err()
		}
	}
	h.mu.Lock()
	h.attempts = append(h.attempts, a)
	h.mu.Unlock()
	var hs Handshake
	if h.payload != nil {
		if p := h.payload(a); p != "" {
			hs.InitPayload = []byte(p)
		}
	}
	return hs, nil
}

func (h *handshakes) list() []Attempt {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Attempt(nil), h.attempts...)
}

// refreshes returns the attempts that asked for a fresh credential.
func (h *handshakes) refreshes() []Attempt {
	var out []Attempt
	for _, a := range h.list() {
		if a.Refresh {
			out = append(out, a)
		}
	}
	return out
}

// states records Config.OnState.
type states struct {
	mu      sync.Mutex
	changes []StateChange
}

func (s *states) fn(sc StateChange) {
	s.mu.Lock()
	s.changes = append(s.changes, sc)
	s.mu.Unlock()
}

func (s *states) list() []StateChange {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]StateChange(nil), s.changes...)
}

// backoffs returns the StateBackoff changes, whose Cause says why.
func (s *states) backoffs() []StateChange {
	var out []StateChange
	for _, sc := range s.list() {
		if sc.State == StateBackoff {
			out = append(out, sc)
		}
	}
	return out
}

// count returns how many changes to st were reported.
func (s *states) count(st State) int {
	n := 0
	for _, sc := range s.list() {
		if sc.State == st {
			n++
		}
	}
	return n
}

// dialCounter is an http.Client whose dials are counted: how many times the
// session tried to reach the upstream, whatever the upstream is.
type dialCounter struct {
	n atomic.Int32
}

func (d *dialCounter) client() *http.Client {
	var dialer net.Dialer
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			d.n.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
		DisableKeepAlives: true,
	}}
}

// asError returns err as a *Error or fails the test.
func asError(t testing.TB, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("outcome %v (%T), want a *session.Error", err, err)
	}
	return e
}

func subscribe(t testing.TB, c *Conn, h Handler) *Operation {
	t.Helper()
	op, err := c.Subscribe(Request{Query: "subscription { n }"}, h)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	return op
}

func joinLog(l []string) string { return strings.Join(l, ",") }
