package demoupstream

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/coder/websocket"

	"github.com/gqlbridge/gqlbridge/internal/demoupstream/graph"
)

// Close codes and reasons the server uses on its websockets. They follow the
// graphql-transport-ws protocol's conventions (4403 Forbidden for a rejected
// connection_init); the server uses them for the legacy graphql-ws
// subprotocol too.
const (
	// CloseCodeForbidden closes a connection whose connection_init did not
	// carry the expected token (Options.Token). The close reason is
	// "Forbidden".
	CloseCodeForbidden = 4403
	// CloseCodeTokenExpired closes a connection whose token expired
	// (Options.TokenTTL). The close reason is "Unauthorized: token expired".
	CloseCodeTokenExpired = 4401

	closeReasonForbidden    = "Forbidden"
	closeReasonTokenExpired = "Unauthorized: token expired"
	closeReasonShutdown     = "server shutting down"

	// initRejectedMessage is the InitFunc error, which gqlgen sends to
	// graphql-ws clients in a connection_error message.
	initRejectedMessage = "unauthorized: missing or invalid bearer token"
)

const (
	defaultAddr      = "127.0.0.1:0"
	defaultKeepAlive = 10 * time.Second
	graphqlPath      = "/graphql"

	// closeGrace is how long Close lets websockets finish their close
	// handshake, and HTTP queries their responses, before cutting them.
	closeGrace = 2 * time.Second
)

// Options configure a Server. The zero value is a server on a free port of
// 127.0.0.1 without authentication.
type Options struct {
	// Addr is the address to listen on; default "127.0.0.1:0".
	Addr string
	// Token, when not empty, must be sent in the connection_init payload as
	// "Authorization": "Bearer <Token>" (the key may also be lower-case
	// "authorization"); any other connection_init is rejected and the
	// connection closed with CloseCodeForbidden. HTTP POST is not checked.
	Token string
	// TokenTTL, when > 0, makes the server close every accepted websocket
	// with CloseCodeTokenExpired this long after its connection_init,
	// simulating the expiry of the token it was opened with.
	TokenTTL time.Duration
	// KeepAlive is the interval of gqlgen's websocket keep-alives: "ka"
	// messages on graphql-ws, "ping" messages on graphql-transport-ws (a
	// missing "pong" is tolerated). Default 10s; negative disables them.
	KeepAlive time.Duration
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// EventEpoch and EventInterval define the event log of the events and
	// eventBatches subscriptions: the event with id k is appended at
	// EventEpoch + k·EventInterval. Default: the server's start, and 100ms.
	// A test that restarts the upstream gives both servers the same epoch,
	// and the log goes on as if stored outside the server, growing while
	// the server is down.
	EventEpoch    time.Time
	EventInterval time.Duration
}

// Stats is what a Server saw, for tests to assert on.
type Stats struct {
	ActiveSubscriptions  int    // subscription resolvers currently running
	SubscriptionsStarted uint64 // subscription resolvers called
	SubscriptionsEnded   uint64 // resolver saw its context end or finished
	Connections          int    // websocket connections currently open
	InitsRejected        uint64 // connection_init messages rejected for their token
}

// Server is a running demo upstream. It serves GraphQL on /graphql: queries
// over HTTP POST (and GET), everything over WebSocket.
type Server struct {
	opts     Options
	log      *slog.Logger
	http     *http.Server
	addr     string
	stopBase context.CancelFunc // cancels the context of every request
	events   eventLog

	// wg counts everything the server runs: the accept loop, websocket
	// handlers, open websockets, close handshakes, token expiry timers and
	// subscription resolvers. Every Add happens while the caller holds another
	// count (or, for handlers, before http.Server.Shutdown returns, or, for
	// resolvers, under mu while closing is false), so none races with the
	// Wait in Close.
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	mu      sync.Mutex
	closing bool
	conns   map[*wsConn]struct{}
	stats   Stats
	changed chan struct{} // closed and replaced whenever stats change
}

