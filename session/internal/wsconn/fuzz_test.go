package wsconn

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/coder/websocket"
)

// script is a stream whose reads come from a fixed input and whose writes
// are kept (the client's pongs and close frames).
type script struct {
	r      *bytes.Reader
	w      bytes.Buffer
	closed bool
}

func (s *script) Read(p []byte) (int, error) {
	if s.closed {
		return 0, io.ErrClosedPipe
	}
	return s.r.Read(p)
}
func (s *script) Write(p []byte) (int, error) { return s.w.Write(p) }
func (s *script) Close() error                { s.closed = true; return nil }

// FuzzRead feeds arbitrary server bytes to the reader: it never panics,
// ends once the input does, returns messages within the read limit, and
// whatever it writes back is well-formed masked frames.
func FuzzRead(f *testing.F) {
	seeds := [][]byte{
		frame(true, opText, []byte(`{"type":"next"}`), 0),
		append(frame(false, opText, []byte("a"), 0), frame(true, opContinuation, []byte("b"), 0)...),
		frame(true, opPing, []byte("p"), 0),
		frame(true, opClose, closePayload(1000, "bye"), 0),
		frame(true, opText, make([]byte, 300), 8),
		{0x81, 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		{0x81, 0x82, 1, 2, 3, 4, 5, 6},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	const limit = 1 << 12
	f.Fuzz(func(t *testing.T, in []byte) {
		s := &script{r: bytes.NewReader(in)}
		c := newConn(s, "")
		c.SetReadLimit(limit)
		for n := 0; ; n++ {
			if n > len(in) {
				t.Fatalf("%d messages from %d bytes", n, len(in))
			}
			typ, b, err := c.Read()
			if err != nil {
				if _, _, err2 := c.Read(); !errors.Is(err2, err) {
					t.Fatalf("second Read %v, want %v", err2, err)
				}
				break
			}
			if typ != MessageText && typ != MessageBinary || len(b) > limit {
				t.Fatalf("message of type %d and %d bytes", typ, len(b))
			}
		}
		// The client's frames parse: all final, masked, and at most one
		// close, last.
		p := &peer{t: t, br: bytesReader(s.w.Bytes())}
		sawClose := false
		for {
			op, b, err := p.next()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("client wrote a bad frame: %v", err)
				}
				break
			}
			if sawClose {
				t.Fatalf("frame %#x after the close frame", op)
			}
			switch op {
			case opPong:
			case opClose:
				sawClose = true
				if len(b) == 1 || len(b) >= 2 && !validWireCode(websocket.StatusCode(int(b[0])<<8|int(b[1]))) {
					t.Fatalf("close payload %q", b)
				}
			default:
				t.Fatalf("client sent opcode %#x", op)
			}
		}
	})
}
