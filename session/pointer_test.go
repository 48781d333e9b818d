package session

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestParsePointer(t *testing.T) {
	for _, tc := range []struct {
		in   string
		segs []string
		err  string
	}{
		{in: "/data/events/id", segs: []string{"data", "events", "id"}},
		{in: "/data/events_stream/-/created_at", segs: []string{"data", "events_stream", "-", "created_at"}},
		{in: "/a~1b/c~0d/~01", segs: []string{"a/b", "c~d", "~1"}},
		{in: "/", segs: []string{""}},
		{in: "//x", segs: []string{"", "x"}},
		{in: "", err: "empty JSON pointer"},
		{in: "data/id", err: `must start with "/"`},
		{in: "/data/a~2", err: `has a "~" that is not "~0"`},
		{in: "/data/a~", err: `has a "~" that is not "~0"`},
	} {
		p, err := ParsePointer(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParsePointer(%q) = %v, want an error containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParsePointer(%q): %v", tc.in, err)
			continue
		}
		var got []string
		for _, s := range p.segs {
			got = append(got, s.name)
		}
		if strings.Join(got, "|") != strings.Join(tc.segs, "|") || len(got) != len(tc.segs) || p.String() != tc.in {
			t.Errorf("ParsePointer(%q) = %q (%s), want %q", tc.in, got, p, tc.segs)
		}
	}
}

func TestPointerFind(t *testing.T) {
	doc := `{"data": {"events": {"id": 42, "at": "x"}, "rows": [{"id": 1}, {"id": 2} , {"id": "three", "n": [1,[2]]}],` +
		` "esc\"aped": 7, "a/b": {"c~d": true}, "0": "zero", "empty": [], "nul": null, "dup": 1, "dup": 2,` +
		` "skip": {"deep": [[[{"id": 99}]]], "s": "\"}]"}, "id": {"nested": [1, 2.5e3, -0]}}, "errors": null}`
	for _, tc := range []struct {
		ptr, want string // want "" means nothing found
	}{
		{"/data/events/id", "42"},
		{"/data/events", `{"id": 42, "at": "x"}`},
		{"/data/rows/0/id", "1"},
		{"/data/rows/1/id", "2"},
		{"/data/rows/-/id", `"three"`},
		{"/data/rows/-/n/-/-", "2"},
		{"/data/rows/-", `{"id": "three", "n": [1,[2]]}`},
		{"/data/rows/3", ""},
		{"/data/rows/01", ""},
		{"/data/rows/id", ""},
		{"/data/esc\"aped", "7"},
		{"/data/a~1b/c~0d", "true"},
		{"/data/0", `"zero"`},
		{"/data/empty/-", ""},
		{"/data/empty/0", ""},
		{"/data/nul", ""},
		{"/data/dup", "1"},
		{"/data/id/nested/1", "2.5e3"},
		{"/data/id/nested/-", "-0"},
		{"/data/events/id/x", ""},
		{"/data/missing", ""},
		{"/errors", ""},
		{"/data/skip/s", `"\"}]"`},
	} {
		v, ok := MustParsePointer(tc.ptr).Find([]byte(doc))
		if got := string(v); ok != (tc.want != "") || got != tc.want {
			t.Errorf("Find(%s) = %q, %v; want %q", tc.ptr, got, ok, tc.want)
		}
	}
	for _, bad := range []string{``, `{`, `{"data": {"events": {"id": `, `[1,2`, `{"data" 1}`, `{"data": {"x": tru}, "id": 1}`} {
		if v, ok := MustParsePointer("/data/events/id").Find([]byte(bad)); ok {
			t.Errorf("Find in %q = %q, want nothing", bad, v)
		}
	}
	if v, ok := (Pointer{}).Find([]byte(doc)); ok {
		t.Errorf("the zero Pointer found %q", v)
	}
}

// TestPointerFindAllocates: the scan of a result allocates nothing.
func TestPointerFindAllocates(t *testing.T) {
	doc := []byte(`{"data":{"events_stream":[{"id":1,"payload":"` + strings.Repeat("x", 1000) + `"},{"id":2,"payload":"y"}]}}`)
	p := MustParsePointer("/data/events_stream/-/id")
	if n := testing.AllocsPerRun(100, func() {
		if v, ok := p.Find(doc); !ok || string(v) != "2" {
			t.Fatalf("found %q", v)
		}
	}); n != 0 {
		t.Fatalf("Find allocates %v times per result", n)
	}
}

// FuzzPointerFind checks Find against a reference that decodes the whole
// document with encoding/json (first duplicate member wins, as in Find).
func FuzzPointerFind(f *testing.F) {
	f.Add([]byte(`{"data":{"events":{"id":1}}}`), "/data/events/id")
	f.Add([]byte(`{"data":{"rows":[{"id":1},{"id":2}]}}`), "/data/rows/-/id")
	f.Add([]byte(`{"a":[[1,2],[3]],"a":4}`), "/a/0/1")
	f.Add([]byte(`{"a\u0062":{"~/":null}}`), "/ab/~0~1")
	f.Fuzz(func(t *testing.T, doc []byte, ptr string) {
		p, err := ParsePointer(ptr)
		if err != nil {
			return
		}
		got, ok := p.Find(doc)
		if !json.Valid(doc) {
			return // Find must only not panic
		}
		want, wok := referenceFind(doc, p)
		if ok != wok {
			t.Fatalf("Find(%s) in %s = %q, %v; reference %q, %v", ptr, doc, got, ok, want, wok)
		}
		if ok && !bytes.Equal(got, want) {
			t.Fatalf("Find(%s) in %s = %q; reference %q", ptr, doc, got, want)
		}
	})
}

// referenceFind walks doc with encoding/json's tokenizer and returns the
// raw bytes of the value p names.
func referenceFind(doc []byte, p Pointer) ([]byte, bool) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	for si, seg := range p.segs {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		switch tok {
		case json.Delim('{'):
			found := false
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return nil, false
				}
				if k.(string) == seg.name {
					found = true
					break
				}
				var skip json.RawMessage
				if err := dec.Decode(&skip); err != nil {
					return nil, false
				}
			}
			if !found {
				return nil, false
			}
		case json.Delim('['):
			var elems []json.RawMessage
			for dec.More() {
				var e json.RawMessage
				if err := dec.Decode(&e); err != nil {
					return nil, false
				}
				elems = append(elems, e)
			}
			k := seg.index
			if seg.last {
				k = len(elems) - 1
			}
			if k < 0 || k >= len(elems) {
				return nil, false
			}
			// Continue in the element, positioned by a decoder of its own.
			rest := Pointer{text: p.text, segs: p.segs[si+1:]}
			return referenceFind(elems[k], rest)
		default:
			return nil, false
		}
	}
	var v json.RawMessage
	if err := dec.Decode(&v); err != nil && !errors.Is(err, io.EOF) {
		return nil, false
	}
	// Decode returns the value without its surrounding whitespace, as
	// Find does; an absent value (nothing left) is not found.
	v = bytes.TrimSpace(v)
	if len(v) == 0 || string(v) == "null" {
		return nil, false
	}
	return v, true
}
