package bridge

import (
	"context"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// Batched delivery (SubscribeRequest.max_batch): a caller that asks for it
// gets its results in Batch events, each holding what was already queued
// when the stream was ready to send, so that one gRPC message carries many
// results when the caller falls behind and exactly one when it keeps up.
// The pump (pump.go) sends a batch where it would send a result; fill
// decides what the batch holds, batcher reuses its messages and
// marshalBatch encodes it.

// nextBodySize is the encoded size of Next{result, sequence, cursor}
// without its own tag and length.
func nextBodySize(result []byte, seq uint64, cursor []byte) int {
	n := 0
	if seq != 0 {
		n += 1 + protowire.SizeVarint(seq)
	}
	if len(cursor) > 0 {
		n += 1 + protowire.SizeVarint(uint64(len(cursor))) + len(cursor)
	}
	if len(result) > 0 {
		n += 1 + protowire.SizeVarint(uint64(len(result))) + len(result)
	}
	return n
}

// appendNextHead appends the fields of a Next that go before its result:
// the sequence and the cursor.
func appendNextHead(hdr []byte, seq uint64, cursor []byte) []byte {
	if seq != 0 {
		hdr = protowire.AppendTag(hdr, 2, protowire.VarintType) // Next.sequence
		hdr = protowire.AppendVarint(hdr, seq)
	}
	if len(cursor) > 0 {
		hdr = protowire.AppendTag(hdr, 3, protowire.BytesType) // Next.cursor
		hdr = protowire.AppendBytes(hdr, cursor)
	}
	return hdr
}

// batchEntrySize is what one result adds to the body of a Batch: the
// repeated field's tag and length, then the Next.
func batchEntrySize(result []byte, seq uint64, cursor []byte) int {
	body := nextBodySize(result, seq, cursor)
	return 1 + protowire.SizeVarint(uint64(body)) + body
}

// batchSize is the encoded size of SubscribeResponse{batch} whose Batch
// body is body bytes: what counts against Config.MaxBatchBytes and the
// caller's receive limit.
func batchSize(body int) int {
	return 1 + protowire.SizeVarint(uint64(body)) + body
}

// marshalBatch encodes SubscribeResponse{batch: {nexts}} as marshalNext
// encodes one result: headers in one small buffer, each result referenced,
// not copied, so a batch of n results costs one allocation for the headers
// and one for the slice of buffers, whatever the results' sizes. In each
// Next the sequence and the cursor go before the result (protobuf accepts
// fields in any order) so that the result ends its entry and can be a
// buffer of its own.
// The results must not change afterwards.
func marshalBatch(nexts []*bridgev1.Next) mem.BufferSlice {
	body, hdrLen := 0, 0
	for _, n := range nexts {
		r, seq := n.GetResult(), n.GetSequence()
		entry := batchEntrySize(r, seq, n.GetCursor())
		body += entry
		hdrLen += entry - len(r)
	}
	hdrLen += batchSize(body) - body
	hdr := make([]byte, 0, hdrLen)
	hdr = protowire.AppendTag(hdr, 3, protowire.BytesType) // SubscribeResponse.batch
	hdr = protowire.AppendVarint(hdr, uint64(body))
	out := make(mem.BufferSlice, 0, 2*len(nexts)+1)
	start := 0 // hdr[start:] is not in out yet
	for _, n := range nexts {
		r, seq, cur := n.GetResult(), n.GetSequence(), n.GetCursor()
		hdr = protowire.AppendTag(hdr, 1, protowire.BytesType) // Batch.nexts
		hdr = protowire.AppendVarint(hdr, uint64(nextBodySize(r, seq, cur)))
		hdr = appendNextHead(hdr, seq, cur)
		if len(r) == 0 {
			continue
		}
		hdr = protowire.AppendTag(hdr, 1, protowire.BytesType) // Next.result
		hdr = protowire.AppendVarint(hdr, uint64(len(r)))
		// hdr never grows past its capacity, so the piece handed out
		// here is never moved by a later append.
		out = append(out, mem.SliceBuffer(hdr[start:]), mem.SliceBuffer(r))
		start = len(hdr)
	}
	if start < len(hdr) {
		out = append(out, mem.SliceBuffer(hdr[start:]))
	}
	return out
}

// appendNextResult appends the fields of a Next: the sequence and the
// cursor, then the result.
func appendNextResult(b, result []byte, seq uint64, cursor []byte) []byte {
	b = appendNextHead(b, seq, cursor)
	if len(result) > 0 {
		b = protowire.AppendTag(b, 1, protowire.BytesType) // Next.result
		b = protowire.AppendBytes(b, result)
	}
	return b
}

// copyBatch encodes SubscribeResponse{batch: {nexts}} as copyNext encodes
// one result: into one buffer from the messages pool, results copied.
func copyBatch(nexts []*bridgev1.Next) mem.BufferSlice {
	body := 0
	for _, n := range nexts {
		body += batchEntrySize(n.GetResult(), n.GetSequence(), n.GetCursor())
	}
	buf, b := messageBuffer(batchSize(body))
	b = protowire.AppendTag(b, 3, protowire.BytesType) // SubscribeResponse.batch
	b = protowire.AppendVarint(b, uint64(body))
	for _, n := range nexts {
		r, seq, cur := n.GetResult(), n.GetSequence(), n.GetCursor()
		b = protowire.AppendTag(b, 1, protowire.BytesType) // Batch.nexts
		b = protowire.AppendVarint(b, uint64(nextBodySize(r, seq, cur)))
		b = appendNextResult(b, r, seq, cur)
	}
	return mem.BufferSlice{buf.done(b)}
}

// batcher builds the Batch events of one stream, reusing its messages:
// Send has encoded them when it returns.
type batcher struct {
	max      int // results per batch
	maxBytes int // encoded size of a batch, unless one result alone is larger
	nexts    []*bridgev1.Next
	batch    bridgev1.Batch
	event    bridgev1.SubscribeResponse_Batch
}

func newBatcher(maxResults, maxBytes int) *batcher {
	b := &batcher{max: maxResults, maxBytes: maxBytes}
	b.event.Batch = &b.batch
	return b
}

// fits reports whether a batch that holds n results in body bytes may take
// one more of entry bytes: never past max results, and past maxBytes only
// as the first result.
func (b *batcher) fits(n, body, entry int) bool {
	return n == 0 || n < b.max && batchSize(body+entry) <= b.maxBytes
}

// set makes the batch hold the results of items, which fits has sized.
func (b *batcher) set(items []item) *bridgev1.SubscribeResponse_Batch {
	for len(b.nexts) < len(items) {
		b.nexts = append(b.nexts, &bridgev1.Next{})
	}
	for i, it := range items {
		b.nexts[i].Result, b.nexts[i].Sequence, b.nexts[i].Cursor = it.res.b, it.seq, it.res.cursor
	}
	b.batch.Nexts = b.nexts[:len(items)]
	return &b.event
}

// reset lets go of the results, so that no result outlives its sending.
func (b *batcher) reset() {
	for _, n := range b.batch.Nexts {
		n.Result, n.Cursor = nil, nil
	}
	b.batch.Nexts = nil
}

// plainBatch reports whether marshalBatch encodes b exactly: no unknown
// fields and no nil result (any other batch goes through protobuf).
func plainBatch(b *bridgev1.Batch) bool {
	if b.ProtoReflect().GetUnknown() != nil {
		return false
	}
	for _, n := range b.GetNexts() {
		if n == nil || n.ProtoReflect().GetUnknown() != nil {
			return false
		}
	}
	return true
}

// fill sizes the batch that starts at q.items[q.head], a result: the
// results after it up to the next lifecycle event (which ends a batch and
// is sent on its own), max_batch or the byte cap. When what was taken runs
// out first, it takes what the subscriber queued meanwhile: a batch holds
// whatever was queued when the stream became ready to send, and never waits
// for more. It returns how many results the batch holds.
func (s *Server) fill(ctx context.Context, aged <-chan struct{}, q *taken, b *batcher) (int, error) {
	n, body := 0, 0
	for n < b.max {
		if q.head+n == len(q.items) {
			if q.done {
				break
			}
			if err := s.ended(ctx, aged); err != nil {
				return 0, err
			}
			// One lock for as many results as the batch may still
			// take; what the byte cap leaves out waits for the next.
			if !q.takeMore(b.max - n) {
				break // nothing more queued: send what there is
			}
			continue
		}
		it := q.items[q.head+n]
		if it.ev != nil {
			break
		}
		entry := batchEntrySize(it.res.b, it.seq, it.res.cursor)
		if !b.fits(n, body, entry) {
			break
		}
		n, body = n+1, body+entry
	}
	return n, nil
}
