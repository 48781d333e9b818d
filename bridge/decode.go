package bridge

import (
	"encoding/binary"

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
//
// It also encodes results without copying them: see marshalNext and
// marshalBatch.
func Codec() grpc.ServerOption {
	return grpc.ForceServerCodecV2(requestCodec{encoding.GetCodecV2("proto")})
}

type requestCodec struct{ encoding.CodecV2 }

func (c requestCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*bridgev1.SubscribeResponse); ok {
		if n := r.GetNext(); n != nil && r.ProtoReflect().GetUnknown() == nil && n.ProtoReflect().GetUnknown() == nil {
			return marshalNext(n.GetResult(), n.GetSequence()), nil
		}
		if b := r.GetBatch(); b != nil && r.ProtoReflect().GetUnknown() == nil && plainBatch(b) {
			return marshalBatch(b.GetNexts()), nil
		}
	}
	return c.CodecV2.Marshal(v)
}

// marshalNext encodes SubscribeResponse{next: {result, sequence}} as a
// small header followed by the result bytes themselves: the result, up to
// the upstream's message limit and shared by every subscriber of a
// fan-out, is never copied into a per-message buffer. The transport copies
// it once, into its write buffer. result must not change afterwards; the
// bridge never changes a result once it is queued. The sequence goes
// before the result (protobuf accepts fields in any order) so the result
// can be the tail.
func marshalNext(result []byte, seq uint64) mem.BufferSlice {
	inner := 0
	if seq != 0 {
		inner += 1 + protowire.SizeVarint(seq)
	}
	if len(result) > 0 {
		inner += 1 + protowire.SizeVarint(uint64(len(result))) + len(result)
	}
	// One allocation for the whole message: the header's bytes, the two
	// buffers and the slice that lists them. A *SliceBuffer is a
	// mem.Buffer that needs no allocation of its own to become one.
	m := new(nextMessage)
	hdr := m.hdr[:0]
	hdr = protowire.AppendTag(hdr, 1, protowire.BytesType) // SubscribeResponse.next
	hdr = protowire.AppendVarint(hdr, uint64(inner))
	if seq != 0 {
		hdr = protowire.AppendTag(hdr, 2, protowire.VarintType) // Next.sequence
		hdr = protowire.AppendVarint(hdr, seq)
	}
	if len(result) > 0 {
		hdr = protowire.AppendTag(hdr, 1, protowire.BytesType) // Next.result
		hdr = protowire.AppendVarint(hdr, uint64(len(result)))
	}
	m.parts[0] = mem.SliceBuffer(hdr)
	m.list[0] = &m.parts[0]
	if len(result) == 0 {
		return m.list[:1]
	}
	m.parts[1] = mem.SliceBuffer(result)
	m.list[1] = &m.parts[1]
	return m.list[:2]
}

// nextMessage is what marshalNext allocates for one message. hdr fits the
// largest header: two tags and three varints of at most 10 bytes each.
type nextMessage struct {
	hdr   [3 + 3*binary.MaxVarintLen64]byte
	parts [2]mem.SliceBuffer
	list  [2]mem.Buffer
}

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
