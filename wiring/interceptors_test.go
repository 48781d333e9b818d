package wiring

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// panicky is a SubscriptionService whose handler panics.
type panicky struct {
	bridgev1.UnimplementedSubscriptionServiceServer
}

func (panicky) Subscribe(*bridgev1.SubscribeRequest, grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error {
	panic("boom: a bug in a handler")
}

// TestInterceptorsRecoverLogAndCount: the binary's middleware turns a
// panicking handler into INTERNAL without the panic's text, logs it and the
// finished call, counts the call by code in the Prometheus server metrics,
// and the server keeps serving.
func TestInterceptorsRecoverLogAndCount(t *testing.T) {
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	m := newGRPCMetrics()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	gs := grpc.NewServer(interceptors(log, m, nil)...)
	bridgev1.RegisterSubscriptionServiceServer(gs, panicky{})
	conn := serveInMemory(t, gs)
	client := bridgev1.NewSubscriptionServiceClient(conn)
	for range 2 { // the second call shows the server survived the first
		stream, err := client.Subscribe(t.Context(), &bridgev1.SubscribeRequest{Upstream: "x", Query: "subscription { n }"})
		if err == nil {
			_, err = stream.Recv()
		}
		st := status.Convert(err)
		if st.Code() != codes.Internal || strings.Contains(st.Message(), "boom") {
			t.Fatalf("status %v, want INTERNAL without the panic's text", st)
		}
	}
	gs.Stop()
	if !strings.Contains(logs.String(), "panic in handler") || !strings.Contains(logs.String(), "boom") {
		t.Errorf("the panic was not logged:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "finished call") || !strings.Contains(logs.String(), "grpc.code=Internal") {
		t.Errorf("no log line for the finished call:\n%s", logs.String())
	}
	if n := counterValue(t, reg, "grpc_server_handled_total", map[string]string{"grpc_code": "Internal", "grpc_method": "Subscribe"}); n != 2 {
		t.Errorf("grpc_server_handled_total{grpc_code=Internal, grpc_method=Subscribe} = %v, want 2", n)
	}
}

// serveInMemory serves gs on an in-memory listener until the test ends and
// returns a client connection to it, closed when the test ends.
func serveInMemory(t *testing.T, gs *grpc.Server) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// counterValue is the value of the counter series name{labels} in reg, 0
// when there is none.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
