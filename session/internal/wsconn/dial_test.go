package wsconn

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// TestDialInterop: a handshake with coder/websocket's server side agrees on
// the subprotocol the server picks among those offered, carries the extra
// headers, and both directions of messages and the close handshake work.
func TestDialInterop(t *testing.T) {
	t.Parallel()
	srvErr := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer t" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"graphql-ws"}})
		if err != nil {
			srvErr <- err
			return
		}
		ws.SetReadLimit(1 << 20)
		srvErr <- func() error {
			ctx := context.Background()
			if err := ws.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
				return err
			}
			_, b, err := ws.Read(ctx)
			if err != nil {
				return err
			}
			if string(b) != strings.Repeat("yo", 40000) {
				return errors.New("the server read a different message")
			}
			return ws.Close(4000, "done")
		}()
	}))
	defer srv.Close()
	c, resp, err := Dial(t.Context(), "ws"+strings.TrimPrefix(srv.URL, "http")+"/graphql", DialOptions{
		HTTPClient:   srv.Client(),
		Header:       http.Header{"Authorization": {"Bearer t"}},
		Subprotocols: []string{"graphql-transport-ws", "graphql-ws"},
	})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.CloseNow()
	if resp.StatusCode != http.StatusSwitchingProtocols || c.Subprotocol() != "graphql-ws" {
		t.Fatalf("status %d, subprotocol %q", resp.StatusCode, c.Subprotocol())
	}
	if _, b, err := c.Read(); err != nil || string(b) != "hi" {
		t.Fatalf("Read: %q, %v", b, err)
	}
	if err := c.Write(t.Context(), []byte(strings.Repeat("yo", 40000))); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if _, _, err := c.Read(); websocket.CloseStatus(err) != 4000 {
		t.Fatalf("Read: %v, want close 4000", err)
	}
	if err := <-srvErr; err != nil {
		t.Fatalf("server: %v", err)
	}
}

// TestDialRefused: a response other than 101 is returned with the error,
// its status and headers intact, its body closed.
func TestDialRefused(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		http.Error(w, "slow down", http.StatusTooManyRequests)
	}))
	defer srv.Close()
	c, resp, err := Dial(t.Context(), srv.URL, DialOptions{HTTPClient: srv.Client()})
	if err == nil || c != nil {
		t.Fatal("Dial succeeded on a 429")
	}
	if resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "7" {
		t.Fatalf("response %+v, want the 429 with Retry-After", resp)
	}
	if b, _ := io.ReadAll(resp.Body); len(b) != 0 {
		t.Fatalf("body %q left readable", b)
	}
}

// TestDialBadUpgrade: a 101 that breaks the rules of the upgrade fails the
// dial and is returned with the error.
func TestDialBadUpgrade(t *testing.T) {
	t.Parallel()
	good := func(r *http.Request) http.Header {
		return http.Header{
			"Upgrade":              {"websocket"},
			"Connection":           {"keep-alive, Upgrade"},
			"Sec-Websocket-Accept": {acceptKey(r.Header.Get("Sec-WebSocket-Key"))},
		}
	}
	cases := map[string]func(h http.Header){
		"wrong accept key":       func(h http.Header) { h.Set("Sec-WebSocket-Accept", acceptKey("something else")) },
		"no accept key":          func(h http.Header) { h.Del("Sec-WebSocket-Accept") },
		"unoffered subprotocol":  func(h http.Header) { h.Set("Sec-WebSocket-Protocol", "graphql-sse") },
		"no Upgrade":             func(h http.Header) { h.Del("Upgrade") },
		"Upgrade not websocket":  func(h http.Header) { h.Set("Upgrade", "h2c") },
		"Connection not upgrade": func(h http.Header) { h.Set("Connection", "keep-alive") },
		"unoffered extension":    func(h http.Header) { h.Set("Sec-WebSocket-Extensions", "permessage-deflate") },
	}
	for name, spoil := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				h := good(r)
				spoil(h)
				nc, brw, err := http.NewResponseController(w).Hijack()
				if err != nil {
					return
				}
				defer nc.Close()
				_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
				_ = h.Write(brw)
				_, _ = brw.WriteString("\r\n")
				_ = brw.Flush()
				_, _ = io.Copy(io.Discard, brw) // until the client hangs up
			}))
			defer srv.Close()
			c, resp, err := Dial(t.Context(), srv.URL, DialOptions{HTTPClient: srv.Client(), Subprotocols: []string{"graphql-ws"}})
			if err == nil || c != nil {
				t.Fatal("Dial succeeded")
			}
			if resp == nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("response %+v, want the 101", resp)
			}
			srv.CloseClientConnections()
		})
	}
	// And the unspoiled answer dials.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nc, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer nc.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
		_ = good(r).Write(brw)
		_, _ = brw.WriteString("\r\n")
		_ = brw.Flush()
		_, _ = io.Copy(io.Discard, brw)
	}))
	defer srv.Close()
	c, _, err := Dial(t.Context(), srv.URL, DialOptions{HTTPClient: srv.Client()})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	if c.Subprotocol() != "" {
		t.Fatalf("subprotocol %q, want none", c.Subprotocol())
	}
	_ = c.CloseNow()
}

// TestDialURL: schemes other than ws, wss, http and https are refused
// before any request.
func TestDialURL(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"ftp://127.0.0.1/", "://bad"} {
		if _, resp, err := Dial(t.Context(), u, DialOptions{}); err == nil || resp != nil {
			t.Fatalf("Dial(%q): %v, %v", u, resp, err)
		}
	}
}

// TestDialTLS: a wss upgrade through an http.Client that trusts the
// server, against a server that also offers HTTP/2: the upgrade goes over
// HTTP/1.1 (net/http's transport never uses HTTP/2 for it), and messages
// bigger than the read buffer and than a TLS record cross in both
// directions.
func TestDialTLS(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("tls", 50000) // 150 KB: several TLS records, over BufferSize
	srvErr := make(chan error, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"graphql-transport-ws"}})
		if err != nil {
			srvErr <- err
			return
		}
		ws.SetReadLimit(1 << 20)
		srvErr <- func() error {
			ctx := context.Background()
			if err := ws.Write(ctx, websocket.MessageText, []byte(big)); err != nil {
				return err
			}
			_, b, err := ws.Read(ctx)
			if err != nil {
				return err
			}
			if string(b) != big {
				return errors.New("the server read a different message")
			}
			return ws.Close(websocket.StatusNormalClosure, "")
		}()
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	c, resp, err := Dial(t.Context(), "wss"+strings.TrimPrefix(srv.URL, "https"), DialOptions{
		HTTPClient:   srv.Client(),
		Subprotocols: []string{"graphql-transport-ws"},
	})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.CloseNow()
	if resp.ProtoMajor != 1 || c.Subprotocol() != "graphql-transport-ws" {
		t.Fatalf("upgraded over %s with subprotocol %q", resp.Proto, c.Subprotocol())
	}
	c.SetReadLimit(1 << 20)
	if _, b, err := c.Read(); err != nil || string(b) != big {
		t.Fatalf("Read: %d bytes, %v", len(b), err)
	}
	if err := c.Write(t.Context(), []byte(big)); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if _, _, err := c.Read(); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("Read: %v, want close 1000", err)
	}
	if err := <-srvErr; err != nil {
		t.Fatalf("server: %v", err)
	}
}
