package session

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gqlbridge/gqlbridge/internal/redaction"
)

// Class is what an upstream outcome means for the operations on the
// connection (DESIGN.md §4).
type Class int

const (
	// ClassTransient: reconnect with backoff and resubscribe.
	ClassTransient Class = iota
	// ClassAuth: the credential was rejected; refresh it once and reconnect.
	ClassAuth
	// ClassMisconfig: the upstream will not work as configured; do not retry.
	ClassMisconfig
	// ClassBridgeFault: the upstream says the bridge broke the protocol.
	ClassBridgeFault
)

var classNames = [...]string{"transient", "auth", "misconfiguration", "bridge_fault"}

func (c Class) String() string {
	if c >= 0 && int(c) < len(classNames) {
		return classNames[c]
	}
	return "Class(" + strconv.Itoa(int(c)) + ")"
}

// ParseClass parses the config names of the classes: transient, auth,
// misconfiguration, bridge_fault.
func ParseClass(s string) (Class, error) {
	for i, n := range classNames {
		if s == n {
			return Class(i), nil
		}
	}
	return 0, fmt.Errorf("unknown outcome class %q (allowed: %s)", s, strings.Join(classNames[:], ", "))
}

// Close codes the session itself reports.
const (
	CodeNormal             = 1000
	CodeGoingAway          = 1001
	CodeAbnormal           = 1006 // the connection dropped without a close frame
	CodeAckTimeout         = 4504 // no connection_ack in time
	CodeBadRequest         = 4400 // the upstream sent a message we cannot accept
	CodeSubprotocolRefused = 4406
)

// Error describes why an upstream connection attempt or connection ended.
// It is what [Handler.OnDone] receives when the connection, not the
// operation, failed terminally.
type Error struct {
	Class Class
	// Code is the WebSocket close code (1006 when the connection dropped
	// without a close frame), or 0 when the socket never opened.
	Code int
	// Reason is the close reason or a description of the failure.
	Reason string
	// HTTPStatus is the status of a refused upgrade, or 0.
	HTTPStatus int
	// RetryAfter is the upstream's Retry-After, when it sent one.
	RetryAfter time.Duration
	// BeforeAck says the connection ended before connection_ack.
	BeforeAck bool
	// Exhausted says the retry budget was spent (the error is terminal
	// although its class is transient or auth).
	Exhausted bool
	// Attempts counts the connection attempts made since the last healthy
	// connection, when the error is terminal.
	Attempts int
	// Err is the underlying cause, if any.
	Err error

	final        bool // ends the connection whatever its class
	noCredential bool // Config.Handshake failed: no credential was sent
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("upstream ")
	switch {
	case e.HTTPStatus != 0:
		fmt.Fprintf(&b, "refused the upgrade with HTTP %d", e.HTTPStatus)
	case e.Code != 0:
		fmt.Fprintf(&b, "closed with %d", e.Code)
	default:
		b.WriteString("connection failed")
	}
	if e.Reason != "" {
		fmt.Fprintf(&b, " (%s)", e.Reason)
	}
	if e.BeforeAck && e.HTTPStatus == 0 && e.Code != 0 {
		b.WriteString(" before connection_ack")
	}
	fmt.Fprintf(&b, ": %s", e.Class)
	if e.Exhausted {
		fmt.Fprintf(&b, ", gave up after %d attempts", e.Attempts)
	}
	if e.Err != nil && !strings.Contains(e.Reason, e.Err.Error()) {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// redactedError is an error whose text quoted a URL, with the URL's
// credentials hidden; the original stays reachable for errors.Is and As.
type redactedError struct {
	msg string
	err error
}

func (r *redactedError) Error() string { return r.msg }
func (r *redactedError) Unwrap() error { return r.err }

// redacted returns err, or when its text quotes a URL, an error whose text
// hides that URL's user info and query values.
func redacted(err error) error {
	msg := err.Error()
	if safe := redaction.Text(msg); safe != msg {
		return &redactedError{msg: safe, err: err}
	}
	return err
}

// GraphQLError is an operation-level failure: the upstream sent "error" for
// the operation. Errors is a JSON array of GraphQL errors.
type GraphQLError struct {
	Errors []byte
}

func (e *GraphQLError) Error() string { return "upstream GraphQL error: " + string(e.Errors) }

var (
	// ErrClosed is the outcome of operations on a Conn closed by its owner.
	ErrClosed = errors.New("session: connection closed")
	// ErrCannotRefresh is returned (wrapped) by a Handshake asked for a
	// fresh credential it cannot produce, such as a caller's forwarded one.
	ErrCannotRefresh = errors.New("session: the credential cannot be refreshed")
	// ErrNoSubprotocol means the upstream agreed to none of the offered
	// subprotocols and no fallback is configured.
	ErrNoSubprotocol = errors.New("session: no subprotocol agreed")
)

// Policy maps close codes to classes. The zero Policy is DESIGN.md §4's
// default table.
type Policy struct {
	// Overrides replaces the class of individual close codes.
	Overrides map[int]Class
}

// Classify returns the class of a close code, given whether the connection
// had been acknowledged.
func (p Policy) Classify(code int, beforeAck bool) Class {
	if c, ok := p.Overrides[code]; ok {
		return c
	}
	return DefaultClass(code, beforeAck)
}

// DefaultClass is the default outcome table of DESIGN.md §4.
func DefaultClass(code int, beforeAck bool) Class {
	switch code {
	case 1001, 1005, 1006, 1012, 1013, 1014, 4408, 4500, 4504:
		return ClassTransient
	case 4401, 4403, 4499, 1008:
		return ClassAuth
	case 4406, 1002, 1015:
		return ClassMisconfig
	case 4400, 4409, 4429, 1003, 1007, 1009, 1010, 4004, 4005:
		return ClassBridgeFault
	}
	// 1000, 1011 and unnamed codes: a close before the ack is the server
	// refusing connection_init (gqlgen closes 1000, legacy servers 1011).
	if beforeAck {
		return ClassAuth
	}
	return ClassTransient
}

// classifyHTTP classifies a refused WebSocket upgrade.
func classifyHTTP(status int) Class {
	switch {
	case status == 401 || status == 403:
		return ClassAuth
	case status == 429 || status >= 500:
		return ClassTransient
	}
	return ClassMisconfig
}

// retryable reports whether the class allows reconnecting.
func (c Class) retryable() bool { return c == ClassTransient || c == ClassAuth }
