package wsconn

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// peer is the server end of a Conn under test: raw frames over loopback TCP.
type peer struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

// pair returns a Conn and its server end, both closed when the test ends.
func pair(t testing.TB) (*Conn, *peer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		sc, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- sc
	}()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	// Bound every test: a hung read fails it instead of hanging it.
	_ = sc.SetDeadline(time.Now().Add(20 * time.Second))
	_ = cc.SetDeadline(time.Now().Add(20 * time.Second))
	c := newConn(cc, "")
	t.Cleanup(func() {
		_ = c.CloseNow()
		_ = sc.Close()
	})
	return c, &peer{t: t, nc: sc, br: bufio.NewReader(sc)}
}

// frame encodes an unmasked frame as a server sends it. lenBytes forces
// the length encoding: 0 for the shortest, else 2 (16-bit) or 8 (64-bit).
func frame(fin bool, op byte, p []byte, lenBytes int) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	switch {
	case lenBytes == 8 || lenBytes == 0 && len(p) > 0xffff:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(len(p)))
	case lenBytes == 2 || lenBytes == 0 && len(p) >= 126:
		b = append(b, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
	default:
		b = append(b, byte(len(p)))
	}
	return append(b, p...)
}

func closePayload(code int, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

// send writes frames; safe from any goroutine (it reports with Errorf).
func (p *peer) send(b ...[]byte) {
	p.t.Helper()
	for _, f := range b {
		if _, err := p.nc.Write(f); err != nil {
			p.t.Errorf("server write: %v", err)
			return
		}
	}
}

// next reads one frame from the client, which must be final and masked,
// and returns its opcode and unmasked payload.
func (p *peer) next() (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(p.br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[0]&0x80 == 0 || h[0]&0x70 != 0 || h[1]&0x80 == 0 {
		return 0, nil, errors.New("client frame not final, with rsv bits or unmasked")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var x [2]byte
		if _, err := io.ReadFull(p.br, x[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(x[:]))
	case 127:
		var x [8]byte
		if _, err := io.ReadFull(p.br, x[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(x[:])
	}
	var key [4]byte
	if _, err := io.ReadFull(p.br, key[:]); err != nil {
		return 0, nil, err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(p.br, b); err != nil {
		return 0, nil, err
	}
	for i := range b {
		b[i] ^= key[i&3]
	}
	return h[0] & 0x0f, b, nil
}

// expect reads the next client frame and fails unless it is op.
func (p *peer) expect(op byte) []byte {
	p.t.Helper()
	got, b, err := p.next()
	if err != nil {
		p.t.Fatalf("reading the client's frame: %v", err)
	}
	if got != op {
		p.t.Fatalf("client sent opcode %#x (%q), want %#x", got, b, op)
	}
	return b
}

// expectClose reads the client's close frame and returns its code and
// reason (1005 for an empty payload).
func (p *peer) expectClose() (websocket.StatusCode, string) {
	p.t.Helper()
	b := p.expect(opClose)
	if len(b) == 0 {
		return websocket.StatusNoStatusRcvd, ""
	}
	if len(b) < 2 {
		p.t.Fatalf("close payload %q", b)
	}
	return websocket.StatusCode(binary.BigEndian.Uint16(b)), string(b[2:])
}

// expectEOF waits for the client to close the stream.
func (p *peer) expectEOF() {
	p.t.Helper()
	if op, b, err := p.next(); err == nil {
		p.t.Fatalf("client sent opcode %#x (%q), want the end of the stream", op, b)
	}
}

func bytesReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }
