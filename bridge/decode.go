package bridge

import (
	"errors"
	"math"
	"math/bits"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// The codec leaves its findings on the request as unknown fields with the
// two largest field numbers protobuf allows; no real request carries them,
// and the codec drops them from what a caller sends, so that a caller
// cannot forge a finding. Their contents are numbers only: validation
// turns them into fixed messages and never echoes what they hold.
const (
	// undecodable marks a request the codec could not decode; it holds
	// the reason, one of the undecodable* values.
	undecodable protowire.Number = protowire.MaxValidNumber
	// oversized marks a request whose query or variables the codec did not
	// decode because they exceed the server's limits; it holds their sizes
	// (field 1: the query's bytes, field 2: the JSON bytes of variables
	// plus extensions), 0 for what was decoded.
	oversized protowire.Number = protowire.MaxValidNumber - 1
)

// Why a request does not decode.
const (
	undecodableWire  = 1 // not protobuf, truncated, or a field of the wrong type
	undecodableUTF8  = 2 // a string field is not valid UTF-8
	undecodableDepth = 3 // variables or extensions nest deeper than protobuf allows
)

// decodeLimits are the sizes beyond which the codec does not decode a
// request's query or variables; 0 means no limit.
type decodeLimits struct {
	query     int // bytes of SubscribeRequest.query
	variables int // JSON bytes of variables plus extensions
}

// Codec returns a server option that makes a request the server cannot
// decode (not protobuf, invalid UTF-8 in a string field) reach the handler
// as a marked empty request, which validation answers with INVALID_ARGUMENT
// and a message saying what to fix. grpc-go itself answers such requests
// with INTERNAL before any handler or interceptor runs, telling the caller
// the bridge is broken when the request is. Other messages decode as usual.
//
// It applies this server's limits while decoding: a query longer than
// MaxQueryBytes, or variables and extensions whose JSON is longer than
// MaxVariablesBytes, are measured in their protobuf encoding and left
// undecoded, so that refusing them costs no memory per key or byte; the
// request then reaches validation marked with their sizes.
//
// It also encodes results without copying them: see marshalNext and
// marshalBatch.
func (s *Server) Codec() grpc.ServerOption {
	return grpc.ForceServerCodecV2(requestCodec{CodecV2: encoding.GetCodecV2("proto"),
		limits: decodeLimits{query: s.cfg.MaxQueryBytes, variables: s.cfg.MaxVariablesBytes}})
}

type requestCodec struct {
	encoding.CodecV2
	limits decodeLimits
}

func (c requestCodec) Marshal(v any) (mem.BufferSlice, error) {
	if o, ok := v.(*ownedResponse); ok {
		if n := o.GetNext(); n != nil {
			return copyNext(n.GetResult(), n.GetSequence(), n.GetCursor()), nil
		}
		return copyBatch(o.GetBatch().GetNexts()), nil
	}
	if r, ok := v.(*bridgev1.SubscribeResponse); ok {
		if n := r.GetNext(); n != nil && r.ProtoReflect().GetUnknown() == nil && n.ProtoReflect().GetUnknown() == nil {
			return marshalNext(n.GetResult(), n.GetSequence(), n.GetCursor()), nil
		}
		if b := r.GetBatch(); b != nil && r.ProtoReflect().GetUnknown() == nil && plainBatch(b) {
			return marshalBatch(b.GetNexts()), nil
		}
	}
	return c.CodecV2.Marshal(v)
}

// marshalNext encodes SubscribeResponse{next: {result, sequence, cursor}}
// as a small header followed by the result bytes themselves: the result,
// up to the upstream's message limit and shared by every subscriber of a
// fan-out, is never copied into a per-message buffer. The transport copies
// it once, into its write buffer. result must not change afterwards; the
// bridge never changes a result once it is queued. The sequence and the
// cursor (a few bytes, copied into the header) go before the result
// (protobuf accepts fields in any order) so the result can be the tail.
func marshalNext(result []byte, seq uint64, cursor []byte) mem.BufferSlice {
	inner := nextBodySize(result, seq, cursor)
	hdr := make([]byte, 0, 1+protowire.SizeVarint(uint64(inner))+inner-len(result))
	hdr = protowire.AppendTag(hdr, 1, protowire.BytesType) // SubscribeResponse.next
	hdr = protowire.AppendVarint(hdr, uint64(inner))
	hdr = appendNextHead(hdr, seq, cursor)
	if len(result) == 0 {
		return mem.BufferSlice{mem.SliceBuffer(hdr)}
	}
	hdr = protowire.AppendTag(hdr, 1, protowire.BytesType) // Next.result
	hdr = protowire.AppendVarint(hdr, uint64(len(result)))
	return mem.BufferSlice{mem.SliceBuffer(hdr), mem.SliceBuffer(result)}
}

// copyNext encodes SubscribeResponse{next: {result, sequence, cursor}} as
// marshalNext does, but into one buffer from messages, the pool the
// transport returns it to once it has written the message. The
// result is copied, so its storage may be reused as soon as Send returns
// (budget.go): for a result only one stream sends, the copy costs less
// than the allocation, page faults and collection of a result kept alive
// until the transport has written it.
func copyNext(result []byte, seq uint64, cursor []byte) mem.BufferSlice {
	inner := nextBodySize(result, seq, cursor)
	buf, b := messageBuffer(1 + protowire.SizeVarint(uint64(inner)) + inner)
	b = protowire.AppendTag(b, 1, protowire.BytesType) // SubscribeResponse.next
	b = protowire.AppendVarint(b, uint64(inner))
	b = appendNextResult(b, result, seq, cursor)
	return mem.BufferSlice{buf.done(b)}
}

// messageBuffer returns a buffer for a message of exactly n bytes, and the
// empty slice to append them to.
func messageBuffer(n int) (pending, []byte) {
	if mem.IsBelowBufferPoolingThreshold(n) || n > maxPooledMessage {
		b := make([]byte, 0, n)
		return pending{n: n}, b
	}
	bp := messages.Get(n)
	return pending{n: n, bp: bp}, (*bp)[:0]
}

// pending is a message buffer being written.
type pending struct {
	n  int
	bp *[]byte // from messages; nil for a message not pooled
}

// done returns the buffer holding b, which must be the n bytes appended to
// the slice messageBuffer returned.
func (p pending) done(b []byte) mem.Buffer {
	if len(b) != p.n {
		panic("bridge: message encoded to the wrong size")
	}
	if p.bp == nil {
		return mem.SliceBuffer(b)
	}
	*p.bp = b
	return mem.NewBuffer(p.bp, messages)
}

// messages pools the buffers copyNext and copyBatch encode into, in
// powers of two from 2 KiB to maxPooledMessage. Unlike gRPC's default
// pool it does not clear a buffer it hands out: the encoders write every
// byte of it that the transport reads (its length), which on a fast stream
// saves clearing as many bytes again as it sends.
var messages = &messagePool{}

const (
	minPooledMessage = 2 << 10 // above gRPC's pooling threshold (1 KiB)
	messageClasses   = 12
	maxPooledMessage = minPooledMessage << (messageClasses - 1) // 4 MiB
)

type messagePool struct {
	// classes[i] holds buffers of capacity minPooledMessage<<i.
	classes [messageClasses]sync.Pool
}

func messageClass(n int) int {
	if n <= minPooledMessage {
		return 0
	}
	return bits.Len(uint((n - 1) / minPooledMessage))
}

// Get returns a buffer of length n, n at most maxPooledMessage.
func (p *messagePool) Get(n int) *[]byte {
	c := messageClass(n)
	if bp, ok := p.classes[c].Get().(*[]byte); ok {
		*bp = (*bp)[:n]
		return bp
	}
	b := make([]byte, n, minPooledMessage<<c)
	return &b
}

// Put takes back a buffer Get returned.
func (p *messagePool) Put(bp *[]byte) {
	c := cap(*bp)
	if c < minPooledMessage || c > maxPooledMessage || c&(c-1) != 0 {
		return
	}
	p.classes[messageClass(c)].Put(bp)
}

func (c requestCodec) Unmarshal(data mem.BufferSlice, v any) error {
	req, ok := v.(*bridgev1.SubscribeRequest)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	decodeRequest(buf.ReadOnlyData(), req, c.limits)
	return nil
}

// decodeRequest decodes b into req, leaving out what the codec's markers
// would be (a caller's forgery) and, over the limits, the query or the
// variables and extensions, which it marks instead. It never fails: a
// request that does not decode is reset and marked undecodable.
func decodeRequest(b []byte, req *bridgev1.SubscribeRequest, lim decodeLimits) {
	// First pass: sizes, without decoding anything.
	queryLen, varsLen, forged := 0, 0, false
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeField(rest)
		if n < 0 {
			markUndecodable(req, undecodableWire)
			return
		}
		field := rest[:n]
		rest = rest[n:]
		switch {
		case num == undecodable || num == oversized:
			forged = true
		case typ != protowire.BytesType:
		case num == 2: // query; the last one is the one protobuf keeps
			queryLen = len(bytesPayload(field))
		case (num == 3 || num == 5) && lim.variables > 0: // variables, extensions
			size, err := structJSONSize(bytesPayload(field))
			if err != nil {
				kind := uint64(undecodableWire)
				if err == errTooDeep {
					kind = undecodableDepth
				}
				markUndecodable(req, kind)
				return
			}
			varsLen += size
		}
	}
	skipQuery := lim.query > 0 && queryLen > lim.query
	skipVars := lim.variables > 0 && varsLen > lim.variables

	// Second pass: decode the runs of fields that are kept.
	keep := func(num protowire.Number, typ protowire.Type) bool {
		switch {
		case num == undecodable || num == oversized:
			return false
		case typ != protowire.BytesType:
			return true
		case num == 2:
			return !skipQuery
		case num == 3 || num == 5:
			return !skipVars
		}
		return true
	}
	var err error
	if !forged && !skipQuery && !skipVars {
		err = proto.Unmarshal(b, req)
	} else {
		opts := proto.UnmarshalOptions{Merge: true}
		run := 0 // start of the current run of kept fields
		for i := 0; i < len(b) && err == nil; {
			num, typ, n := protowire.ConsumeField(b[i:])
			if !keep(num, typ) {
				if run < i {
					err = opts.Unmarshal(b[run:i], req)
				}
				run = i + n
			}
			i += n
		}
		if err == nil && run < len(b) {
			err = opts.Unmarshal(b[run:], req)
		}
	}
	if err != nil {
		kind := uint64(undecodableWire)
		var utf interface{ InvalidUTF8() bool }
		if errors.As(err, &utf) && utf.InvalidUTF8() {
			kind = undecodableUTF8
		}
		markUndecodable(req, kind)
		return
	}
	if skipQuery || skipVars {
		var sizes []byte
		if skipQuery {
			sizes = protowire.AppendTag(sizes, 1, protowire.VarintType)
			sizes = protowire.AppendVarint(sizes, uint64(queryLen))
		}
		if skipVars {
			sizes = protowire.AppendTag(sizes, 2, protowire.VarintType)
			sizes = protowire.AppendVarint(sizes, uint64(varsLen))
		}
		mark := protowire.AppendTag(req.ProtoReflect().GetUnknown(), oversized, protowire.BytesType)
		req.ProtoReflect().SetUnknown(protowire.AppendBytes(mark, sizes))
	}
}

// bytesPayload returns the payload of one length-delimited field.
func bytesPayload(field []byte) []byte {
	_, _, n := protowire.ConsumeTag(field)
	v, _ := protowire.ConsumeBytes(field[n:])
	return v
}

func markUndecodable(req *bridgev1.SubscribeRequest, kind uint64) {
	proto.Reset(req)
	mark := protowire.AppendTag(nil, undecodable, protowire.VarintType)
	req.ProtoReflect().SetUnknown(protowire.AppendVarint(mark, kind))
}

// marks are the codec's findings on a request.
type marks struct {
	undecodable    uint64 // an undecodable* reason, 0 when it decoded
	queryBytes     int    // the size of a query left undecoded, else 0
	variablesBytes int    // the JSON size of variables left undecoded, else 0
}

// readMarks reads the codec's findings. Without the codec (a server using
// protobuf's own) a caller may have set these fields itself; they hold
// numbers only, which validation checks before using.
func readMarks(req *bridgev1.SubscribeRequest) marks {
	var m marks
	b := req.ProtoReflect().GetUnknown()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return m
		}
		b = b[n:]
		switch {
		case num == undecodable && typ == protowire.VarintType:
			m.undecodable, n = protowire.ConsumeVarint(b)
		case num == oversized && typ == protowire.BytesType:
			var sizes []byte
			sizes, n = protowire.ConsumeBytes(b)
			for len(sizes) > 0 {
				f, t, k := protowire.ConsumeTag(sizes)
				if k < 0 || t != protowire.VarintType {
					break
				}
				v, l := protowire.ConsumeVarint(sizes[k:])
				if l < 0 {
					break
				}
				sizes = sizes[k+l:]
				if v > math.MaxInt32 {
					v = math.MaxInt32
				}
				switch f {
				case 1:
					m.queryBytes = int(v)
				case 2:
					m.variablesBytes = int(v)
				}
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return m
		}
		b = b[n:]
	}
	return m
}

// decodeError reports a request the codec could not decode, in words fixed
// by the bridge: what the caller sent is never quoted.
func decodeError(m marks) error {
	const prefix = "the request is not a valid graphqlbridge.v1.SubscribeRequest: "
	switch m.undecodable {
	case 0:
		return nil
	case undecodableUTF8:
		return invalid(prefix + "a string field is not valid UTF-8; upstream, query, operation_name, the strings in variables and extensions, and resume's cursor_variable and cursor_pointer must be valid UTF-8")
	case undecodableDepth:
		return invalid(prefix+"variables or extensions nest more than %d messages deep", maxNesting)
	}
	return invalid(prefix + "check the client's protobuf encoding")
}
