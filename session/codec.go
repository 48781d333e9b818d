package session

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// envelope is a decoded GraphQL-over-WebSocket message. id and payload alias
// the frame buffer they were decoded from: they are valid only until the next
// frame is read.
type envelope struct {
	typ     string // one of the msg* constants, or the raw type when unknown
	id      []byte
	payload []byte // raw JSON; nil when absent or null
	hasID   bool
}

// Message types of both subprotocols. Decoding maps the wire bytes to these
// constants so that no string is allocated per frame.
const (
	msgConnectionInit      = "connection_init"
	msgConnectionAck       = "connection_ack"
	msgConnectionError     = "connection_error"
	msgConnectionTerminate = "connection_terminate"
	msgKeepAlive           = "ka"
	msgPing                = "ping"
	msgPong                = "pong"
	msgSubscribe           = "subscribe"
	msgNext                = "next"
	msgStart               = "start"
	msgData                = "data"
	msgStop                = "stop"
	msgError               = "error"
	msgComplete            = "complete"
)

var knownTypes = []string{
	msgConnectionInit, msgConnectionAck, msgConnectionError, msgConnectionTerminate,
	msgKeepAlive, msgPing, msgPong, msgSubscribe, msgNext, msgStart, msgData, msgStop,
	msgError, msgComplete,
}

// maxDepth bounds nesting in a payload, so a hostile frame of a million
// brackets costs a bounded amount of memory.
const maxDepth = 512

var errNotObject = errors.New("message is not a JSON object")

// decodeEnvelope reads the top-level "type", "id" and "payload" members of a
// message without decoding the payload: the payload is validated as JSON
// structurally and returned as a sub-slice of b.
func decodeEnvelope(b []byte) (env envelope, err error) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return env, errNotObject
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		i++
	} else {
		for {
			var key []byte
			var escaped bool
			key, escaped, i, err = scanString(b, i)
			if err != nil {
				return env, fmt.Errorf("member name: %w", err)
			}
			if escaped {
				key = unescape(key)
			}
			i = skipSpace(b, i)
			if i >= len(b) || b[i] != ':' {
				return env, fmt.Errorf("expected ':' at offset %d", i)
			}
			i = skipSpace(b, i+1)
			start := i
			switch string(key) {
			case "type":
				var v []byte
				v, escaped, i, err = scanString(b, i)
				if err != nil {
					return env, fmt.Errorf(`"type": %w`, err)
				}
				if escaped {
					v = unescape(v)
				}
				env.typ = internType(v)
			case "id":
				var v []byte
				v, escaped, i, err = scanString(b, i)
				if err != nil {
					return env, fmt.Errorf(`"id": %w`, err)
				}
				if escaped {
					v = unescape(v)
				}
				env.id, env.hasID = v, true
			default:
				i, err = skipValue(b, i)
				if err != nil {
					return env, fmt.Errorf("member %q: %w", key, err)
				}
				if string(key) == "payload" {
					env.payload = b[start:i]
					if string(env.payload) == "null" {
						env.payload = nil
					}
				}
			}
			i = skipSpace(b, i)
			if i >= len(b) {
				return env, errors.New("unterminated object")
			}
			if b[i] == ',' {
				i = skipSpace(b, i+1)
				continue
			}
			if b[i] != '}' {
				return env, fmt.Errorf("expected ',' or '}' at offset %d", i)
			}
			i++
			break
		}
	}
	if i = skipSpace(b, i); i != len(b) {
		return env, fmt.Errorf("trailing data at offset %d", i)
	}
	if env.typ == "" {
		return env, errors.New(`missing "type"`)
	}
	return env, nil
}

