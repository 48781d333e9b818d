package wsconn

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/coder/websocket"
)

// errCloseSent refuses a frame after the close frame.
var errCloseSent = fmt.Errorf("websocket: close frame already sent: %w", net.ErrClosed)

// Write sends p as one text message. ctx bounds the wait for the writer's
// lock and the write; should it end during the write, the stream is
// closed (a frame cut short leaves nothing to save).
func (c *Conn) Write(ctx context.Context, p []byte) error {
	return c.writeFrame(ctx, opText, p)
}

// Ping sends a ping and waits, within ctx, for the pong that echoes it.
// The reader must be running to see the pong.
func (c *Conn) Ping(ctx context.Context) error {
	p := strconv.FormatUint(c.pingN.Add(1), 10)
	pong := make(chan struct{}, 1)
	c.pingMu.Lock()
	c.pings[p] = pong
	c.pingMu.Unlock()
	defer func() {
		c.pingMu.Lock()
		delete(c.pings, p)
		c.pingMu.Unlock()
	}()
	if err := c.writeFrame(ctx, opPing, []byte(p)); err != nil {
		return err
	}
	select {
	case <-pong:
		return nil
	case <-c.closed:
		return fmt.Errorf("websocket: ping: %w", net.ErrClosed)
	case <-ctx.Done():
		return fmt.Errorf("websocket: waiting for the pong: %w", ctx.Err())
	}
}

// writeFrame writes one whole, masked frame (RFC 6455 §5.3).
func (c *Conn) writeFrame(ctx context.Context, op byte, p []byte) error {
	select {
	case c.wmu <- struct{}{}:
	case <-c.closed:
		return fmt.Errorf("websocket: write: %w", net.ErrClosed)
	case <-ctx.Done():
		return fmt.Errorf("websocket: write: %w", ctx.Err())
	}
	defer func() { <-c.wmu }()
	if c.closeSent {
		return errCloseSent
	}
	if c.isClosed() {
		return fmt.Errorf("websocket: write: %w", net.ErrClosed)
	}
	if op == opClose {
		c.closeSent = true
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { _ = c.CloseNow() })
		defer stop()
	}
	c.wbuf = appendFrame(c.wbuf[:0], op, p)
	if _, err := c.rwc.Write(c.wbuf); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		} else if c.isClosed() {
			err = net.ErrClosed
		}
		return fmt.Errorf("websocket: write: %w", err)
	}
	return nil
}

// appendFrame appends to b a final frame of p, masked with a random key.
func appendFrame(b []byte, op byte, p []byte) []byte {
	b = append(b, 0x80|op)
	switch n := len(p); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var key [4]byte
	_, _ = rand.Read(key[:]) // never fails (crypto/rand)
	b = append(b, key[:]...)
	off := len(b)
	b = append(b, p...)
	for i := range p {
		b[off+i] ^= key[i&3]
	}
	return b
}

// sendClose writes a close frame, unless one was sent already. A code that
// may not be sent is replaced by 1011 (internal error), and a reason is cut
// to fit in a control frame.
func (c *Conn) sendClose(code websocket.StatusCode, reason string) error {
	var p []byte
	if code != websocket.StatusNoStatusRcvd {
		if !validWireCode(code) {
			code, reason = websocket.StatusInternalError, ""
		}
		if len(reason) > maxControlPayload-2 {
			reason = reason[:maxControlPayload-2]
		}
		p = binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reason)), uint16(code))
		p = append(p, reason...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	if err := c.writeFrame(ctx, opClose, p); err != nil && !errors.Is(err, errCloseSent) {
		return err
	}
	return nil
}

// Close performs the close handshake: it sends a close frame with code and
// reason, waits up to 5 s for the peer's close frame, then closes the
// stream. Once Read was called, it is the reader that sees the reply (and
// Close also returns when the reader ends): Close never reads under a
// message the reader returned. On a Conn never read, Close reads, and
// discards, what arrives until the reply. CloseNow cuts a Close short. A
// second Close waits for the stream to be closed and returns an error
// wrapping net.ErrClosed.
func (c *Conn) Close(code websocket.StatusCode, reason string) error {
	if c.closing.Swap(true) {
		<-c.closed // the first Close closes it, within its bounds
		return fmt.Errorf("websocket: close: %w", net.ErrClosed)
	}
	err := c.sendClose(code, reason)
	if err == nil {
		c.awaitClose()
	}
	if cerr := c.CloseNow(); err == nil && !errors.Is(cerr, net.ErrClosed) {
		err = cerr
	}
	return err
}

// awaitClose waits for the peer's close frame, the reader's end or
// CloseNow, at most closeTimeout.
func (c *Conn) awaitClose() {
	t := time.AfterFunc(closeTimeout, func() { _ = c.CloseNow() })
	defer t.Stop()
	if !c.reading.Load() && c.rmu.TryLock() {
		// Never read: no message of the reader's can be in use, so read
		// the reply here. A Read started meanwhile waits, then returns how
		// this ended.
		for c.rerr == nil {
			_, _, _ = c.read()
		}
		c.rmu.Unlock()
		return
	}
	select {
	case <-c.gotClose:
	case <-c.rdead:
	case <-c.closed:
	}
}
