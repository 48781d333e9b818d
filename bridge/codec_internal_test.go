package bridge

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/proto"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// TestMarshalNextDecodes checks that results encoded without a copy decode,
// with protobuf's own decoder, to the message that was sent, whatever the
// sizes of the result, the sequence and the cursor; and that lifecycle
// messages still go through protobuf's encoder.
func TestMarshalNextDecodes(t *testing.T) {
	t.Parallel()
	codec := requestCodec{CodecV2: encoding.GetCodecV2("proto")}
	for _, cursor := range [][]byte{nil, []byte("42"), []byte(`"` + strings.Repeat("c", 126) + `"`)} {
		for _, seq := range []uint64{0, 1, 127, 128, 16383, 16384, 1 << 35, 1<<64 - 1} {
			for _, n := range []int{0, 1, 127, 128, 1024, 16383, 16384, 1 << 20} {
				result := bytes.Repeat([]byte{'x'}, n)
				want := &bridgev1.SubscribeResponse{Event: &bridgev1.SubscribeResponse_Next{Next: &bridgev1.Next{Result: result, Sequence: seq, Cursor: cursor}}}
				data, err := codec.Marshal(want)
				if err != nil {
					t.Fatal(err)
				}
				wire := data.Materialize()
				if n > 0 && &data[len(data)-1].ReadOnlyData()[0] != &result[0] {
					t.Fatalf("seq %d, %d bytes: the result was copied", seq, n)
				}
				if std, _ := proto.Marshal(want); len(std) != len(wire) {
					t.Fatalf("seq %d, %d bytes: %d bytes on the wire, protobuf makes %d", seq, n, len(wire), len(std))
				}
				got := &bridgev1.SubscribeResponse{}
				if err := proto.Unmarshal(wire, got); err != nil {
					t.Fatalf("seq %d, %d bytes: %v", seq, n, err)
				}
				if !proto.Equal(got, want) || got.GetNext() == nil {
					t.Fatalf("seq %d, %d bytes: decoded %v", seq, n, got)
				}
				checkOwnedEncoding(t, codec, want, wire, func() string { return fmt.Sprintf("seq %d, %d bytes", seq, n) })
			}
		}
	}
	lc := &bridgev1.SubscribeResponse{Event: &bridgev1.SubscribeResponse_Lifecycle{Lifecycle: &bridgev1.Lifecycle{
		State: bridgev1.Lifecycle_STATE_RECONNECTING, CloseCode: 1006, CloseReason: "gone", Attempt: 3}}}
	data, err := codec.Marshal(lc)
	if err != nil {
		t.Fatal(err)
	}
	if std, _ := proto.Marshal(lc); !bytes.Equal(data.Materialize(), std) {
		t.Fatalf("lifecycle encoded as %x, protobuf makes %x", data.Materialize(), std)
	}
}

// TestMessagePool: every size up to maxPooledMessage gets a buffer of that
// length from the class that fits it, and a buffer put back is handed out
// again for a size of its class.
func TestMessagePool(t *testing.T) {
	t.Parallel()
	p := &messagePool{}
	for _, n := range []int{1025, 2047, 2048, 2049, 4096, 4097, 1 << 20, 1<<20 + 1, maxPooledMessage} {
		bp := p.Get(n)
		if len(*bp) != n || cap(*bp) < n || cap(*bp) > 2*n+minPooledMessage || cap(*bp)&(cap(*bp)-1) != 0 {
			t.Fatalf("Get(%d): length %d, capacity %d", n, len(*bp), cap(*bp))
		}
		p.Put(bp)
	}
	if messageClass(maxPooledMessage) != messageClasses-1 {
		t.Fatalf("the largest pooled message is in class %d of %d", messageClass(maxPooledMessage), messageClasses)
	}
}
