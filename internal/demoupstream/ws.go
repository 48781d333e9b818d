package demoupstream

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/coder/websocket"
)

// subprotocolTransportWS is the current GraphQL-over-WebSocket subprotocol
// (github.com/enisdenjo/graphql-ws); gqlgen also speaks the legacy
// "graphql-ws" of subscriptions-transport-ws.
const subprotocolTransportWS = "graphql-transport-ws"

// wsImplementation accepts websockets for gqlgen's transport.Websocket. It
// does what gqlgen's default CoderWebsocketImplementation does, on the same
// library, with three differences the demo server needs:
//
//   - It prefers graphql-transport-ws. gqlgen offers its subprotocols as
//     [graphql-ws, graphql-transport-ws] and coder/websocket picks the first
//     server entry the client also offered, so a client offering both would
//     get the legacy protocol. gqlgen then chooses its message format from the
//     negotiated Sec-WebSocket-Protocol alone, treating "" (client offered
//     neither) as graphql-ws.
//   - Every connection is registered with the Server, so that Close can close
//     them all and token expiry can close one with a code of its choosing;
//     gqlgen closes an acknowledged connection only with 1000 (or 1002 on a
//     protocol error), even when the context from its InitFunc ends.
//   - The close handshake runs on a goroutine the Server waits for, and the
//     Server can cut a connection whose peer never answers the handshake.
type wsImplementation struct{ s *Server }

func (impl wsImplementation) Accept(w http.ResponseWriter, r *http.Request, opts transport.WebsocketAcceptOptions) (transport.WebsocketConn, error) {
	for key, values := range opts.ResponseHeader {
		for _, v := range values {
			w.Header().Add(key, v)
		}
	}
	subprotocols := slices.Clone(opts.Subprotocols)
	if i := slices.Index(subprotocols, subprotocolTransportWS); i > 0 {
		subprotocols = slices.Insert(slices.Delete(subprotocols, i, i+1), 0, subprotocolTransportWS)
	}
	hw := &hijackRecorder{ResponseWriter: w}
	c, err := websocket.Accept(hw, r, &websocket.AcceptOptions{Subprotocols: subprotocols})
	if err != nil {
		return nil, err
	}
	wc := &wsConn{s: impl.s, conn: c, netConn: hw.conn}
	if slot := slotFromContext(r.Context()); slot != nil {
		slot.conn = wc
	}
	impl.s.addConn(wc)
	return wc, nil
}

// hijackRecorder keeps the TCP connection coder/websocket hijacks, so that
// the server can cut it even while coder/websocket waits for a close
// handshake (its CloseNow does not interrupt one).
type hijackRecorder struct {
	http.ResponseWriter
	conn net.Conn
}

func (h *hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	h.conn = conn
	return conn, brw, err
}

// wsConn is one accepted websocket, as gqlgen's transport sees it.
type wsConn struct {
	s       *Server
	conn    *websocket.Conn
	netConn net.Conn // what conn runs on; nil if the hijack was not seen

	mu      sync.Mutex
	closing bool        // a close handshake started, or the connection was cut
	done    bool        // finished: unregistered from the server
	expiry  *time.Timer // token expiry (Options.TokenTTL), if armed
}

var _ transport.WebsocketReadLimiter = (*wsConn)(nil)

func (c *wsConn) NextReader() (int, io.Reader, error) {
	typ, data, err := c.conn.Read(context.Background())
	if err != nil {
		c.mu.Lock()
		closing := c.closing
		c.mu.Unlock()
		// gqlgen reports any read error other than ErrWebsocketClosed to its
		// ErrorFunc. A peer's normal close, and the peer's answer to a close
		// this server started (which echoes our code, 4401 for instance), are
		// ordinary ends of a connection, not errors.
		if closing || isNormalClose(err) {
			return int(typ), nil, transport.ErrWebsocketClosed
		}
		return int(typ), nil, err
	}
	return int(typ), bytes.NewReader(data), nil
}

func isNormalClose(err error) bool {
	switch websocket.CloseStatus(err) {
	case websocket.StatusNormalClosure, websocket.StatusNoStatusRcvd, websocket.StatusGoingAway:
		return true
	}
	return false
}

func (c *wsConn) WriteJSON(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.conn.Write(context.Background(), websocket.MessageText, data)
}

// WriteClose starts the close handshake with code and reason; only the first
// call of WriteClose or Close on a connection has an effect.
//
// coder/websocket's Close waits (up to 5s) for the peer's close frame, so it
// runs on a goroutine: gqlgen must not stall its teardown on a slow peer, and
// the Server tracks the goroutine so that Close returns only when it is done.
func (c *wsConn) WriteClose(code int, reason string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return nil
	}
	c.closing = true
	c.s.wg.Go(func() {
		_ = c.conn.Close(websocket.StatusCode(code), reason)
		c.finish()
	})
	return nil
}

// Close closes the connection at once unless a close handshake is under way,
// in which case the handshake's goroutine finishes the connection.
func (c *wsConn) Close() error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return nil
	}
	c.closing = true
	c.mu.Unlock()
	err := c.conn.CloseNow()
	c.finish()
	return err
}

// cut drops the TCP connection without a handshake, which also ends a
// handshake still waiting for the peer's close frame.
func (c *wsConn) cut() {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	if c.netConn != nil {
		_ = c.netConn.Close()
	}
	_ = c.conn.CloseNow() // waits for a running handshake, which now fails fast
	c.finish()
}

// expireAfter closes the connection with CloseCodeTokenExpired once ttl has
// passed, simulating the expiry of the token it was opened with.
func (c *wsConn) expireAfter(ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done || c.expiry != nil {
		return
	}
	c.s.wg.Add(1) // held by the timer until it fires or finish stops it
	c.expiry = time.AfterFunc(ttl, func() {
		defer c.s.wg.Done()
		c.s.log.Info("token expired, closing websocket", "code", CloseCodeTokenExpired)
		_ = c.WriteClose(CloseCodeTokenExpired, closeReasonTokenExpired)
	})
}

// finish unregisters the connection from the server and disarms its token
// expiry, once.
func (c *wsConn) finish() {
	c.mu.Lock()
	done := c.done
	c.done = true
	if !done && c.expiry != nil && c.expiry.Stop() {
		c.s.wg.Done() // the timer will not fire: release its hold
	}
	c.mu.Unlock()
	if !done {
		c.s.removeConn(c)
	}
}

func (c *wsConn) Subprotocol() string { return c.conn.Subprotocol() }

func (c *wsConn) SetReadLimit(limit int64) { c.conn.SetReadLimit(limit) }
