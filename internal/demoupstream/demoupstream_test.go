package demoupstream_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
)

func start(t *testing.T, opts demoupstream.Options) *demoupstream.Server {
	t.Helper()
	srv, err := demoupstream.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return srv
}

func waitFor(t *testing.T, srv *demoupstream.Server, what string, cond func(demoupstream.Stats) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := srv.WaitFor(ctx, cond); err != nil {
		t.Fatalf("waiting for %s: %v; stats %+v", what, err, srv.Stats())
	}
}

type tick struct {
	N       int     `json:"n"`
	At      string  `json:"at"`
	Payload *string `json:"payload"`
}

func TestSubscriptions(t *testing.T) {
	srv := start(t, demoupstream.Options{})
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			c := dial(t, srv.URL(), p)
			c.init(nil)

			t.Run("ticker", func(t *testing.T) {
				c := c.on(t)
				c.subscribe("1", `subscription { ticker(count: 3, intervalMs: 10, size: 5) { n at payload } }`)
				for want := 1; want <= 3; want++ {
					m := c.expect(p.next)
					var res struct {
						Data struct{ Ticker tick } `json:"data"`
					}
					if err := json.Unmarshal(m.Payload, &res); err != nil || m.ID != "1" {
						t.Fatalf("id %q payload %s: %v", m.ID, m.Payload, err)
					}
					got := res.Data.Ticker
					if got.N != want || got.Payload == nil || *got.Payload != "xxxxx" {
						t.Fatalf("tick %d: got %s", want, m.Payload)
					}
					if _, err := time.Parse(time.RFC3339Nano, got.At); err != nil {
						t.Fatalf("tick %d: at: %v", want, err)
					}
				}
				if m := c.expect("complete"); m.ID != "1" {
					t.Fatalf("complete for id %q, want 1", m.ID)
				}
			})

			t.Run("failing", func(t *testing.T) {
				c := c.on(t)
				// A resolver error arrives as a result carrying the error,
				// then the operation completes.
				c.subscribe("2", `subscription { failing(message: "kaput") { n } }`)
				m := c.expect(p.next)
				const want = `{"errors":[{"message":"kaput","path":["failing"],"locations":[{"line":1,"column":16}]}],"data":null}`
				if m.ID != "2" || string(m.Payload) != want {
					t.Fatalf("got id %q payload %s, want id 2 payload %s", m.ID, m.Payload, want)
				}
				if m := c.expect("complete"); m.ID != "2" {
					t.Fatalf("complete for id %q, want 2", m.ID)
				}
			})

			t.Run("completeImmediately", func(t *testing.T) {
				c := c.on(t)
				c.subscribe("3", `subscription { completeImmediately { n } }`)
				if m := c.expect("complete"); m.ID != "3" {
					t.Fatalf("complete for id %q, want 3", m.ID)
				}
			})

			t.Run("invalid document", func(t *testing.T) {
				c := c.on(t)
				// Unlike a resolver error, a document that does not validate
				// gets the protocol's error message, which ends the operation.
				c.subscribe("4", `subscription { nope { n } }`)
				m := c.expect("error")
				var errs []struct{ Message string }
				if err := json.Unmarshal(m.Payload, &errs); err != nil || m.ID != "4" || len(errs) != 1 ||
					errs[0].Message != `Cannot query field "nope" on type "Subscription".` {
					t.Fatalf("got id %q payload %s", m.ID, m.Payload)
				}
			})
		})
	}
	waitFor(t, srv, "all subscriptions to end", func(s demoupstream.Stats) bool {
		return s.ActiveSubscriptions == 0 && s.SubscriptionsStarted == 6 && s.SubscriptionsEnded == 6
	})
}

func TestSubprotocolNegotiation(t *testing.T) {
	srv := start(t, demoupstream.Options{})
	for _, tc := range []struct {
		offered []string
		want    string
	}{
		// The server prefers the current protocol when offered both.
		{[]string{"graphql-ws", "graphql-transport-ws"}, "graphql-transport-ws"},
		{[]string{"graphql-transport-ws", "graphql-ws"}, "graphql-transport-ws"},
		// gqlgen speaks graphql-ws to a client that offers no subprotocol.
		{nil, ""},
	} {
		conn, _, err := websocket.Dial(t.Context(), srv.URL(), &websocket.DialOptions{Subprotocols: tc.offered})
		if err != nil {
			t.Fatal(err)
		}
		if got := conn.Subprotocol(); got != tc.want {
			t.Errorf("offered %q: negotiated %q, want %q", tc.offered, got, tc.want)
		}
		if tc.want == "" {
			c := &client{t: t, p: legacyWS, conn: conn}
			c.init(nil)
			c.subscribe("1", `subscription { ticker(count: 1) { n } }`)
			c.expect("data")
			c.expect("complete")
		}
		_ = conn.Close(websocket.StatusNormalClosure, "")
	}
}

