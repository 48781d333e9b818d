package wsconn

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/coder/websocket"
)

// header is one frame's header, its mask excepted (a server never masks).
type header struct {
	fin    bool
	op     byte
	length int64
}

// Read returns the next data message. Its bytes alias a buffer of the Conn
// and are valid until the next Read. Control frames met on the way are
// handled: a ping is answered, a pong ends the Ping waiting for it, and a
// close frame is echoed, the stream closed and its code and reason returned
// as a websocket.CloseError. A protocol violation by the server sends a
// close frame 1002 and ends the reader. An error is returned again by every
// later Read.
//
// Read watches no context: it is stopped by CloseNow, or by Close once the
// peer answered (docs/protocols.md §5).
func (c *Conn) Read() (MessageType, []byte, error) {
	if !c.reading.Load() {
		c.reading.Store(true)
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.read()
}

// read is Read with rmu held.
func (c *Conn) read() (MessageType, []byte, error) {
	if c.rerr != nil {
		return 0, nil, c.rerr
	}
	typ, b, err := c.readMessage()
	if err != nil {
		c.rerr = err
		close(c.rdead)
	}
	return typ, b, err
}

func (c *Conn) readMessage() (MessageType, []byte, error) {
	var typ MessageType // 0 until the first frame of a message
	c.msg = c.msg[:0]
	for {
		h, err := c.readHeader()
		if err != nil {
			return 0, nil, err
		}
		switch h.op {
		case opPing, opPong, opClose:
			if err := c.control(h); err != nil {
				return 0, nil, err
			}
			continue
		case opText, opBinary:
			if typ != 0 {
				return 0, nil, c.protocolError("received new data message without finishing the previous message")
			}
			typ = MessageType(h.op)
		case opContinuation:
			if typ == 0 {
				return 0, nil, c.protocolError("received continuation frame without text or binary frame")
			}
		default:
			return 0, nil, c.protocolError(fmt.Sprintf("received unknown opcode %d", h.op))
		}
		if limit := c.limit.Load(); limit >= 0 && h.length > limit-int64(len(c.msg)) {
			reason := fmt.Sprintf("read limited at %d bytes", limit)
			c.sendClose(websocket.StatusMessageTooBig, reason)
			return 0, nil, fmt.Errorf("%w: %s", websocket.ErrMessageTooBig, reason)
		}
		if h.fin && len(c.msg) == 0 && h.length <= BufferSize {
			// The common case: a message in one frame, read in place.
			n := int(h.length)
			b, err := c.br.Peek(n)
			if err != nil {
				return 0, nil, c.ioError(err)
			}
			_, _ = c.br.Discard(n)
			return typ, b, nil
		}
		if err := c.appendPayload(h.length); err != nil {
			return 0, nil, err
		}
		if h.fin {
			return typ, c.msg, nil
		}
	}
}

// appendPayload reads n payload bytes onto c.msg, growing it as the bytes
// arrive rather than by what a header claims.
func (c *Conn) appendPayload(n int64) error {
	for n > 0 {
		if len(c.msg) == cap(c.msg) {
			c.msg = append(c.msg, 0)[:len(c.msg)]
		}
		k := int(min(n, int64(cap(c.msg)-len(c.msg))))
		off := len(c.msg)
		c.msg = c.msg[:off+k]
		if _, err := io.ReadFull(c.br, c.msg[off:]); err != nil {
			c.msg = c.msg[:off]
			return c.ioError(err)
		}
		n -= int64(k)
	}
	return nil
}

// readHeader reads one frame header (RFC 6455 §5.2).
func (c *Conn) readHeader() (header, error) {
	b, err := c.br.Peek(2)
	if err != nil {
		return header{}, c.ioError(err)
	}
	h := header{fin: b[0]&0x80 != 0, op: b[0] & 0x0f, length: int64(b[1] & 0x7f)}
	rsv, masked := b[0]&0x70, b[1]&0x80 != 0
	n := 2
	switch h.length {
	case 126:
		n = 4
	case 127:
		n = 10
	}
	if n > 2 {
		if b, err = c.br.Peek(n); err != nil {
			return header{}, c.ioError(err)
		}
		if n == 4 {
			h.length = int64(binary.BigEndian.Uint16(b[2:]))
		} else {
			l := binary.BigEndian.Uint64(b[2:])
			if l>>63 != 0 {
				return header{}, c.protocolError("received frame with a 64-bit payload length whose most significant bit is set")
			}
			h.length = int64(l)
		}
	}
	_, _ = c.br.Discard(n)
	if rsv != 0 {
		return header{}, c.protocolError(fmt.Sprintf("received header with unexpected rsv bits set: %#x", rsv>>4))
	}
	if masked {
		return header{}, c.protocolError("received masked frame from server")
	}
	return h, nil
}

// control handles a ping, pong or close frame.
func (c *Conn) control(h header) error {
	if h.length > maxControlPayload {
		return c.protocolError(fmt.Sprintf("received control frame payload with invalid length: %d", h.length))
	}
	if !h.fin {
		return c.protocolError("received fragmented control frame")
	}
	b := c.ctl[:h.length]
	if _, err := io.ReadFull(c.br, b); err != nil {
		return c.ioError(err)
	}
	switch h.op {
	case opPing:
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		if err := c.writeFrame(ctx, opPong, b); err != nil && !errors.Is(err, errCloseSent) {
			return fmt.Errorf("websocket: failed to answer a ping: %w", err)
		}
	case opPong:
		c.pingMu.Lock()
		ch := c.pings[string(b)]
		c.pingMu.Unlock()
		if ch != nil {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	case opClose:
		ce, err := parseClose(b)
		if err != nil {
			return c.protocolError("received invalid close payload: " + err.Error())
		}
		close(c.gotClose)
		// Echo the code, unless a close frame was already sent (then
		// this is the reply), and end the stream.
		c.sendClose(ce.Code, ce.Reason)
		_ = c.CloseNow()
		return fmt.Errorf("received close frame: %w", ce)
	}
	return nil
}

// parseClose decodes a close frame's payload (RFC 6455 §5.5.1).
func parseClose(p []byte) (websocket.CloseError, error) {
	if len(p) == 0 {
		return websocket.CloseError{Code: websocket.StatusNoStatusRcvd}, nil
	}
	if len(p) < 2 {
		return websocket.CloseError{}, fmt.Errorf("close payload %q too small, cannot even contain the 2 byte status code", p)
	}
	ce := websocket.CloseError{Code: websocket.StatusCode(binary.BigEndian.Uint16(p)), Reason: string(p[2:])}
	if !validWireCode(ce.Code) {
		return websocket.CloseError{}, fmt.Errorf("invalid status code %d", ce.Code)
	}
	return ce, nil
}

// protocolError answers a violation by the server with a close frame 1002,
// and returns it as the reader's end. The stream is left to the owner to
// close, so that the close frame is not lost to a reset.
func (c *Conn) protocolError(msg string) error {
	c.sendClose(websocket.StatusProtocolError, msg)
	return errors.New("websocket: " + msg)
}

// ioError is the reader's end on a failed read: net.ErrClosed once the
// Conn was closed, an unexpected EOF or the stream's own error otherwise.
func (c *Conn) ioError(err error) error {
	if c.isClosed() {
		return fmt.Errorf("websocket: read: %w", net.ErrClosed)
	}
	return fmt.Errorf("websocket: read: %w", err)
}

// closeTimeout bounds each half of a close handshake, and a pong.
const closeTimeout = 5 * time.Second
