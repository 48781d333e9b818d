package session

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/gqlbridge/gqlbridge/internal/redaction"
)

// Config describes one upstream connection. Zero durations take the
// defaults documented on each field.
type Config struct {
	// URL is the upstream's ws:// or wss:// endpoint.
	URL string
	// Subprotocols are offered in this order. Default: graphql-transport-ws,
	// graphql-ws.
	Subprotocols []string
	// Fallback is the subprotocol to speak when the upstream agrees to none
	// (some servers omit the header). Empty: fail with a misconfiguration
	// error naming what was offered.
	Fallback string
	// Handshake is called on every connection attempt for the upgrade
	// headers and the connection_init payload: the place to fetch a
	// credential, fresh when Attempt.Refresh is set. Optional.
	Handshake func(ctx context.Context, a Attempt) (Handshake, error)
	// HTTPClient performs the upgrade (TLS settings live in its transport).
	// Default http.DefaultClient.
	HTTPClient *http.Client
	// DialTimeout bounds one dial including the upgrade. Default 10s.
	DialTimeout time.Duration
	// AckTimeout bounds the wait for connection_ack. Default 10s.
	AckTimeout time.Duration
	// KeepAlive is how often the session probes the upstream (ping message
	// on graphql-transport-ws, WebSocket ping on legacy), whatever arrives
	// meanwhile: results prove only the inbound half. Default 15s; negative
	// disables.
	KeepAlive time.Duration
	// KeepAliveTimeout is how long a probe may go unanswered before the
	// connection counts as dead. Default 10s.
	KeepAliveTimeout time.Duration
	// RotateBefore is how long before a credential's known expiry
	// (Handshake.Expiry) the connection moves to a fresh credential,
	// make-before-break. At most half the credential's remaining lifetime is
	// used. Default 1m.
	RotateBefore time.Duration
	// WriteTimeout bounds one frame write, and after a failed write how
	// long the session waits for the upstream's close frame (which decides
	// the outcome) before it closes the socket itself. Default 10s.
	WriteTimeout time.Duration
	// MaxMessageBytes limits one inbound message. Default 16 MiB.
	MaxMessageBytes int64
	// Backoff is the retry budget.
	Backoff Backoff
	// Policy overrides the class of close codes.
	Policy Policy
	// OnState observes state changes of the connection, for logs and
	// metrics. It is called from the connection's goroutine and must not
	// block or call into the Conn.
	OnState func(StateChange)
	// Logger receives nothing per event; only what the connection could not
	// report otherwise. Default slog.Default().
	Logger *slog.Logger
	// Rand returns uniform values in [0,1) for jitter. Default math/rand/v2.
	Rand func() float64
}

// Handshake is what one connection attempt sends.
type Handshake struct {
	// Header is added to the upgrade request.
	Header http.Header
	// InitPayload is the connection_init payload, a JSON object; nil sends
	// none.
	InitPayload json.RawMessage
	// Expiry is when the credential expires, if known: the connection
	// rotates to a fresh one before then (see Config.RotateBefore).
	Expiry time.Time
}

// Attempt tells [Config.Handshake] about the attempt it prepares.
type Attempt struct {
	// Number counts attempts since the connection was last healthy, from 1.
	Number int
	// Refresh is set when the upstream rejected the previous credential:
	// return a fresh one, or an error wrapping ErrCannotRefresh when none
	// can be had (the rejection then ends the connection).
	Refresh bool
	// Expiring is set when the credential is about to expire and the
	// connection is being rotated: return a fresh one.
	Expiring bool
	// Cause is why the previous connection ended; nil on the first attempt.
	Cause *Error
}

// State is the state of a Conn.
type State int

// States of a Conn.
const (
	StateConnecting State = iota // dialing or waiting for connection_ack
	StateReady                   // acknowledged; operations run
	StateBackoff                 // waiting before the next attempt
	StateClosed                  // terminal
)

func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateReady:
		return "ready"
	case StateBackoff:
		return "backoff"
	case StateClosed:
		return "closed"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// StateChange is reported to [Config.OnState].
type StateChange struct {
	State       State
	Subprotocol string        // with StateReady
	Attempt     int           // attempts since last healthy
	Cause       *Error        // with StateBackoff and StateClosed: why
	Delay       time.Duration // with StateBackoff
	AckLatency  time.Duration // with StateReady: dial start to connection_ack
	Rotated     bool          // with StateReady: moved to a fresh credential, make-before-break
}

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

