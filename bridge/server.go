package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

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
	// QueueSize bounds each subscriber's queue of results. Default 128.
	QueueSize int
	// QueueMaxBytes bounds the bytes of results in each subscriber's queue,
	// the one being sent to the caller included. A result bigger than that
	// on its own is queued only when the subscriber holds no other.
	// Default 16 MiB.
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
	orDefault(&cfg.MaxQueryBytes, DefaultMaxQueryBytes)
	orDefault(&cfg.MaxVariablesBytes, DefaultMaxVariablesBytes)
	orDefault(&cfg.MaxBatch, DefaultMaxBatch)
	orDefault(&cfg.MaxBatchBytes, DefaultMaxBatchBytes)
	orDefault(&cfg.MaxQueuedBytes, DefaultMaxQueuedBytes)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, pools: map[string]*upstreamPool{}, log: cfg.Logger, drained: make(chan struct{}),
		budget: newQueueBudget(int64(cfg.MaxQueuedBytes))}
	cfg.Metrics.reportBudget(s.budget)
	for name, given := range cfg.Upstreams {
		// Refuse at start what every Subscribe would fail on.
		if _, err := session.CheckURL(given.Session.URL); err != nil {
			return nil, fmt.Errorf("bridge: upstream %s: url %w", name, err)
		}
		up := *given // the defaults go into a copy: the caller's Upstream stays as given
		orDefault(&up.MaxOpsPerConn, DefaultMaxOpsPerConn)
		orDefault(&up.QueueSize, DefaultQueueSize)
		orDefault(&up.QueueMaxBytes, DefaultQueueMaxBytes)
		orDefault(&up.IdleTimeout, DefaultIdleTimeout)
		s.pools[name] = newUpstreamPool(name, &up, cfg.Logger, cfg.Metrics, s.budget)
	}
	return s, nil
}
