package main

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// scriptedService answers its nth Subscribe with calls[n % len(calls)].
type scriptedService struct {
	bridgev1.UnimplementedSubscriptionServiceServer
	calls []func(grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error
	mu    sync.Mutex
	n     int
}

func (s *scriptedService) Subscribe(_ *bridgev1.SubscribeRequest, stream grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error {
	s.mu.Lock()
	f := s.calls[s.n%len(s.calls)]
	s.n++
	s.mu.Unlock()
	return f(stream)
}

// serveScripted serves s on loopback until the test ends.
func serveScripted(t *testing.T, s *scriptedService) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	bridgev1.RegisterSubscriptionServiceServer(gs, s)
	done := make(chan struct{})
	go func() { _ = gs.Serve(lis); close(done) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	return lis.Addr().String()
}

func nextEvent(seq uint64, data string) *bridgev1.Next {
	return &bridgev1.Next{Sequence: seq, Result: []byte(data)}
}

func sendAll(stream grpc.ServerStreamingServer[bridgev1.SubscribeResponse], events ...*bridgev1.SubscribeResponse) error {
	for _, e := range events {
		if err := stream.Send(e); err != nil {
			return err
		}
	}
	return nil
}

// TestSubscribePrintsBatchesAsLines: bridge subscribe prints each result
// of a batch as its own line, exactly as it prints the same results sent
// one by one.
func TestSubscribePrintsBatchesAsLines(t *testing.T) {
	t.Parallel()
	results := []string{`{"data":{"n":1}}`, `{"data":{"n":2}}`, `{"data":{"n":3}}`}
	var nexts []*bridgev1.SubscribeResponse
	b := &bridgev1.Batch{}
	for i, r := range results {
		n := nextEvent(uint64(i+1), r)
		nexts = append(nexts, &bridgev1.SubscribeResponse{Event: &bridgev1.SubscribeResponse_Next{Next: n}})
		b.Nexts = append(b.Nexts, n)
	}
	addr := serveScripted(t, &scriptedService{calls: []func(grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error{
		func(stream grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error {
			return sendAll(stream, nexts...)
		},
		func(stream grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error {
			return sendAll(stream, &bridgev1.SubscribeResponse{Event: &bridgev1.SubscribeResponse_Batch{Batch: b}})
		},
	}})
	want := strings.Join(results, "\n") + "\n"
	for _, name := range []string{"one by one", "batched"} {
		var stdout, stderr bytes.Buffer
		if code := run(t.Context(), []string{"subscribe", "--addr", addr, "--upstream", "u", "--max-batch", "4", "q"}, &stdout, &stderr); code != 0 {
			t.Fatalf("%s: exit %d, stderr %q", name, code, stderr.String())
		}
		if stdout.String() != want || stderr.String() != "completed\n" {
			t.Fatalf("%s: stdout %q, stderr %q; want %q and completed", name, stdout.String(), stderr.String(), want)
		}
	}
}

// TestSubscribeResubscribeFlag: a stream that ends with BRIDGE_DRAINING
// makes bridge subscribe exit 14 (UNAVAILABLE) with the details; with
// --resubscribe it subscribes again, says so on stderr, and goes on to the
// completion. --addr takes several addresses.
func TestSubscribeResubscribeFlag(t *testing.T) {
	t.Parallel()
	draining, err := status.New(codes.Unavailable, "bridge is draining").WithDetails(
		&errdetails.ErrorInfo{Reason: "BRIDGE_DRAINING", Domain: "gqlbridge"},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	script := func() *scriptedService {
		return &scriptedService{calls: []func(grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error{
			func(stream grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error {
				if err := sendAll(stream, &bridgev1.SubscribeResponse{Event: &bridgev1.SubscribeResponse_Next{Next: nextEvent(1, `{"data":{"n":1}}`)}}); err != nil {
					return err
				}
				return draining.Err()
			},
			func(stream grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error {
				return sendAll(stream, &bridgev1.SubscribeResponse{Event: &bridgev1.SubscribeResponse_Next{Next: nextEvent(1, `{"data":{"n":2}}`)}})
			},
		}}
	}

	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"subscribe", "--addr", serveScripted(t, script()), "--upstream", "u", "q"}, &stdout, &stderr); code != 14 ||
		stdout.String() != "{\"data\":{\"n\":1}}\n" || !strings.Contains(stderr.String(), `"reason":"BRIDGE_DRAINING"`) ||
		strings.Contains(stderr.String(), "resubscrib") {
		t.Fatalf("without --resubscribe: exit %d, stdout %q, stderr %q; want 14 after one result, with the details", code, stdout.String(), stderr.String())
	}

	stdout.Reset()
	stderr.Reset()
	addrs := serveScripted(t, script()) + "," + serveScripted(t, script())
	code := run(t.Context(), []string{"subscribe", "--resubscribe", "--addr", addrs, "--upstream", "u", "q"}, &stdout, &stderr)
	if code != 0 || !strings.HasPrefix(stdout.String(), "{\"data\":{\"n\":1}}\n") || !strings.HasSuffix(stdout.String(), "{\"data\":{\"n\":2}}\n") {
		t.Fatalf("--resubscribe: exit %d, stdout %q, stderr %q; want 0, the first stream's result, then the last one's", code, stdout.String(), stderr.String())
	}
	for _, want := range []string{"resubscribing: Unavailable BRIDGE_DRAINING retry_delay=1ms in ", "(attempt 1)", "resubscribed after ", "completed"} {
		if !strings.Contains(stderr.String(), want) {
			t.Fatalf("--resubscribe: stderr %q lacks %q", stderr.String(), want)
		}
	}
}
