// Package wiring turns a loaded configuration (package config) into the
// bridge's running parts: the bridge.Server with its upstreams and their
// credential sources, the caller access policy, and the gRPC server with
// the options it ships with (codec, keep-alive, TLS, interceptors), health
// and reflection. The binary (cmd/bridge), the soak (cmd/soak) and the
// end-to-end tests all build the service here, so what they run is what
// ships.
//
// It never listens, parses flags or handles signals: the caller starts and
// stops what New returns.
package wiring

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/gqlbridge/gqlbridge/admin"
	"github.com/gqlbridge/gqlbridge/bridge"
	"github.com/gqlbridge/gqlbridge/config"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/session"
)

// Options are what the configuration file does not say. Every field is
// optional.
type Options struct {
	// Logger receives the service's logs. Default slog.Default().
	Logger *slog.Logger
	// Registry, when set, receives the bridge's metrics and the gRPC
	// server's, and Service.Admin serves it on /metrics.
	Registry *prometheus.Registry
	// OnState, when set, hears every state change of every upstream
	// connection, after the service's own bookkeeping (the soak counts
	// rotations and refreshes with it).
	OnState func(upstream string, sc session.StateChange)
}

// Service is the bridge built from one configuration.
type Service struct {
	// Bridge is the SubscriptionService.
	Bridge *bridge.Server
	// GRPC serves Bridge, the health service and reflection; hand it a
	// listener.
	GRPC *grpc.Server

	cfg     *config.Config
	reg     *prometheus.Registry
	health  *health.Server
	started time.Time
	closers []func() error // connections New opened besides the bridge's
}

// New builds the service cfg describes and reads every file it names
// (caller tokens, TLS material, client secrets), so that what would fail at
// the first subscription fails here. It opens no connection: upstream
// connections open on the first subscription.
func New(cfg *config.Config, o Options) (*Service, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Service{cfg: cfg, reg: o.Registry, started: time.Now()}
	ups, err := s.upstreams(log, o.OnState)
	if err != nil {
		s.closeAll()
		return nil, err
	}
	policy, err := callerPolicy(cfg, log)
	if err != nil {
		s.closeAll()
		return nil, err
	}
	bcfg := bridge.Config{
		Upstreams:         ups,
		Identity:          forwardedIdentity(cfg),
		MaxQueryBytes:     cfg.Server.MaxQueryBytes,
		MaxVariablesBytes: cfg.Server.MaxVariablesBytes,
		MaxSubscriptions:  cfg.Server.MaxSubscriptions,
		MaxConnectionAge:  cfg.Server.MaxConnectionAge,
		DrainGrace:        cfg.Server.DrainGrace,
		MaxBatch:          cfg.Server.MaxBatch,
		MaxBatchBytes:     cfg.Server.MaxBatchBytes,
		MaxQueuedBytes:    cfg.Server.MaxQueuedBytes,
		Logger:            log,
	}
	var srvMetrics *grpcMetrics
	if o.Registry != nil {
		bcfg.Metrics = bridge.NewMetrics(o.Registry)
		srvMetrics = newGRPCMetrics()
		o.Registry.MustRegister(srvMetrics)
	}
	if policy != nil {
		bcfg.Authorize = authorize
	}
	if s.Bridge, err = bridge.New(bcfg); err != nil {
		s.closeAll()
		return nil, err
	}
	opts, err := serverOptions(cfg, s.Bridge, log, srvMetrics, policy)
	if err != nil {
		s.Bridge.Close()
		s.closeAll()
		return nil, err
	}
	s.GRPC = grpc.NewServer(opts...)
	bridgev1.RegisterSubscriptionServiceServer(s.GRPC, s.Bridge)
	s.health = health.NewServer()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(bridgev1.SubscriptionService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s.GRPC, s.health)
	reflection.Register(s.GRPC)
	if srvMetrics != nil {
		srvMetrics.initialize(s.GRPC)
	}
	return s, nil
}

// Admin returns the admin HTTP handler (package admin) of the service:
// its metrics, status page, readiness per ready, and pprof when
// server.pprof is on.
func (s *Service) Admin(ready func() bool, version string) http.Handler {
	o := admin.Options{
		Ready:    ready,
		Snapshot: s.Bridge.Snapshot,
		Pprof:    s.cfg.Server.Pprof,
		Version:  version,
		Started:  s.started,
	}
	if s.reg != nil {
		o.Metrics = promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})
	}
	return admin.Handler(o)
}

// stopWait bounds how long the gRPC server's graceful stop waits for the
// handlers after the drain; Stop then ends them.
const stopWait = 5 * time.Second

// Drain stops the service the way SIGTERM does: the health service stops
// reporting SERVING, new streams are refused, open ones may run for grace
// and then end with UNAVAILABLE so callers resubscribe on another replica
// (bridge.Server.Drain); then the gRPC server stops, at once after
// stopWait, and the connections New opened close.
func (s *Service) Drain(grace time.Duration) {
	s.health.Shutdown()
	s.Bridge.Drain(context.Background(), grace)
	stopped := make(chan struct{})
	go func() { s.GRPC.GracefulStop(); close(stopped) }()
	t := time.NewTimer(stopWait)
	select {
	case <-stopped:
		t.Stop()
	case <-t.C:
		s.GRPC.Stop()
		<-stopped
	}
	s.closeAll()
}

// Close stops everything at once: open streams end with UNAVAILABLE, every
// upstream connection closes, the gRPC server stops.
func (s *Service) Close() {
	s.Bridge.Close()
	s.GRPC.Stop()
	s.closeAll()
}

func (s *Service) closeAll() {
	for _, c := range s.closers {
		_ = c()
	}
	s.closers = nil
}
