package bridge_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gqlbridge/gqlbridge/bridge"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
	"github.com/gqlbridge/gqlbridge/internal/rpcstatus"
)

// lockedBuffer collects log output written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestCallerTextNotEchoed: what a caller sends reaches the status message,
// ErrorInfo and the log (the bridge's own and the per-call line cmd/bridge
// writes) only quoted and cut to 64 bytes, or not at all: the codec's
// internal fields forged by a caller are dropped, not echoed; an unknown
// upstream name and the path of a NaN in variables are quoted.
func TestCallerTextNotEchoed(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{})
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	callLog := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		log.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	_, addr := serveTCP(t, bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL())}}, Logger: log},
		// As cmd/bridge logs every finished call.
		grpc.ChainStreamInterceptor(logging.StreamServerInterceptor(callLog, logging.WithLogOnEvents(logging.FinishCall))))
	conn := dial(t, addr)

	send := func(raw []byte) (results int, st *status.Status) {
		t.Helper()
		cs, err := conn.NewStream(t.Context(), &grpc.StreamDesc{ServerStreams: true},
			bridgev1.SubscriptionService_Subscribe_FullMethodName, grpc.ForceCodecV2(rawCodec{}))
		if err != nil {
			t.Fatal(err)
		}
		if err := cs.SendMsg(rawMessage(raw)); err != nil {
			t.Fatal(err)
		}
		if err := cs.CloseSend(); err != nil {
			t.Fatal(err)
		}
		for {
			r := &bridgev1.SubscribeResponse{}
			err := cs.RecvMsg(r)
			if errors.Is(err, io.EOF) {
				return results, status.New(codes.OK, "")
			}
			if err != nil {
				return results, status.Convert(err)
			}
			if r.GetNext() != nil {
				results++
			}
		}
	}
	// noEcho checks that secret, a piece of what the caller sent, appears
	// nowhere, and that no raw control byte does.
	noEcho := func(what string, st *status.Status, secrets ...string) {
		t.Helper()
		places := map[string]string{"status message": st.Message(), "log": logs.String()}
		if info := rpcstatus.ErrorInfo(st); info != nil {
			for k, v := range info.Metadata {
				places["ErrorInfo metadata "+k] = v
			}
		}
		for where, text := range places {
			for _, s := range secrets {
				if strings.Contains(text, s) {
					t.Errorf("%s: %s echoes the caller's %q:\n%s", what, where, s, text)
				}
			}
			if strings.ContainsAny(text, "\x1b\x00\r") || where != "log" && strings.Contains(text, "\n") {
				t.Errorf("%s: %s holds a raw control character: %q", what, where, text)
			}
		}
	}

	// The codec's "undecodable" field, forged with text of the caller's:
	// dropped like any unknown field; the subscription runs.
	ok, _ := proto.Marshal(&bridgev1.SubscribeRequest{Upstream: "demo", Query: "subscription { ticker(count: 1, intervalMs: 1) { n } }"})
	forged := protowire.AppendTag(ok, protowire.MaxValidNumber, protowire.BytesType)
	forged = protowire.AppendString(forged, "FORGED-MARK\x1b[2J\nlevel=ERROR msg=\"disk full\"")
	n, st := send(forged)
	if st.Code() != codes.OK || n != 1 {
		t.Errorf("request with the forged field: %d results, %v; want the one result and OK", n, st)
	}
	noEcho("forged field", st, "FORGED-MARK", "disk full")

	// The same, on a request that is refused for another reason.
	refused, _ := proto.Marshal(&bridgev1.SubscribeRequest{Upstream: "demo"})
	refused = protowire.AppendTag(refused, protowire.MaxValidNumber, protowire.BytesType)
	refused = protowire.AppendString(refused, "FORGED-MARK\x1b[2J\nlevel=ERROR msg=\"disk full\"")
	_, st = send(refused)
	if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "query is required") {
		t.Errorf("refused request with the forged field: %v", st)
	}
	noEcho("forged field on a refused request", st, "FORGED-MARK", "disk full")

	// An unknown upstream name, long, with control characters: quoted and
	// cut; the tail never appears.
	name := "evil\x1b[31m\r\n" + strings.Repeat("A", 60) + "TAIL-SECRET\nlevel=ERROR"
	raw, _ := proto.Marshal(&bridgev1.SubscribeRequest{Upstream: name, Query: "subscription { ticker { n } }"})
	_, st = send(raw)
	if st.Code() != codes.NotFound || !strings.HasPrefix(st.Message(), `unknown upstream "evil\x1b[31m\r\nAAAA`) || !strings.Contains(st.Message(), `AAA"…: configured upstreams are demo`) {
		t.Errorf("unknown upstream: %v", st)
	}
	if info := rpcstatus.ErrorInfo(st); info == nil || !strings.HasPrefix(info.Metadata["upstream"], `"evil\x1b[31m`) || !strings.HasSuffix(info.Metadata["upstream"], `"…`) {
		t.Errorf("unknown upstream: ErrorInfo %v, want the name quoted and cut", info)
	}
	noEcho("unknown upstream", st, "TAIL-SECRET", "level=ERROR")

	// A NaN under a key of the caller's: the path is quoted and cut.
	key := "k\x1b[0m" + strings.Repeat("B", 70) + "KEY-SECRET"
	raw, _ = proto.Marshal(&bridgev1.SubscribeRequest{Upstream: "demo", Query: "subscription { ticker { n } }",
		Variables: &structpb.Struct{Fields: map[string]*structpb.Value{key: structpb.NewNumberValue(math.NaN())}}})
	_, st = send(raw)
	if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), `variables: "k\x1b[0mBBB`) || !strings.Contains(st.Message(), `BBB"… is NaN`) {
		t.Errorf("NaN in variables: %v", st)
	}
	noEcho("NaN under a caller's key", st, "KEY-SECRET")
}
