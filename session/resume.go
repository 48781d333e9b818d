package session

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Gapless resubscription. An operation whose Request has a Resume follows a
// cursor: the session reads it from every result (Pointer.Find, on the raw
// bytes) and keeps the latest, and whenever it subscribes the operation
// again (after a reconnect, a credential refresh or a rotation) it sends the
// request with the cursor variable set to that cursor, so that the
// upstream replays what it produced meanwhile. The delivery of a result and
// the record of its cursor are one step under the Conn's lock with respect
// to the move of the operation to another socket: a result that arrives on
// the old socket after the move (possible only in a rotation, when both
// sockets are open) is dropped, since the new subscription, made from an
// earlier cursor, replays it. So the handler sees neither a gap nor a
// repeat.
//
// operation.go calls in at two places, Subscribe (resumeFrom) and
// assignLocked (subscribePayload, gapless), and dispatch.go at one, serve
// (deliver).

// Resume makes an operation gapless across resubscriptions (see the
// overview above).
type Resume struct {
	// Variable is the name of the operation's variable that carries the
	// cursor (without "$"). Its value in Request.Variables, unless absent
	// or null, is the cursor the operation starts from.
	Variable string
	// Pointer finds the cursor in each result.
	Pointer Pointer
}

// CursorHandler is a Handler that also wants each result's cursor. For an
// operation with a Resume, the session calls OnNextCursor instead of OnNext
// if the handler has it. cursor is the JSON value Resume.Pointer found in
// payload, a sub-slice of it; both are valid only during the call.
type CursorHandler interface {
	Handler
	OnNextCursor(payload, cursor []byte)
}

// CursorError ends an operation with a Resume whose pointer found no cursor
// in a result (nothing there, or null). That result is not delivered: its
// cursor is unknown, so neither a resubscription nor the caller could
// continue after it without a gap or a repeat. The upstream is told to stop
// the operation.
type CursorError struct {
	Pointer string
	// Result counts the operation's results from 1: this one was the Nth.
	Result int
	// Errors is the result's top-level "errors" member, when it has one
	// (a result that carries only errors holds no cursor), truncated.
	Errors json.RawMessage
}

func (e *CursorError) Error() string {
	msg := fmt.Sprintf("result %d of the operation has no cursor at %s", e.Result, e.Pointer)
	if len(e.Errors) > 0 {
		msg += " (it carries GraphQL errors: " + string(e.Errors) + ")"
	}
	return msg
}

// resumeState is the cursor of one operation. Set once when the operation
// is created; cursor and results are guarded by the Conn's mu.
type resumeState struct {
	req     Request
	results int
	cursor  []byte // the latest cursor; nil while none is known
}

var errorsPointer = MustParsePointer("/errors")

// resumeFrom sets op up to follow req.Resume, if any.
func (op *Operation) resumeFrom(req Request) error {
	r := req.Resume
	if r == nil {
		return nil
	}
	if r.Variable == "" || r.Pointer.IsZero() {
		return errors.New("session: resume needs a cursor variable and a pointer")
	}
	rs := &resumeState{req: req}
	if len(req.Variables) > 0 {
		var vars map[string]json.RawMessage
		if err := json.Unmarshal(req.Variables, &vars); err != nil {
			return fmt.Errorf("session: variables must be a JSON object to carry a cursor: %w", err)
		}
		if v, ok := vars[r.Variable]; ok && string(bytes.TrimSpace(v)) != "null" {
			rs.cursor = append([]byte(nil), v...)
		}
	}
	op.rs = rs
	return nil
}

// gapless reports whether subscribing op again now loses nothing: it
// follows a cursor and knows one. Called with the Conn's mu held.
func (op *Operation) gapless() bool { return op.rs != nil && op.rs.cursor != nil }

// subscribePayload is the payload that subscribes op now: the request as
// given, or with the cursor variable set to the latest cursor. Called with
// the Conn's mu held.
func (op *Operation) subscribePayload() []byte {
	rs := op.rs
	if rs == nil || rs.results == 0 {
		return op.payload // no result yet: the cursor is the request's own
	}
	vars := map[string]json.RawMessage{}
	if len(rs.req.Variables) > 0 {
		// resumeFrom checked that it decodes.
		_ = json.Unmarshal(rs.req.Variables, &vars)
	}
	vars[rs.req.Resume.Variable] = rs.cursor
	req := rs.req
	var err error
	if req.Variables, err = json.Marshal(vars); err != nil {
		// The cursor is a value Find delimited in a result the codec
		// validated; it always encodes.
		op.c.cfg.Logger.Error("session: cannot encode the cursor; resubscribing from the request's variables", "error", err)
		return op.payload
	}
	p, err := req.Payload()
	if err != nil {
		op.c.cfg.Logger.Error("session: cannot encode the request; resubscribing from the request's variables", "error", err)
		return op.payload
	}
	return p
}

// deliver hands a result that arrived on l for wire id to its operation.
func (c *Conn) deliver(l *link, id, payload []byte) {
	op := c.lookup(id)
	if op == nil {
		return
	}
	rs := op.rs
	if rs == nil {
		op.next(payload)
		return
	}
	cursor, found := rs.req.Resume.Pointer.Find(payload)
	c.mu.Lock()
	if op.id != string(id) {
		// Stopped, or moved to another socket from an earlier cursor
		// (a rotation) since the lookup: the new subscription replays
		// this result.
		c.mu.Unlock()
		return
	}
	rs.results++
	if !found {
		n := rs.results
		c.removeLocked(op)
		c.mu.Unlock()
		l.send(appendMessage(nil, l.proto.stop, string(id), nil))
		e := &CursorError{Pointer: rs.req.Resume.Pointer.String(), Result: n}
		if errs, ok := errorsPointer.Find(payload); ok {
			e.Errors = append(json.RawMessage(nil), truncate(errs, 200)...)
			if !json.Valid(e.Errors) {
				e.Errors = json.RawMessage(strconv.Quote(string(e.Errors)))
			}
		}
		op.finish(e)
		return
	}
	rs.cursor = append(rs.cursor[:0], cursor...)
	c.mu.Unlock()
	op.hmu.Lock()
	if !op.done {
		if ch, ok := op.h.(CursorHandler); ok {
			ch.OnNextCursor(payload, cursor)
		} else {
			op.h.OnNext(payload)
		}
	}
	op.hmu.Unlock()
}