// Event is a lifecycle change of one operation.
type Event struct {
	Kind    EventKind
	Code    int    // with Reconnecting: the close code, 0 when no socket opened
	Reason  string // with Reconnecting: the close reason or failure
	Attempt int    // with Reconnecting and Resubscribed
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

// Conn is one logical upstream connection: it dials, and redials after
// failures the policy calls retryable, until it is closed or fails
// terminally. Operations outlive the sockets beneath them.
type Conn struct {
	cfg     Config
	ctx     context.Context // cancelled by Close: aborts dials and waits
	cancel  context.CancelFunc
	done    chan struct{}
	retrier *retrier
	nudge   chan struct{} // RetryNow; capacity 1

	mu        sync.Mutex
	state     State
	link      *link                 // the acknowledged socket, nil otherwise
	ops       map[string]*Operation // operations subscribed on link, by wire id
	live      map[*Operation]struct{}
	nextID    uint64
	err       error // terminal outcome, once closed
	closeCode int   // what Close sends upstream
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

// Dial validates cfg and starts connecting in the background. It never
// blocks on the network: operations may be added at once and start when
// the connection is acknowledged.
func Dial(cfg Config) (*Conn, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	cfg.HTTPClient = bufferedClient(cfg.HTTPClient)
	ctx, cancel := context.WithCancel(context.Background())
	c := &Conn{
		cfg:       cfg,
		ctx:       ctx,
		cancel:    cancel,
		done:      make(chan struct{}),
		nudge:     make(chan struct{}, 1),
		retrier:   newRetrier(cfg.Backoff, cfg.Rand),
		ops:       make(map[string]*Operation),
		live:      make(map[*Operation]struct{}),
		closeCode: CodeNormal,
	}
	go c.run()
	return c, nil
}

func (cfg *Config) normalize() error {
	u, err := CheckURL(cfg.URL)
	if err != nil {
		return fmt.Errorf("session: url %s %w", redaction.URL(cfg.URL), err)
	}
	cfg.URL = u
	if len(cfg.Subprotocols) == 0 {
		cfg.Subprotocols = []string{TransportWS, LegacyWS}
	}
	for _, p := range cfg.Subprotocols {
		if protocolByName(p) == nil {
			return fmt.Errorf("session: unknown subprotocol %q (allowed: %s, %s)", p, TransportWS, LegacyWS)
		}
	}
	if cfg.Fallback != "" && protocolByName(cfg.Fallback) == nil {
		return fmt.Errorf("session: unknown fallback subprotocol %q (allowed: %s, %s)", cfg.Fallback, TransportWS, LegacyWS)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.DialTimeout, DefaultDialTimeout)
	def(&cfg.AckTimeout, DefaultAckTimeout)
	def(&cfg.KeepAlive, DefaultKeepAlive)
	def(&cfg.KeepAliveTimeout, DefaultKeepAliveTimeout)
	def(&cfg.WriteTimeout, DefaultWriteTimeout)
	def(&cfg.RotateBefore, DefaultRotateBefore)
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	return nil
}

// Done is closed when the Conn has ended and every operation had its outcome.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns the terminal outcome once Done is closed.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// State returns the current state.
func (c *Conn) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Len returns the number of live operations.
func (c *Conn) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.live)
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
			// (l.attempt also counts the connection that was lost).
			ev = Event{Kind: Resubscribed, Attempt: l.attempt - 1}
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

// Close ends the connection: the upstream socket closes with code (1000 or
// 1001 when the bridge shuts down) and every live operation ends with
// outcome (ErrClosed when nil). It waits for the connection's goroutines.
func (c *Conn) Close(code int, outcome error) {
	if outcome == nil {
		outcome = ErrClosed
	}
	c.mu.Lock()
	if c.state != StateClosed && c.err == nil {
		c.err = outcome
		c.closeCode = code
	}
	c.mu.Unlock()
	c.cancel() // every link watches the context and closes with closeCode
	<-c.done
}

// closing reports whether Close was called.
func (c *Conn) closing() bool { return c.ctx.Err() != nil }

func (c *Conn) setState(sc StateChange) {
	c.mu.Lock()
	c.state = sc.State
	c.mu.Unlock()
	if c.cfg.OnState != nil {
		c.cfg.OnState(sc)
	}
}

// run owns the connection: one attempt after another until the outcome is
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
		c.setState(StateChange{State: StateConnecting, Attempt: c.retrier.attempt + 1})
		uptime, served, e := c.attempt(Attempt{Number: c.retrier.attempt + 1, Refresh: refresh, Cause: cause})
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
			op.event(Event{Kind: Reconnecting, Code: e.Code, Reason: e.Reason, Attempt: c.retrier.attempt})
		}
		c.mu.Unlock()
		if c.cfg.OnState != nil {
			c.cfg.OnState(StateChange{State: StateBackoff, Attempt: c.retrier.attempt, Cause: e, Delay: delay})
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

// attempt makes one connection and serves it until it ends. It returns how
// long the connection was acknowledged, whether results arrived on the
// socket that ended it (the upstream served operations with its
// credential), and why it ended. A credential rotation hands the operations
// to a successor socket without ending the attempt.
func (c *Conn) attempt(a Attempt) (time.Duration, bool, *Error) {
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
	l.attempt = a.Number
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

// dial opens the socket and settles the subprotocol.
func (c *Conn) dial(parent context.Context, hs Handshake) (*link, *Error) {
	ctx, cancel := context.WithTimeout(parent, c.cfg.DialTimeout)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, c.cfg.URL, &websocket.DialOptions{
		HTTPClient:      c.cfg.HTTPClient,
		HTTPHeader:      hs.Header,
		Subprotocols:    c.cfg.Subprotocols,
		CompressionMode: websocket.CompressionDisabled,
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
		e.Code = 1015
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
			if op := c.lookup(env.id); op != nil {
				op.next(env.payload)
			}
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
		delete(c.ops, op.id)
		delete(c.live, op)
		op.id = ""
	}
	c.mu.Unlock()
	return op
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// readBuf is the reader's frame buffer; reused across frames.
type readBuf struct{ b []byte }

func (r *readBuf) readFrom(rd io.Reader) error {
	r.b = r.b[:0]
	for {
		if len(r.b) == cap(r.b) {
			r.b = append(r.b, 0)[:len(r.b)]
		}
		n, err := rd.Read(r.b[len(r.b):cap(r.b)])
		r.b = r.b[:len(r.b)+n]
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
