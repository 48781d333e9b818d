package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/session"
)

// Upstream is one configured upstream as the service sees it.
type Upstream struct {
	// Session is the connection template (URL, subprotocols, timeouts,
	// backoff, close-code policy, handshake).
	Session session.Config
	// HandshakeFor, when set, gives each credential identity its own
	// handshake (forwarded credentials); it overrides Session.Handshake.
	HandshakeFor func(identity string) session.HandshakeFunc
	// MaxOpsPerConn caps operations per connection; another connection
	// opens when all are full. Default 1000.
	MaxOpsPerConn int
	// Dedup shares identical subscriptions as one upstream operation.
	Dedup bool
	// QueueSize bounds each subscriber's queue of results. Default
	// DefaultQueueSize.
	QueueSize int
	// QueueMaxBytes bounds the bytes of results in each subscriber's queue,
	// the one being sent to the caller included. A result bigger than that
	// on its own is queued only when the subscriber holds no other.
	// Default 64 MiB: DefaultQueueSize results of 1 KiB.
	QueueMaxBytes int
	// SlowPolicy is what happens when that queue is full, by count or by
	// bytes, or when Config.MaxQueuedBytes is reached. Default DropOldest.
	SlowPolicy SlowPolicy
	// IdleTimeout closes a connection that carried no operation this long.
	// Default 30s.
	IdleTimeout time.Duration
	// MaxSubscriptions caps open Subscribe streams on this upstream; 0 means
	// no cap.
	MaxSubscriptions int
}

// DefaultQueueSize is the default bound of a subscriber's queue, in
// results. The upstream never waits for a caller, so when it bursts faster
// than a caller can read, the queue holds what the caller has not read yet:
// with 65,536, a caller reading 1 KiB results in batches (max_batch 256) as
// fast as gRPC lets it lost nothing of a 200,000-result burst sent at full
// speed, in every run measured, including runs with most of the machine
// busy elsewhere; 128, the earlier default, lost most of it (BENCHMARKS.md,
// scenario 1 at the shipped defaults). A queue takes memory only for what
// it holds, and lets go of the array a burst grew once it has drained.
const DefaultQueueSize = 65536

// Config configures the service.
type Config struct {
	Upstreams map[string]*Upstream
	// MaxQueryBytes bounds SubscribeRequest.query. Default 64 KiB.
	MaxQueryBytes int
	// MaxVariablesBytes bounds the JSON of variables plus extensions.
	// Default 64 KiB.
	MaxVariablesBytes int
	// MaxSubscriptions caps open Subscribe streams in total; 0 means no cap.
	MaxSubscriptions int
	// MaxBatch is the largest SubscribeRequest.max_batch a caller may ask
	// for; a larger one is refused with INVALID_ARGUMENT. 1 refuses
	// batching. Default 1024.
	MaxBatch int
	// MaxBatchBytes bounds the encoded size of a Batch event; a result
	// larger than that goes alone, in a batch of one. Default 1 MiB, well
	// under the 4 MiB gRPC clients accept by default.
	MaxBatchBytes int
	// MaxQueuedBytes bounds the bytes of results held in all subscribers'
	// queues together, a result shared by several counted once. When a
	// result does not fit, the subscribers whose queues hold the most give
	// way first, each by its SlowPolicy. Default 256 MiB.
	MaxQueuedBytes int
	// Identity returns the credential identity of a caller (forwarded
	// credentials); nil means every caller shares the upstream's credential.
	Identity func(ctx context.Context, upstream string) (string, error)
	// Authorize checks that the caller may use upstream; nil allows all.
	// Its error is returned as is (a *RequestError picks the code).
	Authorize func(ctx context.Context, upstream string) error
	// MaxConnectionAge, when set, ages callers' connections: gRPC sends a
	// GOAWAY after it, and the streams still open on the connection end
	// like a drain, DrainGrace later (see age.go). It takes effect through
	// ServerOptions.
	MaxConnectionAge time.Duration
	// DrainGrace is how long a stream may go on after its connection got
	// the GOAWAY of MaxConnectionAge.
	DrainGrace time.Duration
	Logger     *slog.Logger
	Metrics    *Metrics
}

