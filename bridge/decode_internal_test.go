package bridge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/session"
)

func testServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	cfg.Upstreams = map[string]*Upstream{"demo": {Session: session.Config{URL: "ws://127.0.0.1:1/graphql"}}}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serverCodec is the codec (*Server).Codec installs.
func serverCodec(s *Server) requestCodec {
	return requestCodec{CodecV2: encoding.GetCodecV2("proto"),
		limits: decodeLimits{query: s.cfg.MaxQueryBytes, variables: s.cfg.MaxVariablesBytes}}
}

// wideRequest encodes a request whose variables hold keys keys, each with
// a number: the shape of the operators' finding (170k keys, 3.9 MB). It is
// written with protowire, as proto.Marshal of such a Struct is slow.
func wideRequest(t testing.TB, keys int) []byte {
	t.Helper()
	b, err := proto.Marshal(&bridgev1.SubscribeRequest{Upstream: "demo", Query: "subscription { ticker { n } }"})
	if err != nil {
		t.Fatal(err)
	}
	return append(b, wideVariables(keys)...)
}

// wideVariables is SubscribeRequest.variables with keys keys, encoded.
func wideVariables(keys int) []byte {
	var st, entry, value []byte
	for i := range keys {
		value = protowire.AppendTag(value[:0], 2, protowire.Fixed64Type) // number_value
		value = protowire.AppendFixed64(value, math.Float64bits(float64(i)))
		entry = protowire.AppendTag(entry[:0], 1, protowire.BytesType)
		entry = protowire.AppendString(entry, fmt.Sprintf("key%07d", i))
		entry = protowire.AppendTag(entry, 2, protowire.BytesType)
		entry = protowire.AppendBytes(entry, value)
		st = protowire.AppendTag(st, 1, protowire.BytesType) // Struct.fields
		st = protowire.AppendBytes(st, entry)
	}
	return protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), st)
}

// refuse runs one raw request through the server's codec and validation.
func refuse(s *Server, raw []byte) error {
	req := &bridgev1.SubscribeRequest{}
	if err := serverCodec(s).Unmarshal(mem.BufferSlice{mem.SliceBuffer(raw)}, req); err != nil {
		return err
	}
	_, _, err := s.validate(req)
	return err
}

