package testpeer

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

var protocols = []Protocol{TransportWS, LegacyWS}

// message is a frame of either subprotocol.
type message struct {
	Type    string          `json:"type"`
	ID      string          `json:"id,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// client is a raw WebSocket client speaking one subprotocol by hand.
type client struct {
	t     *testing.T
	proto Protocol
	conn  *websocket.Conn
}

func dial(t *testing.T, n *Node, proto Protocol) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, n.URL, &websocket.DialOptions{Subprotocols: []string{string(proto)}})
	if err != nil {
		t.Fatalf("dial %s: %v", n.URL, err)
	}
	if resp.Body != nil {
		resp.Body.Close()
	}
	t.Cleanup(func() { _ = conn.CloseNow() })
	if got := conn.Subprotocol(); got != string(proto) {
		t.Fatalf("negotiated subprotocol %q, want %q", got, proto)
	}
	return &client{t: t, proto: proto, conn: conn}
}

func (c *client) send(m any) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := wsjson.Write(ctx, c.conn, m); err != nil {
		c.t.Fatalf("write %v: %v", m, err)
	}
}

// read returns the next message or the read error (e.g. a close).
// Note: coder/websocket closes the connection when the read context expires,
// so the timeout is generous and only guards against hangs.
func (c *client) read() (message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var m message
	err := wsjson.Read(ctx, c.conn, &m)
	return m, err
}

func (c *client) mustRead() message {
	c.t.Helper()
	m, err := c.read()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return m
}

// readClose reads until the connection ends and returns the close error.
func (c *client) readClose() error {
	c.t.Helper()
	for {
		m, err := c.read()
		if err != nil {
			return err
		}
		c.t.Logf("message before close: type=%s id=%s payload=%s", m.Type, m.ID, m.Payload)
	}
}

func (c *client) init(payload any) {
	c.t.Helper()
	c.send(map[string]any{"type": "connection_init", "payload": payload})
}

func (c *client) initAck(payload any) {
	c.t.Helper()
	c.init(payload)
	if m := c.mustRead(); m.Type != "connection_ack" {
		c.t.Fatalf("after connection_init got %+v, want connection_ack", m)
	}
}

func (c *client) subscribe(id, query string) {
	c.t.Helper()
	typ := "subscribe"
	if c.proto == LegacyWS {
		typ = "start"
	}
	c.send(map[string]any{"type": typ, "id": id, "payload": map[string]any{"query": query}})
}

func (c *client) stop(id string) {
	c.t.Helper()
	typ := "complete"
	if c.proto == LegacyWS {
		typ = "stop"
	}
	c.send(map[string]any{"type": typ, "id": id})
}

func (c *client) nextType() string {
	if c.proto == LegacyWS {
		return "data"
	}
	return "next"
}

func closeOf(t *testing.T, err error) (websocket.StatusCode, string) {
	t.Helper()
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code, ce.Reason
	}
	return websocket.CloseStatus(err), ""
}

func bearer(token string) map[string]any { return map[string]any{"Authorization": "Bearer " + token} }

func TestTickerAndStats(t *testing.T) {
	for _, proto := range protocols {
		t.Run(string(proto), func(t *testing.T) {
			t.Parallel()
			n := StartNode(t, NodeOptions{Protocol: proto})
			c := dial(t, n, proto)
			c.initAck(map[string]any{"hello": "world"})
			c.subscribe("1", `subscription { ticker(count: 3, intervalMs: 10) { n } }`)
			for want := 1; want <= 3; want++ {
				m := c.mustRead()
				if m.Type != c.nextType() || m.ID != "1" {
					t.Fatalf("got %+v, want %s for id 1", m, c.nextType())
				}
				var p struct {
					Data struct {
						Ticker struct{ N int } `json:"ticker"`
					} `json:"data"`
				}
				if err := json.Unmarshal(m.Payload, &p); err != nil {
					t.Fatal(err)
				}
				if p.Data.Ticker.N != want {
					t.Fatalf("tick %s, want n=%d", m.Payload, want)
				}
			}
			if m := c.mustRead(); m.Type != "complete" || m.ID != "1" {
				t.Fatalf("got %+v, want complete for id 1", m)
			}
			n.WaitFor(t, func(s Stats) bool { return s.Started == 1 && s.Ended == 1 && s.Active == 0 })
			s := n.Stats(t)
			if s.Connections != 1 || s.Inits != 1 || s.Rejected != 0 {
				t.Fatalf("stats %+v", s)
			}
			if len(s.InitPayloads) != 1 || string(s.InitPayloads[0]) != `{"hello":"world"}` {
				t.Fatalf("init payloads %s", s.InitPayloads)
			}
			if !slices.Equal(s.SubscribeIDs, []string{"1"}) {
				t.Fatalf("subscribe ids %v", s.SubscribeIDs)
			}

			// A padded tick carries the payload, a query runs once, and
			// completeImmediately completes without events.
			c.subscribe("2", `subscription { ticker(count: 1, intervalMs: 1, size: 5) { n at payload } }`)
			m := c.mustRead()
			var tick struct {
				Data struct {
					Ticker struct {
						N       int
						At      string
						Payload string
					}
				}
			}
			if err := json.Unmarshal(m.Payload, &tick); err != nil {
				t.Fatal(err)
			}
			if tick.Data.Ticker.Payload != "xxxxx" || tick.Data.Ticker.At == "" || tick.Data.Ticker.N != 1 {
				t.Fatalf("padded tick %s", m.Payload)
			}
			if m := c.mustRead(); m.Type != "complete" || m.ID != "2" {
				t.Fatalf("got %+v, want complete 2", m)
			}
			c.subscribe("3", `subscription { completeImmediately { n } }`)
			if m := c.mustRead(); m.Type != "complete" || m.ID != "3" {
				t.Fatalf("got %+v, want complete 3 without events", m)
			}
			c.subscribe("4", `query { hello(name: "bridge") }`)
			if m := c.mustRead(); m.Type != c.nextType() || m.ID != "4" || string(m.Payload) != `{"data":{"hello":"Hello, bridge!"}}` {
				t.Fatalf("query result %+v (%s)", m, m.Payload)
			}
			if m := c.mustRead(); m.Type != "complete" || m.ID != "4" {
				t.Fatalf("got %+v, want complete 4", m)
			}
			n.WaitFor(t, func(s Stats) bool {
				return s.Started == 3 && s.Ended == 3 && s.Active == 0 &&
					slices.Equal(s.SubscribeIDs, []string{"1", "2", "3", "4"})
			})
		})
	}
}

func TestFailingSendsOperationError(t *testing.T) {
	want := map[Protocol]string{
		// graphql-ws wraps the stream's error in a GraphQLError list.
		TransportWS: `[{"message":"kaput"}]`,
		// subscriptions-transport-ws sends the Error's name and message.
		LegacyWS: `{"name":"Error","message":"kaput"}`,
	}
	for _, proto := range protocols {
		t.Run(string(proto), func(t *testing.T) {
			t.Parallel()
			n := StartNode(t, NodeOptions{Protocol: proto})
			c := dial(t, n, proto)
			c.initAck(nil)
			c.subscribe("f1", `subscription { failing(message: "kaput") { n } }`)
			m := c.mustRead()
			if m.Type != "error" || m.ID != "f1" || string(m.Payload) != want[proto] {
				t.Fatalf("got %+v (payload %s), want error %s", m, m.Payload, want[proto])
			}
			// No complete follows an error: the next message answers the next operation.
			c.subscribe("q", `{ hello }`)
			if m := c.mustRead(); m.Type != c.nextType() || m.ID != "q" {
				t.Fatalf("after error got %+v, want %s for q", m, c.nextType())
			}
			if m := c.mustRead(); m.Type != "complete" || m.ID != "q" {
				t.Fatalf("got %+v, want complete for q", m)
			}
			// A validation error: graphql-ws sends `error` with the GraphQL
			// errors; subscriptions-transport-ws sends `data` {errors} then `complete`.
			c.subscribe("v", `subscription { nope { n } }`)
			m = c.mustRead()
			const unknown = `Cannot query field \"nope\" on type \"Subscription\".`
			switch proto {
			case TransportWS:
				if m.Type != "error" || m.ID != "v" || !strings.Contains(string(m.Payload), unknown) || !strings.HasPrefix(string(m.Payload), "[") {
					t.Fatalf("validation: got %+v (%s)", m, m.Payload)
				}
			case LegacyWS:
				if m.Type != "data" || m.ID != "v" || !strings.HasPrefix(string(m.Payload), `{"errors":[`) || !strings.Contains(string(m.Payload), unknown) {
					t.Fatalf("validation: got %+v (%s)", m, m.Payload)
				}
				if m := c.mustRead(); m.Type != "complete" || m.ID != "v" {
					t.Fatalf("validation: got %+v, want complete", m)
				}
			}
			t.Logf("validation error frame: type=%s payload=%s", m.Type, m.Payload)
			n.WaitFor(t, func(s Stats) bool { return s.Started == 1 && s.Ended == 1 && s.Active == 0 })
			// The connection survives an operation error.
			if s := n.Stats(t); s.Connections != 1 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

func TestCancelledSubscriptionEnds(t *testing.T) {
	for _, proto := range protocols {
		t.Run(string(proto), func(t *testing.T) {
			t.Parallel()
			n := StartNode(t, NodeOptions{Protocol: proto})
			c := dial(t, n, proto)
			c.initAck(nil)
			// count 0 never completes; a long interval shows return() is prompt.
			c.subscribe("s1", `subscription { ticker(count: 0, intervalMs: 10) { n } }`)
			for range 2 {
				if m := c.mustRead(); m.Type != c.nextType() {
					t.Fatalf("got %+v", m)
				}
			}
			c.subscribe("s2", `subscription { ticker(count: 0, intervalMs: 600000) { n } }`)
			n.WaitFor(t, func(s Stats) bool { return s.Active == 2 && s.Started == 2 })
			c.stop("s1")
			c.stop("s2")
			n.WaitFor(t, func(s Stats) bool { return s.Active == 0 && s.Ended == 2 })

			// Subscribing again with fresh ids is visible in the stats.
			c.subscribe("s3", `subscription { ticker(count: 1, intervalMs: 1) { n } }`)
			n.WaitFor(t, func(s Stats) bool {
				return s.Ended == 3 && slices.Equal(s.SubscribeIDs, []string{"s1", "s2", "s3"})
			})

			// Closing the socket ends running subscriptions too.
			c.subscribe("s4", `subscription { ticker(count: 0, intervalMs: 600000) { n } }`)
			n.WaitFor(t, func(s Stats) bool { return s.Active == 1 })
			_ = c.conn.Close(websocket.StatusNormalClosure, "bye")
			n.WaitFor(t, func(s Stats) bool { return s.Active == 0 && s.Ended == 4 && s.Connections == 0 })
		})
	}
}

func TestTokenRejection(t *testing.T) {
	for _, proto := range protocols {
		t.Run(string(proto), func(t *testing.T) {
			t.Parallel()
			n := StartNode(t, NodeOptions{Protocol: proto, Token: "t1"})

			// Accepted with either header spelling.
			c := dial(t, n, proto)
			c.initAck(bearer("t1"))
			c2 := dial(t, n, proto)
			c2.initAck(map[string]any{"authorization": "Bearer t1"})

			for _, payload := range []any{bearer("wrong"), nil} {
				c := dial(t, n, proto)
				c.init(payload)
				switch proto {
				case TransportWS:
					// graphql-ws closes with 4403 Forbidden, no message first.
					m, err := c.read()
					if err == nil {
						t.Fatalf("got %+v, want close", m)
					}
					if code, reason := closeOf(t, err); code != 4403 || reason != "Forbidden" {
						t.Fatalf("close %d %q, want 4403 Forbidden (%v)", code, reason, err)
					}
				case LegacyWS:
					// subscriptions-transport-ws sends connection_error, then closes 1011 without a reason.
					m := c.mustRead()
					if m.Type != "connection_error" || string(m.Payload) != `{"message":"Unauthorized: invalid or missing token"}` {
						t.Fatalf("got %+v (%s), want connection_error", m, m.Payload)
					}
					if code, reason := closeOf(t, c.readClose()); code != websocket.StatusInternalError || reason != "" {
						t.Fatalf("close %d %q, want 1011", code, reason)
					}
				}
			}
			n.WaitFor(t, func(s Stats) bool { return s.Inits == 4 && s.Rejected == 2 && s.Connections == 2 })

			// Rotation: the old token is rejected, the new one accepted; open
			// connections are unaffected.
			n.SetToken(t, "t2")
			old := dial(t, n, proto)
			old.init(bearer("t1"))
			if proto == LegacyWS {
				if m := old.mustRead(); m.Type != "connection_error" {
					t.Fatalf("got %+v, want connection_error", m)
				}
			}
			if _, err := old.read(); err == nil {
				// Legacy: the error message was consumed above, this is the close.
				t.Fatal("old token accepted after rotation")
			}
			fresh := dial(t, n, proto)
			fresh.initAck(bearer("t2"))
			fresh.subscribe("1", `{ hello }`)
			if m := fresh.mustRead(); m.Type != fresh.nextType() {
				t.Fatalf("got %+v", m)
			}
			c.subscribe("1", `{ hello }`)
			if m := c.mustRead(); m.Type != c.nextType() {
				t.Fatalf("pre-rotation connection broken: %+v", m)
			}
			n.WaitFor(t, func(s Stats) bool { return s.Rejected == 3 && s.Inits == 6 })
		})
	}
}

func TestTokenExpiry(t *testing.T) {
	for _, proto := range protocols {
		for _, code := range []int{0, 4000} {
			t.Run(string(proto)+"/"+map[int]string{0: "default", 4000: "custom"}[code], func(t *testing.T) {
				t.Parallel()
				n := StartNode(t, NodeOptions{Protocol: proto, Token: "tok", TokenTTL: 300 * time.Millisecond, ExpiryCloseCode: code})
				c := dial(t, n, proto)
				start := time.Now()
				c.initAck(bearer("tok"))
				c.subscribe("1", `subscription { ticker(count: 0, intervalMs: 50) { n } }`)
				err := c.readClose()
				want := code
				if want == 0 {
					want = 4401
				}
				if gotCode, reason := closeOf(t, err); int(gotCode) != want || reason != "token expired" {
					t.Fatalf("close %d %q, want %d \"token expired\" (%v)", gotCode, reason, want, err)
				}
				if d := time.Since(start); d < 250*time.Millisecond {
					t.Fatalf("closed after %v, before the TTL", d)
				}
				n.WaitFor(t, func(s Stats) bool { return s.Connections == 0 && s.Active == 0 && s.Ended == 1 })
			})
		}
	}
}

// TestCloseAfterResults: with CloseAfterResults every accepted connection
// closes right after its Nth result, counted over all its operations.
func TestCloseAfterResults(t *testing.T) {
	for _, proto := range protocols {
		t.Run(string(proto), func(t *testing.T) {
			t.Parallel()
			n := StartNode(t, NodeOptions{Protocol: proto, CloseAfterResults: 3, ExpiryCloseCode: 4403})
			for range 2 { // every connection, not only the first
				c := dial(t, n, proto)
				c.initAck(nil)
				c.subscribe("1", `subscription { ticker(count: 0, intervalMs: 10) { n } }`)
				c.subscribe("2", `subscription { ticker(count: 0, intervalMs: 10) { n } }`)
				results := 0
				var err error
				for {
					var m message
					if m, err = c.read(); err != nil {
						break
					}
					if m.Type == c.nextType() {
						results++
					}
				}
				if code, reason := closeOf(t, err); code != 4403 || reason != "token expired" || results != 3 {
					t.Fatalf("close %d %q after %d results, want 4403 \"token expired\" after 3 (%v)", code, reason, results, err)
				}
			}
			n.WaitFor(t, func(s Stats) bool { return s.Connections == 0 && s.Active == 0 })
		})
	}
}

// TestRejectSubscribeFrom: connections before the Kth accepted one serve
// operations; from it on, the first subscribe closes the connection 4403.
// A rejected init is not counted.
func TestRejectSubscribeFrom(t *testing.T) {
	for _, proto := range protocols {
		t.Run(string(proto), func(t *testing.T) {
			t.Parallel()
			n := StartNode(t, NodeOptions{Protocol: proto, Token: "tok", RejectSubscribeFrom: 2})
			bad := dial(t, n, proto)
			bad.init(bearer("wrong"))
			_ = bad.readClose()

			first := dial(t, n, proto)
			first.initAck(bearer("tok"))
			first.subscribe("1", `subscription { ticker(count: 1, intervalMs: 10) { n } }`)
			if m := first.mustRead(); m.Type != first.nextType() {
				t.Fatalf("first accepted connection: got %+v, want a result", m)
			}
			for range 2 {
				c := dial(t, n, proto)
				c.initAck(bearer("tok"))
				c.subscribe("1", `subscription { ticker(count: 0, intervalMs: 10) { n } }`)
				if code, reason := closeOf(t, c.readClose()); code != 4403 || reason != "Forbidden" {
					t.Fatalf("close %d %q, want 4403 Forbidden", code, reason)
				}
			}
			if s := n.Stats(t); s.Started != 1 {
				t.Fatalf("%d operations started, want only the first connection's", s.Started)
			}
		})
	}
}

func TestCloseAllAndDropAll(t *testing.T) {
	for _, proto := range protocols {
		t.Run(string(proto), func(t *testing.T) {
			t.Parallel()
			n := StartNode(t, NodeOptions{Protocol: proto})
			a, b := dial(t, n, proto), dial(t, n, proto)
			a.initAck(nil)
			b.initAck(nil)
			a.subscribe("1", `subscription { ticker(count: 0, intervalMs: 600000) { n } }`)
			n.WaitFor(t, func(s Stats) bool { return s.Connections == 2 && s.Active == 1 })
			if got := n.CloseAll(t, 1012, "service restart"); got != 2 {
				t.Fatalf("CloseAll closed %d, want 2", got)
			}
			for _, c := range []*client{a, b} {
				if code, reason := closeOf(t, c.readClose()); code != websocket.StatusServiceRestart || reason != "service restart" {
					t.Fatalf("close %d %q, want 1012 \"service restart\"", code, reason)
				}
			}
			n.WaitFor(t, func(s Stats) bool { return s.Connections == 0 && s.Active == 0 && s.Ended == 1 })

			c := dial(t, n, proto)
			c.initAck(nil)
			c.subscribe("2", `subscription { ticker(count: 0, intervalMs: 600000) { n } }`)
			n.WaitFor(t, func(s Stats) bool { return s.Connections == 1 && s.Active == 1 })
			n.DropAll(t)
			err := c.readClose()
			var ce websocket.CloseError
			if errors.As(err, &ce) || websocket.CloseStatus(err) != -1 {
				t.Fatalf("after DropAll got a close frame (%v), want an abnormal closure", err)
			}
			t.Logf("DropAll: client read error: %v", err)
			n.WaitFor(t, func(s Stats) bool { return s.Connections == 0 && s.Active == 0 && s.Ended == 2 })
		})
	}
}

func TestRestartKeepsURL(t *testing.T) {
	for _, proto := range protocols {
		t.Run(string(proto), func(t *testing.T) {
			t.Parallel()
			n := StartNode(t, NodeOptions{Protocol: proto, Token: "tok"})
			url, control := n.URL, n.Control
			c := dial(t, n, proto)
			c.initAck(bearer("tok"))
			c.subscribe("1", `subscription { ticker(count: 0, intervalMs: 600000) { n } }`)
			n.WaitFor(t, func(s Stats) bool { return s.Active == 1 })

			n.Restart(t)
			if n.URL != url || n.Control != control {
				t.Fatalf("restart moved %s/%s to %s/%s", url, control, n.URL, n.Control)
			}
			if err := c.readClose(); websocket.CloseStatus(err) != -1 {
				t.Fatalf("old connection after restart: %v, want abnormal closure", err)
			}
			// A fresh process: counters start again, options are kept.
			if s := n.Stats(t); s.Started != 0 || s.Inits != 0 {
				t.Fatalf("stats after restart %+v", s)
			}
			c2 := dial(t, n, proto)
			c2.initAck(bearer("tok"))
			c2.subscribe("1", `subscription { ticker(count: 2, intervalMs: 5) { n } }`)
			for range 2 {
				if m := c2.mustRead(); m.Type != c2.nextType() {
					t.Fatalf("got %+v", m)
				}
			}
			if m := c2.mustRead(); m.Type != "complete" {
				t.Fatalf("got %+v", m)
			}
		})
	}
}

func TestSubscribeBeforeInit(t *testing.T) {
	for _, proto := range protocols {
		t.Run(string(proto), func(t *testing.T) {
			t.Parallel()
			n := StartNode(t, NodeOptions{Protocol: proto, Token: "tok"})
			c := dial(t, n, proto)
			c.subscribe("1", `subscription { ticker(count: 1, intervalMs: 1) { n } }`)
			switch proto {
			case TransportWS:
				// graphql-ws refuses operations before the ack: 4401 Unauthorized
				// (the same code as the default token-expiry close).
				if code, reason := closeOf(t, c.readClose()); code != 4401 || reason != "Unauthorized" {
					t.Fatalf("close %d %q, want 4401 Unauthorized", code, reason)
				}
			case LegacyWS:
				// subscriptions-transport-ws runs operations sent before any
				// connection_init, bypassing onConnect (and so the token check).
				if m := c.mustRead(); m.Type != "data" {
					t.Fatalf("got %+v, want data", m)
				}
				if m := c.mustRead(); m.Type != "complete" {
					t.Fatalf("got %+v, want complete", m)
				}
			}
		})
	}
}

func TestLegacyKeepAlive(t *testing.T) {
	t.Parallel()
	n := StartNode(t, NodeOptions{Protocol: LegacyWS, KeepAlive: 50 * time.Millisecond})
	c := dial(t, n, LegacyWS)
	c.initAck(nil)
	for range 2 {
		if m := c.mustRead(); m.Type != "ka" {
			t.Fatalf("got %+v, want ka", m)
		}
	}
}

func TestWrongSubprotocolRefused(t *testing.T) {
	t.Parallel()
	// Each server speaks exactly its own subprotocol.
	n := StartNode(t, NodeOptions{Protocol: TransportWS})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, n.URL, &websocket.DialOptions{Subprotocols: []string{string(LegacyWS)}})
	if err != nil {
		t.Logf("dial refused: %v", err)
		return
	}
	defer conn.CloseNow()
	_, _, err = conn.Read(ctx)
	if code := websocket.CloseStatus(err); code != 4406 {
		t.Fatalf("close %v, want 4406 Subprotocol not acceptable", err)
	}
}

