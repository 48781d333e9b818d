package session

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// This file is an in-memory network for tests that run inside a
// testing/synctest bubble: real sockets block outside the bubble, so time
// could never advance while the session reads one. memNet gives Config an
// http.Client whose every dial returns one end of an in-memory, buffered,
// channel-based connection; the other end is served, inside the bubble, by
// a minimal HTTP/1.1 responder that hands the request to a handler (usually
// websocket.Accept followed by a script). Everything here is made of
// channels created in the bubble, so a goroutine waiting on it is durably
// blocked and fake time advances exactly as it would on a quiet network.

// memConn is one end of an in-memory connection. Writes are buffered (like a
// socket's send buffer, so neither side has to read for the other to write a
// frame) and reads see the peer's writes in order, then io.EOF once the peer
// closed. Deadlines are not supported: neither http.Transport nor
// coder/websocket sets them on a client connection, and the server side below
// does not either.
type memConn struct {
	in, out    chan []byte
	self, peer chan struct{} // closed by this end's / the peer's Close
	once       *sync.Once
	rest       []byte
	// failWrite, when set, may fail a write before it is sent: a reset
	// that the reads have not seen yet.
	failWrite func(p []byte) error
}

func memPipe() (*memConn, *memConn) {
	ab, ba := make(chan []byte, 4096), make(chan []byte, 4096)
	ca, cb := make(chan struct{}), make(chan struct{})
	return &memConn{in: ba, out: ab, self: ca, peer: cb, once: new(sync.Once)},
		&memConn{in: ab, out: ba, self: cb, peer: ca, once: new(sync.Once)}
}

func (c *memConn) Read(p []byte) (int, error) {
	if len(c.rest) == 0 {
		select {
		case b := <-c.in:
			c.rest = b
		default:
			select {
			case b := <-c.in:
				c.rest = b
			case <-c.self:
				return 0, net.ErrClosed
			case <-c.peer:
				select {
				case b := <-c.in: // written before the peer closed
					c.rest = b
				default:
					return 0, io.EOF
				}
			}
		}
	}
	n := copy(p, c.rest)
	c.rest = c.rest[n:]
	return n, nil
}

func (c *memConn) Write(p []byte) (int, error) {
	if c.failWrite != nil {
		if err := c.failWrite(p); err != nil {
			return 0, err
		}
	}
	select {
	case <-c.self:
		return 0, net.ErrClosed
	case <-c.peer:
		return 0, errors.New("memconn: connection reset by peer")
	default:
	}
	b := append([]byte(nil), p...)
	select {
	case c.out <- b:
		return len(p), nil
	case <-c.self:
		return 0, net.ErrClosed
	case <-c.peer:
		return 0, errors.New("memconn: connection reset by peer")
	}
}

func (c *memConn) Close() error {
	c.once.Do(func() { close(c.self) })
	return nil
}

var memAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80}

func (c *memConn) LocalAddr() net.Addr              { return memAddr }
func (c *memConn) RemoteAddr() net.Addr             { return memAddr }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// memNet serves in-memory connections with handler. Create it inside the
// bubble; Wait joins every connection it served.
type memNet struct {
	handler func(w http.ResponseWriter, r *http.Request, n int)
	dials   atomic.Int32
	refuse  atomic.Bool // dials fail as if nothing listened
	// clientWrites, when set, is asked before every write of the client
	// end of connection n (numbered from 1, the upgrade request included);
	// an error fails the write. Set it before the first dial.
	clientWrites func(n int, p []byte) error
	wg           sync.WaitGroup
}

func newMemNet(handler func(w http.ResponseWriter, r *http.Request, n int)) *memNet {
	return &memNet{handler: handler}
}

// client is an http.Client that dials m. A new one per Conn keeps idle
// connections (there are none: upgrades are hijacked, refusals close) apart.
func (m *memNet) client() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if m.refuse.Load() {
				return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused")}
			}
			cc, sc := memPipe()
			n := int(m.dials.Add(1))
			if m.clientWrites != nil {
				cc.failWrite = func(p []byte) error { return m.clientWrites(n, p) }
			}
			m.wg.Go(func() { m.serve(sc, n) })
			return cc, nil
		},
		DisableKeepAlives: true,
	}}
}

