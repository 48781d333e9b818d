package upstream

import (
	"encoding/binary"
	"encoding/json"
	"testing"
)

func TestAppendNext(t *testing.T) {
	tpl := newNextTemplate("42")
	for _, c := range []struct{ n, ts int64 }{{1, 0}, {123456789, 1700000000123456789}} {
		f := tpl.appendNext(nil, c.n, c.ts)
		if len(f) != tpl.frameLen() {
			t.Fatalf("frame is %d bytes, frameLen says %d", len(f), tpl.frameLen())
		}
		if f[0] != 0x81 || f[1] != 126 {
			t.Fatalf("header % x", f[:4])
		}
		payload := f[4:]
		if int(binary.BigEndian.Uint16(f[2:4])) != len(payload) {
			t.Fatalf("length field %d, payload %d", binary.BigEndian.Uint16(f[2:4]), len(payload))
		}
		var m struct {
			ID      string          `json:"id"`
			Type    string          `json:"type"`
			Payload json.RawMessage `json:"payload"`
		}
		if err := json.Unmarshal(payload, &m); err != nil {
			t.Fatal(err)
		}
		if m.ID != "42" || m.Type != "next" || len(m.Payload) != ResultSize {
			t.Fatalf("id %q type %q result %d bytes", m.ID, m.Type, len(m.Payload))
		}
		if ParseN(m.Payload) != c.n || ParseTS(m.Payload) != c.ts {
			t.Fatalf("n %d ts %d", ParseN(m.Payload), ParseTS(m.Payload))
		}
	}
}
