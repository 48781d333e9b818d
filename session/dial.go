package session

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/gqlbridge/gqlbridge/session/internal/wsconn"
)

// connect dials and completes the handshake: one socket, acknowledged.
func (c *Conn) connect(ctx context.Context, a Attempt) (*link, Handshake, *Error) {
	var hs Handshake
	if c.cfg.Handshake != nil {
		var err error
		hs, err = c.cfg.Handshake(ctx, a)
		if err != nil {
			err = redacted(err) // a token endpoint's URL may carry a secret
			e := &Error{Class: ClassTransient, Reason: "credential: " + err.Error(), BeforeAck: true, Err: err, noCredential: true}
			if errors.Is(err, ErrCannotRefresh) && a.Cause != nil {
				// The rejected credential cannot be replaced: the
				// rejection is the outcome.
				e = a.Cause
				e.final = true
			}
			return nil, hs, e
		}
	}
	l, e := c.dial(ctx, hs)
	if e != nil {
		return nil, hs, e
	}
	l.number = a.Number
	// A socket still handshaking is closed when ctx ends (Close, or the
	// retirement of the socket a rotation started from).
	stop := context.AfterFunc(ctx, func() { _ = l.ws.CloseNow() })
	defer stop()
	ackTimer := time.AfterFunc(c.cfg.AckTimeout, func() {
		l.fail(&Error{Class: ClassTransient, Code: CodeAckTimeout, Reason: "connection acknowledgement timeout", BeforeAck: true},
			CodeAckTimeout, "Connection acknowledgement timeout")
	})
	defer ackTimer.Stop()
	l.send(appendMessage(nil, msgConnectionInit, "", hs.InitPayload))
	// Whether or not the write failed, the reader tells how the socket
	// ended (see writeFailed); an ack read after a failed write does not
	// save the socket.
	err := c.awaitAck(l)
	if err == nil && l.failed() {
		err = l.drain()
	}
	if err != nil {
		l.finish()
		return nil, hs, l.outcome(err, false)
	}
	return l, hs, nil
}

// dial opens the socket and settles the subprotocol.
func (c *Conn) dial(parent context.Context, hs Handshake) (*link, *Error) {
	ctx, cancel := context.WithTimeout(parent, c.cfg.DialTimeout)
	defer cancel()
	ws, resp, err := wsconn.Dial(ctx, c.cfg.URL, wsconn.DialOptions{
		HTTPClient:   c.cfg.HTTPClient,
		Header:       hs.Header,
		Subprotocols: c.cfg.Subprotocols,
	})
	if err != nil {
		return nil, c.dialError(resp, err)
	}
	ws.SetReadLimit(c.cfg.MaxMessageBytes)
	agreed := ws.Subprotocol()
	name := agreed
	if name == "" {
		name = c.cfg.Fallback
	}
	p := protocolByName(name)
	if p == nil || !slices.Contains(c.cfg.Subprotocols, name) && name != c.cfg.Fallback {
		reason := fmt.Sprintf("offered %s, upstream agreed to %q", strings.Join(c.cfg.Subprotocols, ", "), agreed)
		if agreed == "" {
			reason = fmt.Sprintf("offered %s, upstream agreed to none and no fallback is configured", strings.Join(c.cfg.Subprotocols, ", "))
		}
		_ = ws.Close(websocket.StatusProtocolError, "no subprotocol agreed")
		return nil, &Error{Class: ClassMisconfig, Code: CodeSubprotocolRefused, Reason: reason, BeforeAck: true, Err: ErrNoSubprotocol}
	}
	return newLink(c, ws, p), nil
}

func (c *Conn) dialError(resp *http.Response, err error) *Error {
	// net/http and the WebSocket library quote the URL in their errors.
	err = redacted(err)
	e := &Error{Class: ClassTransient, BeforeAck: true, Err: err, Reason: err.Error()}
	if resp != nil {
		if resp.StatusCode == http.StatusSwitchingProtocols {
			// The upgrade succeeded but the response broke the rules, most
			// often by echoing a subprotocol that was never offered.
			e.Class = ClassMisconfig
			e.Code = CodeSubprotocolRefused
			e.Reason = fmt.Sprintf("offered %s, upstream answered %q: %v",
				strings.Join(c.cfg.Subprotocols, ", "), resp.Header.Get("Sec-WebSocket-Protocol"), err)
			return e
		}
		e.HTTPStatus = resp.StatusCode
		e.Class = classifyHTTP(resp.StatusCode)
		e.Reason = resp.Status
		if s := resp.Header.Get("Retry-After"); s != "" {
			if secs, perr := strconv.Atoi(s); perr == nil && secs > 0 {
				e.RetryAfter = time.Duration(secs) * time.Second
			} else if t, perr := http.ParseTime(s); perr == nil {
				e.RetryAfter = time.Until(t)
			}
		}
		return e
	}
	var cve *tls.CertificateVerificationError
	var uae x509.UnknownAuthorityError
	var hne x509.HostnameError
	if errors.As(err, &cve) || errors.As(err, &uae) || errors.As(err, &hne) {
		e.Class = ClassMisconfig
		e.Code = CodeTLSHandshake
	}
	return e
}

// awaitAck reads until connection_ack. Keep-alives and pings before the ack
// are accepted; anything else is a protocol violation.
func (c *Conn) awaitAck(l *link) error {
	for {
		env, err := l.read()
		if err != nil {
			return err
		}
		switch env.typ {
		case msgConnectionAck:
			return nil
		case msgKeepAlive, msgPong:
		case msgPing:
			l.send(appendMessage(nil, msgPong, "", nil))
		case msgConnectionError:
			reason := "connection_error"
			if env.payload != nil {
				reason += ": " + string(truncate(env.payload, 200))
			}
			l.fail(&Error{Class: ClassAuth, Reason: reason, BeforeAck: true}, CodeNormal, "")
		default:
			l.violation(env, true)
		}
	}
}
