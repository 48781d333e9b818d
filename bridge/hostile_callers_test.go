package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gqlbridge/gqlbridge/bridge"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
)

// brokenEncoder sends bytes as they are, to play a caller with a broken encoder.
type brokenEncoder struct{}

func (brokenEncoder) Marshal(v any) ([]byte, error)      { return v.([]byte), nil }
func (brokenEncoder) Unmarshal(data []byte, v any) error { return nil }
func (brokenEncoder) Name() string                       { return "proto" }

var _ encoding.Codec = brokenEncoder{}

// subscribeBroken opens Subscribe with raw request bytes and returns the status.
func subscribeBroken(t *testing.T, e *env, raw []byte) *status.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	desc := &grpc.StreamDesc{ServerStreams: true}
	s, err := e.conn.NewStream(ctx, desc, "/graphqlbridge.v1.SubscriptionService/Subscribe", grpc.ForceCodec(brokenEncoder{}))
	if err != nil {
		return status.Convert(err)
	}
	if err := s.SendMsg(raw); err != nil {
		return status.Convert(err)
	}
	s.CloseSend()
	var sink []byte
	for {
		if err := s.RecvMsg(&sink); err != nil {
			if errors.Is(err, io.EOF) {
				return status.New(codes.OK, "")
			}
			return status.Convert(err)
		}
	}
}

func TestHostileCallersMalformedRequests(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{})
	e := startBridge(t, overTCP, bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL())}}})
	str := func(field protowire.Number, v string) []byte {
		b := protowire.AppendTag(nil, field, protowire.BytesType)
		return protowire.AppendString(b, v)
	}
	invalidUTF8 := append(str(1, "demo"), str(2, "subscription { \xff\xfe }")...)
	cases := map[string][]byte{
		"invalid UTF-8 in query":    invalidUTF8,
		"not protobuf at all":       []byte("\xff\xff\xff\xff garbage"),
		"truncated field":           []byte{0x0a, 0x50, 'd'},
		"upstream is a wrong type":  protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 7),
		"variables not a Struct":    append(append(str(1, "demo"), str(2, "subscription { ticker { n } }")...), str(3, "\x0a\x03abc")...),
		"empty message (no fields)": {},
	}
	for name, raw := range cases {
		st := subscribeBroken(t, e, raw)
		if st.Code() != codes.InvalidArgument {
			t.Errorf("%s: %v, want INVALID_ARGUMENT", name, st)
		}
	}
	// Huge variables: over the bridge's limit, under gRPC's.
	big, _ := structpb.NewStruct(map[string]any{"blob": strings.Repeat("x", 1<<20)})
	_, st := e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "demo", Query: "subscription { ticker { n } }", Variables: big}).end()
	if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "limit") {
		t.Errorf("huge variables: %v", st)
	}
	// Over gRPC's own receive limit: RESOURCE_EXHAUSTED from gRPC.
	huge, _ := structpb.NewStruct(map[string]any{"blob": strings.Repeat("x", 5<<20)})
	_, st = e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "demo", Query: "q", Variables: huge}).end()
	if st.Code() != codes.ResourceExhausted {
		t.Errorf("5 MiB request: %v", st)
	}
	// The bridge still serves after all that.
	if results, st := e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "demo", Query: "subscription { ticker(count: 2, intervalMs: 1) { n } }"}).end(); st.Code() != codes.OK || len(results) != 2 {
		t.Fatalf("after hostile requests: %d results, %v", len(results), st)
	}
}

// TestHostileCallersChurnAndNonReaders: thousands of subscribe/cancel
// cycles and callers that never read leave nothing behind: upstream
// operations, connections' operation counts, goroutines and the heap return
// to baseline.
func TestHostileCallersChurnAndNonReaders(t *testing.T) {
	if testing.Short() {
		t.Skip("churn test")
	}
	demo := startDemo(t, demoupstream.Options{})
	up := &bridge.Upstream{Session: fast(demo.URL()), Dedup: true, QueueSize: 8, IdleTimeout: time.Hour}
	e := startBridge(t, overTCP, bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": up}})
	// Warm up one connection so the baseline includes it.
	if _, st := e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "demo", Query: "subscription { ticker(count: 1, intervalMs: 1) { n } }"}).end(); st.Code() != codes.OK {
		t.Fatal(st)
	}
	runtime.GC()
	baseline := runtime.NumGoroutine()
	baseHeap := heapInUse()
	began := time.Now()

	// Churn: 3,000 subscribe/cancel cycles from 30 goroutines, half of them
	// joining shared operations.
	var cycles atomic.Int32
	var wg sync.WaitGroup
	for w := range 30 {
		wg.Go(func() {
			for i := 0; i < 100; i++ {
				ctx, cancel := context.WithCancel(t.Context())
				q := "subscription { ticker(count: 0, intervalMs: 1000) { n } }"
				if w%2 == 0 {
					q = "subscription { ticker(count: 0, intervalMs: 999) { n } }" // shared by every even worker
				}
				s, err := e.client.Subscribe(ctx, &bridgev1.SubscribeRequest{Upstream: "demo", Query: q})
				if err == nil && i%3 == 0 {
					s.Recv() // sometimes wait for STATE_SUBSCRIBED first
				}
				cancel()
				cycles.Add(1)
			}
		})
	}
	// Callers that never read, on a fast ticker with 1 KiB results.
	var idle []context.CancelFunc
	for range 50 {
		ctx, cancel := context.WithCancel(t.Context())
		if _, err := e.client.Subscribe(ctx, &bridgev1.SubscribeRequest{Upstream: "demo",
			Query: "subscription { ticker(count: 0, intervalMs: 1, size: 1024) { n payload } }"}); err != nil {
			t.Fatal(err)
		}
		idle = append(idle, cancel)
	}
	wg.Wait()
	t.Logf("%d subscribe/cancel cycles in %v (%.0f/s) beside 50 callers that never read",
		cycles.Load(), time.Since(began).Round(time.Millisecond), float64(cycles.Load())/time.Since(began).Seconds())
	// Let the non-readers' queues fill, then hang up on them.
	waitFor(t, func() bool { return demo.Stats().ActiveSubscriptions >= 1 })
	for _, cancel := range idle {
		cancel()
	}
	if cycles.Load() != 3000 {
		t.Fatalf("%d cycles", cycles.Load())
	}
	waitFor(t, func() bool { return demo.Stats().ActiveSubscriptions == 0 })
	waitFor(t, func() bool {
		st := e.svc.Stats()["demo"]
		return st.Operations == 0 && st.Shared == 0
	})
	waitFor(t, func() bool { runtime.GC(); return runtime.NumGoroutine() <= baseline+2 })
	// The heap too: a leak of even 5 KiB per cycle would show as 15 MiB.
	// The bound leaves room for the allocator and gRPC's pooled buffers.
	const slack = 8 << 20
	waitFor(t, func() bool { return heapInUse() <= baseHeap+slack })
	t.Logf("heap in use: %.1f MiB before, %.1f MiB after; goroutines: %d before, %d after",
		float64(baseHeap)/(1<<20), float64(heapInUse())/(1<<20), baseline, runtime.NumGoroutine())
}

