package session

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

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
	Handshake HandshakeFunc
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

// HandshakeFunc prepares a connection attempt: it returns the upgrade
// headers and the connection_init payload, with a credential fresh when
// a.Refresh or a.Expiring is set.
type HandshakeFunc func(ctx context.Context, a Attempt) (Handshake, error)

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

// MarshalText writes the state's name, so a snapshot in JSON reads
// "ready", not 1.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a state's name.
func (s *State) UnmarshalText(b []byte) error {
	for st := StateConnecting; st <= StateClosed; st++ {
		if st.String() == string(b) {
			*s = st
			return nil
		}
	}
	return fmt.Errorf("session: unknown state %q", b)
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
	err       error     // terminal outcome, once closed
	closeCode CloseCode // what Close sends upstream
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

// Close ends the connection: the upstream socket closes with code
// (CodeNormal, or CodeGoingAway when the bridge shuts down) and every live
// operation ends with outcome (ErrClosed when nil). It waits for the
// connection's goroutines.
func (c *Conn) Close(code CloseCode, outcome error) {
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
