package session

import (
	"bytes"
	"context"
	"fmt"
	"time"
)

// startKeepAlive sends the upstream a probe every interval and ends the
// socket when one goes unanswered for timeout: that is how a half-open
// connection (the peer gone, no FIN) is found. The probe is a protocol ping
// answered by a pong (graphql-transport-ws) or a WebSocket ping answered by
// the peer's WebSocket stack (legacy graphql-ws, whose clients cannot ping).
//
// It is sent however much arrives: inbound results prove only one direction.
// A connection whose outbound half is dead still delivers results but can
// carry no subscribe, complete or pong, and only an answer to something the
// bridge sent proves that half. So each ping carries a nonce; once the
// upstream has echoed one (the reference server and gqlgen do), only a pong
// echoing the current nonce counts, and a server's unsolicited heartbeat
// pongs cannot pass for answers. An upstream that never echoes is held to
// any pong after the ping (the probe then listens for an echo until its
// timeout, so a heartbeat arriving first cannot hide that it echoes).
func (l *link) startKeepAlive(interval, timeout time.Duration) {
	l.wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		var (
			seq    int
			echoes bool // the upstream echoes ping payloads
		)
		for {
			select {
			case <-l.stop:
				return
			case <-t.C:
			}
			var alive bool
			if l.proto.pingFrames {
				seq++
				alive = l.pingMessage(seq, timeout, &echoes)
			} else {
				alive = l.pingFrame(timeout)
			}
			select {
			case <-l.stop:
				return
			default:
			}
			if !alive {
				l.fail(&Error{Class: ClassTransient, Code: CodeAbnormal,
					Reason: fmt.Sprintf("keep-alive timeout: no answer within %s", timeout)}, 0, "")
				return
			}
		}
	})
}

// pingMessage sends a ping message carrying nonce seq and reports whether
// it was answered within timeout (or the link stopped meanwhile: the caller
// checks). It records in echoes that the upstream echoes nonces.
func (l *link) pingMessage(seq int, timeout time.Duration, echoes *bool) (alive bool) {
	nonce := fmt.Appendf(nil, `{"gqlbridge":%d}`, seq)
	l.nonce.Store(&nonce)
	for _, ch := range []chan struct{}{l.pongEcho, l.pongAny} {
		select { // forget pongs seen earlier
		case <-ch:
		default:
		}
	}
	l.send(appendMessage(nil, msgPing, "", nonce))
	w := time.NewTimer(timeout)
	defer w.Stop()
	for {
		select {
		case <-l.stop:
			return false
		case <-l.pongEcho:
			*echoes = true
			return true
		case <-l.pongAny:
			// Enough from an upstream not known to echo; keep listening
			// for the echo that would tell.
			alive = alive || !*echoes
		case <-w.C:
			return alive
		}
	}
}

// pingFrame sends a WebSocket ping and reports whether its pong came within
// timeout. Not under l.ctx: a Close under way must not abort the ping and
// turn the graceful close into an abrupt one.
func (l *link) pingFrame(timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return l.ws.Ping(ctx) == nil
}

// sawPong tells the keep-alive a pong arrived, and whether it echoes the
// current ping's nonce. It never blocks the reader.
func (l *link) sawPong(payload []byte) {
	ch := l.pongAny
	if n := l.nonce.Load(); n != nil && bytes.Equal(payload, *n) {
		ch = l.pongEcho
	}
	select {
	case ch <- struct{}{}:
	default:
	}
}