func internType(v []byte) string {
	for _, t := range knownTypes {
		if string(v) == t {
			return t
		}
	}
	return string(v)
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// scanString reads the JSON string starting at b[i] and returns its raw
// contents (between the quotes) and whether it holds escapes. Results are
// mostly string bytes, so plain runs are skipped in blocks (indexSpecial).
func scanString(b []byte, i int) (s []byte, escaped bool, next int, err error) {
	if i >= len(b) || b[i] != '"' {
		return nil, false, i, fmt.Errorf("expected a string at offset %d", i)
	}
	start := i + 1
	for j := start; ; j++ {
		// Skip the plain run: most strings are one, up to the closing quote.
		j += indexSpecial(b[j:]) // special.go
		if j >= len(b) {
			return nil, false, len(b), errors.New("unterminated string")
		}
		switch c := b[j]; {
		case c == '"':
			return b[start:j], escaped, j + 1, nil
		case c == '\\':
			escaped = true
			j++
			if j >= len(b) {
				return nil, false, j, errors.New("unterminated string")
			}
			switch b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(b) {
					return nil, false, j, errors.New("short \\u escape")
				}
				for k := j + 1; k <= j+4; k++ {
					if !isHex(b[k]) {
						return nil, false, k, errors.New("bad \\u escape")
					}
				}
				j += 4
			default:
				return nil, false, j, fmt.Errorf("bad escape at offset %d", j)
			}
		default: // below 0x20
			return nil, false, j, fmt.Errorf("control character in string at offset %d", j)
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// unescape decodes the contents of a JSON string already checked by
// scanString. Escapes are rare in ids and types, so this path may allocate.
func unescape(raw []byte) []byte {
	q := make([]byte, 0, len(raw)+2)
	q = append(q, '"')
	q = append(q, raw...)
	q = append(q, '"')
	var s string
	if err := json.Unmarshal(q, &s); err != nil {
		return raw
	}
	return []byte(s)
}

// skipValue skips one JSON value starting at b[i], checking its structure,
// and returns the offset just past it.
func skipValue(b []byte, i int) (int, error) {
	var stack [maxDepth]byte // expected closers
	depth := 0
	for {
		i = skipSpace(b, i)
		if i >= len(b) {
			return i, errors.New("unexpected end of value")
		}
		switch c := b[i]; {
		case c == '{' || c == '[':
			if depth == maxDepth {
				return i, errors.New("nested too deeply")
			}
			if c == '{' {
				stack[depth] = '}'
			} else {
				stack[depth] = ']'
			}
			depth++
			i = skipSpace(b, i+1)
			if i < len(b) && b[i] == stack[depth-1] {
				depth--
				i++
				goto after
			}
			if c == '{' {
				var err error
				if i, err = objectKey(b, i); err != nil {
					return i, err
				}
			}
			continue
		case c == '"':
			_, _, n, err := scanString(b, i)
			if err != nil {
				return n, err
			}
			i = n
		case c == '-' || '0' <= c && c <= '9':
			n, err := skipNumber(b, i)
			if err != nil {
				return n, err
			}
			i = n
		case c == 't':
			if i+4 > len(b) || string(b[i:i+4]) != "true" {
				return i, fmt.Errorf("invalid literal at offset %d", i)
			}
			i += 4
		case c == 'f':
			if i+5 > len(b) || string(b[i:i+5]) != "false" {
				return i, fmt.Errorf("invalid literal at offset %d", i)
			}
			i += 5
		case c == 'n':
			if i+4 > len(b) || string(b[i:i+4]) != "null" {
				return i, fmt.Errorf("invalid literal at offset %d", i)
			}
			i += 4
		default:
			return i, fmt.Errorf("unexpected %q at offset %d", c, i)
		}
	after:
		// A value ended: close containers or move to the next element.
		for {
			if depth == 0 {
				return i, nil
			}
			i = skipSpace(b, i)
			if i >= len(b) {
				return i, errors.New("unexpected end of value")
			}
			if b[i] == stack[depth-1] {
				depth--
				i++
				continue
			}
			if b[i] != ',' {
				return i, fmt.Errorf("expected ',' at offset %d", i)
			}
			i = skipSpace(b, i+1)
			if stack[depth-1] == '}' {
				var err error
				if i, err = objectKey(b, i); err != nil {
					return i, err
				}
			}
			break
		}
	}
}

// objectKey skips `"name" :` inside an object.
func objectKey(b []byte, i int) (int, error) {
	_, _, i, err := scanString(b, i)
	if err != nil {
		return i, err
	}
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		return i, fmt.Errorf("expected ':' at offset %d", i)
	}
	return i + 1, nil
}

func skipNumber(b []byte, i int) (int, error) {
	start := i
	if b[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(b) && b[i] == '0' {
		i++
	} else if digits() == 0 {
		return i, fmt.Errorf("invalid number at offset %d", start)
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return i, fmt.Errorf("invalid number at offset %d", start)
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return i, fmt.Errorf("invalid number at offset %d", start)
		}
	}
	return i, nil
}

// appendMessage appends {"type":typ,"id":id,"payload":payload} to dst,
// leaving out id and payload when empty. ids are generated by the session and
// contain only digits, so they need no escaping.
func appendMessage(dst []byte, typ, id string, payload []byte) []byte {
	dst = append(dst, `{"type":`...)
	dst = strconv.AppendQuote(dst, typ)
	if id != "" {
		dst = append(dst, `,"id":`...)
		dst = strconv.AppendQuote(dst, id)
	}
	if len(payload) > 0 {
		dst = append(dst, `,"payload":`...)
		dst = append(dst, payload...)
	}
	return append(dst, '}')
}
