package bridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
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
	f.Add("demo", "subscription { ticker { n } }", "", []byte(`{"a":1}`))
	f.Add("", " ", "op", []byte(`{"x":[1,{"y":null}]}`))
	f.Add("nope", "q", "\xff", []byte(`{"n":1e400}`))
	f.Fuzz(func(t *testing.T, upstream, query, op string, vars []byte) {
		req := &bridgev1.SubscribeRequest{Upstream: upstream, Query: query, OperationName: op}
		var m map[string]any
		if json.Unmarshal(vars, &m) == nil {
			if st, err := structpb.NewStruct(m); err == nil {
				req.Variables = st
			}
		}
		_, sreq, err := s.validate(req)
		checkRefusal(t, err)
		if err == nil && (sreq.Query != query || sreq.Variables != nil && !json.Valid(sreq.Variables)) {
			t.Fatalf("accepted request changed: %+v", sreq)
		}
	})
}

// FuzzDecodeRequest feeds raw bytes through the server's codec and
// validation, as a caller with a broken protobuf encoder would. With small
// limits, the codec (which measures what is over them without decoding
// it) decides as validation of the fully decoded request does: it refuses
// nothing that fits once encoded as protobuf encodes it, and accepts
// nothing validation refuses.
func FuzzDecodeRequest(f *testing.F) {
	s := fuzzServer(f)
	small, err := New(Config{Upstreams: map[string]*Upstream{"demo": {Session: session.Config{URL: "ws://127.0.0.1:1/graphql"}}},
		MaxQueryBytes: 40, MaxVariablesBytes: 24})
	if err != nil {
		f.Fatal(err)
	}
	decode := func(t *testing.T, lim decodeLimits, raw []byte) *bridgev1.SubscribeRequest {
		req := &bridgev1.SubscribeRequest{}
		codec := requestCodec{CodecV2: encoding.GetCodecV2("proto"), limits: lim}
		if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(raw)}, req); err != nil {
			t.Fatalf("codec failed instead of marking: %v", err)
		}
		return req
	}
	f.Add([]byte("\x0a\x04demo\x12\x05query"))
	f.Add([]byte("\xff\xff\xff"))
	f.Add([]byte("\x12\x02\xff\xfe"))
	f.Add([]byte("\x0a\x04demo\x12\x05query\x1a\x0d\x0a\x0b\x0a\x01a\x12\x06\x1a\x04abcd"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		_, _, err := s.validate(decode(t, decodeLimits{query: s.cfg.MaxQueryBytes, variables: s.cfg.MaxVariablesBytes}, raw))
		checkRefusal(t, err)

		full := decode(t, decodeLimits{}, raw)
		_, want, wantErr := small.validate(full)
		_, got, gotErr := small.validate(decode(t, decodeLimits{query: 40, variables: 24}, raw))
		checkRefusal(t, gotErr)
		switch {
		case wantErr != nil && gotErr == nil:
			t.Fatalf("the codec let through a request validation refuses: %v", wantErr)
		case wantErr == nil && gotErr == nil:
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("decoded %+v, want %+v", got, want)
			}
		case wantErr == nil:
			// Only an unusual encoding (a repeated key or field) may be
			// measured over the limit; protobuf's own encoding fits.
			again, err := proto.Marshal(full)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := small.validate(decode(t, decodeLimits{query: 40, variables: 24}, again)); err != nil {
				t.Fatalf("the codec refused a request that fits: %v (validation accepts %+v)", err, want)
			}
		}
	})
}
