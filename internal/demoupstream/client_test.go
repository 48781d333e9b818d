package demoupstream_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// protocol names the message types that differ between the two
// GraphQL-over-WebSocket subprotocols.
type protocol struct {
	name      string // Sec-WebSocket-Protocol
	subscribe string // client: start an operation
	next      string // server: an operation's result
	stop      string // client: stop an operation
}

var (
	transportWS = protocol{name: "graphql-transport-ws", subscribe: "subscribe", next: "next", stop: "complete"}
	legacyWS    = protocol{name: "graphql-ws", subscribe: "start", next: "data", stop: "stop"}
	protocols   = []protocol{transportWS, legacyWS}
)

// msg is a message of either subprotocol.
type msg struct {
	Type    string          `json:"type"`
	ID      string          `json:"id,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// client is a raw GraphQL-over-WebSocket client: tests see every message
// the server sends, except keep-alives.
type client struct {
	t    *testing.T
	p    protocol
	conn *websocket.Conn
}

func dial(t *testing.T, url string, p protocol) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{p.name}})
	if err != nil {
		t.Fatalf("dial %s: %v", p.name, err)
	}
	if got := conn.Subprotocol(); got != p.name {
		t.Fatalf("negotiated subprotocol %q, want %q", got, p.name)
	}
	conn.SetReadLimit(1 << 20)
	t.Cleanup(func() { _ = conn.CloseNow() })
	return &client{t: t, p: p, conn: conn}
}

// on returns c reporting to t, for use in a subtest.
func (c *client) on(t *testing.T) *client {
	cc := *c
	cc.t = t
	return &cc
}

func (c *client) send(m msg) {
	c.t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(c.t.Context(), 5*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("write %s: %v", m.Type, err)
	}
}

// read returns the next message that is not a keep-alive; graphql-transport-ws
// pings are answered as the protocol requires.
func (c *client) read(ctx context.Context) (msg, error) {
	for {
		_, b, err := c.conn.Read(ctx)
		if err != nil {
			return msg{}, err
		}
		var m msg
		if err := json.Unmarshal(b, &m); err != nil {
			return msg{}, fmt.Errorf("decode %q: %w", b, err)
		}
		switch m.Type {
		case "ka", "pong":
			continue
		case "ping":
			if err := c.conn.Write(ctx, websocket.MessageText, []byte(`{"type":"pong"}`)); err != nil {
				return msg{}, err
			}
			continue
		}
		return m, nil
	}
}

// expect reads the next message and fails unless it has type typ.
func (c *client) expect(typ string) msg {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), 5*time.Second)
	defer cancel()
	m, err := c.read(ctx)
	if err != nil {
		c.t.Fatalf("waiting for %s: %v", typ, err)
	}
	if m.Type != typ {
		c.t.Fatalf("got %s message %s, want %s", m.Type, m.Payload, typ)
	}
	return m
}

// expectClose reads until the server closes the connection and returns its
// close frame; data messages before it are returned too.
func (c *client) expectClose() (websocket.CloseError, []msg) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), 5*time.Second)
	defer cancel()
	var before []msg
	for {
		m, err := c.read(ctx)
		if err == nil {
			before = append(before, m)
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			c.t.Fatalf("waiting for the server to close: %v", err)
		}
		return ce, before
	}
}

func (c *client) init(payload any) {
	c.t.Helper()
	c.sendInit(payload)
	c.expect("connection_ack")
}

func (c *client) sendInit(payload any) {
	c.t.Helper()
	m := msg{Type: "connection_init"}
	if payload != nil {
		b, err := json.Marshal(payload)
		if err != nil {
			c.t.Fatal(err)
		}
		m.Payload = b
	}
	c.send(m)
}

func (c *client) subscribe(id, query string) {
	c.t.Helper()
	b, err := json.Marshal(map[string]string{"query": query})
	if err != nil {
		c.t.Fatal(err)
	}
	c.send(msg{Type: c.p.subscribe, ID: id, Payload: b})
}

func (c *client) stop(id string) {
	c.t.Helper()
	c.send(msg{Type: c.p.stop, ID: id})
}
