package session

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Pointer is a parsed RFC 6901 JSON Pointer that finds a value in a JSON
// document without decoding it: Find scans the raw bytes once, descending
// into the members and elements the pointer names and skipping every other
// value without building it. One extension to RFC 6901: the segment "-",
// which the RFC reserves for the element after the end of an array, names
// the last element (a result that lists rows carries the cursor of its
// last row).
//
// The zero Pointer is not valid: Resume needs one from ParsePointer.
type Pointer struct {
	text string
	segs []pointerSegment
}

type pointerSegment struct {
	name  string // the member name, unescaped
	index int    // the array index the segment spells, or -1
	last  bool   // the segment is "-"
}

// ParsePointer parses s, which must start with "/" (the empty pointer,
// which names the whole document, is refused: a whole result is no
// cursor). "~0" stands for "~" and "~1" for "/" in a segment; any other "~"
// is an error.
func ParsePointer(s string) (Pointer, error) {
	if s == "" {
		return Pointer{}, errors.New(`empty JSON pointer: it would name the whole result; name the cursor inside it, for example "/data/events/id"`)
	}
	if s[0] != '/' {
		return Pointer{}, fmt.Errorf(`JSON pointer %q must start with "/" (RFC 6901), for example "/data/events/id"`, truncateString(s, 64))
	}
	p := Pointer{text: s}
	for raw := range strings.SplitSeq(s[1:], "/") {
		name, err := unescapeSegment(raw)
		if err != nil {
			return Pointer{}, fmt.Errorf("JSON pointer %q: %w", truncateString(s, 64), err)
		}
		p.segs = append(p.segs, pointerSegment{name: name, index: arrayIndex(name), last: name == "-"})
	}
	return p, nil
}

// MustParsePointer is ParsePointer for pointers known to be valid; it
// panics otherwise.
func MustParsePointer(s string) Pointer {
	p, err := ParsePointer(s)
	if err != nil {
		panic(err)
	}
	return p
}

func unescapeSegment(raw string) (string, error) {
	if !strings.Contains(raw, "~") {
		return raw, nil
	}
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		if raw[i] != '~' {
			b.WriteByte(raw[i])
			continue
		}
		if i+1 < len(raw) && (raw[i+1] == '0' || raw[i+1] == '1') {
			b.WriteByte("~/"[raw[i+1]-'0'])
			i++
			continue
		}
		return "", fmt.Errorf(`segment %q has a "~" that is not "~0" (for "~") or "~1" (for "/")`, truncateString(raw, 64))
	}
	return b.String(), nil
}

// arrayIndex is the index a segment spells (digits, no leading zero), or -1.
func arrayIndex(s string) int {
	if s == "" || len(s) > 1 && s[0] == '0' {
		return -1
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return -1
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

func truncateString(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// String returns the pointer as it was parsed.
func (p Pointer) String() string { return p.text }

// IsZero reports whether p is the zero Pointer.
func (p Pointer) IsZero() bool { return p.text == "" }

// Find returns the value p names in doc, a JSON document, as a sub-slice of
// doc, and false when doc has nothing there: a member or element missing, a
// segment applied to a scalar, the value null, or doc not well-formed on
// the way. Of duplicate member names the first counts. It scans doc once
// up to the value (to the end of an array for "-") and allocates nothing,
// unless a member name on the way holds escapes.
func (p Pointer) Find(doc []byte) ([]byte, bool) {
	if p.IsZero() {
		return nil, false
	}
	i := skipSpace(doc, 0)
	for _, seg := range p.segs {
		if i >= len(doc) {
			return nil, false
		}
		var ok bool
		switch doc[i] {
		case '{':
			i, ok = findMember(doc, i, seg.name)
		case '[':
			i, ok = findElement(doc, i, seg)
		}
		if !ok {
			return nil, false
		}
	}
	end, err := skipValue(doc, i)
	if err != nil {
		return nil, false
	}
	v := doc[i:end]
	if string(v) == "null" {
		return nil, false
	}
	return v, true
}

// findMember returns the offset of the value of member name in the object
// at doc[i].
func findMember(doc []byte, i int, name string) (int, bool) {
	i = skipSpace(doc, i+1)
	if i < len(doc) && doc[i] == '}' {
		return i, false
	}
	for {
		key, escaped, n, err := scanString(doc, i)
		if err != nil {
			return i, false
		}
		i = skipSpace(doc, n)
		if i >= len(doc) || doc[i] != ':' {
			return i, false
		}
		i = skipSpace(doc, i+1)
		if escaped {
			key = unescape(key)
		}
		if string(key) == name {
			return i, true
		}
		if i, err = skipValue(doc, i); err != nil {
			return i, false
		}
		i = skipSpace(doc, i)
		if i >= len(doc) || doc[i] != ',' {
			return i, false // the end of the object, or not an object
		}
		i = skipSpace(doc, i+1)
	}
}

// findElement returns the offset of the element seg names in the array at
// doc[i].
func findElement(doc []byte, i int, seg pointerSegment) (int, bool) {
	if seg.index < 0 && !seg.last {
		return i, false
	}
	i = skipSpace(doc, i+1)
	if i < len(doc) && doc[i] == ']' {
		return i, false
	}
	for k := 0; ; k++ {
		if k == seg.index {
			return i, true
		}
		start := i
		end, err := skipValue(doc, i)
		if err != nil {
			return i, false
		}
		i = skipSpace(doc, end)
		if i >= len(doc) {
			return i, false
		}
		if doc[i] == ']' {
			return start, seg.last
		}
		if doc[i] != ',' {
			return i, false
		}
		i = skipSpace(doc, i+1)
	}
}