// TestOversizedVariablesCostNoMemory: refusing variables over the limit
// costs a few allocations and a few kilobytes, however many keys they hold:
// the codec measures their JSON in the protobuf encoding and never decodes
// them. (Before, the request was decoded into a Struct, then AsMap, then
// JSON: hundreds of bytes per key, 1.6 GB for 100 such requests.)
func TestOversizedVariablesCostNoMemory(t *testing.T) {
	s := testServer(t, Config{})
	defer s.Close()
	for _, keys := range []int{170_000, 340_000} {
		raw := wideRequest(t, keys)
		err := refuse(s, raw)
		var re *RequestError
		if !errorsAs(err, &re) || re.Reason != ReasonInvalidRequest ||
			!strings.HasPrefix(re.Msg, "variables and extensions are ") || !strings.HasSuffix(re.Msg, " bytes of JSON; the limit is 65536") {
			t.Fatalf("%d keys: %v, want INVALID_REQUEST naming the size and the limit", keys, err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for range 3 {
			if err := refuse(s, raw); err == nil {
				t.Fatal("accepted")
			}
		}
		runtime.ReadMemStats(&after)
		perRequest := (after.TotalAlloc - before.TotalAlloc) / 3
		t.Logf("%d keys, %d bytes: %d bytes allocated per refusal", keys, len(raw), perRequest)
		if perRequest > 16<<10 {
			t.Errorf("%d keys (%d bytes): refusing allocated %d bytes per request; want at most 16 KiB whatever the keys", keys, len(raw), perRequest)
		}
		if allocs := testing.AllocsPerRun(2, func() { _ = refuse(s, raw) }); allocs > 40 {
			t.Errorf("%d keys: %v allocations per refusal; want a few, whatever the keys", keys, allocs)
		}
	}
}

// TestOversizedQueryNotDecoded: the query is measured, not copied, when
// over the limit; the refusal names its size.
func TestOversizedQueryNotDecoded(t *testing.T) {
	s := testServer(t, Config{MaxQueryBytes: 100})
	defer s.Close()
	raw, _ := proto.Marshal(&bridgev1.SubscribeRequest{Upstream: "demo", Query: strings.Repeat("q", 1<<20)})
	if err := refuse(s, raw); err == nil || err.Error() != "query is 1048576 bytes; the limit is 100" {
		t.Fatalf("%v", err)
	}
	if allocs := testing.AllocsPerRun(5, func() { _ = refuse(s, raw) }); allocs > 20 {
		t.Errorf("%v allocations per refusal", allocs)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_ = refuse(s, raw)
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 16<<10 {
		t.Errorf("refusing a 1 MiB query allocated %d bytes", n)
	}
}

func errorsAs(err error, re **RequestError) bool {
	r, ok := err.(*RequestError)
	*re = r
	return ok
}

// structCases are Structs whose JSON must be exact: every kind, escapes,
// numbers in both notations, empty and nested containers.
func structCases() []*structpb.Struct {
	mk := func(m map[string]any) *structpb.Struct {
		st, err := structpb.NewStruct(m)
		if err != nil {
			panic(err)
		}
		return st
	}
	return []*structpb.Struct{
		mk(map[string]any{"a": 1}),
		mk(map[string]any{"": nil, "b": true, "c": false, "d": "text", "e": []any{}, "f": map[string]any{}}),
		mk(map[string]any{"esc": "\"\\\b\f\n\r\t\x00\x1f<>&\u2028\u2029\x7f é 😀", "<k&>": "x"}),
		mk(map[string]any{"n": []any{0.0, math.Copysign(0, -1), 1e-7, 1e-6, 123456789, 1e20, 1e21, 1.5e300, -2.5e-300, 0.1, math.MaxFloat64, math.SmallestNonzeroFloat64}}),
		mk(map[string]any{"deep": map[string]any{"x": []any{map[string]any{"y": []any{[]any{nil}}}}}}),
		{Fields: map[string]*structpb.Value{"nokind": {}, "list": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{{}}})}},
	}
}

// TestStructJSONMatchesEncodingJSON: structJSON writes what encoding/json
// writes for AsMap, and structJSONSize measures exactly that from the
// protobuf encoding.
func TestStructJSONMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	cases := structCases()
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		cases = append(cases, randomStruct(r, 4))
	}
	for i, st := range cases {
		checkStructJSON(t, fmt.Sprint("case ", i), st)
	}
}

func checkStructJSON(t *testing.T, name string, st *structpb.Struct) {
	t.Helper()
	got, err := structJSON(st)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	want, err := json.Marshal(st.AsMap())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.GetFields()) == 0 {
		want = nil
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: structJSON\n%s\nencoding/json\n%s", name, got, want)
	}
	wire, err := proto.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := structJSONSize(wire); err != nil || n != len(want) {
		t.Fatalf("%s: structJSONSize %d, %v; the JSON is %d bytes: %s", name, n, err, len(want), want)
	}
}

func randomStruct(r *rand.Rand, depth int) *structpb.Struct {
	st := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for range r.IntN(5) {
		st.Fields[randomString(r)] = randomValue(r, depth-1)
	}
	return st
}

