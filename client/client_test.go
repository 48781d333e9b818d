package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// scripted is a SubscriptionService whose nth call runs script[n]; calls
// past the script end with UNIMPLEMENTED.
type scripted struct {
	bridgev1.UnimplementedSubscriptionServiceServer
	mu     sync.Mutex
	script []func(grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error
	calls  int
	reqs   []*bridgev1.SubscribeRequest
}

func (s *scripted) Subscribe(req *bridgev1.SubscribeRequest, stream grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error {
	s.mu.Lock()
	n := s.calls
	s.calls++
	s.reqs = append(s.reqs, req)
	s.mu.Unlock()
	if n >= len(s.script) {
		return status.Error(codes.Unimplemented, "script over")
	}
	return s.script[n](stream)
}

func (s *scripted) callCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// serve runs s on loopback until the test ends and returns a connection to it.
func serve(t *testing.T, s *scripted) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	bridgev1.RegisterSubscriptionServiceServer(gs, s)
	done := make(chan struct{})
	go func() { _ = gs.Serve(lis); close(done) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
		<-done
	})
	return conn
}

func send(events ...*bridgev1.SubscribeResponse) func(grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error {
	return func(stream grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error {
		for _, e := range events {
			if err := stream.Send(e); err != nil {
				return err
			}
		}
		return nil
	}
}

func then(f func(grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error, st *status.Status) func(grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error {
	return func(stream grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error {
		if err := f(stream); err != nil {
			return err
		}
		return st.Err()
	}
}

func fail(st *status.Status) func(grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error {
	return func(grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error { return st.Err() }
}

func subscribed() *bridgev1.SubscribeResponse {
	return &bridgev1.SubscribeResponse{Event: &bridgev1.SubscribeResponse_Lifecycle{Lifecycle: &bridgev1.Lifecycle{State: bridgev1.Lifecycle_STATE_SUBSCRIBED}}}
}

func next(seq uint64) *bridgev1.SubscribeResponse {
	return &bridgev1.SubscribeResponse{Event: &bridgev1.SubscribeResponse_Next{Next: &bridgev1.Next{Sequence: seq, Result: fmt.Appendf(nil, `{"data":{"n":%d}}`, seq)}}}
}

func batch(seqs ...uint64) *bridgev1.SubscribeResponse {
	b := &bridgev1.Batch{}
	for _, s := range seqs {
		b.Nexts = append(b.Nexts, next(s).GetNext())
	}
	return &bridgev1.SubscribeResponse{Event: &bridgev1.SubscribeResponse_Batch{Batch: b}}
}

// recorder writes a handler's events as lines.
type recorder struct {
	peers   []string // of the results
	lines   []string
	retries []Retrying
	resubs  []Resubscribed
}

func (r *recorder) handler() Handler {
	return Handler{
		OnResult: func(res Result) {
			r.peers = append(r.peers, res.Peer)
			r.lines = append(r.lines, fmt.Sprintf("result stream=%d seq=%d %s", res.Stream, res.Sequence, res.Data))
		},
		OnLifecycle: func(l *bridgev1.Lifecycle) { r.lines = append(r.lines, "lifecycle "+l.GetState().String()) },
		OnRetry: func(rt Retrying) {
			reason := "-"
			if rt.ErrorInfo != nil {
				reason = rt.ErrorInfo.GetReason()
			}
			r.lines = append(r.lines, fmt.Sprintf("retry stream=%d attempt=%d %s %s retryinfo=%v", rt.Stream, rt.Attempt, rt.Status.Code(), reason, rt.RetryInfo != nil))
			r.retries = append(r.retries, rt)
		},
		OnResubscribed: func(rs Resubscribed) {
			r.lines = append(r.lines, fmt.Sprintf("resubscribed stream=%d attempts=%d", rs.Stream, rs.Attempts))
			r.resubs = append(r.resubs, rs)
		},
	}
}

func (r *recorder) check(t *testing.T, want ...string) {
	t.Helper()
	if got := strings.Join(r.lines, "\n"); got != strings.Join(want, "\n") {
		t.Fatalf("events:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestSubscribeResubscribes: a drained stream, a broken connection and a
// full replica are each retried; batches are unrolled; the subscription
// completes with nil; the handler hears every end and the resubscribe.
func TestSubscribeResubscribes(t *testing.T) {
	t.Parallel()
	s := &scripted{script: []func(grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error{
		then(send(subscribed(), next(1), next(2)), bridgeStatus(t, codes.Unavailable, "BRIDGE_DRAINING", 2*time.Millisecond)),
		fail(status.New(codes.Unavailable, "connection refused")),
		fail(bridgeStatus(t, codes.ResourceExhausted, "LIMIT_REACHED", time.Millisecond)),
		send(subscribed(), batch(1, 2, 3), next(4)),
	}}
	conn := serve(t, s)
	var r recorder
	c := New(conn, WithRetry(Retry{Initial: time.Millisecond, Max: 4 * time.Millisecond}))
	req := &bridgev1.SubscribeRequest{Upstream: "u", Query: "subscription { n }", MaxBatch: 16}
	if err := c.Subscribe(testCtx(t), req, r.handler()); err != nil {
		t.Fatalf("Subscribe = %v, want nil (completed)", err)
	}
	r.check(t,
		"lifecycle STATE_SUBSCRIBED",
		`result stream=1 seq=1 {"data":{"n":1}}`,
		`result stream=1 seq=2 {"data":{"n":2}}`,
		"retry stream=1 attempt=1 Unavailable BRIDGE_DRAINING retryinfo=true",
		"retry stream=2 attempt=2 Unavailable - retryinfo=false",
		"retry stream=3 attempt=3 ResourceExhausted LIMIT_REACHED retryinfo=true",
		"resubscribed stream=4 attempts=3",
		"lifecycle STATE_SUBSCRIBED",
		`result stream=4 seq=1 {"data":{"n":1}}`,
		`result stream=4 seq=2 {"data":{"n":2}}`,
		`result stream=4 seq=3 {"data":{"n":3}}`,
		`result stream=4 seq=4 {"data":{"n":4}}`,
	)
	// The RetryInfo delay is a floor; the backoff ceilings 1, 2, 4 ms are
	// the jitter's range on top of it.
	for i, c := range []struct{ lo, hi time.Duration }{
		{2 * time.Millisecond, 3 * time.Millisecond}, {0, 2 * time.Millisecond}, {time.Millisecond, 5 * time.Millisecond},
	} {
		if d := r.retries[i].Delay; d < c.lo || d > c.hi {
			t.Errorf("retry %d: delay %v, want in [%v, %v]", i+1, d, c.lo, c.hi)
		}
	}
	if p := r.retries[0].Peer; p == "" || !strings.HasPrefix(p, "127.0.0.1:") {
		t.Errorf("the drained stream's peer is %q, want the server's address", p)
	}
	if p := r.resubs[0].Peer; p == "" {
		t.Errorf("the resubscribed stream has no peer")
	}
	for i, p := range r.peers {
		if !strings.HasPrefix(p, "127.0.0.1:") {
			t.Errorf("result %d came from peer %q, want the server's address", i+1, p)
		}
	}
	for i, req := range s.reqs {
		if req.GetMaxBatch() != 16 || req.GetQuery() != "subscription { n }" {
			t.Errorf("call %d sent %v", i+1, req)
		}
	}
}

// TestSubscribeTerminal: statuses that retrying will not fix end Subscribe
// at once with an *Error carrying the status and the ErrorInfo.
func TestSubscribeTerminal(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		st     func(t *testing.T) *status.Status
		reason string
	}{
		{"INVALID_ARGUMENT", func(t *testing.T) *status.Status {
			return bridgeStatus(t, codes.InvalidArgument, "INVALID_REQUEST", -1)
		}, "INVALID_REQUEST"},
		{"NOT_FOUND", func(t *testing.T) *status.Status { return bridgeStatus(t, codes.NotFound, "UNKNOWN_UPSTREAM", -1) }, "UNKNOWN_UPSTREAM"},
		{"SLOW_CONSUMER", func(t *testing.T) *status.Status {
			return bridgeStatus(t, codes.ResourceExhausted, "SLOW_CONSUMER", -1)
		}, "SLOW_CONSUMER"},
		{"bridge INTERNAL", func(t *testing.T) *status.Status { return bridgeStatus(t, codes.Internal, "BRIDGE_PROTOCOL_FAULT", -1) }, "BRIDGE_PROTOCOL_FAULT"},
		{"UNIMPLEMENTED from gRPC", func(*testing.T) *status.Status { return status.New(codes.Unimplemented, "unknown service") }, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			st := c.st(t)
			s := &scripted{script: []func(grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error{
				then(send(subscribed(), next(1)), st),
			}}
			var r recorder
			err := New(serve(t, s)).Subscribe(testCtx(t), &bridgev1.SubscribeRequest{Upstream: "u", Query: "q"}, r.handler())
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Subscribe = %v, want *Error", err)
			}
			if status.Code(err) != st.Code() || e.GaveUp || e.Attempts != 1 {
				t.Fatalf("error %v: code %v, GaveUp %v, Attempts %d", err, status.Code(err), e.GaveUp, e.Attempts)
			}
			if got := e.ErrorInfo.GetReason(); got != c.reason {
				t.Fatalf("ErrorInfo reason %q, want %q", got, c.reason)
			}
			if s.callCount() != 1 {
				t.Fatalf("%d calls, want 1", s.callCount())
			}
			r.check(t, "lifecycle STATE_SUBSCRIBED", `result stream=1 seq=1 {"data":{"n":1}}`)
		})
	}
}

// TestSubscribeBudget: MaxAttempts and MaxElapsed end a subscription that
// stays down, with the last status and GaveUp; WithoutResubscribe returns
// the first retryable end.
func TestSubscribeBudget(t *testing.T) {
	t.Parallel()
	down := func(n int, st *status.Status) []func(grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error {
		var s []func(grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error
		for range n {
			s = append(s, fail(st))
		}
		return s
	}
	for _, c := range []struct {
		name    string
		script  []func(grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error
		opts    []Option
		calls   int
		retries int
	}{
		{"max attempts", down(10, status.New(codes.Unavailable, "refused")),
			[]Option{WithRetry(Retry{Initial: time.Millisecond, MaxAttempts: 3})}, 4, 3},
		// A live stream resets the count: 2 retries, the live stream, 3 retries.
		{"max attempts reset by a live stream", append(append(down(2, status.New(codes.Unavailable, "refused")),
			then(send(next(1)), bridgeStatus(t, codes.Unavailable, "BRIDGE_DRAINING", time.Millisecond))),
			down(10, status.New(codes.Unavailable, "refused"))...),
			[]Option{WithRetry(Retry{Initial: time.Millisecond, MaxAttempts: 3})}, 6, 5},
		{"max elapsed", down(10, bridgeStatus(t, codes.Unavailable, "UPSTREAM_UNAVAILABLE", time.Hour)),
			[]Option{WithRetry(Retry{MaxElapsed: time.Minute})}, 1, 0},
		{"without resubscribe", down(10, bridgeStatus(t, codes.Unavailable, "BRIDGE_DRAINING", time.Millisecond)),
			[]Option{WithoutResubscribe()}, 1, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := &scripted{script: c.script}
			var r recorder
			err := New(serve(t, s), c.opts...).Subscribe(testCtx(t), &bridgev1.SubscribeRequest{Upstream: "u", Query: "q"}, r.handler())
			var e *Error
			if !errors.As(err, &e) || !e.GaveUp || status.Code(err) != codes.Unavailable {
				t.Fatalf("Subscribe = %v, want a given-up UNAVAILABLE *Error", err)
			}
			if s.callCount() != c.calls || len(r.retries) != c.retries {
				t.Fatalf("%d calls and %d retries, want %d and %d; events:\n%s", s.callCount(), len(r.retries), c.calls, c.retries, strings.Join(r.lines, "\n"))
			}
		})
	}
}

// TestSubscribeCancel: ending ctx while waiting to resubscribe, or while a
// stream is open, returns ctx.Err() at once.
func TestSubscribeCancel(t *testing.T) {
	t.Parallel()
	t.Run("while waiting", func(t *testing.T) {
		t.Parallel()
		s := &scripted{script: []func(grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error{
			fail(bridgeStatus(t, codes.Unavailable, "UPSTREAM_UNAVAILABLE", time.Minute)),
		}}
		ctx, cancel := context.WithCancel(testCtx(t))
		h := Handler{OnRetry: func(Retrying) { cancel() }}
		if err := New(serve(t, s)).Subscribe(ctx, &bridgev1.SubscribeRequest{Upstream: "u", Query: "q"}, h); !errors.Is(err, context.Canceled) {
			t.Fatalf("Subscribe = %v, want context.Canceled", err)
		}
	})
	t.Run("while streaming", func(t *testing.T) {
		t.Parallel()
		s := &scripted{script: []func(grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error{
			func(stream grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error {
				if err := stream.Send(next(1)); err != nil {
					return err
				}
				<-stream.Context().Done()
				return nil
			},
		}}
		ctx, cancel := context.WithCancel(testCtx(t))
		h := Handler{OnResult: func(Result) { cancel() }}
		if err := New(serve(t, s)).Subscribe(ctx, &bridgev1.SubscribeRequest{Upstream: "u", Query: "q"}, h); !errors.Is(err, context.Canceled) {
			t.Fatalf("Subscribe = %v, want context.Canceled", err)
		}
	})
}

// counting serves every Subscribe with one result, then OK.
type counting struct {
	bridgev1.UnimplementedSubscriptionServiceServer
	calls atomic.Int64
}

func (c *counting) Subscribe(_ *bridgev1.SubscribeRequest, stream grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error {
	c.calls.Add(1)
	return stream.Send(next(1))
}

// TestStaticAddresses: the static resolver and DialOptions' round robin
// (with health checking) spread streams over every address.
func TestStaticAddresses(t *testing.T) {
	t.Parallel()
	var addrs []string
	var servers []*counting
	for range 3 {
		s := &counting{}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		gs := grpc.NewServer()
		bridgev1.RegisterSubscriptionServiceServer(gs, s)
		hs := health.NewServer()
		hs.SetServingStatus(bridgev1.SubscriptionService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
		healthpb.RegisterHealthServer(gs, hs)
		done := make(chan struct{})
		go func() { _ = gs.Serve(lis); close(done) }()
		t.Cleanup(func() { gs.Stop(); <-done })
		addrs = append(addrs, lis.Addr().String())
		servers = append(servers, s)
	}
	target, resolve := StaticAddresses(addrs...)
	if !strings.HasPrefix(target, "gqlbridge-static:///") {
		t.Fatalf("target %q", target)
	}
	conn, err := grpc.NewClient(target, append(DialOptions(), resolve, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := New(conn)
	ctx := testCtx(t)
	// Round robin picks among the replicas connected so far: subscribe
	// until every one has served a stream (the test's deadline bounds it).
	reached := func() int {
		n := 0
		for _, s := range servers {
			if s.calls.Load() > 0 {
				n++
			}
		}
		return n
	}
	for reached() < len(servers) {
		if err := c.Subscribe(ctx, &bridgev1.SubscribeRequest{Upstream: "u", Query: "q"}, Handler{}); err != nil {
			t.Fatalf("Subscribe = %v; streams reached %d of %d replicas", err, reached(), len(servers))
		}
	}
}
