package session

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/gqlbridge/gqlbridge/session/internal/wsconn"
)

// link is one WebSocket beneath a Conn. The Conn's goroutine is its only
// reader; every other goroutine it starts (keep-alive, closing, resubscribe
// writes) is joined by finish.
type link struct {
	c     *Conn
	ws    *wsconn.Conn
	proto *protocol
	// number is the Attempt.Number of the connection attempt that opened
	// the socket.
	number int
	// For the keep-alive: the current ping's nonce, and signals (buffer 1)
	// of a pong echoing it and of any other pong.
	nonce    atomic.Pointer[[]byte]
	pongEcho chan struct{}
	pongAny  chan struct{}
	stop     chan struct{} // closed by finish
	unwatch  func() bool   // stops watching the Conn's context
	// ctx ends when the link is finished or the Conn closes: work started
	// on behalf of the link (a rotation) stops with it.
	ctx    context.Context
	cancel context.CancelFunc

	// results says a result (next/data) arrived on the socket: the
	// upstream served operations with its credential. Only the Conn's
	// goroutine, the reader, touches it.
	results bool

	mu      sync.Mutex
	failure *Error // why the session itself ended the socket; first wins
	// symptom says the failure is a failed write or an unanswered probe,
	// not a close frame the session sent: a close frame the reader
	// received is the upstream's word and decides the outcome instead.
	symptom bool
	ended   bool
	next    *link // the successor after a credential rotation
	timers  []*time.Timer
	wg      sync.WaitGroup
}

func newLink(c *Conn, ws *wsconn.Conn, p *protocol) *link {
	l := &link{c: c, ws: ws, proto: p, pongEcho: make(chan struct{}, 1), pongAny: make(chan struct{}, 1), stop: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancel(c.ctx)
	l.unwatch = context.AfterFunc(c.ctx, func() {
		c.mu.Lock()
		code := c.closeCode
		c.mu.Unlock()
		l.shutdown(code)
	})
	return l
}

// read returns the next message, decoded in place: it aliases the socket's
// read buffer until the next read. A frame that is not a valid message makes
// the session close the socket with 4400; read then drains the socket and
// returns its end.
func (l *link) read() (envelope, error) {
	typ, b, err := l.ws.Read() // stopped by closing the socket: see docs/protocols.md §5
	if err != nil {
		return envelope{}, err
	}
	if typ != wsconn.MessageText {
		l.fail(&Error{Class: ClassTransient, Code: CodeBadRequest, Reason: "upstream sent a binary frame"}, CodeBadRequest, "binary frames are not part of the protocol")
		return envelope{}, l.drain()
	}
	env, err := decodeEnvelope(b)
	if err != nil {
		l.fail(&Error{Class: ClassTransient, Code: CodeBadRequest, Reason: "upstream sent an invalid message: " + err.Error()}, CodeBadRequest, "Invalid message received")
		return envelope{}, l.drain()
	}
	return env, nil
}

// violation closes the socket because of a well-formed message that has no
// place in the protocol at this point.
func (l *link) violation(env envelope, beforeAck bool) {
	l.fail(&Error{Class: ClassTransient, Code: CodeBadRequest, BeforeAck: beforeAck,
		Reason: fmt.Sprintf("upstream sent unexpected message type %q", truncate([]byte(env.typ), 64))},
		CodeBadRequest, "Unexpected message type")
}

// drain discards frames until the socket ends, so a close handshake the
// session started can complete.
func (l *link) drain() error {
	for {
		if _, _, err := l.ws.Read(); err != nil {
			return err
		}
	}
}

// outcome turns the end of the socket, err from the reader, into an
// Error. What the session decided (a violation, an ack timeout, a rotation)
// comes first; a close frame the upstream sent comes before a symptom the
// session saw (a write failing because that close had already closed the
// socket, or a probe it cut short).
func (l *link) outcome(err error, acked bool) *Error {
	l.mu.Lock()
	f := l.failure
	if l.symptom && websocket.CloseStatus(err) != -1 {
		f = nil
	}
	l.mu.Unlock()
	if f != nil {
		if !acked {
			f.BeforeAck = true
		}
		return f
	}
	pol := l.c.cfg.Policy
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		code := CloseCode(ce.Code)
		return &Error{Class: pol.Classify(code, !acked), Code: code, Reason: ce.Reason, BeforeAck: !acked, Err: err}
	}
	if errors.Is(err, websocket.ErrMessageTooBig) {
		return &Error{Class: pol.Classify(CodeMessageTooBig, !acked), Code: CodeMessageTooBig,
			Reason: fmt.Sprintf("upstream sent a message over the %d-byte limit", l.c.cfg.MaxMessageBytes), BeforeAck: !acked, Err: err}
	}
	return &Error{Class: pol.Classify(CodeAbnormal, !acked), Code: CodeAbnormal, Reason: "connection lost: " + err.Error(), BeforeAck: !acked, Err: err}
}

