package wiring

import (
	"context"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// grpcMetrics are the gRPC server's own counters
// (docs/deploy.md#observability), named, labelled and counted as
// go-grpc-middleware's Prometheus provider counts them, so dashboards built
// for that provider keep working.
//
// They are counted here rather than by that provider because a stream of
// the bridge sends up to hundreds of thousands of messages a second: the
// provider looks its counter up by label values for every message, and the
// stream wrapper it comes with reads the clock twice around each; together
// 7.7 % of the bridge's CPU on an unbatched stream (BENCHMARKS.md, the row
// of commit 4f75490). A stream here looks its counters up once, and a
// message costs one atomic add.
type grpcMetrics struct {
	started, handled, received, sent *prometheus.CounterVec
}

func newGRPCMetrics() *grpcMetrics {
	labels := []string{"grpc_type", "grpc_service", "grpc_method"}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	return &grpcMetrics{
		started:  counter("grpc_server_started_total", "Total number of RPCs started on the server.", labels...),
		handled:  counter("grpc_server_handled_total", "Total number of RPCs completed on the server, regardless of success or failure.", append(labels, "grpc_code")...),
		received: counter("grpc_server_msg_received_total", "Total number of RPC stream messages received on the server.", labels...),
		sent:     counter("grpc_server_msg_sent_total", "Total number of gRPC stream messages sent by the server.", labels...),
	}
}

func (m *grpcMetrics) vecs() []*prometheus.CounterVec {
	return []*prometheus.CounterVec{m.started, m.handled, m.received, m.sent}
}

// Describe is part of prometheus.Collector.
func (m *grpcMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, v := range m.vecs() {
		v.Describe(ch)
	}
}

// Collect is part of prometheus.Collector.
func (m *grpcMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, v := range m.vecs() {
		v.Collect(ch)
	}
}

// initialize makes every series of every method of s exist at zero, so
// that a rate over them is defined before the first call.
func (m *grpcMetrics) initialize(s reflection.ServiceInfoProvider) {
	for service, info := range s.GetServiceInfo() {
		for _, mi := range info.Methods {
			typ := string(methodType(mi.IsClientStream, mi.IsServerStream))
			for _, v := range []*prometheus.CounterVec{m.started, m.received, m.sent} {
				v.WithLabelValues(typ, service, mi.Name)
			}
			for _, code := range middleware.AllCodes {
				m.handled.WithLabelValues(typ, service, mi.Name, code.String())
			}
		}
	}
}

// methodType is a method's grpc_type label.
func methodType(clientStreams, serverStreams bool) middleware.GRPCType {
	switch {
	case !clientStreams && !serverStreams:
		return middleware.Unary
	case !serverStreams:
		return middleware.ClientStream
	case !clientStreams:
		return middleware.ServerStream
	}
	return middleware.BidiStream
}

// callCounters are the counters of one call.
type callCounters struct {
	typ, service, method string
	sent, received       prometheus.Counter
	handled              *prometheus.CounterVec
}

// start counts a call as started and looks its message counters up. Unlike
// the provider, which makes a message counter's series on the first
// message, this makes both at once; the series of every method the server
// serves exist from initialize on, so what is exposed is the same.
func (m *grpcMetrics) start(meta middleware.CallMeta) *callCounters {
	c := &callCounters{typ: string(meta.Typ), service: meta.Service, method: meta.Method, handled: m.handled}
	c.sent = m.sent.WithLabelValues(c.typ, c.service, c.method)
	c.received = m.received.WithLabelValues(c.typ, c.service, c.method)
	m.started.WithLabelValues(c.typ, c.service, c.method).Inc()
	return c
}

// end counts the call as handled with the code of err; an error that is
// not a status is a context's error or UNKNOWN, as the server reports it.
func (c *callCounters) end(err error) {
	st, ok := status.FromError(err)
	if !ok {
		st = status.FromContextError(err)
	}
	c.handled.WithLabelValues(c.typ, c.service, c.method, st.Code().String()).Inc()
}

func (m *grpcMetrics) unaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		c := m.start(middleware.NewServerCallMeta(info.FullMethod, nil, req))
		c.received.Inc()
		resp, err := handler(ctx, req)
		if err == nil {
			c.sent.Inc()
		}
		c.end(err)
		return resp, err
	}
}

func (m *grpcMetrics) streamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		c := m.start(middleware.NewServerCallMeta(info.FullMethod, info, nil))
		err := handler(srv, &countedStream{ServerStream: ss, call: c})
		c.end(err)
		return err
	}
}

// countedStream counts the messages a stream sends and receives.
type countedStream struct {
	grpc.ServerStream
	call *callCounters
}

func (s *countedStream) SendMsg(m any) error {
	err := s.ServerStream.SendMsg(m)
	if err == nil {
		s.call.sent.Inc()
	}
	return err
}

func (s *countedStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.call.received.Inc()
	}
	return err
}
