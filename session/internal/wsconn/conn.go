package wsconn

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"
)

// Opcodes (RFC 6455 §5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa
)

// MessageType is the type of a data message.
type MessageType int

// The two data message types.
const (
	MessageText   MessageType = opText
	MessageBinary MessageType = opBinary
)

const (
	// BufferSize is the reader's buffer: how much one read(2) may bring,
	// and the largest single-frame message returned without a copy.
	BufferSize = 64 << 10
	// maxControlPayload is the longest payload of a control frame.
	maxControlPayload = 125
	// defaultReadLimit is the read limit until SetReadLimit.
	defaultReadLimit = 32768
)

// Conn is the client end of one WebSocket. One goroutine reads (Read);
// any number write (Write, Ping) and close (Close, CloseNow).
type Conn struct {
	rwc         io.ReadWriteCloser
	subprotocol string
	limit       atomic.Int64

	// reading says Read was called: from then on the bytes it returned
	// may be in use, and only the reader reads (see awaitClose).
	reading atomic.Bool
	// The reader's state, under rmu: taken once per Read, uncontended
	// unless Close reads the peer's close reply itself.
	rmu   sync.Mutex
	br    *bufio.Reader
	msg   []byte // a fragmented or oversized message, reused
	ctl   [maxControlPayload]byte
	rerr  error         // the reader's end, sticky
	rdead chan struct{} // closed once rerr is set

	// wmu (buffer 1) serialises frames; a writer waits for it within its
	// context. Under it: closeSent and wbuf.
	wmu       chan struct{}
	closeSent bool
	wbuf      []byte

	gotClose  chan struct{} // closed when the reader has the peer's close frame
	closeOnce sync.Once
	closing   atomic.Bool   // Close started
	closed    chan struct{} // closed by CloseNow, before the stream is closed
	closeErr  error

	pingMu sync.Mutex
	pings  map[string]chan struct{}
	pingN  atomic.Uint64
}

func newConn(rwc io.ReadWriteCloser, subprotocol string) *Conn {
	c := &Conn{
		rwc:         rwc,
		subprotocol: subprotocol,
		br:          bufio.NewReaderSize(rwc, BufferSize),
		rdead:       make(chan struct{}),
		wmu:         make(chan struct{}, 1),
		gotClose:    make(chan struct{}),
		closed:      make(chan struct{}),
		pings:       map[string]chan struct{}{},
	}
	c.limit.Store(defaultReadLimit)
	return c
}

// Subprotocol is the subprotocol the server agreed to, or "".
func (c *Conn) Subprotocol() string { return c.subprotocol }

// SetReadLimit sets the largest data message Read accepts, in bytes. A
// larger one ends the reader with an error wrapping
// websocket.ErrMessageTooBig and a close frame 1009.
func (c *Conn) SetReadLimit(n int64) { c.limit.Store(n) }

// CloseNow closes the stream at once, without a close handshake. It
// unblocks every reader, writer and Close. Later calls return an error
// wrapping net.ErrClosed.
func (c *Conn) CloseNow() error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		close(c.closed)
		c.closeErr = c.rwc.Close()
	})
	if !first {
		return fmt.Errorf("websocket: close: %w", net.ErrClosed)
	}
	return c.closeErr
}

func (c *Conn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// validWireCode reports whether code may be sent in a close frame
// (RFC 6455 §7.4).
func validWireCode(code websocket.StatusCode) bool {
	switch code {
	case 1004, websocket.StatusNoStatusRcvd, websocket.StatusAbnormalClosure, websocket.StatusTLSHandshake:
		return false
	}
	return code >= 1000 && code <= 1014 || code >= 3000 && code <= 4999
}