// Server implements SubscriptionService.
type Server struct {
	bridgev1.UnimplementedSubscriptionServiceServer

	cfg     Config
	pools   map[string]*upstreamPool
	budget  *queueBudget
	log     *slog.Logger
	total   atomic.Int64
	drained chan struct{} // closed when open streams must end
	once    sync.Once

	mu       sync.Mutex
	draining bool
	open     int           // Subscribe calls in progress
	idle     chan struct{} // closed when open drops to 0 while draining
}

// New validates cfg and returns the service. Connections open on the first
// subscription.
func New(cfg Config) (*Server, error) {
	if len(cfg.Upstreams) == 0 {
		return nil, errors.New("bridge: no upstreams configured")
	}
	if cfg.MaxQueryBytes <= 0 {
		cfg.MaxQueryBytes = 64 << 10
	}
	if cfg.MaxVariablesBytes <= 0 {
		cfg.MaxVariablesBytes = 64 << 10
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = defaultMaxBatch
	}
	if cfg.MaxBatchBytes <= 0 {
		cfg.MaxBatchBytes = defaultMaxBatchBytes
	}
	if cfg.MaxQueuedBytes <= 0 {
		cfg.MaxQueuedBytes = 256 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, pools: map[string]*upstreamPool{}, log: cfg.Logger, drained: make(chan struct{}),
		budget: newQueueBudget(int64(cfg.MaxQueuedBytes))}
	cfg.Metrics.reportBudget(s.budget)
	for name, up := range cfg.Upstreams {
		// Refuse at start what every Subscribe would fail on.
		if _, err := session.CheckURL(up.Session.URL); err != nil {
			return nil, fmt.Errorf("bridge: upstream %s: url %w", name, err)
		}
		if up.MaxOpsPerConn <= 0 {
			up.MaxOpsPerConn = 1000
		}
		if up.QueueSize <= 0 {
			up.QueueSize = DefaultQueueSize
		}
		if up.QueueMaxBytes <= 0 {
			up.QueueMaxBytes = 64 << 20
		}
		if up.IdleTimeout <= 0 {
			up.IdleTimeout = 30 * time.Second
		}
		s.pools[name] = newUpstreamPool(name, up, cfg.Logger, cfg.Metrics, s.budget)
	}
	return s, nil
}