// Start starts a Server; it is listening when Start returns.
func Start(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = defaultAddr
	}
	if opts.KeepAlive == 0 {
		opts.KeepAlive = defaultKeepAlive
	}
	if opts.KeepAlive < 0 {
		opts.KeepAlive = 0 // gqlgen's "disabled"
	}
	if opts.EventEpoch.IsZero() {
		opts.EventEpoch = time.Now()
	}
	if opts.EventInterval <= 0 {
		opts.EventInterval = defaultEventInterval
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("demoupstream: listen: %w", err)
	}
	base, stopBase := context.WithCancel(context.Background())
	s := &Server{
		opts:     opts,
		log:      log,
		addr:     ln.Addr().String(),
		stopBase: stopBase,
		events:   eventLog{epoch: opts.EventEpoch, interval: opts.EventInterval},
		conns:    map[*wsConn]struct{}{},
		changed:  make(chan struct{}),
	}

	mux := http.NewServeMux()
	mux.Handle(graphqlPath, s.trackRequests(s.graphqlHandler()))
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	s.wg.Go(func() {
		if err := s.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("demo upstream stopped serving", "err", err)
		}
	})
	s.log.Info("demo upstream listening", "url", s.URL(), "http", s.HTTPURL(),
		"auth", opts.Token != "", "token_ttl", opts.TokenTTL)
	return s, nil
}

func (s *Server) graphqlHandler() http.Handler {
	srv := handler.New(graph.NewExecutableSchema(graph.Config{Resolvers: resolver{s: s}}))
	srv.AddTransport(transport.Websocket{
		Implementation:        wsImplementation{s: s},
		InitFunc:              s.initFunc,
		KeepAlivePingInterval: s.opts.KeepAlive, // graphql-ws only
		PingPongInterval:      s.opts.KeepAlive, // graphql-transport-ws only
		// Without this, gqlgen cuts a graphql-transport-ws connection that
		// misses a pong for two intervals; keep-alives here are for realism,
		// not for policing clients.
		MissingPongOk: true,
		ErrorFunc: func(_ context.Context, err error) {
			s.log.Debug("websocket error", "err", err)
		},
	})
	srv.AddTransport(transport.Options{})
	srv.AddTransport(transport.GET{})
	srv.AddTransport(transport.POST{})
	srv.Use(extension.Introspection{})
	return srv
}

// connSlot lets the pieces of one websocket request find each other: the
// websocket implementation fills in conn, gqlgen's InitFunc (which sees the
// request's context) reads it and records a successful init. All run on the
// request's goroutine.
type connSlot struct {
	conn   *wsConn
	initOK bool
}

type connSlotKey struct{}

func slotFromContext(ctx context.Context) *connSlot {
	slot, _ := ctx.Value(connSlotKey{}).(*connSlot)
	return slot
}

// trackRequests counts requests in s.wg (websocket handlers outlive
// http.Server.Shutdown, which does not wait for hijacked connections) and
// gives each a connSlot.
func (s *Server) trackRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.wg.Add(1)
		defer s.wg.Done()
		slot := &connSlot{}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), connSlotKey{}, slot)))
		if slot.conn != nil && !slot.initOK {
			// gqlgen returns without closing the socket when the
			// connection_init payload is not a JSON object; every other
			// failed init has already started a close, making this a no-op.
			_ = slot.conn.WriteClose(transport.WebsocketCloseProtocolError, "invalid connection_init payload")
		}
	})
}

