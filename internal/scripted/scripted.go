// Package scripted is a WebSocket server whose every connection follows a
// script written in the test: the stand-in for behaviours no real GraphQL
// server produces on demand (garbage frames, close codes on command,
// silence, wrong subprotocols). It is for tests only.
package scripted

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// Msg is one decoded GraphQL-over-WebSocket message.
type Msg struct {
	Type    string          `json:"type"`
	ID      string          `json:"id,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// Peer is the server side of one connection.
type Peer struct {
	*websocket.Conn
	// N numbers the connections of the server from 1.
	N int
	// Req is the upgrade request.
	Req *http.Request
	ctx context.Context
	t   testing.TB
}

// Options shape the upgrade.
type Options struct {
	// Subprotocols the server agrees to (the first offered that it knows).
	Subprotocols []string
	// Echo answers with this Sec-WebSocket-Protocol whatever was offered
	// (to play a broken server); "-" answers none.
	Echo string
	// Upgrade, when set, handles the HTTP request instead of upgrading it
	// (to answer 401, 503 and so on). Returning false falls through to the
	// upgrade.
	Upgrade func(w http.ResponseWriter, r *http.Request, n int) bool
}

// Server serves scripted connections on 127.0.0.1.
type Server struct {
	URL   string
	conns atomic.Int32
	lis   net.Listener
	srv   *http.Server
	wg    sync.WaitGroup
	mu    sync.Mutex
	open  map[*websocket.Conn]struct{}
}

// Start serves script on every connection; the server and every connection
// are closed in t.Cleanup.
func Start(t testing.TB, opts Options, script func(p *Peer)) *Server {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{URL: "ws://" + lis.Addr().String() + "/graphql", lis: lis, open: map[*websocket.Conn]struct{}{}}
	ctx, cancel := context.WithCancel(context.Background())
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(s.conns.Add(1))
		if opts.Upgrade != nil && opts.Upgrade(w, r, n) {
			return
		}
		var ao websocket.AcceptOptions
		switch {
		case opts.Echo == "-":
		case opts.Echo != "":
			w.Header().Set("Sec-WebSocket-Protocol", opts.Echo)
		default:
			ao.Subprotocols = opts.Subprotocols
		}
		c, err := websocket.Accept(w, r, &ao)
		if err != nil {
			return
		}
		c.SetReadLimit(64 << 20)
		s.mu.Lock()
		s.open[c] = struct{}{}
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.open, c)
			s.mu.Unlock()
			_ = c.CloseNow()
		}()
		script(&Peer{Conn: c, N: n, Req: r, ctx: ctx, t: t})
	})}
	s.wg.Go(func() { _ = s.srv.Serve(lis) })
	t.Cleanup(func() {
		cancel()
		s.mu.Lock()
		for c := range s.open {
			_ = c.CloseNow()
		}
		s.mu.Unlock()
		ctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
		defer stop()
		if s.srv.Shutdown(ctx) != nil {
			_ = s.srv.Close() // connections that never went idle
		}
		s.wg.Wait()
	})
	return s
}

// Conns counts the connections (upgrade requests) served so far.
func (s *Server) Conns() int { return int(s.conns.Load()) }

// Context ends when the server shuts down.
func (p *Peer) Context() context.Context { return p.ctx }

// Read returns the next message, or false when the connection ended.
func (p *Peer) Read() (Msg, bool) {
	_, b, err := p.Conn.Read(p.ctx)
	if err != nil {
		return Msg{}, false
	}
	var m Msg
	if err := json.Unmarshal(b, &m); err != nil {
		p.t.Errorf("scripted: client sent invalid JSON %q", b)
		return Msg{}, false
	}
	return m, true
}

// Expect reads the next message, skipping pings and pongs, and reports
// false unless it has type typ.
func (p *Peer) Expect(typ string) (Msg, bool) {
	for {
		m, ok := p.Read()
		if !ok {
			return m, false
		}
		if m.Type == "ping" || m.Type == "pong" {
			continue
		}
		if m.Type != typ {
			p.t.Errorf("scripted: got %q, want %q", m.Type, typ)
			return m, false
		}
		return m, true
	}
}

// Send writes a text frame.
func (p *Peer) Send(frame string) bool {
	return p.Conn.Write(p.ctx, websocket.MessageText, []byte(frame)) == nil
}

// SendMsg writes m as JSON.
func (p *Peer) SendMsg(typ, id, payload string) bool {
	var b strings.Builder
	b.WriteString(`{"type":"` + typ + `"`)
	if id != "" {
		b.WriteString(`,"id":"` + id + `"`)
	}
	if payload != "" {
		b.WriteString(`,"payload":` + payload)
	}
	b.WriteString("}")
	return p.Send(b.String())
}

// Handshake expects connection_init and acknowledges it.
func (p *Peer) Handshake() (Msg, bool) {
	m, ok := p.Expect("connection_init")
	if !ok {
		return m, false
	}
	return m, p.SendMsg("connection_ack", "", "")
}

// Close closes with code and reason.
func (p *Peer) Close(code int, reason string) {
	_ = p.Conn.Close(websocket.StatusCode(code), reason)
}

// Drain reads until the connection ends, answering graphql-transport-ws pings.
func (p *Peer) Drain() {
	for {
		m, ok := p.Read()
		if !ok {
			return
		}
		if m.Type == "ping" {
			p.SendMsg("pong", "", "")
		}
	}
}
