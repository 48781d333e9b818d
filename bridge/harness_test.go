package bridge_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/gqlbridge/gqlbridge/bridge"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/session"
)

// env is a bridge under test and a client connected to it.
type env struct {
	svc    *bridge.Server
	client bridgev1.SubscriptionServiceClient
	conn   *grpc.ClientConn
}

type transport int

const (
	inMemory transport = iota
	overTCP
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fast makes a session config with test-sized timings.
func fast(url string) session.Config {
	return session.Config{URL: url, Backoff: session.Backoff{Initial: 5 * time.Millisecond, Max: 50 * time.Millisecond}}
}

// startBridge serves cfg over bufconn or loopback TCP; everything stops in
// t.Cleanup.
func startBridge(t *testing.T, tr transport, cfg bridge.Config) *env {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	svc, err := bridge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(svc.Codec()) // as cmd/bridge wires it
	bridgev1.RegisterSubscriptionServiceServer(gs, svc)
	var lis net.Listener
	var dial []grpc.DialOption
	target := ""
	if tr == inMemory {
		bl := bufconn.Listen(1 << 20)
		lis = bl
		dial = append(dial, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return bl.DialContext(ctx) }))
		target = "passthrough:///bufconn"
	} else {
		if lis, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		target = lis.Addr().String()
	}
	done := make(chan struct{})
	go func() { _ = gs.Serve(lis); close(done) }()
	conn, err := grpc.NewClient(target, append(dial, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		svc.Close()
		gs.Stop()
		<-done
	})
	return &env{svc: svc, client: bridgev1.NewSubscriptionServiceClient(conn), conn: conn}
}

// stream is an open Subscribe call with helpers to read it.
type stream struct {
	t      *testing.T
	s      grpc.ServerStreamingClient[bridgev1.SubscribeResponse]
	cancel context.CancelFunc
}

func (e *env) subscribe(t *testing.T, req *bridgev1.SubscribeRequest) *stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	s, err := e.client.Subscribe(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return &stream{t: t, s: s, cancel: cancel}
}

// next returns the next event, or the terminal error.
func (s *stream) next() (*bridgev1.SubscribeResponse, error) { return s.s.Recv() }

// expectLifecycle reads one event and checks it is the given state.
func (s *stream) expectLifecycle(state bridgev1.Lifecycle_State) *bridgev1.Lifecycle {
	s.t.Helper()
	r, err := s.next()
	if err != nil {
		s.t.Fatalf("want %v, got error %v", state, err)
	}
	if r.GetLifecycle().GetState() != state {
		s.t.Fatalf("want %v, got %v", state, r)
	}
	return r.GetLifecycle()
}

// expectNext reads one event and checks it is a result.
func (s *stream) expectNext() *bridgev1.Next {
	s.t.Helper()
	r, err := s.next()
	if err != nil {
		s.t.Fatalf("want a result, got error %v", err)
	}
	if r.GetNext() == nil {
		s.t.Fatalf("want a result, got %v", r)
	}
	return r.GetNext()
}

// end reads until the stream ends, returning results seen and the status.
func (s *stream) end() (results []*bridgev1.Next, st *status.Status) {
	for {
		r, err := s.next()
		if errors.Is(err, io.EOF) {
			return results, status.New(codes.OK, "")
		}
		if err != nil {
			return results, status.Convert(err)
		}
		if n := r.GetNext(); n != nil {
			results = append(results, n)
		}
	}
}