// Subscribe runs one subscription for one caller.
func (s *Server) Subscribe(req *bridgev1.SubscribeRequest, stream grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error {
	// Only the name outlives subscribe: the request (its variables decoded
	// into maps) is garbage once the operation started, not held for the
	// life of the stream.
	upstream := req.GetUpstream()
	var err error
	if s.enter() {
		defer s.leave()
		err = s.subscribe(req, stream)
	} else {
		err = ErrDraining
	}
	st := Status(upstream, err)
	if s.cfg.Metrics != nil && s.pools[upstream] != nil {
		reason := ""
		if d := st.Details(); len(d) > 0 {
			if info, ok := d[0].(interface{ GetReason() string }); ok {
				reason = info.GetReason()
			}
		}
		s.cfg.Metrics.terminated(upstream, st.Code().String(), reason)
	}
	return st.Err()
}

func (s *Server) subscribe(req *bridgev1.SubscribeRequest, stream grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error {
	ctx := stream.Context()
	// Authorize first: an unauthenticated caller learns nothing, not even
	// which upstreams exist.
	if s.cfg.Authorize != nil {
		if err := s.cfg.Authorize(ctx, req.GetUpstream()); err != nil {
			return err
		}
	}
	pool, sreq, err := s.validate(req)
	if err != nil {
		return err
	}
	maxBatch := int(req.GetMaxBatch())
	identity := ""
	if s.cfg.Identity != nil {
		if identity, err = s.cfg.Identity(ctx, req.GetUpstream()); err != nil {
			return err
		}
	}
	if n := s.total.Add(1); s.cfg.MaxSubscriptions > 0 && n > int64(s.cfg.MaxSubscriptions) {
		s.total.Add(-1)
		return &RequestError{Code: codes.ResourceExhausted, Reason: ReasonLimitReached,
			Msg: fmt.Sprintf("the bridge serves at most %d subscriptions; retry later or on another replica", s.cfg.MaxSubscriptions)}
	}
	defer s.total.Add(-1)
	release, err := pool.reserve()
	if err != nil {
		return err
	}
	defer release()

	key := ""
	if pool.up.Dedup {
		key = dedupKey(identity, sreq)
	}
	sub := newSubscriber(queueConfig{size: pool.up.QueueSize, maxBytes: pool.up.QueueMaxBytes, policy: pool.up.SlowPolicy,
		onDrop: s.cfg.Metrics.dropCounter(pool.name), budget: s.budget})
	// Deferred first, so it runs after detach: then nothing is pushed any
	// more, and what the queue holds leaves the server's budget.
	defer sub.discard()
	detach, err := pool.attach(identity, sreq, key, sub)
	if err != nil {
		return err
	}
	defer detach()
	return s.pump(ctx, pool.name, sub, stream, maxBatch)
}

// pump sends what the subscriber's queue holds until the outcome, the
// caller leaving, the drain or the connection's ageing. One goroutine per
// stream: this one. It takes from the queue only what it is about to send
// (one result, or with maxBatch above 1 the results of one Batch event,
// batch.go), so that a caller that stops reading pins only that; the rest
// stays in the queue, where the policy can drop it.
func (s *Server) pump(ctx context.Context, upstream string, sub *subscriber, stream grpc.ServerStreamingServer[bridgev1.SubscribeResponse], maxBatch int) error {
	// One allocation for what the stream reuses for every message.
	m := &pumpMessages{q: taken{sub: sub}}
	m.onN.Next = &m.next
	var (
		q    = &m.q
		next = &m.next
		onN  = &m.onN
		onL  = &m.onL
		resp = &m.resp
		out  = s.cfg.Metrics.eventOut(upstream)
		aged = connAged(ctx)
		b    *batcher
	)
	if maxBatch > 1 {
		b = newBatcher(maxBatch, s.cfg.MaxBatchBytes)
	}
	for {
		if q.head == len(q.items) {
			if q.done {
				return q.outcome
			}
			if err := s.ended(ctx, aged); err != nil {
				return err
			}
			if !q.takeMore() {
				select {
				case <-sub.signal:
				case <-ctx.Done():
					return ctx.Err()
				case <-s.drained:
					return ErrDraining
				case <-aged:
					return ErrConnectionAged
				}
			}
			continue
		}
		it, n := q.items[q.head], 1
		switch {
		case it.ev != nil:
			onL.Lifecycle = it.ev
			resp.Event = onL
		case b == nil:
			next.Result, next.Sequence = it.res.b, it.seq
			resp.Event = onN
		default:
			var err error
			if n, err = s.fill(ctx, aged, q, b); err != nil {
				return err
			}
			resp.Event = b.set(q.items[q.head : q.head+n])
		}
		// Messages are reused: Send has marshalled them when it returns.
		if err := stream.Send(resp); err != nil {
			return err
		}
		// Hold no result while waiting for the next: a stream's last
		// result would otherwise live as long as the stream.
		next.Result, onL.Lifecycle = nil, nil
		if b != nil {
			b.reset()
		}
		clear(q.items[q.head : q.head+n])
		q.head += n
		if it.ev == nil {
			sub.sent(n)
			if out != nil {
				out.Add(float64(n))
			}
		}
	}
}

// pumpMessages are the messages a pump reuses and what it took from its
// subscriber, allocated together: a replica holds one per open stream.
type pumpMessages struct {
	q    taken
	next bridgev1.Next
	onN  bridgev1.SubscribeResponse_Next
	onL  bridgev1.SubscribeResponse_Lifecycle
	resp bridgev1.SubscribeResponse
}

// ended reports, without waiting, why the stream must end now, if it must.
func (s *Server) ended(ctx context.Context, aged <-chan struct{}) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-s.drained:
		return ErrDraining
	case <-aged:
		return ErrConnectionAged
	default:
		return nil
	}
}

// taken holds what the pump took from its subscriber and has not sent yet:
// items[head:].
type taken struct {
	sub     *subscriber
	items   []item
	head    int
	done    bool // the subscriber is done: nothing more will be queued
	outcome error
}

// takeMore appends the subscriber's oldest queued events, up to and
// including one result, moving what is left to the front first. It reports
// whether it took anything or learnt the outcome.
func (t *taken) takeMore() bool {
	if t.head > 0 {
		n := copy(t.items, t.items[t.head:])
		clear(t.items[n:])
		t.items, t.head = t.items[:n], 0
	}
	before := len(t.items)
	t.items, t.done, t.outcome = t.sub.take(t.items)
	return len(t.items) > before || t.done
}

