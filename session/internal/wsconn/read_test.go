package wsconn

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// TestPayloadLengths: the 7-bit, 16-bit and 64-bit length encodings, at
// their edges, each also in a longer encoding than needed; messages over
// the buffer's size come through whole.
func TestPayloadLengths(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	c.SetReadLimit(1 << 20)
	type tc struct{ n, lenBytes int }
	cases := []tc{{0, 0}, {1, 0}, {125, 0}, {126, 0}, {1000, 0}, {0xffff, 0}, {0x10000, 0}, {BufferSize + 1, 0}, {300000, 0},
		{5, 2}, {5, 8}, {126, 8}, {0xffff, 8}}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i, k := range cases {
			p.send(frame(true, opText, bytes.Repeat([]byte{byte('a' + i)}, k.n), k.lenBytes))
		}
	}()
	defer func() {
		_ = p.nc.Close()
		<-sent
	}()
	for i, k := range cases {
		typ, b, err := c.Read()
		if err != nil {
			t.Fatalf("case %d (%d bytes): %v", i, k.n, err)
		}
		if typ != MessageText || len(b) != k.n || bytes.Count(b, []byte{byte('a' + i)}) != k.n {
			t.Fatalf("case %d: got type %d, %d bytes, want text of %d bytes of %q", i, typ, len(b), k.n, rune('a'+i))
		}
	}
}

// TestBinary: a binary message is told apart from text.
func TestBinary(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	p.send(frame(true, opBinary, []byte{0, 1, 2}, 0))
	typ, b, err := c.Read()
	if err != nil || typ != MessageBinary || !bytes.Equal(b, []byte{0, 1, 2}) {
		t.Fatalf("got %d %q %v, want binary 00 01 02", typ, b, err)
	}
}

// TestFragmented: a message in several frames is assembled, with control
// frames between the fragments handled on the way: the ping answered with
// its own payload, the pong ignored. The next message, in one frame, is
// read whole after it.
func TestFragmented(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	c.SetReadLimit(1 << 20)
	big := bytes.Repeat([]byte("y"), 70000)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		p.send(
			frame(false, opText, []byte("hel"), 0),
			frame(true, opPing, []byte("are you there"), 0),
			frame(false, opContinuation, []byte("lo, "), 0),
			frame(true, opPong, []byte("unasked"), 0),
			frame(false, opContinuation, big, 0),
			frame(true, opContinuation, []byte("world"), 0),
			frame(true, opText, []byte("next"), 0),
		)
	}()
	defer func() {
		_ = p.nc.Close()
		<-sent
	}()
	typ, b, err := c.Read()
	want := "hello, " + string(big) + "world"
	if err != nil || typ != MessageText || string(b) != want {
		t.Fatalf("got %d, %d bytes, %v; want the %d bytes assembled", typ, len(b), err, len(want))
	}
	if got := p.expect(opPong); string(got) != "are you there" {
		t.Fatalf("pong %q, want the ping's payload", got)
	}
	if _, b, err := c.Read(); err != nil || string(b) != "next" {
		t.Fatalf("second message %q, %v", b, err)
	}
	// Empty fragments are fine.
	p.send(frame(false, opBinary, nil, 0), frame(false, opContinuation, nil, 0), frame(true, opContinuation, []byte("x"), 0))
	if typ, b, err := c.Read(); err != nil || typ != MessageBinary || string(b) != "x" {
		t.Fatalf("got %d %q %v", typ, b, err)
	}
}

// TestPing: Ping returns once the pong echoing it arrives, and a pong
// that echoes something else does not end it.
func TestPing(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	read := make(chan error, 1)
	go func() {
		_, _, err := c.Read()
		read <- err
	}()
	pinged := make(chan error, 1)
	go func() { pinged <- c.Ping(t.Context()) }()
	b := p.expect(opPing)
	p.send(frame(true, opPong, append([]byte("x"), b...), 0))
	// The stray pong is read before the echo; Ping must still be waiting.
	p.send(frame(true, opPing, []byte("sync"), 0))
	if got := p.expect(opPong); string(got) != "sync" {
		t.Fatalf("pong %q", got)
	}
	select {
	case err := <-pinged:
		t.Fatalf("Ping returned %v on a pong that did not echo it", err)
	default:
	}
	p.send(frame(true, opPong, b, 0))
	if err := <-pinged; err != nil {
		t.Fatalf("Ping: %v", err)
	}
	p.send(frame(true, opText, []byte("done"), 0))
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	// A ping on a closed Conn fails at once.
	_ = c.CloseNow()
	if err := c.Ping(context.Background()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Ping after CloseNow: %v, want net.ErrClosed", err)
	}
}

