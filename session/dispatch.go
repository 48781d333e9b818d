package session

import "github.com/gqlbridge/gqlbridge/internal/redaction"

// serve dispatches messages until the socket ends.
func (c *Conn) serve(l *link) error {
	for {
		env, err := l.read()
		if err != nil {
			return err
		}
		switch env.typ {
		case l.proto.next:
			if env.payload == nil {
				// A result without an ExecutionResult: the upstream is broken.
				l.violation(env, false)
				return l.drain()
			}
			l.results = true
			c.deliver(l, env.id, env.payload) // resume.go
		case msgComplete:
			if c.closing() {
				// The owner closed the Conn: its operations end with the
				// Close's outcome (terminate), not with the upstream's
				// answer to the teardown (gqlgen completes every legacy
				// operation on connection_terminate).
				continue
			}
			if op := c.remove(env.id); op != nil {
				op.finish(nil)
			}
		case msgError:
			if c.closing() {
				continue
			}
			if op := c.remove(env.id); op != nil {
				op.finish(&GraphQLError{Errors: l.proto.graphqlErrors(env.payload)})
			}
		case msgPing:
			if l.proto.pingFrames {
				l.send(appendMessage(nil, msgPong, "", nil))
			}
		case msgPong:
			l.sawPong(env.payload)
		case msgKeepAlive, msgConnectionAck:
			// A repeated ack is harmless; ka needs no answer (the legacy
			// keep-alive pings at the WebSocket level).
		case msgConnectionError:
			// Legacy servers also send it for an unparsable message, without
			// closing: nothing to do for the operations.
			c.cfg.Logger.Warn("upstream sent connection_error after ack", "url", redaction.URL(c.cfg.URL), "payload", string(truncate(env.payload, 200)))
		default:
			l.violation(env, false)
			return l.drain()
		}
	}
}

func (c *Conn) lookup(id []byte) *Operation {
	c.mu.Lock()
	op := c.ops[string(id)]
	c.mu.Unlock()
	return op
}

func (c *Conn) remove(id []byte) *Operation {
	c.mu.Lock()
	op := c.ops[string(id)]
	if op != nil {
		c.removeLocked(op)
	}
	c.mu.Unlock()
	return op
}

// removeLocked takes op off the connection: it is no longer live and its
// wire id is free. c.mu is held.
func (c *Conn) removeLocked(op *Operation) {
	delete(c.ops, op.id)
	delete(c.live, op)
	op.id = ""
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
