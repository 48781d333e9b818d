package bridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/parser"
	"google.golang.org/grpc/codes"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/session"
)

// Gapless resubscription (SubscribeRequest.resume). The session follows
// the cursor and resubscribes from it (session/resume.go); here the request
// is checked (resumeOf), each result's cursor reaches the caller in
// Next.cursor (fanout.OnNextCursor, then the subscriber's queue and the
// codec), and a result without a cursor ends each caller's stream with a
// status naming that caller's sequence (outcomeFor).
//
// Deduplication: the dedup key holds the variables, so the cursor the
// operation started from, and the resume spec. Once a result has moved the
// operation's cursor away from that start, a caller with the same key
// (same starting cursor) must not join it: it would miss the results in
// between. fanout.join refuses it (cursorState.moved), and the caller gets
// an operation of its own, which takes the key's place for later joiners.

// cursorState is what a fanout knows of its operation's cursor. Guarded by
// the fanout's mu.
type cursorState struct {
	initial []byte // the cursor the operation started from; nil for none
	// moved says a result carried a cursor other than initial: the
	// operation is past where a caller with the same request would start.
	moved bool
}

// followCursor records where the operation of req starts. Called before
// the fanout is shared.
func (f *fanout) followCursor(req session.Request) {
	if req.Resume == nil || len(req.Variables) == 0 {
		return
	}
	var vars map[string]json.RawMessage
	if json.Unmarshal(req.Variables, &vars) != nil {
		return // validate encoded them; the session refuses them anyway
	}
	if v, ok := vars[req.Resume.Variable]; ok && string(v) != "null" {
		f.cur.initial = v
	}
}

// OnNextCursor is OnNext for operations with a cursor (session.CursorHandler):
// result and cursor are copied together, once, into one result that every
// subscriber's queue shares and that counts both against the byte bounds.
func (f *fanout) OnNextCursor(payload, cursor []byte) {
	r := newResult(payload, cursor, f.pool.budget)
	f.mu.Lock()
	if !f.cur.moved && !bytes.Equal(r.cursor, f.cur.initial) {
		f.cur.moved = true
	}
	for _, s := range f.subs {
		s.pushNext(r)
	}
	f.mu.Unlock()
	r.unpin()
	if f.pool.in != nil {
		f.pool.in.Inc()
	}
}

// supersedeLocked moves f, a fanout that refused a joiner because its
// cursor moved on, to a key of its own: the key goes to the joiner's new
// operation, and f stays in the pool's map (for the status page's count of
// shared operations) until its last subscriber leaves. Called with the
// pool's mu held, which guards f.key.
func (p *upstreamPool) supersedeLocked(f *fanout) {
	f.mu.Lock()
	moved := f.cur.moved && !f.closed
	f.mu.Unlock()
	if !moved {
		return
	}
	delete(p.shared, f.key)
	f.key += fmt.Sprintf("\x00superseded %p", f)
	p.shared[f.key] = f
}

// outcomeFor is the outcome err means for subscriber s: a result without a
// cursor is named by the sequence it would have had in s's stream.
func outcomeFor(s *subscriber, err error) error {
	var ce *session.CursorError
	if !errors.As(err, &ce) {
		return err
	}
	s.mu.Lock()
	seq := s.seq + 1
	s.mu.Unlock()
	msg := fmt.Sprintf("the result with sequence %d has no cursor at resume.cursor_pointer %s (nothing there, or null)", seq, quoteCaller(ce.Pointer))
	if len(ce.Errors) > 0 {
		msg += "; it carries GraphQL errors " + string(ce.Errors)
	}
	msg += ": point cursor_pointer at a value every result holds. The stream ended before that result; subscribe again with the cursor of the last result you processed"
	return &RequestError{Code: codes.InvalidArgument, Reason: ReasonInvalidRequest, Msg: msg}
}

// maxPointerBytes bounds resume.cursor_pointer: every result is scanned for
// it, so its length bounds the work per result.
const maxPointerBytes = 1024

// resumeOf checks req.resume and returns what the session needs, or nil
// when the request has none.
func resumeOf(req *bridgev1.SubscribeRequest) (*session.Resume, error) {
	r := req.GetResume()
	if r == nil {
		return nil, nil
	}
	name := r.GetCursorVariable()
	switch {
	case name == "":
		return nil, invalid(`resume.cursor_variable is required: name the operation's variable that carries the cursor, for example "after"`)
	case strings.HasPrefix(name, "$"):
		return nil, invalid("resume.cursor_variable %s: give the name without the \"$\" (%s)", quoteCaller(name), quoteCaller(name[1:]))
	case !graphqlName(name) || len(name) > 256:
		return nil, invalid("resume.cursor_variable %s is not a GraphQL name (up to 256 letters, digits and _, not starting with a digit)", quoteCaller(name))
	}
	if n := len(r.GetCursorPointer()); n > maxPointerBytes {
		return nil, invalid("resume.cursor_pointer is %d bytes; the limit is %d", n, maxPointerBytes)
	}
	ptr, err := session.ParsePointer(r.GetCursorPointer())
	if err != nil {
		return nil, invalid("resume.cursor_pointer: %v", err)
	}
	doc, err := parser.ParseQuery(&ast.Source{Input: req.GetQuery()})
	if err != nil {
		return nil, invalid("resume: the query does not parse, so its variables cannot be checked: %s", quoteCaller(err.Error()))
	}
	var op *ast.OperationDefinition
	switch on := req.GetOperationName(); {
	case on != "":
		if op = doc.Operations.ForName(on); op == nil {
			return nil, invalid("resume: the document has no operation named %s (operation_name)", quoteCaller(on))
		}
	case len(doc.Operations) == 1:
		op = doc.Operations[0]
	default:
		return nil, invalid("resume: the document holds %d operations: set operation_name to the one to run", len(doc.Operations))
	}
	if op.VariableDefinitions.ForName(name) == nil {
		// Names from the caller's query: GraphQL names (the parser checked),
		// so printable ASCII; each cut to 64 bytes, and at most maxListed.
		const maxListed = 8
		declared := make([]string, 0, min(len(op.VariableDefinitions), maxListed))
		for _, v := range op.VariableDefinitions[:min(len(op.VariableDefinitions), maxListed)] {
			d := "$" + v.Variable
			if len(d) > 64 {
				d = d[:64] + "…"
			}
			declared = append(declared, d)
		}
		if more := len(op.VariableDefinitions) - maxListed; more > 0 {
			declared = append(declared, fmt.Sprintf("and %d more", more))
		}
		have := "declares no variables"
		if len(declared) > 0 {
			have = "declares " + strings.Join(declared, ", ")
		}
		example := name
		if len(example) > 64 {
			example = "after"
		}
		return nil, invalid("resume.cursor_variable %s is not a variable of the operation, which %s: declare it and pass it to the field that takes the cursor, as in `subscription ($%s: Int) { events(after: $%s) { id } }`",
			quoteCaller(name), have, example, example)
	}
	return &session.Resume{Variable: name, Pointer: ptr}, nil
}

func graphqlName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9' {
			continue
		}
		return false
	}
	return s != ""
}

// resumeKey is the part of the dedup key that the resume spec makes: two
// requests that differ only in it must not share an operation.
func resumeKey(r *session.Resume) string {
	if r == nil {
		return ""
	}
	return r.Variable + "\x00" + r.Pointer.String()
}