// fail records why the session ends the socket and closes it: with a close
// frame carrying code, or abruptly when code is 0 (then the failure is a
// symptom: see outcome).
func (l *link) fail(e *Error, code CloseCode, reason string) {
	l.mu.Lock()
	if l.failure != nil || l.ended {
		l.mu.Unlock()
		return
	}
	l.failure = e
	l.symptom = code == 0
	l.wg.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.wg.Done()
		if code == 0 {
			_ = l.ws.CloseNow()
			return
		}
		_ = l.ws.Close(websocket.StatusCode(code), reason)
	}()
}

// shutdown closes the socket because the owner closed the Conn.
func (l *link) shutdown(code CloseCode) {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return
	}
	l.wg.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.wg.Done()
		if l.proto.terminate != "" {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = l.ws.Write(ctx, appendMessage(nil, l.proto.terminate, "", nil))
			cancel()
		}
		_ = l.ws.Close(websocket.StatusCode(code), "")
	}()
}

// finish releases the socket and joins every goroutine of the link.
func (l *link) finish() {
	l.unwatch()
	l.cancel()
	l.mu.Lock()
	l.ended = true
	for _, t := range l.timers {
		t.Stop()
	}
	l.mu.Unlock()
	close(l.stop)
	_ = l.ws.CloseNow()
	l.wg.Wait()
}

// after runs f on a goroutine of the link after d, unless the link ended.
func (l *link) after(d time.Duration, f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.timers = append(l.timers, time.AfterFunc(d, func() {
		l.mu.Lock()
		if l.ended {
			l.mu.Unlock()
			return
		}
		l.wg.Add(1)
		l.mu.Unlock()
		defer l.wg.Done()
		f()
	}))
}

// retire closes a socket whose operations moved to next.
func (l *link) retire(next *link) {
	l.mu.Lock()
	l.next = next
	l.mu.Unlock()
	l.fail(&Error{Class: ClassTransient, Code: CodeNormal, Reason: "credential rotated"}, CodeNormal, "credential rotated")
}

// successor is the socket that took over after a rotation, or nil.
func (l *link) successor() *link {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.next
}

// write sends one frame, bounded by the write timeout.
func (l *link) write(frame []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), l.c.cfg.WriteTimeout)
	defer cancel()
	return l.ws.Write(ctx, frame)
}

// send writes a frame; a failed write ends the socket (see writeFailed).
func (l *link) send(frame []byte) {
	if err := l.write(frame); err != nil {
		l.writeFailed(err)
	}
}

// writeFailed ends the socket after a failed write, without deciding why it
// ended: most often the write failed because the reader had just received
// the upstream's close frame (which closes the socket), or the upstream's
// close frame is still on its way behind the reset that failed the write.
// The failure is recorded as a symptom, and the socket is left to the
// reader, which ends at once on a closed or reset socket, so that a close
// frame it receives decides the outcome. Should the reader not end within
// the write timeout, the socket is closed under it.
func (l *link) writeFailed(err error) {
	l.mu.Lock()
	if l.failure != nil || l.ended {
		l.mu.Unlock()
		return
	}
	l.failure = &Error{Class: ClassTransient, Code: CodeAbnormal, Reason: "write failed: " + err.Error(), Err: err}
	l.symptom = true
	l.wg.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.wg.Done()
		t := time.NewTimer(l.c.cfg.WriteTimeout)
		defer t.Stop()
		select {
		case <-l.stop: // the reader ended; finish closes the socket
		case <-t.C:
			_ = l.ws.CloseNow()
		}
	}()
}

// failed reports whether the session recorded a failure of the socket.
func (l *link) failed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failure != nil
}

// goSend writes frames in the background so the reader keeps reading.
func (l *link) goSend(frames [][]byte) {
	l.wg.Go(func() {
		for _, f := range frames {
			select {
			case <-l.stop:
				return
			default:
			}
			if err := l.write(f); err != nil {
				l.writeFailed(err)
				return
			}
		}
	})
}
