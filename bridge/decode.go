package bridge

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// undecodable marks a SubscribeRequest the codec could not decode. The
// field number is the largest protobuf allows; no real request carries it.
const undecodable protowire.Number = protowire.MaxValidNumber

// Codec returns a server option that makes a request the server cannot
// decode (not protobuf, invalid UTF-8 in a string field) reach the handler
// as a marked empty request, which validation answers with INVALID_ARGUMENT
// and a message saying what to fix. grpc-go itself answers such requests
// with INTERNAL before any handler or interceptor runs, telling the caller
// the bridge is broken when the request is. Other messages decode as usual.
func Codec() grpc.ServerOption {
	return grpc.ForceServerCodecV2(requestCodec{encoding.GetCodecV2("proto")})
}

type requestCodec struct{ encoding.CodecV2 }

func (c requestCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	if req, ok := v.(*bridgev1.SubscribeRequest); ok && err != nil {
		proto.Reset(req)
		mark := protowire.AppendTag(nil, undecodable, protowire.BytesType)
		mark = protowire.AppendString(mark, err.Error())
		req.ProtoReflect().SetUnknown(mark)
		return nil
	}
	return err
}

// decodeError reports the mark left by requestCodec.
func decodeError(req *bridgev1.SubscribeRequest) error {
	b := req.ProtoReflect().GetUnknown()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		if num == undecodable && typ == protowire.BytesType {
			msg, _ := protowire.ConsumeString(b)
			return invalid("the request is not a valid graphqlbridge.v1.SubscribeRequest (%s): check the client's protobuf encoding; string fields must be valid UTF-8", msg)
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return nil
		}
		b = b[n:]
	}
	return nil
}
