package client_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gqlbridge/gqlbridge/bridge"
	"github.com/gqlbridge/gqlbridge/client"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
	"github.com/gqlbridge/gqlbridge/session"
)

// A subscription through two bridge replicas: the replica serving it
// drains after two results, and the client resubscribes on the other one.
func Example() {
	replicas := startReplicas(2) // bridges in front of a demo upstream (below)
	defer replicas.stop()

	target, resolve := client.StaticAddresses(replicas.addrs...) // or dns:///headless-service:50051
	conn, err := grpc.NewClient(target,
		append(client.DialOptions(), resolve, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resubscribed := false
	err = client.New(conn).Subscribe(ctx, &bridgev1.SubscribeRequest{
		Upstream: "demo",
		Query:    `subscription { ticker(count: 0, intervalMs: 20) { n } }`,
		MaxBatch: 64, // results may arrive in batches; OnResult gets them one by one
	}, client.Handler{
		OnResult: func(r client.Result) {
			if r.Sequence > 2 {
				return
			}
			fmt.Printf("%d %s\n", r.Sequence, r.Data)
			if r.Sequence == 2 && !resubscribed {
				replicas.drainServing() // a rolling update takes this replica down
			} else if r.Sequence == 2 {
				cancel() // enough
			}
		},
		OnRetry: func(r client.Retrying) {
			if r.Attempt == 1 {
				fmt.Printf("stream ended: %s %s; resubscribing\n", r.Status.Code(), r.ErrorInfo.GetReason())
			}
		},
		OnResubscribed: func(client.Resubscribed) {
			resubscribed = true
			fmt.Println("resubscribed")
		},
	})
	fmt.Println(err)
	// Output:
	// 1 {"data":{"ticker":{"n":1}}}
	// 2 {"data":{"ticker":{"n":2}}}
	// stream ended: Unavailable BRIDGE_DRAINING; resubscribing
	// resubscribed
	// 1 {"data":{"ticker":{"n":1}}}
	// 2 {"data":{"ticker":{"n":2}}}
	// context canceled
}

// Retryable is the "retry?" column of docs/status.md.
func ExampleRetryable() {
	draining, _ := status.New(codes.Unavailable, "bridge is draining").WithDetails(
		&errdetails.ErrorInfo{Reason: "BRIDGE_DRAINING", Domain: "gqlbridge"},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(250 * time.Millisecond)})
	for _, st := range []*status.Status{
		draining, // from the bridge, with RetryInfo
		status.New(codes.Unavailable, "connection refused"),      // from gRPC: the replica is gone
		status.New(codes.InvalidArgument, "query is empty"),      // fix the request instead
		status.New(codes.ResourceExhausted, "message too large"), // from gRPC, no RetryInfo
	} {
		retry, after := client.Retryable(st)
		fmt.Println(st.Code(), retry, after)
	}
	// Output:
	// Unavailable true 250ms
	// Unavailable true 0s
	// InvalidArgument false 0s
	// ResourceExhausted false 0s
}

// replicas are bridge.Servers served over loopback gRPC, as `bridge serve`
// wires them (health service included), in front of one demo upstream.
type replicas struct {
	demo    *demoupstream.Server
	addrs   []string
	svcs    []*bridge.Server
	health  []*health.Server
	servers []*grpc.Server
	wg      sync.WaitGroup
}

func startReplicas(n int) *replicas {
	demo, err := demoupstream.Start(demoupstream.Options{})
	if err != nil {
		log.Fatal(err)
	}
	r := &replicas{demo: demo}
	for range n {
		svc, err := bridge.New(bridge.Config{
			Upstreams: map[string]*bridge.Upstream{"demo": {Session: session.Config{URL: demo.URL()}}},
			Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			log.Fatal(err)
		}
		gs := grpc.NewServer(bridge.Codec())
		bridgev1.RegisterSubscriptionServiceServer(gs, svc)
		hs := health.NewServer()
		hs.SetServingStatus(bridgev1.SubscriptionService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
		healthpb.RegisterHealthServer(gs, hs)
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			log.Fatal(err)
		}
		r.wg.Go(func() { _ = gs.Serve(lis) })
		r.addrs = append(r.addrs, lis.Addr().String())
		r.svcs, r.health, r.servers = append(r.svcs, svc), append(r.health, hs), append(r.servers, gs)
	}
	return r
}

// drainServing starts draining the replicas that serve a stream, as
// SIGTERM does: health NOT_SERVING, then the streams end with
// BRIDGE_DRAINING.
func (r *replicas) drainServing() {
	for i, svc := range r.svcs {
		if subs := svc.Snapshot().Upstreams[0].Subscriptions; subs > 0 {
			r.health[i].Shutdown()
			r.wg.Go(func() { svc.Drain(context.Background(), 0) })
		}
	}
}

func (r *replicas) stop() {
	for i, gs := range r.servers {
		r.svcs[i].Close()
		gs.Stop()
	}
	r.wg.Wait()
	r.demo.Close()
}
