package bridge

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// checkBatchEncoding encodes a batch of results with the bridge's codec
// and checks that protobuf's own decoder reads back the batch that was
// sent, that the encoding is as long as protobuf's, that batchSize
// predicts that length, and that no result was copied.
func checkBatchEncoding(t *testing.T, results [][]byte, seqs []uint64) {
	t.Helper()
	codec := requestCodec{encoding.GetCodecV2("proto")}
	want := &bridgev1.Batch{}
	body := 0
	for i, r := range results {
		want.Nexts = append(want.Nexts, &bridgev1.Next{Result: r, Sequence: seqs[i]})
		body += batchEntrySize(r, seqs[i])
	}
	resp := &bridgev1.SubscribeResponse{Event: &bridgev1.SubscribeResponse_Batch{Batch: want}}
	data, err := codec.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	wire := data.Materialize()
	what := func() string { return describeBatch(results, seqs) }
	if std, _ := proto.Marshal(resp); len(std) != len(wire) {
		t.Fatalf("%s: %d bytes on the wire, protobuf makes %d", what(), len(wire), len(std))
	}
	if n := batchSize(body); n != len(wire) {
		t.Fatalf("%s: batchSize says %d bytes, the encoding has %d", what(), n, len(wire))
	}
	for i, r := range results {
		if len(r) > 0 && !referenced(data, r) {
			t.Fatalf("%s: result %d was copied", what(), i)
		}
	}
	got := &bridgev1.SubscribeResponse{}
	if err := proto.Unmarshal(wire, got); err != nil {
		t.Fatalf("%s: %v", what(), err)
	}
	if got.GetBatch() == nil || !proto.Equal(got, resp) {
		t.Fatalf("%s: decoded %v", what(), got)
	}
}

// referenced reports whether one of data's buffers is r itself.
func referenced(data mem.BufferSlice, r []byte) bool {
	for _, b := range data {
		if d := b.ReadOnlyData(); len(d) == len(r) && &d[0] == &r[0] {
			return true
		}
	}
	return false
}

func describeBatch(results [][]byte, seqs []uint64) string {
	parts := make([]string, len(results))
	for i, r := range results {
		parts[i] = fmt.Sprintf("{%d bytes, seq %d}", len(r), seqs[i])
	}
	return "batch of " + strings.Join(parts, " ")
}

// varintEdges are lengths and sequences on either side of the boundaries
// where a varint grows by a byte.
var varintEdges = []uint64{0, 1, 127, 128, 16383, 16384, 2097151, 2097152}

// TestMarshalBatchDecodes: batches encoded without copying decode, with
// protobuf's own decoder, to the batch that was sent: empty, of one result
// and of several; results and sequences around varint boundaries; and
// results sized so that the Next, the batch entry and the whole batch body
// are each exactly on either side of a varint boundary.
func TestMarshalBatchDecodes(t *testing.T) {
	t.Parallel()
	checkBatchEncoding(t, nil, nil)
	for _, seq := range []uint64{0, 1, 127, 128, 16383, 16384, 1 << 35, 1<<64 - 1} {
		for _, n := range varintEdges[:6] {
			r := bytes.Repeat([]byte{'x'}, int(n))
			checkBatchEncoding(t, [][]byte{r}, []uint64{seq})
			checkBatchEncoding(t, [][]byte{r, []byte("{}"), r, nil}, []uint64{seq, seq + 1, seq + 2, 0})
		}
	}
	// One result whose Next body, batch entry or batch body is exactly an
	// edge: the length prefixes around it change size there.
	for _, edge := range []uint64{1 << 7, 1 << 14, 1 << 21} {
		for _, target := range []uint64{edge - 1, edge} {
			for name, size := range map[string]func(r []byte) int{
				"next":  func(r []byte) int { return nextBodySize(r, 7) },
				"entry": func(r []byte) int { return batchEntrySize(r, 7) },
			} {
				r := resultOfSize(t, target, size)
				if r == nil {
					continue // no result length lands exactly there
				}
				t.Run(fmt.Sprintf("%s=%d", name, target), func(t *testing.T) {
					checkBatchEncoding(t, [][]byte{r}, []uint64{7})
					// The same in a batch of three: the body grows past it.
					checkBatchEncoding(t, [][]byte{r, r[:1], r}, []uint64{7, 8, 9})
				})
			}
		}
	}
}

// resultOfSize returns a result whose size(result) is target, or nil when
// the varint jump skips target.
func resultOfSize(t *testing.T, target uint64, size func([]byte) int) []byte {
	t.Helper()
	for n := int(target); n >= 0 && n > int(target)-16; n-- {
		r := bytes.Repeat([]byte{'y'}, n)
		if uint64(size(r)) == target {
			return r
		}
	}
	return nil
}

// FuzzMarshalBatch: any batch of results and sequences encodes to what
// protobuf decodes back to the same batch.
func FuzzMarshalBatch(f *testing.F) {
	f.Add([]byte(`{"data":{"n":1}}`), []byte(""), uint64(1), uint64(300), uint8(3))
	f.Add(bytes.Repeat([]byte{'x'}, 127), bytes.Repeat([]byte{'z'}, 16380), uint64(0), uint64(1<<63), uint8(2))
	f.Fuzz(func(t *testing.T, a, b []byte, seqA, seqB uint64, n uint8) {
		var results [][]byte
		var seqs []uint64
		for i := range int(n % 9) {
			if i%2 == 0 {
				results, seqs = append(results, a), append(seqs, seqA+uint64(i))
			} else {
				results, seqs = append(results, b), append(seqs, seqB)
			}
		}
		checkBatchEncoding(t, results, seqs)
	})
}
