package wiring

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/gqlbridge/gqlbridge/bridge"
	"github.com/gqlbridge/gqlbridge/config"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// serverOptions are the gRPC server's options: keep-alive and connection
// ageing, TLS, the stream limit, the bridge's codec with its request
// limits, and the interceptors.
func serverOptions(cfg *config.Config, svc *bridge.Server, log *slog.Logger, m *grpcMetrics, callers *callerPolicies) ([]grpc.ServerOption, error) {
	// Probe callers every 2 minutes so a vanished one (no FIN) is found
	// and its streams end; accept callers' own pings every 10 s, with or
	// without streams. The service adds connection ageing.
	opts := append(svc.ServerOptions(keepalive.ServerParameters{Time: 2 * time.Minute, Timeout: 20 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}))
	if cfg.Server.TLS != nil {
		creds, err := serverCredentials(cfg.Server.TLS, log)
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.Creds(creds))
	}
	opts = append(opts,
		// Many subscriptions share a connection from one caller.
		grpc.MaxConcurrentStreams(1<<20),
		svc.Codec())
	return append(opts, interceptors(log, m, callers)...), nil
}

// interceptors are the middleware of every RPC, outermost first:
// Prometheus server metrics (when m is set), one log line per finished
// call, caller authentication (when callers is set; SubscriptionService
// only: health checks and reflection need no credential), and recovery
// innermost, so a panicking handler is logged and counted as the INTERNAL
// it returns.
func interceptors(log *slog.Logger, m *grpcMetrics, callers *callerPolicies) []grpc.ServerOption {
	var unary []grpc.UnaryServerInterceptor
	var stream []grpc.StreamServerInterceptor
	if m != nil {
		unary, stream = append(unary, m.unaryInterceptor()), append(stream, m.streamInterceptor())
	}
	unary = append(unary, logging.UnaryServerInterceptor(slogAdapter(log), logging.WithLogOnEvents(logging.FinishCall)))
	stream = append(stream, streamCallLogger(slogAdapter(log)))
	if callers != nil {
		unary = append(unary, selector.UnaryServerInterceptor(auth.UnaryServerInterceptor(authenticate(callers.get)), subscriptionService))
		stream = append(stream, selector.StreamServerInterceptor(auth.StreamServerInterceptor(authenticate(callers.get)), subscriptionService))
	}
	unary = append(unary, recovery.UnaryServerInterceptor(recovery.WithRecoveryHandler(recovered(log))))
	stream = append(stream, recovery.StreamServerInterceptor(recovery.WithRecoveryHandler(recovered(log))))
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...)}
}

// subscriptionService selects the calls of the bridge's own service.
var subscriptionService = selector.MatchFunc(func(_ context.Context, c middleware.CallMeta) bool {
	return c.Service == bridgev1.SubscriptionService_ServiceDesc.ServiceName
})

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
