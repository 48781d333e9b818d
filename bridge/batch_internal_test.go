package bridge

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/session"
)

// checkBatchEncoding encodes a batch of results with the bridge's codec
// and checks that protobuf's own decoder reads back the batch that was
// sent, that the encoding is as long as protobuf's, that batchSize
// predicts that length, and that no result was copied; and that copyBatch,
// for a stream that owns the results, makes the same bytes in one buffer
// that does not change when the results are overwritten (their storage is
// reused, budget.go). cursors, when not nil, gives each result a cursor.
func checkBatchEncoding(t *testing.T, results [][]byte, seqs []uint64, cursors ...[]byte) {
	t.Helper()
	codec := requestCodec{CodecV2: encoding.GetCodecV2("proto")}
	want := &bridgev1.Batch{}
	body := 0
	for i, r := range results {
		var c []byte
		if cursors != nil {
			c = cursors[i]
		}
		want.Nexts = append(want.Nexts, &bridgev1.Next{Result: r, Sequence: seqs[i], Cursor: c})
		body += batchEntrySize(r, seqs[i], c)
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
	checkOwnedEncoding(t, codec, resp, wire, what)
	got := &bridgev1.SubscribeResponse{}
	if err := proto.Unmarshal(wire, got); err != nil {
		t.Fatalf("%s: %v", what(), err)
	}
	if got.GetBatch() == nil || !proto.Equal(got, resp) {
		t.Fatalf("%s: decoded %v", what(), got)
	}
}

// checkOwnedEncoding checks that resp, a Next or a Batch, sent as an
// ownedResponse encodes to wire in one buffer, and that overwriting its
// results and cursors afterwards leaves that buffer unchanged.
func checkOwnedEncoding(t *testing.T, codec requestCodec, resp *bridgev1.SubscribeResponse, wire []byte, what func() string) {
	t.Helper()
	own := proto.Clone(resp).(*bridgev1.SubscribeResponse)
	// Any other codec sees the message itself.
	if std, err := proto.Marshal(&ownedResponse{own}); err != nil || len(std) != len(wire) {
		t.Fatalf("%s: protobuf encodes the ownedResponse in %d bytes (%v), want %d", what(), len(std), err, len(wire))
	}
	data, err := codec.Marshal(&ownedResponse{own})
	if err != nil {
		t.Fatal(err)
	}
	defer data.Free()
	nexts := own.GetBatch().GetNexts()
	if n := own.GetNext(); n != nil {
		nexts = []*bridgev1.Next{n}
	}
	for _, n := range nexts {
		for i := range n.Result {
			n.Result[i] = '#'
		}
		for i := range n.Cursor {
			n.Cursor[i] = '#'
		}
	}
	if len(data) != 1 {
		t.Fatalf("%s, owned: encoded in %d buffers, want 1", what(), len(data))
	}
	if got := data.Materialize(); !bytes.Equal(got, wire) {
		t.Fatalf("%s, owned: encoded as %d bytes unlike the %d without a copy", what(), len(got), len(wire))
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
				"next":              func(r []byte) int { return nextBodySize(r, 7, nil) },
				"entry":             func(r []byte) int { return batchEntrySize(r, 7, nil) },
				"next with cursor":  func(r []byte) int { return nextBodySize(r, 7, []byte("1234")) },
				"entry with cursor": func(r []byte) int { return batchEntrySize(r, 7, []byte("1234")) },
			} {
				r := resultOfSize(t, target, size)
				if r == nil {
					continue // no result length lands exactly there
				}
				t.Run(fmt.Sprintf("%s=%d", name, target), func(t *testing.T) {
					var cursors [][]byte
					if strings.HasSuffix(name, "cursor") {
						cursors = [][]byte{[]byte("1234"), []byte("1234"), []byte("1234")}
					}
					checkBatchEncoding(t, [][]byte{r}, []uint64{7}, cursors...)
					// The same in a batch of three: the body grows past it.
					checkBatchEncoding(t, [][]byte{r, r[:1], r}, []uint64{7, 8, 9}, cursors...)
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

// FuzzMarshalBatch: any batch of results, sequences and cursors encodes to
// what protobuf decodes back to the same batch.
func FuzzMarshalBatch(f *testing.F) {
	f.Add([]byte(`{"data":{"n":1}}`), []byte(""), uint64(1), uint64(300), uint8(3), []byte(nil))
	f.Add(bytes.Repeat([]byte{'x'}, 127), bytes.Repeat([]byte{'z'}, 16380), uint64(0), uint64(1<<63), uint8(2), []byte(`"2024-05-01T12:00:00Z"`))
	f.Fuzz(func(t *testing.T, a, b []byte, seqA, seqB uint64, n uint8, cursor []byte) {
		var results, cursors [][]byte
		var seqs []uint64
		for i := range int(n % 9) {
			if i%2 == 0 {
				results, seqs, cursors = append(results, a), append(seqs, seqA+uint64(i)), append(cursors, cursor)
			} else {
				results, seqs, cursors = append(results, b), append(seqs, seqB), append(cursors, nil)
			}
		}
		checkBatchEncoding(t, results, seqs)
		checkBatchEncoding(t, results, seqs, cursors...)
	})
}

// steppedStream is the pump's side of a stream whose caller takes one
// message at a time: Send hands a decoded copy of what the codec encoded to
// the test and waits for a step. While it waits, the message is composed
// and the test can queue more, knowing exactly what the next message may
// take.
type steppedStream struct {
	grpc.ServerStream // only Send and Context are used
	ctx               context.Context
	codec             requestCodec
	sent              chan *bridgev1.SubscribeResponse
	step              chan struct{}
}

func (s *steppedStream) Context() context.Context { return s.ctx }

func (s *steppedStream) Send(m *bridgev1.SubscribeResponse) error { return s.SendMsg(m) }

func (s *steppedStream) SendMsg(m any) error {
	data, err := s.codec.Marshal(m)
	if err != nil {
		return err
	}
	got := &bridgev1.SubscribeResponse{}
	if err := proto.Unmarshal(data.Materialize(), got); err != nil {
		return err
	}
	s.sent <- got
	select {
	case <-s.step:
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

// TestPumpBatches: what each batch holds, message by message. A batch
// takes what was taken and what was queued since, up to max_batch; a
// result dropped from the queue meanwhile shows as a gap inside a batch; a
// lifecycle event ends the batch and goes alone; a result over the byte cap
// goes alone and ends the batch before it; the outcome comes after the last
// batch.
func TestPumpBatches(t *testing.T) {
	t.Parallel()
	srv, err := New(Config{Upstreams: map[string]*Upstream{"up": {Session: session.Config{URL: "ws://127.0.0.1:1/graphql"}}}, MaxBatchBytes: 4096, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	drops := 0
	sub := newSubscriber(queueConfig{size: 4, maxBytes: 1 << 20, policy: DropOldest, onDrop: func() { drops++ }})
	stream := &steppedStream{ctx: ctx, codec: requestCodec{CodecV2: encoding.GetCodecV2("proto")}, sent: make(chan *bridgev1.SubscribeResponse, 1), step: make(chan struct{})}
	big := bytes.Repeat([]byte{'b'}, 5000)
	push := func(from, to int) {
		for i := from; i <= to; i++ {
			if i == 12 {
				sub.pushNext(res(big, nil))
				continue
			}
			sub.pushNext(res(fmt.Appendf(nil, `{"n":%d}`, i), nil))
		}
	}
	lifecycle := func(st bridgev1.Lifecycle_State) { sub.pushEvent(&bridgev1.Lifecycle{State: st}) }

	lifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
	push(1, 4)
	done := make(chan error, 1)
	go func() { done <- srv.pump(ctx, "up", sub, stream, 3) }()

	steps := []struct {
		want   string // the message: a lifecycle state or the sequences of a batch
		before func() // run while the pump waits in Send with it
	}{
		// The pump took SUBSCRIBED and result 1 and sends SUBSCRIBED;
		// the queue of 4 holds 2-4, and 5-10 push out 2-6.
		{"STATE_SUBSCRIBED", func() { push(5, 10) }},
		// Result 1, topped up with what was queued, up to max_batch.
		{"[1 7 8]", nil},
		{"[9 10]", func() {
			lifecycle(bridgev1.Lifecycle_STATE_RECONNECTING)
			push(11, 13)
			lifecycle(bridgev1.Lifecycle_STATE_RESUBSCRIBED)
			push(14, 14)
		}},
		{"STATE_RECONNECTING", nil},
		{"[11]", nil}, // 12 is over the byte cap: it goes alone
		{"[12]", nil},
		{"[13]", nil}, // a lifecycle event ends the batch
		{"STATE_RESUBSCRIBED", func() { push(15, 15); sub.finish(nil) }},
		{"[14 15]", nil},
	}
	for i, st := range steps {
		var m *bridgev1.SubscribeResponse
		select {
		case m = <-stream.sent:
		case err := <-done:
			t.Fatalf("message %d: the pump returned %v", i, err)
		case <-ctx.Done():
			t.Fatalf("message %d: nothing sent", i)
		}
		got := m.GetLifecycle().GetState().String()
		if b := m.GetBatch(); b != nil {
			var seqs []uint64
			for _, n := range b.GetNexts() {
				seqs = append(seqs, n.GetSequence())
				if n.GetSequence() == 12 && !bytes.Equal(n.GetResult(), big) {
					t.Fatalf("result 12 changed")
				}
			}
			got = fmt.Sprint(seqs)
		}
		if got != st.want {
			t.Fatalf("message %d is %s, want %s", i, got, st.want)
		}
		if st.before != nil {
			st.before()
		}
		stream.step <- struct{}{}
	}
	if err := <-done; err != nil {
		t.Fatalf("pump: %v, want the outcome nil", err)
	}
	if drops != 5 {
		t.Fatalf("%d drops counted, want 5 (results 2 to 6)", drops)
	}
}