// reserve counts a stream on the upstream, against its cap if it has one.
func (p *upstreamPool) reserve() (func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.up.MaxSubscriptions > 0 && p.reserved >= p.up.MaxSubscriptions {
		return nil, &RequestError{Code: codes.ResourceExhausted, Reason: ReasonLimitReached,
			Msg: fmt.Sprintf("upstream %q serves at most %d subscriptions on this replica; retry later", p.name, p.up.MaxSubscriptions)}
	}
	p.reserved++
	return func() {
		p.mu.Lock()
		p.reserved--
		p.mu.Unlock()
	}, nil
}

// validate checks a request and builds the upstream request. Its messages
// quote what the caller sent only through quoteCaller.
func (s *Server) validate(req *bridgev1.SubscribeRequest) (*upstreamPool, session.Request, error) {
	var sreq session.Request
	m := readMarks(req)
	if err := decodeError(m); err != nil {
		return nil, sreq, err
	}
	name := req.GetUpstream()
	if name == "" {
		return nil, sreq, invalid("upstream is required: name one of the bridge's configured upstreams")
	}
	pool := s.pools[name]
	if pool == nil {
		return nil, sreq, &RequestError{Code: codes.NotFound, Reason: ReasonUnknownUpstream,
			Msg: fmt.Sprintf("unknown upstream %s: configured upstreams are %s", quoteCaller(name), strings.Join(slices.Sorted(maps.Keys(s.pools)), ", "))}
	}
	// The codec left an oversized query or variables undecoded; a size at
	// or under the limit is not the codec's, and is ignored.
	if m.queryBytes > s.cfg.MaxQueryBytes {
		return nil, sreq, invalid("query is %d bytes; the limit is %d", m.queryBytes, s.cfg.MaxQueryBytes)
	}
	q := req.GetQuery()
	if strings.TrimSpace(q) == "" {
		return nil, sreq, invalid("query is required: send a GraphQL document such as \"subscription { ... }\"")
	}
	if len(q) > s.cfg.MaxQueryBytes {
		return nil, sreq, invalid("query is %d bytes; the limit is %d", len(q), s.cfg.MaxQueryBytes)
	}
	if !utf8.ValidString(q) || !utf8.ValidString(req.GetOperationName()) {
		return nil, sreq, invalid("query and operation_name must be valid UTF-8")
	}
	if mb := req.GetMaxBatch(); uint64(mb) > uint64(s.cfg.MaxBatch) {
		return nil, sreq, invalid("max_batch is %d; this bridge sends at most %d results per batch: ask for %d or fewer (0 or 1 for no batches)", mb, s.cfg.MaxBatch, s.cfg.MaxBatch)
	}
	if m.variablesBytes > s.cfg.MaxVariablesBytes {
		return nil, sreq, invalid("variables and extensions are %d bytes of JSON; the limit is %d", m.variablesBytes, s.cfg.MaxVariablesBytes)
	}
	vars, err := structJSON(req.GetVariables())
	if err != nil {
		return nil, sreq, invalid("variables: %v", err)
	}
	ext, err := structJSON(req.GetExtensions())
	if err != nil {
		return nil, sreq, invalid("extensions: %v", err)
	}
	if n := len(vars) + len(ext); n > s.cfg.MaxVariablesBytes {
		return nil, sreq, invalid("variables and extensions are %d bytes of JSON; the limit is %d", n, s.cfg.MaxVariablesBytes)
	}
	return pool, session.Request{Query: q, Variables: vars, OperationName: req.GetOperationName(), Extensions: ext}, nil
}

// dedupKey identifies identical subscriptions.
func dedupKey(identity string, r session.Request) string {
	return strings.Join([]string{identity, r.Query, r.OperationName, string(r.Variables), string(r.Extensions)}, "\x00")
}

// enter counts a Subscribe call in, unless the service is draining.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.open++
	return true
}

func (s *Server) leave() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.open--
	if s.open == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// Drain stops the service: new Subscribes are refused at once; open streams
