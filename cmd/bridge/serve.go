package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/gqlbridge/gqlbridge/admin"
	"github.com/gqlbridge/gqlbridge/bridge"
	"github.com/gqlbridge/gqlbridge/config"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/redaction"
)

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (YAML); required")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: bridge serve --config FILE [flags]\n\nRuns the service until SIGTERM or SIGINT, then drains.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *cfgPath == "" {
		fs.Usage()
		return usageError{err: errors.New("serve: --config is required")}
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	ups, err := upstreams(cfg)
	if err != nil {
		return err
	}
	applyMemoryLimit(log, &cfg.Server, os.Getenv)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srvMetrics := grpcprom.NewServerMetrics()
	reg.MustRegister(srvMetrics)
	policy, err := callerPolicy(cfg)
	if err != nil {
		return err
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
		Metrics:           bridge.NewMetrics(reg),
	}
	if policy != nil {
		bcfg.Authorize = authorize(policy)
	}
	svc, err := bridge.New(bcfg)
	if err != nil {
		return err
	}
	// Probe callers every 2 minutes so a vanished one (no FIN) is found
	// and its streams end; accept callers' own pings every 10 s, with or
	// without streams. The service adds connection ageing.
	opts := append(svc.ServerOptions(keepalive.ServerParameters{Time: 2 * time.Minute, Timeout: 20 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}))
	if cfg.Server.TLS != nil {
		creds, err := serverCredentials(cfg.Server.TLS)
		if err != nil {
			return err
		}
		opts = append(opts, grpc.Creds(creds))
	}

	opts = append(opts,
		// Many subscriptions share a connection from one caller.
		grpc.MaxConcurrentStreams(1<<20),
		svc.Codec())
	gs := grpc.NewServer(append(opts, interceptors(log, srvMetrics)...)...)
	bridgev1.RegisterSubscriptionServiceServer(gs, svc)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(bridgev1.SubscriptionService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	srvMetrics.InitializeMetrics(gs)

	lis, err := net.Listen("tcp", cfg.Server.GRPCAddress)
	if err != nil {
		return fmt.Errorf("grpc_address: %w", err)
	}
	var ready atomic.Bool
	ready.Store(true)
	var adminSrv *http.Server
	if cfg.Server.AdminAddress != "off" {
		alis, err := net.Listen("tcp", cfg.Server.AdminAddress)
		if err != nil {
			lis.Close()
			return fmt.Errorf("admin_address: %w", err)
		}
		handler := admin.Handler(admin.Options{
			Metrics:  promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
			Ready:    ready.Load,
			Snapshot: svc.Snapshot,
			Pprof:    cfg.Server.Pprof,
			Version:  versionString(),
			Started:  time.Now(),
		})
		adminSrv = &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = adminSrv.Serve(alis) }()
		log.Info("admin listening", "address", alis.Addr().String())
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- gs.Serve(lis) }()
	log.Info("gqlbridge serving", "grpc_address", lis.Addr().String(), "upstreams", strings.Join(cfg.Names(), ","), "version", versionString())

	select {
	case err := <-serveErr:
		svc.Close()
		return err
	case <-ctx.Done():
	}
	// Drain: stop being ready so the Service routes elsewhere, refuse new
	// streams, let open ones run for the grace period, then end them with
	// UNAVAILABLE so callers resubscribe on another replica.
	log.Info("draining", "grace", cfg.Server.DrainGrace)
	ready.Store(false)
	hs.Shutdown()
	svc.Drain(context.Background(), cfg.Server.DrainGrace)
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	t := time.NewTimer(5 * time.Second)
	select {
	case <-stopped:
		t.Stop()
	case <-t.C:
		gs.Stop()
		<-stopped
	}
	if adminSrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = adminSrv.Shutdown(sctx)
		cancel()
	}
	log.Info("stopped")
	return nil
}

// interceptors are the middleware of every RPC, outermost first: Prometheus
// server metrics, one log line per finished call, and recovery innermost, so
// a panicking handler is logged and counted as the INTERNAL it returns.
// Streams log through streamCallLogger (calllog.go), which writes the line
// go-grpc-middleware's logging interceptor writes without holding memory
// for the life of each stream.
func interceptors(log *slog.Logger, m *grpcprom.ServerMetrics) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(
			m.UnaryServerInterceptor(),
			logging.UnaryServerInterceptor(slogAdapter(log), logging.WithLogOnEvents(logging.FinishCall)),
			recovery.UnaryServerInterceptor(recovery.WithRecoveryHandler(recovered(log))),
		),
		grpc.ChainStreamInterceptor(
			m.StreamServerInterceptor(),
			streamCallLogger(slogAdapter(log)),
			recovery.StreamServerInterceptor(recovery.WithRecoveryHandler(recovered(log))),
		),
	}
}

func recovered(log *slog.Logger) recovery.RecoveryHandlerFunc {
	return func(p any) error {
		log.Error("panic in handler", "panic", fmt.Sprint(p))
		return status.Error(codes.Internal, "internal error")
	}
}

// slogAdapter lets go-grpc-middleware log through log/slog.
func slogAdapter(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", format)
}

func checkConfig(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: bridge check-config FILE\n\nValidates FILE without starting anything.")
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usageError{err: errors.New("check-config: name one file")}
	}
	cfg, err := config.Load(fs.Arg(0))
	if err != nil {
		return err
	}
	if _, err := upstreams(cfg); err != nil {
		return err
	}
	// The files serve would read at start: caller tokens, TLS material.
	if _, err := callerPolicy(cfg); err != nil {
		return err
	}
	if cfg.Server.TLS != nil {
		if _, err := serverCredentials(cfg.Server.TLS); err != nil {
			return err
		}
	}
	for _, name := range cfg.Names() {
		u := cfg.Upstreams[name]
		fmt.Fprintf(stdout, "upstream %s: %s (token: %s)\n", name, redaction.URL(u.URL), u.Token)
	}
	fmt.Fprintln(stdout, "configuration ok")
	return nil
}