// serve reads one request from c and answers it with the handler.
func (m *memNet) serve(c *memConn, n int) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	w := &memResponse{c: c, brw: bufio.NewReadWriter(br, bufio.NewWriter(c)), h: http.Header{}}
	m.handler(w, req, n)
	if w.hijacked {
		return
	}
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.h.Set("Content-Length", strconv.Itoa(w.body.Len()))
	w.h.Set("Connection", "close")
	w.writeHead()
	_, _ = w.brw.Write(w.body.Bytes())
	_ = w.brw.Flush()
}

// memResponse is the smallest http.ResponseWriter websocket.Accept accepts.
type memResponse struct {
	c        *memConn
	brw      *bufio.ReadWriter
	h        http.Header
	status   int
	body     bytes.Buffer
	hijacked bool
}

func (w *memResponse) Header() http.Header { return w.h }

func (w *memResponse) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *memResponse) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}

func (w *memResponse) writeHead() {
	fmt.Fprintf(w.brw, "HTTP/1.1 %d %s\r\n", w.status, http.StatusText(w.status))
	_ = w.h.Write(w.brw)
	_, _ = w.brw.WriteString("\r\n")
}

func (w *memResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.hijacked = true
	w.writeHead()
	if err := w.brw.Flush(); err != nil {
		return nil, nil, err
	}
	return w.c, w.brw, nil
}

// memPeer is the server side of one in-memory WebSocket, for scripts.
type memPeer struct {
	ws *websocket.Conn
	n  int
	t  testing.TB
}

type wireMsg struct {
	Type    string          `json:"type"`
	ID      string          `json:"id,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// memScript upgrades with subprotocols and runs script; the connection is
// cut when the script returns.
func memScript(t testing.TB, subprotocols []string, script func(p *memPeer)) func(http.ResponseWriter, *http.Request, int) {
	return memScriptWith(t, websocket.AcceptOptions{Subprotocols: subprotocols}, script)
}

// memScriptWith is memScript with full accept options (to watch WebSocket
// ping frames with OnPingReceived, for instance).
func memScriptWith(t testing.TB, opts websocket.AcceptOptions, script func(p *memPeer)) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, r *http.Request, n int) {
		ws, err := websocket.Accept(w, r, &opts)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		script(&memPeer{ws: ws, n: n, t: t})
	}
}

func (p *memPeer) read() (wireMsg, bool) {
	_, b, err := p.ws.Read(context.Background())
	if err != nil {
		return wireMsg{}, false
	}
	var m wireMsg
	if err := json.Unmarshal(b, &m); err != nil {
		p.t.Errorf("memPeer: client sent invalid JSON %q", b)
		return wireMsg{}, false
	}
	return m, true
}

// expect reads the next message that is not a ping or pong and reports
// false unless it has type typ.
func (p *memPeer) expect(typ string) (wireMsg, bool) {
	for {
		m, ok := p.read()
		if !ok {
			return m, false
		}
		if m.Type == msgPing || m.Type == msgPong {
			continue
		}
		if m.Type != typ {
			p.t.Errorf("memPeer: got %q, want %q", m.Type, typ)
			return m, false
		}
		return m, true
	}
}

func (p *memPeer) send(typ, id, payload string) bool {
	var b strings.Builder
	b.WriteString(`{"type":"` + typ + `"`)
	if id != "" {
		b.WriteString(`,"id":"` + id + `"`)
	}
	if payload != "" {
		b.WriteString(`,"payload":` + payload)
	}
	b.WriteString("}")
	return p.ws.Write(context.Background(), websocket.MessageText, []byte(b.String())) == nil
}

func (p *memPeer) handshake() bool {
	if _, ok := p.expect(msgConnectionInit); !ok {
		return false
	}
	return p.send(msgConnectionAck, "", "")
}

// drain reads until the connection ends; it answers pings when pong is set.
func (p *memPeer) drain(pong bool) {
	for {
		m, ok := p.read()
		if !ok {
			return
		}
		if pong && m.Type == msgPing {
			p.send(msgPong, "", "")
		}
	}
}