func randomValue(r *rand.Rand, depth int) *structpb.Value {
	k := r.IntN(8)
	if depth <= 0 && k >= 5 {
		k = 0
	}
	switch k {
	case 0:
		return structpb.NewNullValue()
	case 1:
		return structpb.NewNumberValue(math.Float64frombits(r.Uint64()) / math.Pow(10, float64(r.IntN(30))))
	case 2:
		return structpb.NewStringValue(randomString(r))
	case 3:
		return structpb.NewBoolValue(r.IntN(2) == 0)
	case 4:
		return structpb.NewNumberValue(float64(r.IntN(2000) - 1000))
	case 5, 6:
		l := &structpb.ListValue{}
		for range r.IntN(4) {
			l.Values = append(l.Values, randomValue(r, depth-1))
		}
		return structpb.NewListValue(l)
	}
	return structpb.NewStructValue(randomStruct(r, depth-1))
}

func randomString(r *rand.Rand) string {
	const alphabet = "ab\"\\<>&\n\x01\x7f é\u2028😀"
	runes := []rune(alphabet)
	var b strings.Builder
	for range r.IntN(6) {
		b.WriteRune(runes[r.IntN(len(runes))])
	}
	return b.String()
}

// FuzzStructJSONSize: for any bytes that decode as a Struct, the measured
// size is never less than the JSON (so the codec never refuses variables
// that fit), and is exact for protobuf's own encoding of that Struct.
func FuzzStructJSONSize(f *testing.F) {
	for _, st := range structCases() {
		b, _ := proto.Marshal(st)
		f.Add(b)
	}
	dup := protowire.AppendTag(nil, 1, protowire.BytesType)
	entry := protowire.AppendTag(nil, 1, protowire.BytesType)
	entry = protowire.AppendString(entry, "k")
	dup = protowire.AppendBytes(dup, entry)
	f.Add(append(dup, dup...)) // the same key twice
	f.Fuzz(func(t *testing.T, b []byte) {
		st := &structpb.Struct{}
		n, sizeErr := structJSONSize(b)
		if err := proto.Unmarshal(b, st); err != nil {
			return
		}
		js, err := structJSON(st)
		if err != nil {
			return // NaN or Infinity: refused by validation
		}
		if sizeErr != nil || n < len(js) {
			t.Fatalf("measured %d, %v; the JSON is %d bytes", n, sizeErr, len(js))
		}
		checkStructJSON(t, "re-encoded", st)
	})
}

// TestDecodeDropsForgedMarks: a caller who sends the fields the codec uses
// for its findings gets them dropped, like any unknown field would be
// ignored, not read as findings and not echoed.
func TestDecodeDropsForgedMarks(t *testing.T) {
	t.Parallel()
	s := testServer(t, Config{})
	defer s.Close()
	raw, _ := proto.Marshal(&bridgev1.SubscribeRequest{Upstream: "demo", Query: "subscription { ticker { n } }"})
	raw = protowire.AppendTag(raw, undecodable, protowire.BytesType)
	raw = protowire.AppendString(raw, "FORGED\nlevel=ERROR msg=pwned")
	raw = protowire.AppendTag(raw, undecodable, protowire.VarintType)
	raw = protowire.AppendVarint(raw, undecodableUTF8)
	raw = protowire.AppendTag(raw, oversized, protowire.BytesType)
	raw = protowire.AppendBytes(raw, protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1<<30))
	raw = protowire.AppendTag(raw, 77, protowire.BytesType) // an ordinary unknown field stays
	raw = protowire.AppendString(raw, "kept")
	req := &bridgev1.SubscribeRequest{}
	if err := serverCodec(s).Unmarshal(mem.BufferSlice{mem.SliceBuffer(raw)}, req); err != nil {
		t.Fatal(err)
	}
	if m := readMarks(req); m != (marks{}) {
		t.Fatalf("forged findings read: %+v", m)
	}
	if bytes.Contains(req.ProtoReflect().GetUnknown(), []byte("FORGED")) || !bytes.Contains(req.ProtoReflect().GetUnknown(), []byte("kept")) {
		t.Fatalf("unknown fields %q", req.ProtoReflect().GetUnknown())
	}
	if _, _, err := s.validate(req); err != nil {
		t.Fatalf("refused: %v", err)
	}
}