func TestStdinEOFStopsNode(t *testing.T) {
	t.Parallel()
	n := StartNode(t, NodeOptions{Protocol: TransportWS})
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	_ = p.stdin.Close()
	select {
	case <-p.stdoutEOF:
	case <-time.After(10 * time.Second):
		t.Fatal("node did not exit after stdin EOF")
	}
	<-p.stderrEOF
	p.kill() // reaps; the process already exited
	if p.waitErr != nil {
		t.Fatalf("node exit: %v, want status 0", p.waitErr)
	}
}

func TestPrerequisiteErrors(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "testpeers", "node"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "testpeers", "node", "server.mjs"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := peerDir(root)
	if err == nil || !strings.Contains(err.Error(), "run `make peers`") {
		t.Fatalf("peerDir without node_modules: %v", err)
	}

	got, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(got, "testpeers", "node", "package.json")); err != nil {
		t.Fatalf("RepoRoot %s: %v", got, err)
	}
	for in, want := range map[string]string{
		"module github.com/gqlbridge/gqlbridge\n\ngo 1.26\n": ModulePath,
		"// x\nmodule \"example.com/q\"\n":                   "example.com/q",
		"go 1.26\n":                                          "",
		"modulefoo bar\n":                                    "",
	} {
		if got := modulePathOf([]byte(in)); got != want {
			t.Errorf("modulePathOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestCloseRecords: Stats.Open lists the connection_init payloads of the
// open sockets, and Stats.Closes records each ended socket with the close
// code the client sent (1006 without a close frame) and its payload.
func TestCloseRecords(t *testing.T) {
	for _, proto := range protocols {
		t.Run(string(proto), func(t *testing.T) {
			t.Parallel()
			n := StartNode(t, NodeOptions{Protocol: proto})
			a, b, c := dial(t, n, proto), dial(t, n, proto), dial(t, n, proto)
			a.initAck(map[string]any{"replica": "a"})
			b.initAck(map[string]any{"replica": "b"})
			c.initAck(map[string]any{"replica": "c"})
			n.WaitFor(t, func(s Stats) bool { return len(s.Open) == 3 })
			var open []string
			for _, p := range n.Stats(t).Open {
				open = append(open, string(p))
			}
			slices.Sort(open)
			if want := []string{`{"replica":"a"}`, `{"replica":"b"}`, `{"replica":"c"}`}; !slices.Equal(open, want) {
				t.Fatalf("open %q, want %q", open, want)
			}

			if err := a.conn.Close(websocket.StatusGoingAway, "bye"); err != nil {
				t.Logf("close a: %v", err)
			}
			n.WaitFor(t, func(s Stats) bool { return len(s.Closes) == 1 })
			_ = b.conn.CloseNow() // no close frame
			n.WaitFor(t, func(s Stats) bool { return len(s.Closes) == 2 })
			s := n.Stats(t)
			want := []Close{
				{Code: 1001, Reason: "bye", Params: json.RawMessage(`{"replica":"a"}`)},
				{Code: 1006, Reason: "", Params: json.RawMessage(`{"replica":"b"}`)},
			}
			for i, w := range want {
				g := s.Closes[i]
				if g.Code != w.Code || g.Reason != w.Reason || string(g.Params) != string(w.Params) {
					t.Fatalf("close %d = {%d %q %s}, want {%d %q %s}", i, g.Code, g.Reason, g.Params, w.Code, w.Reason, w.Params)
				}
			}
			if len(s.Open) != 1 || string(s.Open[0]) != `{"replica":"c"}` {
				t.Fatalf("open after the closes: %s", s.Open)
			}
		})
	}
}
