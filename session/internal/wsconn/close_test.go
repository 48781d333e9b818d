package wsconn

import (
	"errors"
	"net"
	"sync"
	"testing"

	"github.com/coder/websocket"
)

// TestCloseFromServer: the server's close frame is echoed, the stream
// closed, and the reader ends with its code and reason; an empty close
// payload reads as 1005 and is echoed empty.
func TestCloseFromServer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		payload []byte
		code    websocket.StatusCode
		reason  string
	}{
		{closePayload(4403, "forbidden"), 4403, "forbidden"},
		{closePayload(1000, ""), 1000, ""},
		{nil, websocket.StatusNoStatusRcvd, ""},
	} {
		c, p := pair(t)
		p.send(frame(true, opText, []byte("last"), 0), frame(true, opClose, tc.payload, 0))
		if _, b, err := c.Read(); err != nil || string(b) != "last" {
			t.Fatalf("%q, %v", b, err)
		}
		_, _, err := c.Read()
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != tc.code || ce.Reason != tc.reason {
			t.Fatalf("Read: %v, want close %d %q", err, tc.code, tc.reason)
		}
		if code, reason := p.expectClose(); code != tc.code || reason != tc.reason {
			t.Fatalf("echo %d %q, want %d %q", code, reason, tc.code, tc.reason)
		}
		p.expectEOF()
		if err := c.Write(t.Context(), []byte("x")); err == nil {
			t.Fatal("Write after the close handshake succeeded")
		}
	}
}

// TestCloseFromClient: Close sends its close frame and returns once the
// server's reply arrives, seen by the running reader; the reader ends with
// the reply. Writes after it fail.
func TestCloseFromClient(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	read := make(chan error, 1)
	go func() {
		for {
			if _, _, err := c.Read(); err != nil {
				read <- err
				return
			}
		}
	}()
	closed := make(chan error, 1)
	go func() { closed <- c.Close(4001, "bye") }()
	if code, reason := p.expectClose(); code != 4001 || reason != "bye" {
		t.Fatalf("close %d %q", code, reason)
	}
	// Data after the client's close frame is still read; the reply ends it.
	p.send(frame(true, opText, []byte("late"), 0), frame(true, opClose, closePayload(4001, "bye"), 0))
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-read; websocket.CloseStatus(err) != 4001 {
		t.Fatalf("reader: %v, want close 4001", err)
	}
	p.expectEOF()
	if err := c.Write(t.Context(), []byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	if err := c.Close(1000, ""); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v, want net.ErrClosed", err)
	}
}

// TestCloseWithoutReader: on a Conn never read, Close reads the reply
// itself, discarding data before it; a Read afterwards returns the reply.
func TestCloseWithoutReader(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	closed := make(chan error, 1)
	go func() { closed <- c.Close(1000, "") }()
	p.expectClose()
	p.send(frame(true, opText, []byte("discarded"), 0), frame(true, opPing, []byte("p"), 0), frame(true, opClose, closePayload(1000, ""), 0))
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	p.expectEOF() // no pong after the close frame
	if _, _, err := c.Read(); websocket.CloseStatus(err) != 1000 {
		t.Fatalf("Read after Close: %v, want the reply 1000", err)
	}
}

// TestCloseCutShort: a Close waiting for a reply that never comes is ended
// by CloseNow; so is the reader. Concurrent Close and CloseNow calls are
// safe and all return.
func TestCloseCutShort(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	read := make(chan error, 1)
	go func() {
		_, _, err := c.Read()
		read <- err
	}()
	var wg sync.WaitGroup
	wg.Go(func() { _ = c.Close(1001, "going") })
	p.expectClose() // sent, never answered
	for range 4 {
		wg.Go(func() { _ = c.Close(1000, "") })
		wg.Go(func() { _ = c.CloseNow() })
	}
	wg.Wait()
	if err := <-read; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("reader: %v, want net.ErrClosed", err)
	}
	p.expectEOF()
}

// TestCloseCodes: a code that may not be sent becomes 1011; a long reason
// is cut to fit a control frame.
func TestCloseCodes(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	closed := make(chan error, 1)
	go func() { closed <- c.Close(1006, "abnormal") }()
	if code, reason := p.expectClose(); code != websocket.StatusInternalError || reason != "" {
		t.Fatalf("close %d %q, want 1011", code, reason)
	}
	_ = c.CloseNow() // cuts the Close short: no reply comes
	<-closed

	c, p = pair(t)
	long := string(make([]byte, 200))
	go func() { closed <- c.Close(4000, long) }()
	if code, reason := p.expectClose(); code != 4000 || len(reason) != 123 {
		t.Fatalf("close %d with %d bytes of reason, want 4000 with 123", code, len(reason))
	}
	_ = c.CloseNow()
	<-closed
}

// TestCloseLeavesReadingToReader: once Read was called, Close never reads:
// the message the reader holds stays intact, and what the server sends
// after the client's close frame reaches the reader, not Close.
func TestCloseLeavesReadingToReader(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	p.send(frame(true, opText, []byte("first"), 0))
	_, held, err := c.Read()
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close(1000, "") }()
	p.expectClose()
	p.send(frame(true, opText, []byte("second"), 0), frame(true, opClose, closePayload(1000, ""), 0))
	if string(held) != "first" {
		t.Fatalf("the held message became %q", held)
	}
	if _, b, err := c.Read(); err != nil || string(b) != "second" {
		t.Fatalf("Read: %q, %v; want the message sent after the close frame", b, err)
	}
	if _, _, err := c.Read(); websocket.CloseStatus(err) != 1000 {
		t.Fatalf("Read: %v, want the reply", err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
}
