// Command grpcceiling is the gRPC-only baseline of the benchmarks: a
// SubscriptionService that streams variables.count 1 KiB results straight
// from its handler (at variables.rate per second when set), with no
// upstream and no bridge in between. It uses the bridge's codec and stream
// limit, so what it measures is what gRPC alone costs between two processes
// on this machine: the ceiling of any gRPC bridge here.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/gqlbridge/gqlbridge/bench/upstream"
	"github.com/gqlbridge/gqlbridge/bridge"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/session"
)

func main() {
	addr := flag.String("grpc", "127.0.0.1:50051", "gRPC address")
	flag.Parse()
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	// The bridge's codec, with its default request limits, comes from a
	// bridge.Server that is never subscribed to: it dials nothing.
	codec, err := bridge.New(bridge.Config{Upstreams: map[string]*bridge.Upstream{
		"unused": {Session: session.Config{URL: "ws://127.0.0.1:1/unused"}}}})
	if err != nil {
		log.Fatal(err)
	}
	gs := grpc.NewServer(grpc.MaxConcurrentStreams(1<<20), codec.Codec())
	bridgev1.RegisterSubscriptionServiceServer(gs, server{})
	go func() { _ = gs.Serve(lis) }()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	gs.Stop()
}

type server struct {
	bridgev1.UnimplementedSubscriptionServiceServer
}

// Subscribe sends the upstream's results, byte for byte the same shape:
// one Next each, or with max_batch above 1 in Batch events of max_batch
// results (the most the caller asked for: what a bridge that always has a
// full batch queued would send). At a rate, results are not ready
// together: each goes as it is made, alone in its batch.
func (server) Subscribe(req *bridgev1.SubscribeRequest, stream grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error {
	fields := req.GetVariables().GetFields()
	count := int64(fields["count"].GetNumberValue())
	rate := fields["rate"].GetNumberValue()
	per := max(int64(req.GetMaxBatch()), 1)
	nexts := make([]*bridgev1.Next, per)
	for i := range nexts {
		nexts[i] = &bridgev1.Next{}
	}
	batch := &bridgev1.Batch{}
	resp := &bridgev1.SubscribeResponse{Event: &bridgev1.SubscribeResponse_Next{Next: nexts[0]}}
	if per > 1 {
		resp.Event = &bridgev1.SubscribeResponse_Batch{Batch: batch}
	}
	step := per
	if rate > 0 {
		step = 1
	}
	start := time.Now()
	for i := int64(1); i <= count; i += step {
		k := min(step, count-i+1)
		for j := range k {
			if rate > 0 {
				time.Sleep(time.Until(start.Add(time.Duration(float64(i+j-1) * float64(time.Second) / rate))))
			}
			next := nexts[j]
			next.Result = upstream.AppendResult(next.Result[:0], i+j, time.Now().UnixNano())
			next.Sequence = uint64(i + j)
		}
		batch.Nexts = nexts[:k]
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
	return nil
}
