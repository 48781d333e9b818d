package session

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gqlbridge/gqlbridge/internal/redaction"
)

// Error describes why an upstream connection attempt or connection ended.
// It is what [Handler.OnDone] receives when the connection, not the
// operation, failed terminally.
type Error struct {
	Class Class
	// Code is the WebSocket close code (CodeAbnormal when the connection
	// dropped without a close frame), or 0 when the socket never opened.
	Code CloseCode
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
