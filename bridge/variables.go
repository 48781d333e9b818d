package bridge

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/structpb"
)

// The JSON of a request's variables and extensions. The bridge sends them
// upstream as canonical JSON, byte for byte what encoding/json writes for
// Struct.AsMap (keys sorted), so identical variables give identical bytes
// and deduplicate. Two functions compute it:
//
//   - structJSONSize measures it from the protobuf encoding of a Struct
//     without decoding it, so the request codec (decode.go) refuses
//     oversized variables before anything is built for them: a caller
//     cannot make the bridge spend memory per key on a request it refuses;
//   - structJSON writes it from a decoded Struct, without AsMap's copy of
//     every node into Go maps and slices.

// structJSON encodes st as canonical JSON; nil when st has no field.
func structJSON(st *structpb.Struct) (json.RawMessage, error) {
	if len(st.GetFields()) == 0 {
		return nil, nil
	}
	b, err := appendStruct(nil, st)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// badNumber is a number JSON cannot represent (NaN, ±Infinity), with its
// path, collected innermost first while the encoder unwinds.
type badNumber struct {
	f    float64
	path []string // innermost first: ".key" or "[i]"
}

func (e *badNumber) Error() string {
	var p strings.Builder
	for i := len(e.path) - 1; i >= 0; i-- {
		p.WriteString(e.path[i])
	}
	// The path is made of the caller's keys: quoted and truncated.
	return fmt.Sprintf("%s is %v, which JSON cannot represent: send a finite number, a string or null",
		quoteCaller(strings.TrimPrefix(p.String(), ".")), e.f)
}

func appendStruct(b []byte, st *structpb.Struct) ([]byte, error) {
	fields := st.GetFields()
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		var err error
		if b, err = appendValue(b, fields[k]); err != nil {
			if bad, ok := err.(*badNumber); ok {
				bad.path = append(bad.path, "."+k)
			}
			return nil, err
		}
	}
	return append(b, '}'), nil
}

func appendValue(b []byte, v *structpb.Value) ([]byte, error) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_NumberValue:
		f := k.NumberValue
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, &badNumber{f: f}
		}
		return appendJSONNumber(b, f), nil
	case *structpb.Value_StringValue:
		return appendJSONString(b, k.StringValue), nil
	case *structpb.Value_BoolValue:
		return strconv.AppendBool(b, k.BoolValue), nil
	case *structpb.Value_StructValue:
		return appendStruct(b, k.StructValue)
	case *structpb.Value_ListValue:
		b = append(b, '[')
		for i, e := range k.ListValue.GetValues() {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendValue(b, e); err != nil {
				if bad, ok := err.(*badNumber); ok {
					bad.path = append(bad.path, "["+strconv.Itoa(i)+"]")
				}
				return nil, err
			}
		}
		return append(b, ']'), nil
	}
	// NullValue, and a Value with no kind set (AsMap makes it nil).
	return append(b, "null"...), nil
}

// jsonNumberFormat is how encoding/json writes a float64: like ES6, plain
// decimals except for very small or large magnitudes.
func jsonNumberFormat(f float64) byte {
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		return 'e'
	}
	return 'f'
}