// may run until grace passes (or ctx ends), then end with UNAVAILABLE and
// RetryInfo so callers resubscribe on another replica; then every upstream
// connection closes with 1001. It returns early when no stream is open, and
// at most drainWait after grace; the caller then stops the gRPC server,
// which frees handlers stuck sending to callers that stopped reading.
func (s *Server) Drain(ctx context.Context, grace time.Duration) {
	s.mu.Lock()
	s.draining = true
	idle := make(chan struct{})
	if s.open == 0 {
		close(idle)
	} else {
		s.idle = idle
	}
	s.mu.Unlock()
	t := time.NewTimer(grace)
	select {
	case <-t.C:
	case <-idle:
	case <-ctx.Done():
	}
	t.Stop()
	s.once.Do(func() { close(s.drained) })
	// A handler blocked in Send (its caller stopped reading and the HTTP/2
	// window is full) does not see the drain; only the gRPC server's Stop
	// frees it. Do not wait for it past drainWait.
	w := time.NewTimer(drainWait)
	select {
	case <-idle:
	case <-w.C:
		s.log.Warn("streams still open after the drain; closing upstreams anyway", "open", s.openStreams())
	}
	w.Stop()
	s.Close()
}

// drainWait bounds how long Drain waits for streams after telling them to end.
const drainWait = 5 * time.Second

func (s *Server) openStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open
}

// Close ends every open stream with UNAVAILABLE and closes every upstream
// connection with 1001 at once.
func (s *Server) Close() {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	s.once.Do(func() { close(s.drained) })
	var wg sync.WaitGroup
	for _, p := range s.pools {
		wg.Go(func() { p.close(session.CodeGoingAway) })
	}
	wg.Wait()
}

// Snapshot describes the service for operators: every upstream, its
// connections and their states, operations, subscribers and recent
// connection events. It holds no credential.
type Snapshot struct {
	Upstreams []UpstreamSnapshot `json:"upstreams"`
	Draining  bool               `json:"draining"`
}

// UpstreamSnapshot describes one upstream's pool.
type UpstreamSnapshot struct {
	Name string `json:"name"`
	// URL is the upstream's URL with its user info and query values
	// redacted.
	URL           string         `json:"url"`
	Connections   []ConnSnapshot `json:"connections"`
	Operations    int            `json:"operations"`    // upstream operations placed on connections
	Shared        int            `json:"shared"`        // operations with more than one subscriber (deduplication)
	Subscriptions int            `json:"subscriptions"` // open Subscribe streams
	Events        []ConnEvent    `json:"events"`
}

// ConnSnapshot describes one upstream connection.
type ConnSnapshot struct {
	State       string    `json:"state"` // connecting, ready, backoff, closed
	Subprotocol string    `json:"subprotocol,omitempty"`
	Operations  int       `json:"operations"`
	Since       time.Time `json:"since"` // when it entered State
	Attempt     int       `json:"attempt"`
}

// ConnEvent is a notable connection event: a reconnect (with the close code
// that caused it), a credential refresh, a rotation, a terminal failure.
type ConnEvent struct {
	At         time.Time `json:"at"`
	Kind       string    `json:"kind"` // reconnect, refresh, rotated, failed
	Code       int       `json:"close_code,omitempty"`
	HTTPStatus int       `json:"http_status,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	Class      string    `json:"class,omitempty"`
	Attempt    int       `json:"attempt"`
}

// QueuedBytes is the bytes of results held in all subscribers' queues,
// each result counted once: what Config.MaxQueuedBytes bounds.
func (s *Server) QueuedBytes() int64 { return s.budget.used.Load() }

// Snapshot reports the state of every upstream, sorted by name.
func (s *Server) Snapshot() Snapshot {
	s.mu.Lock()
	snap := Snapshot{Draining: s.draining}
	s.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(s.pools)) {
		snap.Upstreams = append(snap.Upstreams, s.pools[name].snapshot())
	}
	return snap
}

// UpstreamStats counts one upstream's pool. Shared counts operations with
// more than one subscriber.
type UpstreamStats struct {
	Connections, Operations, Shared int
}

// Stats counts each upstream's connections and operations.
func (s *Server) Stats() map[string]UpstreamStats {
	out := make(map[string]UpstreamStats, len(s.pools))
	for name, p := range s.pools {
		snap := p.snapshot()
		out[name] = UpstreamStats{Connections: len(snap.Connections), Operations: snap.Operations, Shared: snap.Shared}
	}
	return out
}
