package session

import "time"

// run owns the connection: one runOnce after another until the outcome is
// terminal or the owner closes the Conn.
func (c *Conn) run() {
	defer close(c.done)
	var (
		refresh bool   // the next attempt asks for a fresh credential
		fresh   bool   // the next attempt's credential is fresh and no upstream judged it yet
		cause   *Error // why the previous connection ended
		tries   int    // attempts made since the connection was last healthy
		nudged  bool   // RetryNow already cut a wait short in this outage
	)
	for {
		c.setState(StateChange{State: StateConnecting, Attempt: c.retrier.failures + 1})
		uptime, served, e := c.runOnce(Attempt{Number: c.retrier.failures + 1, Refresh: refresh, Cause: cause})
		tries++
		if c.closing() {
			c.terminate(nil)
			return
		}
		if e.final {
			c.terminate(e)
			return
		}
		usedFresh := refresh || fresh // this attempt used a fresh credential
		if !e.noCredential {
			// Unless the callback failed (then the fresh credential is
			// still owed), it was used: it stays fresh until an upstream
			// judges it, which a transient failure before the ack (a
			// refused dial, an HTTP 503) does not.
			refresh = false
			fresh = usedFresh && e.Class == ClassTransient && e.BeforeAck
		}
		healthy := !e.BeforeAck && c.retrier.healthy(uptime)
		if healthy {
			tries, nudged = 0, false // the connection that just ended was healthy: a new outage
		}
		if e.Class == ClassAuth {
			// A fresh credential rejected before the ack, or acknowledged
			// and rejected before any result (an upstream that refuses
			// every operation with it), would be rejected again: the
			// refresh loop ends here. One the upstream acknowledged and
			// served results with was judged good; its later rejection
			// (expiry, revocation) deserves a refresh like any other.
			if usedFresh && !healthy && !served {
				c.terminate(e)
				return
			}
			refresh = true
		}
		if !e.Class.retryable() {
			c.terminate(e)
			return
		}
		delay, ok := c.retrier.next(time.Now(), e.RetryAfter)
		if !ok {
			e.Exhausted, e.Attempts = true, tries
			c.terminate(e)
			return
		}
		cause = e
		c.mu.Lock()
		c.state = StateBackoff
		for op := range c.live {
			op.event(Event{Kind: Reconnecting, Code: e.Code, Reason: e.Reason, Attempt: c.retrier.failures})
		}
		c.mu.Unlock()
		if c.cfg.OnState != nil {
			c.cfg.OnState(StateChange{State: StateBackoff, Attempt: c.retrier.failures, Cause: e, Delay: delay})
		}
		ok, cut := c.wait(delay, nudged || e.RetryAfter > 0)
		if !ok {
			c.terminate(nil)
			return
		}
		nudged = nudged || cut
	}
}

// wait sleeps for the backoff delay, or less after RetryNow unless deaf
// (the upstream asked for the delay with Retry-After, or a nudge was
// already heeded in this outage). ok is false if the Conn was closed
// meanwhile; cut says a nudge shortened the wait.
func (c *Conn) wait(delay time.Duration, deaf bool) (ok, cut bool) {
	select { // a nudge from before this wait is stale
	case <-c.nudge:
	default:
	}
	nudge := c.nudge
	if deaf {
		nudge = nil
	}
	deadline := time.Now().Add(delay)
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return true, cut
		case <-nudge:
			// Spread the connections nudged together over the first
			// backoff step rather than dialing all at once.
			nudge = nil
			if d := time.Duration(c.retrier.rand() * float64(c.retrier.b.Initial)); time.Until(deadline) > d {
				t.Reset(d)
				cut = true
			}
		case <-c.ctx.Done():
			return false, cut
		}
	}
}

// RetryNow cuts short a wait between reconnection attempts: the owner
// learned that the upstream is reachable again (another connection to it
// was just acknowledged), so waiting out a long backoff would only delay
// the recovery. The next attempt starts within the first backoff step
// (Backoff.Initial, jittered). It works once per outage: an upstream that
// acknowledges connections and drops them at once keeps every connection's
// waits growing, however often its siblings are acknowledged. A wait the
// upstream asked for with Retry-After is kept, and in any other state
// RetryNow does nothing.
func (c *Conn) RetryNow() {
	select {
	case c.nudge <- struct{}{}:
	default:
	}
}

// terminate ends every live operation with e (or the owner's outcome).
func (c *Conn) terminate(e *Error) {
	c.mu.Lock()
	if c.err == nil && e != nil {
		c.err = e
	}
	if c.err == nil {
		c.err = ErrClosed
	}
	err := c.err
	c.state = StateClosed
	ops := make([]*Operation, 0, len(c.live))
	for op := range c.live {
		ops = append(ops, op)
	}
	clear(c.live)
	clear(c.ops)
	c.mu.Unlock()
	c.cancel()
	for _, op := range ops {
		op.finish(err)
	}
	if c.cfg.OnState != nil {
		c.cfg.OnState(StateChange{State: StateClosed, Cause: e})
	}
}

// runOnce makes one connection attempt and serves the connection until it
// ends. It returns how long the connection was acknowledged, whether results
// arrived on the socket that ended it (the upstream served operations with
// its credential), and why it ended. A credential rotation hands the
// operations to a successor socket without ending the connection.
func (c *Conn) runOnce(a Attempt) (time.Duration, bool, *Error) {
	start := time.Now()
	l, hs, e := c.connect(c.ctx, a)
	if e != nil {
		return 0, false, e
	}
	acked := time.Now()

	c.mu.Lock()
	if c.state == StateClosed || c.closing() {
		c.mu.Unlock()
		l.finish()
		return 0, false, &Error{Class: ClassTransient, Reason: "closed"}
	}
	c.link = l
	c.state = StateReady
	frames := make([][]byte, 0, len(c.live))
	for op := range c.live {
		frames = append(frames, c.assignLocked(op, l, false))
	}
	c.mu.Unlock()
	if c.cfg.OnState != nil {
		c.cfg.OnState(StateChange{State: StateReady, Subprotocol: l.proto.name, Attempt: a.Number, AckLatency: acked.Sub(start)})
	}
	if len(frames) > 0 {
		l.goSend(frames)
	}
	c.activate(l, hs)
	for {
		err := c.serve(l)
		next := l.successor()
		if next == nil {
			c.mu.Lock()
			if c.link == l {
				c.link = nil
				for id, op := range c.ops {
					op.id = ""
					delete(c.ops, id)
				}
			}
			c.mu.Unlock()
			l.finish()
			return time.Since(acked), l.results, l.outcome(err, true)
		}
		l.finish()
		l = next
	}
}
