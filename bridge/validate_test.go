package bridge_test

import (
	"context"
	"errors"
	"io"
	"math"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gqlbridge/gqlbridge/bridge"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
	"github.com/gqlbridge/gqlbridge/internal/rpcstatus"
)

const infiniteTicker = "subscription { ticker(count: 0, intervalMs: 10) { n } }"

// expectRefusal checks a bridge-side refusal: code, the exact message, and
// ErrorInfo{domain gqlbridge, reason, metadata {upstream}}; RetryInfo only
// when wantRetry.
func expectRefusal(t *testing.T, st *status.Status, code codes.Code, reason, upstream, msg string, wantRetry bool) {
	t.Helper()
	if st.Code() != code {
		t.Fatalf("code %v (%q), want %v", st.Code(), st.Message(), code)
	}
	if st.Message() != msg {
		t.Fatalf("message %q,\nwant    %q", st.Message(), msg)
	}
	info := rpcstatus.ErrorInfo(st)
	if info == nil {
		t.Fatalf("no ErrorInfo in %v", st.Details())
	}
	if info.Domain != "gqlbridge" || info.Reason != reason {
		t.Fatalf("ErrorInfo domain %q reason %q, want gqlbridge %s", info.Domain, info.Reason, reason)
	}
	if len(info.Metadata) != 1 || info.Metadata["upstream"] != upstream {
		t.Fatalf("ErrorInfo metadata %v, want exactly upstream=%q", info.Metadata, upstream)
	}
	if ri := rpcstatus.RetryInfo(st); (ri != nil) != wantRetry {
		t.Fatalf("RetryInfo %v, want present=%v", ri, wantRetry)
	} else if ri != nil && ri.GetRetryDelay().AsDuration() <= 0 {
		t.Fatalf("RetryInfo delay %v", ri.GetRetryDelay().AsDuration())
	}
}

// TestValidation: malformed requests are refused before any upstream work,
// with a status that says what to fix.
func TestValidation(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{})
	e := startBridge(t, inMemory, bridge.Config{
		Upstreams:         map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL())}, "other": {Session: fast(demo.URL())}},
		MaxQueryBytes:     200,
		MaxVariablesBytes: 100,
	})
	nan := &structpb.Struct{Fields: map[string]*structpb.Value{"x": structpb.NewNumberValue(math.NaN())}}
	inf := &structpb.Struct{Fields: map[string]*structpb.Value{"deep": structpb.NewStructValue(
		&structpb.Struct{Fields: map[string]*structpb.Value{"list": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{
			structpb.NewNumberValue(1), structpb.NewNumberValue(math.Inf(-1)),
		}})}})}}
	big, err := structpb.NewStruct(map[string]any{"s": strings.Repeat("v", 94)}) // {"s":"vvv…"} is 102 bytes
	if err != nil {
		t.Fatal(err)
	}
	fits, err := structpb.NewStruct(map[string]any{"s": strings.Repeat("v", 92)}) // exactly 100 bytes
	if err != nil {
		t.Fatal(err)
	}
	bigExt, err := structpb.NewStruct(map[string]any{"e": strings.Repeat("w", 40)}) // 48 bytes, +{"s":…} 100 = 148
	if err != nil {
		t.Fatal(err)
	}
	query201 := "subscription { ticker { n } }" + strings.Repeat(" ", 201-29)

	for _, tc := range []struct {
		name     string
		req      *bridgev1.SubscribeRequest
		code     codes.Code
		reason   string
		upstream string // in ErrorInfo metadata
		msg      string
	}{
		{"unknown upstream", &bridgev1.SubscribeRequest{Upstream: "orders", Query: infiniteTicker},
			codes.NotFound, bridge.ReasonUnknownUpstream, "orders",
			`unknown upstream "orders": configured upstreams are demo, other`},
		{"no upstream", &bridgev1.SubscribeRequest{Query: infiniteTicker},
			codes.InvalidArgument, bridge.ReasonInvalidRequest, "",
			"upstream is required: name one of the bridge's configured upstreams"},
		{"empty query", &bridgev1.SubscribeRequest{Upstream: "demo"},
			codes.InvalidArgument, bridge.ReasonInvalidRequest, "demo",
			`query is required: send a GraphQL document such as "subscription { ... }"`},
		{"whitespace query", &bridgev1.SubscribeRequest{Upstream: "demo", Query: " \t\r\n "},
			codes.InvalidArgument, bridge.ReasonInvalidRequest, "demo",
			`query is required: send a GraphQL document such as "subscription { ... }"`},
		{"oversized query", &bridgev1.SubscribeRequest{Upstream: "demo", Query: query201},
			codes.InvalidArgument, bridge.ReasonInvalidRequest, "demo",
			"query is 201 bytes; the limit is 200"},
		{"oversized variables", &bridgev1.SubscribeRequest{Upstream: "demo", Query: infiniteTicker, Variables: big},
			codes.InvalidArgument, bridge.ReasonInvalidRequest, "demo",
			"variables and extensions are 102 bytes of JSON; the limit is 100"},
		{"oversized variables plus extensions", &bridgev1.SubscribeRequest{Upstream: "demo", Query: infiniteTicker, Variables: fits, Extensions: bigExt},
			codes.InvalidArgument, bridge.ReasonInvalidRequest, "demo",
			"variables and extensions are 148 bytes of JSON; the limit is 100"},
		{"NaN in variables", &bridgev1.SubscribeRequest{Upstream: "demo", Query: infiniteTicker, Variables: nan},
			codes.InvalidArgument, bridge.ReasonInvalidRequest, "demo",
			`variables: "x" is NaN, which JSON cannot represent: send a finite number, a string or null`},
		{"Infinity in extensions", &bridgev1.SubscribeRequest{Upstream: "demo", Query: infiniteTicker, Extensions: inf},
			codes.InvalidArgument, bridge.ReasonInvalidRequest, "demo",
			`extensions: "deep.list[1]" is -Inf, which JSON cannot represent: send a finite number, a string or null`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, st := e.subscribe(t, tc.req).end()
			expectRefusal(t, st, tc.code, tc.reason, tc.upstream, tc.msg, false)
		})
	}
	// A refused request does no upstream work.
	if st := demo.Stats(); st.SubscriptionsStarted != 0 || st.Connections != 0 {
		t.Fatalf("refused requests reached the upstream: %+v", st)
	}
	// The limits are inclusive: exactly MaxVariablesBytes is accepted.
	s := e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "demo", Query: "subscription { ticker(count: 1) { n } }", Variables: fits})
	if res, st := s.end(); st.Code() != codes.OK || len(res) != 1 {
		t.Fatalf("100 bytes of variables: %d results, %v", len(res), st)
	}
}

