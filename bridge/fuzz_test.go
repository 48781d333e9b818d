package bridge

import (
	"encoding/json"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/types/known/structpb"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/session"
)

func fuzzServer(f *testing.F) *Server {
	s, err := New(Config{Upstreams: map[string]*Upstream{"demo": {Session: session.Config{URL: "ws://127.0.0.1:1/graphql"}}}})
	if err != nil {
		f.Fatal(err)
	}
	return s
}

// checkRefusal: a refused request is always a RequestError with a code the
// caller can act on, never a panic or an INTERNAL.
func checkRefusal(t *testing.T, err error) {
	if err == nil {
		return
	}
	var re *RequestError
	if !errors.As(err, &re) || (re.Code != codes.InvalidArgument && re.Code != codes.NotFound) || re.Msg == "" {
		t.Fatalf("refusal %v (%T)", err, err)
	}
}

// FuzzValidate feeds request fields to validation.
func FuzzValidate(f *testing.F) {
	s := fuzzServer(f)
	f.Add("demo", "subscription { ticker { n } }", "", []byte(`{"a":1}`), "", "")
	f.Add("", " ", "op", []byte(`{"x":[1,{"y":null}]}`), "", "")
	f.Add("nope", "q", "\xff", []byte(`{"n":1e400}`), "", "")
	f.Add("demo", "subscription E($after: Int) { events(after: $after) { id } }", "E", []byte(`{"after":3}`), "after", "/data/events/id")
	f.Add("demo", "subscription ($c: String) { e(c: {initial_value: {at: $c}}) { at } }", "", []byte(`{}`), "c", "/data/e/-/at")
	f.Fuzz(func(t *testing.T, upstream, query, op string, vars []byte, resumeVar, resumePtr string) {
		req := &bridgev1.SubscribeRequest{Upstream: upstream, Query: query, OperationName: op}
		if resumeVar != "" || resumePtr != "" {
			req.Resume = &bridgev1.Resume{CursorVariable: resumeVar, CursorPointer: resumePtr}
		}
		var m map[string]any
		if json.Unmarshal(vars, &m) == nil {
			if st, err := structpb.NewStruct(m); err == nil {
				req.Variables = st
			}
		}
		_, sreq, err := s.validate(req)
		checkRefusal(t, err)
		if err == nil && (sreq.Query != query || sreq.Variables != nil && !json.Valid(sreq.Variables) ||
			(req.Resume == nil) != (sreq.Resume == nil) || sreq.Resume != nil && (sreq.Resume.Variable != resumeVar || sreq.Resume.Pointer.String() != resumePtr)) {
			t.Fatalf("accepted request changed: %+v", sreq)
		}
	})
}

// FuzzDecodeRequest feeds raw bytes through the server's codec and
// validation, as a caller with a broken protobuf encoder would.
func FuzzDecodeRequest(f *testing.F) {
	s := fuzzServer(f)
	codec := requestCodec{encoding.GetCodecV2("proto")}
	f.Add([]byte("\x0a\x04demo\x12\x05query"))
	f.Add([]byte("\xff\xff\xff"))
	f.Add([]byte("\x12\x02\xff\xfe"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		req := &bridgev1.SubscribeRequest{}
		if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(raw)}, req); err != nil {
			t.Fatalf("codec failed instead of marking: %v", err)
		}
		_, _, err := s.validate(req)
		checkRefusal(t, err)
	})
}