func TestHTTPQuery(t *testing.T) {
	srv := start(t, demoupstream.Options{Token: "ignored for HTTP"})
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.HTTPURL(),
		strings.NewReader(`{"query":"{ hello(name: \"bridge\") }"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"data":{"hello":"Hello, bridge!"}}`; resp.StatusCode != http.StatusOK || string(body) != want {
		t.Fatalf("got %d %s, want 200 %s", resp.StatusCode, body, want)
	}
}

func TestTokenRejected(t *testing.T) {
	srv := start(t, demoupstream.Options{Token: "s3cret"})
	rejected := uint64(0)
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			for _, payload := range []any{
				nil,
				map[string]any{"Authorization": "Bearer wrong"},
				map[string]any{"Authorization": "s3cret"},
				map[string]any{"token": "s3cret"},
			} {
				c := dial(t, srv.URL(), p)
				c.sendInit(payload)
				ce, before := c.expectClose()
				rejected++
				t.Logf("init %v: messages %s, then close %d %q", payload, dump(before), ce.Code, ce.Reason)
				// gqlgen sends the InitFunc error in a connection_error
				// message where the protocol has one (graphql-ws), then
				// closes with the code and reason from InitFunc's context.
				var wantBefore string
				if p == legacyWS {
					wantBefore = `[{"type":"connection_error","payload":{"message":"unauthorized: missing or invalid bearer token"}}]`
				} else {
					wantBefore = `[]`
				}
				if got := dump(before); got != wantBefore {
					t.Errorf("init %v: messages before close %s, want %s", payload, got, wantBefore)
				}
				if ce.Code != 4403 || ce.Reason != "Forbidden" {
					t.Errorf("init %v: close %d %q, want 4403 \"Forbidden\"", payload, ce.Code, ce.Reason)
				}
			}
			for _, key := range []string{"Authorization", "authorization"} {
				c := dial(t, srv.URL(), p)
				c.init(map[string]any{key: "Bearer s3cret"})
				c.subscribe("1", `subscription { ticker(count: 1) { n } }`)
				c.expect(p.next)
				c.expect("complete")
			}
		})
	}
	waitFor(t, srv, "rejections to be counted and connections closed", func(s demoupstream.Stats) bool {
		return s.InitsRejected == rejected && s.Connections == 0
	})
}

func TestTokenTTL(t *testing.T) {
	srv := start(t, demoupstream.Options{Token: "s3cret", TokenTTL: 300 * time.Millisecond})
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			c := dial(t, srv.URL(), p)
			c.init(map[string]any{"Authorization": "Bearer s3cret"})
			c.subscribe("1", `subscription { ticker(count: 0, intervalMs: 20) { n } }`)
			c.expect(p.next)
			ce, before := c.expectClose()
			for _, m := range before {
				if m.Type != p.next {
					t.Errorf("got %s %s before the close, want only %s", m.Type, m.Payload, p.next)
				}
			}
			t.Logf("%d more %s messages, then close %d %q", len(before), p.next, ce.Code, ce.Reason)
			if ce.Code != 4401 || ce.Reason != "Unauthorized: token expired" {
				t.Errorf("close %d %q, want 4401 \"Unauthorized: token expired\"", ce.Code, ce.Reason)
			}
			waitFor(t, srv, "the subscription and connection to end", func(s demoupstream.Stats) bool {
				return s.ActiveSubscriptions == 0 && s.Connections == 0
			})
		})
	}
}

