package session

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDecodeEnvelope(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in      string
		typ, id string
		payload string
		hasID   bool
	}{
		{in: `{"type":"connection_ack"}`, typ: msgConnectionAck},
		{in: ` { "type" : "next" , "id" : "7", "payload" : {"data":{"n":1}} } `, typ: msgNext, id: "7", hasID: true, payload: `{"data":{"n":1}}`},
		{in: `{"payload":[1,2.5e-3,"x\"y",true,false,null,{}],"id":"a\u0062","type":"error"}`, typ: msgError, id: "ab", hasID: true, payload: `[1,2.5e-3,"x\"y",true,false,null,{}]`},
		{in: `{"type":"ping","payload":null}`, typ: msgPing},
		{in: `{"type":"surprise","extra":{"deep":[[[]]]}}`, typ: "surprise"},
		{in: `{"type":"data","id":"1","payload":{"data":{"s":"\u00e9\n"}}}`, typ: msgData, id: "1", hasID: true, payload: `{"data":{"s":"\u00e9\n"}}`},
	}
	for _, tc := range cases {
		env, err := decodeEnvelope([]byte(tc.in))
		if err != nil {
			t.Errorf("decode %s: %v", tc.in, err)
			continue
		}
		if env.typ != tc.typ || string(env.id) != tc.id || env.hasID != tc.hasID || string(env.payload) != tc.payload {
			t.Errorf("decode %s = {%q %q %v %s}, want {%q %q %v %s}", tc.in, env.typ, env.id, env.hasID, env.payload, tc.typ, tc.id, tc.hasID, tc.payload)
		}
	}
}

func TestDecodeEnvelopeRejects(t *testing.T) {
	t.Parallel()
	bad := []string{
		``, `[]`, `"next"`, `{}`, `{"type":1}`, `{"type":"next"`, `{"type":"next",}`, `{"type":"next"} x`,
		`{"type":"next","payload":{"a":}}`, `{"type":"next","payload":[1,]}`, `{"type":"next","payload":01}`,
		`{"type":"next","payload":tru}`, `{"type":"next","id":"\x"}`, "{\"type\":\"a\x01\"}",
		`{"type":"next","payload":` + strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1) + `}`,
		`{"type":"next","payload":{"a":1 "b":2}}`, `{"type":"next","payload":-}`, `{"type":"next","payload":1.}`,
	}
	for _, in := range bad {
		if env, err := decodeEnvelope([]byte(in)); err == nil {
			t.Errorf("decode %q succeeded: %+v", in, env)
		}
	}
}

func TestGraphQLErrorsNormalised(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		`[{"message":"a"}]`:                  `[{"message":"a"}]`,
		`{"message":"a"}`:                    `[{"message":"a"}]`,
		`{"errors":[{"message":"a"}],"x":1}`: `[{"message":"a"}]`,
		``:                                   `[{"message":"upstream reported an error without details"}]`,
	}
	for in, want := range cases {
		if got := string(legacyWS.graphqlErrors([]byte(in))); got != want {
			t.Errorf("graphqlErrors(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestAppendMessage(t *testing.T) {
	t.Parallel()
	got := appendMessage(nil, msgSubscribe, "12", []byte(`{"query":"subscription{a}"}`))
	var m map[string]any
	if err := json.Unmarshal(got, &m); err != nil {
		t.Fatal(err)
	}
	if m["type"] != "subscribe" || m["id"] != "12" {
		t.Fatalf("got %s", got)
	}
	if got := string(appendMessage(nil, msgPing, "", nil)); got != `{"type":"ping"}` {
		t.Fatalf("got %s", got)
	}
}

// FuzzDecodeEnvelope checks that no frame makes the decoder panic, and that
// whatever it accepts is JSON encoding/json accepts too, with the same type.
func FuzzDecodeEnvelope(f *testing.F) {
	for _, s := range []string{
		`{"type":"next","id":"1","payload":{"data":{"n":1}}}`,
		`{"type":"data","id":"1","payload":{"data":null,"errors":[{"message":"x"}]}}`,
		`{"type":"error","id":"1","payload":{"message":"x"}}`,
		`{"type":"connection_error","payload":{"message":"bad token"}}`,
		`{"type":"ka"}`, `{"type":"ping","payload":{}}`, `{"id":"\u0031","type":"complete"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := decodeEnvelope(b)
		if err != nil || !utf8.Valid(b) {
			// encoding/json replaces invalid UTF-8; payload bytes pass
			// through untouched, so only valid input is compared.
			return
		}
		var std struct {
			Type    string          `json:"type"`
			ID      *string         `json:"id"`
			Payload json.RawMessage `json:"payload"`
		}
		if jerr := json.Unmarshal(b, &std); jerr != nil {
			// encoding/json also checks UTF-8 strictly; only structure is ours.
			if !strings.Contains(jerr.Error(), "invalid character") || strings.Contains(jerr.Error(), "looking for beginning") {
				t.Fatalf("decoder accepted %q, encoding/json: %v", b, jerr)
			}
			return
		}
		if std.Type != env.typ {
			t.Fatalf("type %q, encoding/json says %q", env.typ, std.Type)
		}
		if env.hasID != (std.ID != nil) || std.ID != nil && *std.ID != string(env.id) {
			t.Fatalf("id %q, encoding/json says %v", env.id, std.ID)
		}
	})
}

func BenchmarkDecodeEnvelope(b *testing.B) {
	frame := []byte(`{"id":"42","type":"next","payload":{"data":{"ticker":{"n":1,"at":"2026-11-23T10:00:00Z","payload":"` + strings.Repeat("x", 1000) + `"}}}}`)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeEnvelope(frame); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeEnvelopeStdlib(b *testing.B) {
	frame := []byte(`{"id":"42","type":"next","payload":{"data":{"ticker":{"n":1,"at":"2026-11-23T10:00:00Z","payload":"` + strings.Repeat("x", 1000) + `"}}}}`)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		var m struct {
			Type    string          `json:"type"`
			ID      string          `json:"id"`
			Payload json.RawMessage `json:"payload"`
		}
		if err := json.Unmarshal(frame, &m); err != nil {
			b.Fatal(err)
		}
	}
}

// TestScanStringEveryPosition puts each byte that ends a plain run (and a
// few that do not) at every offset of strings long enough for the
// eight-byte fast path, and checks scanString against a byte-by-byte scan.
func TestScanStringEveryPosition(t *testing.T) {
	t.Parallel()
	naive := func(b []byte) (end int, ok bool) {
		for j := 1; j < len(b); j++ {
			switch c := b[j]; {
			case c == '"':
				return j + 1, true
			case c == '\\':
				j++
			case c < 0x20:
				return j, false
			}
		}
		return len(b), false
	}
	for _, c := range []byte{'"', '\\', 0x00, 0x1f, 0x20, 0x21, 0x5b, 0x5d, 0x7f, 0x80, 0xff} {
		for n := 1; n <= 24; n++ {
			for at := 0; at < n; at++ {
				body := []byte(strings.Repeat("a", n))
				body[at] = c
				if c == '\\' && at+1 < n {
					body[at+1] = 'n'
				}
				b := append(append([]byte{'"'}, body...), '"', ' ', 'x')
				_, _, next, err := scanString(b, 0)
				end, ok := naive(b)
				if ok != (err == nil) || ok && next != end {
					t.Fatalf("%q: scanString next=%d err=%v; byte by byte end=%d ok=%t", b, next, err, end, ok)
				}
			}
		}
	}
}
