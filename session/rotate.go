package session

import (
	"time"

	"github.com/gqlbridge/gqlbridge/internal/redaction"
)

// activate starts what an acknowledged socket needs: keep-alive, and the
// rotation timer when the credential's expiry is known.
func (c *Conn) activate(l *link, hs Handshake) {
	if c.cfg.KeepAlive > 0 {
		l.startKeepAlive(c.cfg.KeepAlive, c.cfg.KeepAliveTimeout)
	}
	if hs.Expiry.IsZero() || c.cfg.Handshake == nil {
		return
	}
	left := time.Until(hs.Expiry)
	lead := min(c.cfg.RotateBefore, left/2)
	l.after(max(left-lead, time.Second), func() { c.rotate(l) })
}

// rotate moves every operation of old to a new socket opened with a fresh
// credential, make-before-break: the new socket is acknowledged and the
// operations subscribed there before old is closed, so subscriptions outlive
// their tokens without a reconnect. If anything fails, old stays in service
// and the ordinary reconnect path takes over when the upstream ends it.
func (c *Conn) rotate(old *link) {
	nl, hs, e := c.connect(old.ctx, Attempt{Number: 1, Expiring: true})
	if e != nil {
		if old.ctx.Err() == nil {
			c.cfg.Logger.Warn("credential rotation failed; keeping the current connection", "url", redaction.URL(c.cfg.URL), "error", e.Error())
		}
		return
	}
	c.mu.Lock()
	if c.link != old || c.closing() {
		c.mu.Unlock()
		nl.finish()
		return
	}
	c.link = nl
	frames := make([][]byte, 0, len(c.ops))
	stops := make([][]byte, 0, len(c.ops))
	for id := range c.ops {
		delete(c.ops, id)
		stops = append(stops, appendMessage(nil, old.proto.stop, id, nil))
	}
	for op := range c.live {
		frames = append(frames, c.assignLocked(op, nl, true))
	}
	c.mu.Unlock()
	if c.cfg.OnState != nil {
		c.cfg.OnState(StateChange{State: StateReady, Subprotocol: nl.proto.name, Attempt: 1, Rotated: true})
	}
	nl.goSend(frames)
	c.activate(nl, hs)
	for _, f := range stops {
		old.send(f)
	}
	old.retire(nl)
}