// heapInUse is the heap in use after a full collection, in bytes.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// waitFor polls cond for up to 20 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			n := runtime.Stack(buf, true)
			t.Fatalf("condition not reached in 20s; goroutines:\n%s", buf[:n])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHostileCallersWideVariables replays the operators' finding: callers
// sending ~3.7 MB requests whose variables hold 150,000 keys, over the
// default 64 KiB limit, concurrently. Every one is refused with the size
// and the limit, and refusing them allocates no more than gRPC's own
// buffers for the request: the server's codec measures the variables in
// their protobuf encoding and never decodes them. Those buffers (the
// frames read, then the message in one piece) come from pools, which keep
// them between requests, except under the race detector, which makes pools
// drop buffers at random; at worst they are twice the request. Decoding the
// variables, as the bridge did before, allocated about 15 times the
// request per refusal (AsMap and JSON on top, more). Not parallel: the
// bound is on the whole process's allocations. The first round warms the
// pools and is not measured.
func TestHostileCallersWideVariables(t *testing.T) {
	demo := startDemo(t, demoupstream.Options{})
	e := startBridge(t, inMemory, bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL())}}})
	raw, err := proto.Marshal(&bridgev1.SubscribeRequest{Upstream: "demo", Query: "subscription { ticker { n } }"})
	if err != nil {
		t.Fatal(err)
	}
	// variables: 150,000 keys with a number each, written with protowire
	// (proto.Marshal of such a Struct is slow).
	var st, entry, value []byte
	for i := range 150_000 {
		value = protowire.AppendTag(value[:0], 2, protowire.Fixed64Type)
		value = protowire.AppendFixed64(value, math.Float64bits(float64(i)))
		entry = protowire.AppendTag(entry[:0], 1, protowire.BytesType)
		entry = protowire.AppendString(entry, fmt.Sprintf("key%07d", i))
		entry = protowire.AppendTag(entry, 2, protowire.BytesType)
		entry = protowire.AppendBytes(entry, value)
		st = protowire.AppendTag(st, 1, protowire.BytesType)
		st = protowire.AppendBytes(st, entry)
	}
	raw = protowire.AppendBytes(protowire.AppendTag(raw, 3, protowire.BytesType), st)
	const callers, each = 4, 3
	round := func() {
		var wg sync.WaitGroup
		for range callers {
			wg.Go(func() {
				for range each {
					cs, err := e.conn.NewStream(t.Context(), &grpc.StreamDesc{ServerStreams: true},
						bridgev1.SubscriptionService_Subscribe_FullMethodName, grpc.ForceCodecV2(rawCodec{}))
					if err == nil {
						err = cs.SendMsg(rawMessage(raw))
					}
					if err == nil {
						err = cs.CloseSend()
					}
					if err == nil {
						err = cs.RecvMsg(&bridgev1.SubscribeResponse{})
					}
					if st := status.Convert(err); st.Code() != codes.InvalidArgument ||
						!strings.HasSuffix(st.Message(), " bytes of JSON; the limit is 65536") {
						t.Errorf("wide variables: %v", err)
					}
				}
			})
		}
		wg.Wait()
	}
	round()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	round()
	runtime.ReadMemStats(&after)
	perRequest := float64(after.TotalAlloc-before.TotalAlloc) / (callers * each)
	t.Logf("%d-byte requests: %.0f bytes allocated per refusal (%.2f times the request)", len(raw), perRequest, perRequest/float64(len(raw)))
	if perRequest > 3*float64(len(raw)) {
		t.Fatalf("refusing a %d-byte request allocated %.0f bytes; want no more than gRPC's buffers for it", len(raw), perRequest)
	}
	if demo.Stats().Connections != 0 {
		t.Fatal("a refused request reached the upstream")
	}
}
