package wiring

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// fakeStream is a server stream with nothing behind it but its context.
type fakeStream struct{ ctx context.Context }

func (s *fakeStream) SetHeader(metadata.MD) error  { return nil }
func (s *fakeStream) SendHeader(metadata.MD) error { return nil }
func (s *fakeStream) SetTrailer(metadata.MD)       {}
func (s *fakeStream) Context() context.Context     { return s.ctx }
func (s *fakeStream) SendMsg(any) error            { return nil }
func (s *fakeStream) RecvMsg(any) error            { return nil }

// TestStreamCallLoggerWritesTheMiddlewaresLine: for every kind of outcome,
// with and without a deadline and fields in the context, streamCallLogger
// writes the line go-grpc-middleware's logging interceptor writes for the
// same call (the call's duration and start aside, which differ between
// two calls), and it hands the handler the stream it got, context and all:
// nothing wraps the stream and nothing is kept for the call's life.
func TestStreamCallLoggerWritesTheMiddlewaresLine(t *testing.T) {
	t.Parallel()
	info := &grpc.StreamServerInfo{FullMethod: "/graphqlbridge.v1.SubscriptionService/Subscribe", IsServerStream: true}
	base := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40123}})
	deadline, cancel := context.WithDeadline(base, time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC))
	defer cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		err  error
	}{
		{"ok", base, nil},
		{"EOF", base, io.EOF},
		{"unavailable", base, status.Error(codes.Unavailable, "upstream x: draining")},
		{"not found", base, status.Error(codes.NotFound, `unknown upstream "y"`)},
		{"plain error", base, errors.New("broken")},
		{"internal", base, status.Error(codes.Internal, "internal error")},
		{"deadline", deadline, status.Error(codes.DeadlineExceeded, "context deadline exceeded")},
		{"fields in the context", logging.InjectFields(base, logging.Fields{"caller", "checkout"}), nil},
		{"no peer", context.Background(), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			line := func(icptFor func(logging.Logger) grpc.StreamServerInterceptor, wantSame bool) string {
				var buf strings.Builder
				log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug,
					ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
						switch a.Key {
						case slog.TimeKey, "grpc.time_ms", "grpc.start_time":
							return slog.String(a.Key, "X")
						}
						return a
					}}))
				ss := &fakeStream{ctx: tc.ctx}
				err := icptFor(slogAdapter(log))(nil, ss, info, func(_ any, got grpc.ServerStream) error {
					if same := got == grpc.ServerStream(ss) && got.Context() == tc.ctx; same != wantSame {
						t.Errorf("the handler got the stream it was given: %t, want %t", same, wantSame)
					}
					return tc.err
				})
				if err != tc.err {
					t.Errorf("the interceptor returned %v, want the handler's %v", err, tc.err)
				}
				return buf.String()
			}
			want := line(func(l logging.Logger) grpc.StreamServerInterceptor {
				return logging.StreamServerInterceptor(l, logging.WithLogOnEvents(logging.FinishCall))
			}, false)
			got := line(streamCallLogger, true)
			if got != want || strings.Count(got, "\n") != 1 {
				t.Errorf("streamCallLogger wrote\n%s\nthe middleware writes\n%s", got, want)
			}
		})
	}
}