// TestValidationInvalidUTF8 calls the service directly: proto3 strings must
// be valid UTF-8, so no conforming client can send this, and the gRPC codec
// refuses it before the service (see TestInvalidUTF8OnTheWire).
func TestValidationInvalidUTF8(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{})
	svc, err := bridge.New(bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL())}}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	for name, req := range map[string]*bridgev1.SubscribeRequest{
		"operation_name": {Upstream: "demo", Query: infiniteTicker, OperationName: "Tick\xff"},
		"query":          {Upstream: "demo", Query: "subscription \xc3\x28 { ticker { n } }"},
	} {
		t.Run(name, func(t *testing.T) {
			err := svc.Subscribe(req, &fakeStream{ctx: t.Context()})
			expectRefusal(t, status.Convert(err), codes.InvalidArgument, bridge.ReasonInvalidRequest, "demo",
				"query and operation_name must be valid UTF-8", false)
		})
	}
}

// TestInvalidUTF8OnTheWire sends a hand-encoded request whose
// operation_name is not UTF-8, as a non-Go client may (protobuf.js encodes a
// lone surrogate as such bytes). grpc-go's codec rejects it while decoding,
// before the service runs, and reports INTERNAL; the server's Codec,
// which cmd/bridge installs, must turn that into the bridge's
// INVALID_ARGUMENT / INVALID_REQUEST like every other malformed request.
func TestInvalidUTF8OnTheWire(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{})
	_, addr := serveTCP(t, bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL())}}}) // with the server's Codec
	conn := dial(t, addr)

	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, "demo")
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendString(b, infiniteTicker)
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("Tick\xff"))
	if err := proto.Unmarshal(b, &bridgev1.SubscribeRequest{}); err == nil {
		t.Fatal("the hand-encoded request decodes: the test no longer sends invalid UTF-8")
	}

	cs, err := conn.NewStream(t.Context(), &grpc.StreamDesc{ServerStreams: true},
		bridgev1.SubscriptionService_Subscribe_FullMethodName, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.SendMsg(rawMessage(b)); err != nil {
		t.Fatal(err)
	}
	if err := cs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	err = cs.RecvMsg(&bridgev1.SubscribeResponse{})
	st := status.Convert(err)
	if errors.Is(err, io.EOF) || st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "UTF-8") {
		t.Fatalf("got %v; want INVALID_ARGUMENT saying the strings must be UTF-8", err)
	}
	if info := rpcstatus.ErrorInfo(st); info == nil || info.Domain != "gqlbridge" || info.Reason != bridge.ReasonInvalidRequest {
		t.Fatalf("ErrorInfo %v, want gqlbridge/%s like every other refusal", info, bridge.ReasonInvalidRequest)
	}
	if demo.Stats().Connections != 0 {
		t.Fatal("the request reached the upstream")
	}
}