func TestStoppedSubscriptionEnds(t *testing.T) {
	srv := start(t, demoupstream.Options{})
	for i, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			c := dial(t, srv.URL(), p)
			c.init(nil)
			c.subscribe("1", `subscription { ticker(count: 0, intervalMs: 10) { n } }`)
			c.expect(p.next)
			waitFor(t, srv, "the subscription to be active", func(s demoupstream.Stats) bool {
				return s.ActiveSubscriptions == 1 && s.Connections == 1
			})
			c.stop("1")
			// gqlgen acknowledges a stopped operation with complete, on
			// both subprotocols; results already under way may precede it.
			for {
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				m, err := c.read(ctx)
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				if m.Type == "complete" {
					break
				}
				if m.Type != p.next {
					t.Fatalf("got %s %s, want %s or complete", m.Type, m.Payload, p.next)
				}
			}
			n := uint64(i + 1)
			waitFor(t, srv, "the subscription to end", func(s demoupstream.Stats) bool {
				return s.ActiveSubscriptions == 0 && s.SubscriptionsStarted == n && s.SubscriptionsEnded == n
			})
		})
	}
}

func TestInvalidInitPayload(t *testing.T) {
	srv := start(t, demoupstream.Options{})
	for _, p := range protocols {
		c := dial(t, srv.URL(), p)
		c.send(msg{Type: "connection_init", Payload: json.RawMessage(`5`)})
		ce, before := c.expectClose()
		if len(before) != 0 || ce.Code != websocket.StatusProtocolError || ce.Reason != "invalid connection_init payload" {
			t.Errorf("%s: got %s then close %d %q", p.name, dump(before), ce.Code, ce.Reason)
		}
	}
	waitFor(t, srv, "connections to close", func(s demoupstream.Stats) bool { return s.Connections == 0 })
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	srv, err := demoupstream.Start(demoupstream.Options{KeepAlive: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}

	type closed struct {
		name string
		err  error
	}
	results := make(chan closed, 4)
	readUntilClosed := func(name string, c *client) {
		go func() {
			_, _, err := c.conn.Read(context.Background())
			for err == nil {
				_, _, err = c.conn.Read(context.Background())
			}
			results <- closed{name, err}
		}()
	}
	for _, p := range protocols {
		c := dial(t, srv.URL(), p)
		c.init(nil)
		c.subscribe("1", `subscription { ticker(count: 0, intervalMs: 5, size: 100) { n payload } }`)
		c.expect(p.next)
		readUntilClosed(p.name, c)
	}
	uninitialised := dial(t, srv.URL(), transportWS)
	readUntilClosed("uninitialised", uninitialised)
	// A peer that never reads never answers the close handshake: Close must
	// cut it rather than hang.
	silent := dial(t, srv.URL(), legacyWS)
	silent.init(nil)
	silent.subscribe("1", `subscription { ticker(count: 0, intervalMs: 5) { n } }`)

	waitFor(t, srv, "connections and subscriptions", func(s demoupstream.Stats) bool {
		return s.Connections == 4 && s.ActiveSubscriptions == 3
	})
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if s := srv.Stats(); s.Connections != 0 || s.ActiveSubscriptions != 0 || s.SubscriptionsEnded != 3 {
		t.Errorf("stats after Close: %+v", s)
	}
	for range 3 {
		r := <-results
		if websocket.CloseStatus(r.err) != websocket.StatusGoingAway || !strings.Contains(r.err.Error(), "server shutting down") {
			t.Errorf("%s: read ended with %v, want close 1001 \"server shutting down\"", r.name, r.err)
		}
	}
	_ = silent.conn.CloseNow()

	// Only the server's goroutines have to end; the clients' end with their
	// connections, closed above or by Close.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dump(ms []msg) string {
	if ms == nil {
		ms = []msg{}
	}
	b, _ := json.Marshal(ms)
	return string(b)
}

func TestKeepAlive(t *testing.T) {
	srv := start(t, demoupstream.Options{KeepAlive: 20 * time.Millisecond})
	for _, tc := range []struct {
		p    protocol
		want string // the raw keep-alive message
	}{
		{transportWS, `{"type":"ping"}`},
		{legacyWS, `{"type":"ka"}`},
	} {
		c := dial(t, srv.URL(), tc.p)
		c.init(nil)
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		// graphql-ws also gets a "ka" right after connection_ack; wait for
		// more than one to see them repeat.
		for range 3 {
			_, b, err := c.conn.Read(ctx)
			if err != nil {
				t.Fatalf("%s: %v", tc.p.name, err)
			}
			if string(b) != tc.want {
				t.Fatalf("%s: got %s, want %s", tc.p.name, b, tc.want)
			}
		}
		cancel()
	}
}