// initFunc checks the connection_init payload. On rejection gqlgen writes
// the error as a connection_error message (graphql-ws only; it has no such
// message on graphql-transport-ws) and then closes the socket with the code
// and reason found in the returned context.
func (s *Server) initFunc(ctx context.Context, payload transport.InitPayload) (context.Context, *transport.InitPayload, error) {
	if s.opts.Token != "" {
		// Authorization() reads "Authorization" or "authorization".
		got, want := payload.Authorization(), "Bearer "+s.opts.Token
		if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			s.update(func(st *Stats) { st.InitsRejected++ })
			s.log.Info("connection_init rejected", "code", CloseCodeForbidden)
			ctx = transport.AppendCloseReason(ctx, closeReasonForbidden)
			ctx = transport.WithWebsocketCloseCode(ctx, CloseCodeForbidden)
			return ctx, nil, errors.New(initRejectedMessage)
		}
	}
	if slot := slotFromContext(ctx); slot != nil {
		slot.initOK = true
		// gqlgen would also end the connection when the returned context
		// ends, but always with 1000 "terminated" (plus, on graphql-ws, a
		// connection_error carrying the context's close reason), so expiry
		// goes through the websocket implementation to send its own code.
		if s.opts.TokenTTL > 0 && slot.conn != nil {
			slot.conn.expireAfter(s.opts.TokenTTL)
		}
	}
	return ctx, nil, nil
}

func (s *Server) addConn(c *wsConn) {
	s.wg.Add(1) // released by removeConn
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.stats.Connections++
	s.notifyLocked()
	closing := s.closing
	s.mu.Unlock()
	if closing { // accepted while Close was snapshotting connections
		_ = c.WriteClose(int(websocket.StatusGoingAway), closeReasonShutdown)
	}
}

func (s *Server) removeConn(c *wsConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.stats.Connections--
	s.notifyLocked()
	s.mu.Unlock()
	s.wg.Done()
}

// subscriptionStarted is called by a subscription resolver before it starts
// anything. gqlgen runs resolvers on goroutines of its own that the server
// does not track, which may outlive the connection's count in s.wg, so the
// count is taken under s.mu and only while the server is not closing:
// shutdown sets closing under the same lock before it waits, so no Add can
// run concurrently with the Wait. It reports false when the server is
// closing, and the resolver must then refuse the subscription.
func (s *Server) subscriptionStarted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.wg.Add(1) // released by subscriptionEnded
	s.stats.ActiveSubscriptions++
	s.stats.SubscriptionsStarted++
	s.notifyLocked()
	return true
}

func (s *Server) subscriptionEnded() {
	s.update(func(st *Stats) {
		st.ActiveSubscriptions--
		st.SubscriptionsEnded++
	})
	s.wg.Done()
}

func (s *Server) update(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.notifyLocked()
	s.mu.Unlock()
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// URL is the websocket endpoint, "ws://127.0.0.1:PORT/graphql".
func (s *Server) URL() string { return "ws://" + s.addr + graphqlPath }

// HTTPURL is the HTTP endpoint, "http://127.0.0.1:PORT/graphql".
func (s *Server) HTTPURL() string { return "http://" + s.addr + graphqlPath }

// Stats returns a consistent snapshot of the server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// WaitFor waits until cond holds for the server's Stats or ctx ends, in
// which case it returns ctx's error. cond is evaluated on every change.
func (s *Server) WaitFor(ctx context.Context, cond func(Stats) bool) error {
	for {
		s.mu.Lock()
		st, changed := s.stats, s.changed
		s.mu.Unlock()
		if cond(st) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// Close stops listening, closes every websocket with 1001 "server shutting
// down" and returns when everything the server started has ended. Peers
// that do not finish the close handshake within a grace period are cut.
// Calling Close again returns the first call's result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.shutdown() })
	return s.closeErr
}

func (s *Server) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeGrace)
	defer cancel()
	// Shutdown closes the listener and waits for in-flight HTTP requests;
	// it neither closes nor waits for hijacked (websocket) connections.
	err := s.http.Shutdown(ctx)
	if err != nil {
		err = s.http.Close()
	}

	s.mu.Lock()
	s.closing = true
	conns := make([]*wsConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.WriteClose(int(websocket.StatusGoingAway), closeReasonShutdown)
	}
	// Ends the context gqlgen gives each connection and subscription, so
	// resolvers stop even on a connection stuck in its close handshake.
	s.stopBase()

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		conns = conns[:0]
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		s.log.Warn("cutting websockets that did not finish closing", "count", len(conns))
		for _, c := range conns {
			c.cut()
		}
		<-done
	}
	s.log.Info("demo upstream closed", "url", s.URL())
	return err
}