// rawMessage is a request already encoded.
type rawMessage []byte

// rawCodec sends rawMessage as is and decodes responses with proto.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.(rawMessage); ok {
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	b, err := proto.Marshal(v.(proto.Message))
	return mem.BufferSlice{mem.SliceBuffer(b)}, err
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}

func (rawCodec) Name() string { return "proto" }

// fakeStream is a server stream for calling the service directly.
type fakeStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent []*bridgev1.SubscribeResponse
}

func (f *fakeStream) Context() context.Context { return f.ctx }
func (f *fakeStream) Send(r *bridgev1.SubscribeResponse) error {
	f.sent = append(f.sent, proto.Clone(r).(*bridgev1.SubscribeResponse))
	return nil
}
func (f *fakeStream) SetHeader(metadata.MD) error  { return nil }
func (f *fakeStream) SendHeader(metadata.MD) error { return nil }
func (f *fakeStream) SetTrailer(metadata.MD)       {}

// TestSubscriptionLimits: the total and per-upstream caps refuse further
// streams with RESOURCE_EXHAUSTED / LIMIT_REACHED and RetryInfo, and free a
// slot when a stream ends.
func TestSubscriptionLimits(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{})
	cfg := bridge.Config{
		Upstreams: map[string]*bridge.Upstream{
			"capped": {Session: fast(demo.URL()), MaxSubscriptions: 1},
			"free":   {Session: fast(demo.URL())},
		},
		MaxSubscriptions: 3,
	}
	reg := withMetrics(&cfg)
	e := startBridge(t, inMemory, cfg)
	req := func(up string) *bridgev1.SubscribeRequest {
		return &bridgev1.SubscribeRequest{Upstream: up, Query: infiniteTicker}
	}

	// Per-upstream cap: one stream on "capped".
	c1 := e.subscribe(t, req("capped"))
	c1.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
	_, st := e.subscribe(t, req("capped")).end()
	expectRefusal(t, st, codes.ResourceExhausted, bridge.ReasonLimitReached, "capped",
		`upstream "capped" serves at most 1 subscriptions on this replica; retry later`, true)

	// Total cap: two more on "free" make three.
	f1 := e.subscribe(t, req("free"))
	f1.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
	f2 := e.subscribe(t, req("free"))
	f2.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
	_, st = e.subscribe(t, req("free")).end()
	expectRefusal(t, st, codes.ResourceExhausted, bridge.ReasonLimitReached, "free",
		"the bridge serves at most 3 subscriptions; retry later or on another replica", true)
	if got := metricValue(t, reg, "gqlbridge_terminations_total",
		map[string]string{"upstream": "free", "code": "ResourceExhausted", "reason": bridge.ReasonLimitReached}); got != 1 {
		t.Fatalf("terminations{free,ResourceExhausted,LIMIT_REACHED} = %v, want 1", got)
	}
	// The refusals took no slot and did no upstream work.
	for _, s := range []*stream{c1, f1, f2} {
		s.expectNext() // the upstream resolver runs
	}
	if st := demo.Stats(); st.ActiveSubscriptions != 3 || st.SubscriptionsStarted != 3 {
		t.Fatalf("upstream %+v, want 3 subscriptions", st)
	}

	// Ending a stream frees its slots (total and per upstream) once the
	// bridge has seen it end.
	c1.cancel()
	waitUntil(t, "the cancelled stream to end", func() bool {
		return metricValue(t, reg, "gqlbridge_terminations_total", map[string]string{"upstream": "capped", "code": "Canceled", "reason": ""}) == 1
	})
	c2 := e.subscribe(t, req("capped"))
	c2.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
	c2.expectNext()
}

var _ grpc.ServerStreamingServer[bridgev1.SubscribeResponse] = (*fakeStream)(nil)