func appendJSONNumber(b []byte, f float64) []byte {
	format := jsonNumberFormat(f)
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 → e-9, as encoding/json does.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// jsonNumberLen is len(appendJSONNumber(nil, f)) without allocating.
func jsonNumberLen(f float64) int {
	var buf [32]byte
	return len(appendJSONNumber(buf[:0], f))
}

const hexDigits = "0123456789abcdef"

// appendJSONString writes s as encoding/json does (HTML-safe escaping).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonSafe(c) {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// jsonStringLen is len(appendJSONString(nil, s)) without allocating.
func jsonStringLen(s []byte) int {
	n := 2
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case jsonSafe(c):
				n++
			case c == '\\' || c == '"' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t':
				n += 2
			default:
				n += 6
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		switch {
		case r == utf8.RuneError && size == 1, r == '\u2028' || r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}

// jsonSafe reports whether encoding/json writes the ASCII byte c as is:
// printable, and not a quote, a backslash or one of the HTML characters.
func jsonSafe(c byte) bool {
	return c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
}

// maxNesting is protobuf's own recursion limit less the request itself: a
// Struct nested deeper does not decode, so the size is not worth counting.
const maxNesting = protowire.DefaultRecursionLimit - 1

// Protobuf messages nested in an encoded Struct, as structJSONSize walks them.
const (
	inStruct = iota
	inEntry  // a map entry of Struct.fields: key = 1, value = 2
	inValue
	inList
)

type wireFrame struct {
	end   int // where the message ends in the encoding
	kind  uint8
	items int // a Struct's entries, a list's values, a Value's kinds
	key   bool
	val   bool
}

var (
	errMalformed = fmt.Errorf("malformed protobuf")
	errTooDeep   = fmt.Errorf("nested more than %d messages deep", maxNesting)
)

// structJSONSize returns the length of the JSON structJSON writes for the
// google.protobuf.Struct encoded in b, without decoding it and with no
// allocation per node. It is exact for every encoding a protobuf library
// writes; an encoding that repeats a map key or a field (which protobuf
// resolves by keeping the last, or merging) counts every occurrence, so
// the size is never less than the JSON's. errMalformed and errTooDeep mean
// protobuf would not decode b either.
func structJSONSize(b []byte) (int, error) {
	var stackArr [16]wireFrame
	stack := append(stackArr[:0], wireFrame{end: len(b), kind: inStruct})
	size, i := 0, 0
	for {
		f := &stack[len(stack)-1]
		if i == f.end {
			switch f.kind {
			case inStruct, inList:
				if f.items > 0 {
					size += 2 + f.items - 1 // brackets and commas
				} else if len(stack) > 1 {
					size += 2 // a nested empty object or list; a top-level empty Struct is no JSON at all
				}
			case inEntry:
				size++ // the colon
				if !f.key {
					size += 2 // ""
				}
				if !f.val {
					size += 4 // null
				}
			case inValue:
				if f.items == 0 {
					size += 4 // no kind: null
				}
			}
			stack = stack[:len(stack)-1]
			if len(stack) == 0 {
				return size, nil
			}
			continue
		}
		num, typ, n := protowire.ConsumeTag(b[i:f.end])
		if n < 0 {
			return 0, errMalformed
		}
		i += n
		open := -1
		bytesField := typ == protowire.BytesType
		switch f.kind {
		case inStruct:
			if num == 1 && bytesField {
				f.items++
				open = inEntry
			}
		case inList:
			if num == 1 && bytesField {
				f.items++
				open = inValue
			}
		case inEntry:
			switch {
			case num == 1 && bytesField:
				v, m := protowire.ConsumeBytes(b[i:f.end])
				if m < 0 {
					return 0, errMalformed
				}
				size += jsonStringLen(v)
				f.key = true
				i += m
				continue
			case num == 2 && bytesField:
				f.val = true
				open = inValue
			}
		case inValue:
			switch {
			case num == 1 && typ == protowire.VarintType: // null_value
				_, m := protowire.ConsumeVarint(b[i:f.end])
				if m < 0 {
					return 0, errMalformed
				}
				size += 4
				f.items++
				i += m
				continue
			case num == 2 && typ == protowire.Fixed64Type: // number_value
				v, m := protowire.ConsumeFixed64(b[i:f.end])
				if m < 0 {
					return 0, errMalformed
				}
				size += jsonNumberLen(math.Float64frombits(v))
				f.items++
				i += m
				continue
			case num == 3 && bytesField: // string_value
				v, m := protowire.ConsumeBytes(b[i:f.end])
				if m < 0 {
					return 0, errMalformed
				}
				size += jsonStringLen(v)
				f.items++
				i += m
				continue
			case num == 4 && typ == protowire.VarintType: // bool_value
				v, m := protowire.ConsumeVarint(b[i:f.end])
				if m < 0 {
					return 0, errMalformed
				}
				size += 5 // false
				if v != 0 {
					size-- // true
				}
				f.items++
				i += m
				continue
			case num == 5 && bytesField: // struct_value
				f.items++
				open = inStruct
			case num == 6 && bytesField: // list_value
				f.items++
				open = inList
			}
		}
		if open < 0 {
			// Unknown to the Struct types, or a known number with another
			// wire type: protobuf keeps it out of the Struct, and so does
			// the JSON.
			m := protowire.ConsumeFieldValue(num, typ, b[i:f.end])
			if m < 0 {
				return 0, errMalformed
			}
			i += m
			continue
		}
		v, m := protowire.ConsumeBytes(b[i:f.end])
		if m < 0 {
			return 0, errMalformed
		}
		if len(stack) >= maxNesting {
			return 0, errTooDeep
		}
		start := i + m - len(v)
		i = start
		stack = append(stack, wireFrame{end: start + len(v), kind: uint8(open)})
	}
}

// quoteCaller quotes text the caller sent for a message or a log line: at
// most 64 bytes of it, cut at a character boundary, Go-quoted so that
// control characters, quotes and invalid UTF-8 show as escapes, and an
// ellipsis after the quote when it was cut.
func quoteCaller(s string) string {
	const max = 64
	if len(s) <= max {
		return strconv.Quote(s)
	}
	cut := max
	for cut > max-utf8.UTFMax && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "…"
}

// callerName is the upstream name a caller sent, for ErrorInfo metadata:
// as sent when it is short printable text, otherwise quoted and cut as
// quoteCaller does.
func callerName(s string) string {
	if len(s) <= 64 && utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return !strconv.IsPrint(r) }) {
		return s
	}
	return quoteCaller(s)
}