// TestProtocolViolations: each violation by the server ends the reader
// with an error that is not a close frame's and a close frame 1002; the
// error is returned again by the next Read.
func TestProtocolViolations(t *testing.T) {
	t.Parallel()
	cases := map[string][]byte{
		"masked frame":             {0x81, 0x82, 1, 2, 3, 4, 'a' ^ 1, 'b' ^ 2},
		"rsv1":                     {0xc1, 0x00},
		"rsv2":                     {0xa1, 0x00},
		"rsv3":                     {0x91, 0x00},
		"unknown data opcode":      {0x83, 0x00},
		"unknown control opcode":   {0x8b, 0x00},
		"control frame over 125":   frame(true, opPing, make([]byte, 126), 0),
		"fragmented control frame": frame(false, opPing, []byte("p"), 0),
		"lone continuation":        frame(true, opContinuation, []byte("x"), 0),
		"data inside a fragmented message": append(frame(false, opText, []byte("a"), 0),
			frame(true, opText, []byte("b"), 0)...),
		"close payload of one byte":  frame(true, opClose, []byte{3}, 0),
		"close code 1005":            frame(true, opClose, closePayload(1005, ""), 0),
		"close code 999":             frame(true, opClose, closePayload(999, ""), 0),
		"close code 5000":            frame(true, opClose, closePayload(5000, ""), 0),
		"64-bit length, top bit set": {0x81, 127, 0x80, 0, 0, 0, 0, 0, 0, 1},
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, p := pair(t)
			p.send(bad)
			_, _, err := c.Read()
			if err == nil || websocket.CloseStatus(err) != -1 || errors.Is(err, websocket.ErrMessageTooBig) {
				t.Fatalf("Read: %v, want a protocol error", err)
			}
			if code, _ := p.expectClose(); code != websocket.StatusProtocolError {
				t.Fatalf("client closed with %d, want 1002", code)
			}
			if _, _, err2 := c.Read(); err2 != err {
				t.Fatalf("second Read: %v, want %v again", err2, err)
			}
		})
	}
}

// TestReadLimit: a message over the limit, in one frame or across
// fragments, ends the reader with ErrMessageTooBig and close 1009; one of
// exactly the limit is read.
func TestReadLimit(t *testing.T) {
	t.Parallel()
	for name, msg := range map[string][][]byte{
		"one frame": {frame(true, opText, []byte("0123456789a"), 0)},
		"fragments": {frame(false, opText, []byte("012345"), 0), frame(true, opPing, nil, 0), frame(true, opContinuation, []byte("6789a"), 0)},
		"huge":      {{0x81, 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, p := pair(t)
			c.SetReadLimit(10)
			p.send(frame(true, opText, []byte("0123456789"), 0))
			if _, b, err := c.Read(); err != nil || string(b) != "0123456789" {
				t.Fatalf("a message at the limit: %q, %v", b, err)
			}
			p.send(msg...)
			if _, _, err := c.Read(); !errors.Is(err, websocket.ErrMessageTooBig) {
				t.Fatalf("Read: %v, want ErrMessageTooBig", err)
			}
			if name == "fragments" {
				p.expect(opPong)
			}
			if code, reason := p.expectClose(); code != websocket.StatusMessageTooBig || !strings.Contains(reason, "10 bytes") {
				t.Fatalf("client closed with %d %q, want 1009", code, reason)
			}
		})
	}
}

// TestReadEnds: a stream cut inside a frame ends the reader; after
// CloseNow the reader's end says net.ErrClosed.
func TestReadEnds(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	p.send([]byte{0x81, 126, 0x01})
	_ = p.nc.Close()
	if _, _, err := c.Read(); err == nil || websocket.CloseStatus(err) != -1 {
		t.Fatalf("Read: %v, want the stream's end", err)
	}

	c, _ = pair(t)
	read := make(chan error, 1)
	go func() {
		_, _, err := c.Read()
		read <- err
	}()
	_ = c.CloseNow()
	if err := <-read; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after CloseNow: %v, want net.ErrClosed", err)
	}
}
