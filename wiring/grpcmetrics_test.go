package wiring

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// streamer sends max_batch results, then ends as the query says: "ok",
// "not found", "plain" (an error that is not a status), or "wait" (until
// the caller goes away).
type streamer struct {
	bridgev1.UnimplementedSubscriptionServiceServer
}

func (streamer) Subscribe(req *bridgev1.SubscribeRequest, ss grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error {
	for i := range req.MaxBatch {
		next := &bridgev1.Next{Result: []byte(`{"data":{}}`), Sequence: uint64(i + 1)}
		if err := ss.Send(&bridgev1.SubscribeResponse{Event: &bridgev1.SubscribeResponse_Next{Next: next}}); err != nil {
			return err
		}
	}
	switch req.Query {
	case "not found":
		return status.Error(codes.NotFound, "no such upstream")
	case "plain":
		return errors.New("not a status")
	case "wait":
		<-ss.Context().Done()
		return ss.Context().Err()
	}
	return nil
}

// TestGRPCMetricsCountAsTheProviderDoes: the bridge's own gRPC server
// counters give, series for series and value for value, what
// go-grpc-middleware's Prometheus provider gives for the same calls, when
// both watch one server: streams that end well, with an error, and by the
// caller's cancelling, with an error that is not a status; unary calls
// that succeed and fail; a bidirectional stream; and the series at zero of
// methods never called.
func TestGRPCMetricsCountAsTheProviderDoes(t *testing.T) {
	ours, theirs := newGRPCMetrics(), grpcprom.NewServerMetrics()
	ourReg, theirReg := prometheus.NewRegistry(), prometheus.NewRegistry()
	ourReg.MustRegister(ours)
	theirReg.MustRegister(theirs)
	gs := grpc.NewServer(grpc.WaitForHandlers(true),
		grpc.ChainUnaryInterceptor(ours.unaryInterceptor(), theirs.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(ours.streamInterceptor(), theirs.StreamServerInterceptor()))
	bridgev1.RegisterSubscriptionServiceServer(gs, streamer{})
	healthpb.RegisterHealthServer(gs, health.NewServer())
	reflection.Register(gs)
	ours.initialize(gs)
	theirs.InitializeMetrics(gs)
	conn := serveInMemory(t, gs)
	client := bridgev1.NewSubscriptionServiceClient(conn)

	drain := func(query string, n uint32) error {
		stream, err := client.Subscribe(t.Context(), &bridgev1.SubscribeRequest{Upstream: "x", Query: query, MaxBatch: n})
		if err != nil {
			return err
		}
		for {
			if _, err := stream.Recv(); err != nil {
				return err
			}
		}
	}
	if err := drain("ok", 5); !errors.Is(err, io.EOF) {
		t.Fatalf("ok stream ended with %v", err)
	}
	if err := drain("not found", 2); status.Code(err) != codes.NotFound {
		t.Fatalf("failing stream ended with %v", err)
	}
	if err := drain("plain", 0); status.Code(err) != codes.Unknown {
		t.Fatalf("stream failing with a plain error ended with %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	stream, err := client.Subscribe(ctx, &bridgev1.SubscribeRequest{Upstream: "x", Query: "wait", MaxBatch: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	hc := healthpb.NewHealthClient(conn)
	if _, err := hc.Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := hc.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("health check of an unknown service: %v", err)
	}
	refl, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		req := &reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"}}
		if err := refl.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	if err := refl.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := refl.Recv(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	gs.Stop() // with WaitForHandlers: every handler has returned and been counted

	text := func(reg *prometheus.Registry) []byte {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		for _, mf := range mfs {
			if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
				t.Fatal(err)
			}
		}
		return b.Bytes()
	}
	got, want := text(ourReg), text(theirReg)
	if !bytes.Equal(got, want) {
		t.Errorf("the bridge's counters differ from the provider's.\nours:\n%s\nthe provider's:\n%s", got, want)
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"grpc_server_msg_sent_total", map[string]string{"grpc_method": "Subscribe", "grpc_type": "server_stream"}, 8},
		{"grpc_server_msg_received_total", map[string]string{"grpc_method": "Subscribe"}, 4},
		{"grpc_server_handled_total", map[string]string{"grpc_method": "Subscribe", "grpc_code": "OK"}, 1},
		{"grpc_server_handled_total", map[string]string{"grpc_method": "Subscribe", "grpc_code": "NotFound"}, 1},
		{"grpc_server_handled_total", map[string]string{"grpc_method": "Subscribe", "grpc_code": "Unknown"}, 1},
		{"grpc_server_handled_total", map[string]string{"grpc_method": "Subscribe", "grpc_code": "Canceled"}, 1},
		{"grpc_server_msg_received_total", map[string]string{"grpc_method": "Check", "grpc_type": "unary"}, 2},
		{"grpc_server_msg_sent_total", map[string]string{"grpc_method": "Check", "grpc_type": "unary"}, 1},
		{"grpc_server_handled_total", map[string]string{"grpc_method": "Check", "grpc_code": "OK"}, 1},
		{"grpc_server_handled_total", map[string]string{"grpc_method": "Check", "grpc_code": "NotFound"}, 1},
		{"grpc_server_msg_received_total", map[string]string{"grpc_service": "grpc.reflection.v1.ServerReflection", "grpc_type": "bidi_stream"}, 2},
		{"grpc_server_msg_sent_total", map[string]string{"grpc_service": "grpc.reflection.v1.ServerReflection", "grpc_type": "bidi_stream"}, 2},
	} {
		if n := counterValue(t, ourReg, c.name, c.labels); n != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, n, c.want)
		}
	}
	for _, line := range []string{ // methods never called
		`grpc_server_started_total{grpc_method="Watch",grpc_service="grpc.health.v1.Health",grpc_type="server_stream"} 0`,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="List",grpc_service="grpc.health.v1.Health",grpc_type="unary"} 0`,
		`grpc_server_started_total{grpc_method="ServerReflectionInfo",grpc_service="grpc.reflection.v1alpha.ServerReflection",grpc_type="bidi_stream"} 0`,
	} {
		if !bytes.Contains(got, []byte(line+"\n")) {
			t.Errorf("no series %s in:\n%s", line, got)
		}
	}
}
