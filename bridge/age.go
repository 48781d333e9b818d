package bridge

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/stats"
)

// Connection ageing (Config.MaxConnectionAge).
//
// gRPC's keepalive MaxConnectionAge sends a caller's HTTP/2 connection a
// GOAWAY after the age, give or take 10% (gRPC's jitter): the client opens
// a new connection for new streams, re-resolving the target, so callers
// find replicas added since. The streams already open would be cut when
// MaxConnectionAgeGrace ends, with a bare UNAVAILABLE from the transport
// that says nothing about retrying. So the bridge ends them itself, the way
// a drain does (UNAVAILABLE, BRIDGE_DRAINING, RetryInfo), at a time that is
// always after the GOAWAY plus the grace: 1.1 × age + grace after the
// connection opened. gRPC's own hard close comes later still and only frees
// handlers stuck sending to a caller that stopped reading.

// ageBackstop is how long after the bridge ended a connection's streams
// gRPC closes the connection for good.
const ageBackstop = drainWait

// agedAfter is when, after it opened, a connection's streams end.
func agedAfter(age, grace time.Duration) time.Duration { return age + age/10 + grace }

// ServerOptions returns the gRPC server options the service needs: base
// keepalive parameters with connection ageing added when
// Config.MaxConnectionAge is set, and the stats handler that tracks each
// connection's age.
func (s *Server) ServerOptions(base keepalive.ServerParameters) []grpc.ServerOption {
	age := s.cfg.MaxConnectionAge
	if age <= 0 {
		return []grpc.ServerOption{grpc.KeepaliveParams(base)}
	}
	base.MaxConnectionAge = age
	// GOAWAY comes at 0.9 × age at the earliest: the hard close then falls
	// ageBackstop after the streams ended (agedAfter) at the earliest.
	base.MaxConnectionAgeGrace = age/5 + s.cfg.DrainGrace + ageBackstop
	return []grpc.ServerOption{grpc.KeepaliveParams(base), grpc.StatsHandler(connAger{after: agedAfter(age, s.cfg.DrainGrace)})}
}

// connAger tags every caller connection with a channel closed when the
// connection has aged.
type connAger struct{ after time.Duration }

type connAgeKey struct{}

type connAge struct {
	aged  chan struct{}
	timer *time.Timer
}

func (a connAger) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	c := &connAge{aged: make(chan struct{})}
	c.timer = time.AfterFunc(a.after, func() { close(c.aged) })
	return context.WithValue(ctx, connAgeKey{}, c)
}

func (connAger) HandleConn(ctx context.Context, st stats.ConnStats) {
	if _, end := st.(*stats.ConnEnd); end {
		if c, ok := ctx.Value(connAgeKey{}).(*connAge); ok {
			c.timer.Stop()
		}
	}
}

func (connAger) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (connAger) HandleRPC(context.Context, stats.RPCStats)                       {}

// connAged returns the channel closed when the connection a stream's ctx
// belongs to has aged; nil (never ready) without ageing.
func connAged(ctx context.Context) <-chan struct{} {
	if c, ok := ctx.Value(connAgeKey{}).(*connAge); ok {
		return c.aged
	}
	return nil
}
