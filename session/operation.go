package session

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
)

// Request is the GraphQL operation to run.
type Request struct {
	Query         string
	Variables     json.RawMessage // a JSON object, or nil
	OperationName string
	Extensions    json.RawMessage // a JSON object, or nil
}

// Payload returns the subscribe/start payload for r.
func (r Request) Payload() ([]byte, error) {
	return json.Marshal(struct {
		Query         string          `json:"query"`
		Variables     json.RawMessage `json:"variables,omitempty"`
		OperationName string          `json:"operationName,omitempty"`
		Extensions    json.RawMessage `json:"extensions,omitempty"`
	}{r.Query, r.Variables, r.OperationName, r.Extensions})
}

// EventKind says what happened to an operation.
type EventKind int

// Kinds of [Event].
const (
	Subscribed   EventKind = iota + 1 // started on the upstream
	Reconnecting                      // its connection was lost; results may be missed
	Resubscribed                      // started again on a new connection
)

func (k EventKind) String() string {
	switch k {
	case Subscribed:
		return "subscribed"
	case Reconnecting:
		return "reconnecting"
	case Resubscribed:
		return "resubscribed"
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// Event is a lifecycle change of one operation.
type Event struct {
	Kind    EventKind
	Code    CloseCode // with Reconnecting: the close code, 0 when no socket opened
	Reason  string    // with Reconnecting: the close reason or failure
	Attempt int       // with Reconnecting and Resubscribed
}

// Handler receives what happens to one operation. Calls for one operation
// never overlap. Methods must not block (the upstream reader is waiting) and
// must not call into the Conn. payload is valid only during the call.
type Handler interface {
	OnNext(payload []byte)
	OnEvent(Event)
	// OnDone reports the outcome, exactly once unless the owner called
	// Stop first: nil when the upstream completed the operation, a
	// *GraphQLError when it failed it, or the connection's terminal error
	// (*Error, ErrClosed).
	OnDone(err error)
}

// Operation is one GraphQL operation on a Conn.
type Operation struct {
	c       *Conn
	payload []byte
	h       Handler

	// Guarded by c.mu.
	id         string // wire id on the current socket, "" when not subscribed
	subscribed bool   // Subscribed was reported

	hmu  sync.Mutex // serialises handler calls
	done bool       // guarded by hmu: no more handler calls
}

// Subscribe starts an operation. It does not wait for the network: the
// handler hears Subscribed when the operation was sent upstream.
func (c *Conn) Subscribe(req Request, h Handler) (*Operation, error) {
	payload, err := req.Payload()
	if err != nil {
		return nil, fmt.Errorf("session: encode request: %w", err)
	}
	op := &Operation{c: c, payload: payload, h: h}
	c.mu.Lock()
	if c.state == StateClosed {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.live[op] = struct{}{}
	l := c.link
	var frame []byte
	if l != nil {
		frame = c.assignLocked(op, l, false)
	}
	c.mu.Unlock()
	if frame != nil {
		l.send(frame)
	}
	return op, nil
}

// assignLocked gives op a fresh wire id on l, reports Subscribed or
// Resubscribed, and returns the frame that starts it.
// A silent move (credential rotation) reports nothing: for the operation,
// nothing happened.
func (c *Conn) assignLocked(op *Operation, l *link, silent bool) []byte {
	c.nextID++
	op.id = strconv.FormatUint(c.nextID, 10)
	c.ops[op.id] = op
	if !silent || !op.subscribed {
		ev := Event{Kind: Subscribed}
		if op.subscribed {
			// The reconnect that succeeded, counted like Reconnecting's
			// (l.number also counts the connection that was lost).
			ev = Event{Kind: Resubscribed, Attempt: l.number - 1}
		}
		op.subscribed = true
		op.event(ev)
	}
	return appendMessage(nil, l.proto.subscribe, op.id, op.payload)
}

// Stop ends the operation from the owner's side: the upstream is told at
// once (complete/stop) if the operation is running. After Stop returns the
// handler is not called again.
func (op *Operation) Stop() {
	c := op.c
	c.mu.Lock()
	_, live := c.live[op]
	delete(c.live, op)
	id, l := op.id, c.link
	if id != "" {
		delete(c.ops, id)
		op.id = ""
	}
	c.mu.Unlock()
	op.hmu.Lock()
	op.done = true
	op.hmu.Unlock()
	if live && id != "" && l != nil {
		l.send(appendMessage(nil, l.proto.stop, id, nil))
	}
}

func (op *Operation) event(ev Event) {
	op.hmu.Lock()
	if !op.done {
		op.h.OnEvent(ev)
	}
	op.hmu.Unlock()
}

func (op *Operation) next(payload []byte) {
	op.hmu.Lock()
	if !op.done {
		op.h.OnNext(payload)
	}
	op.hmu.Unlock()
}

func (op *Operation) finish(err error) {
	op.hmu.Lock()
	if !op.done {
		op.done = true
		op.h.OnDone(err)
	}
	op.hmu.Unlock()
}
