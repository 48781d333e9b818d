package upstream

import (
	"bytes"
	"strconv"
	"strings"
	"time"
)

// ResultSize is the size in bytes of every result (the ExecutionResult the
// bridge passes through): {"data":{"tick":{"n":N,"ts":TS,"pad":"xx…"}}}.
// The pad absorbs the varying width of n and ts, so every result of a run
// has exactly this size.
const ResultSize = 1024

var pad = strings.Repeat("x", ResultSize)

const (
	resultHead = `{"data":{"tick":{"n":`
	resultTS   = `,"ts":`
	resultPad  = `,"pad":"`
	resultTail = `"}}}`
	fixedLen   = len(resultHead) + len(resultTS) + len(resultPad) + len(resultTail)
)

// nextTemplate is the part of a "next" message that does not change between
// the results of one operation: the envelope around the result.
type nextTemplate struct {
	prefix []byte // {"id":"ID","type":"next","payload":
}

func newNextTemplate(id string) nextTemplate {
	p := []byte(`{"id":`)
	p = strconv.AppendQuote(p, id)
	p = append(p, `,"type":"next","payload":`...)
	return nextTemplate{prefix: p}
}

// frameLen is the size of one next frame on the wire (header included).
func (t nextTemplate) frameLen() int {
	l := len(t.prefix) + ResultSize + 1
	return headerLen(l) + l
}

// appendNext appends one complete WebSocket text frame (server to client,
// unmasked) carrying result n stamped with ts.
func (t nextTemplate) appendNext(dst []byte, n, ts int64) []byte {
	dst = appendHeader(dst, opText, len(t.prefix)+ResultSize+1)
	dst = append(dst, t.prefix...)
	dst = AppendResult(dst, n, ts)
	return append(dst, '}')
}

// AppendResult appends result n stamped with ts: the ExecutionResult every
// consumer receives, ResultSize bytes.
func AppendResult(dst []byte, n, ts int64) []byte {
	var nb, tb [20]byte
	ns := strconv.AppendInt(nb[:0], n, 10)
	tss := strconv.AppendInt(tb[:0], ts, 10)
	padLen := ResultSize - fixedLen - len(ns) - len(tss)
	dst = append(dst, resultHead...)
	dst = append(dst, ns...)
	dst = append(dst, resultTS...)
	dst = append(dst, tss...)
	dst = append(dst, resultPad...)
	dst = append(dst, pad[:padLen]...)
	return append(dst, resultTail...)
}

// WebSocket opcodes.
const (
	opText  = 0x1
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA
)

func headerLen(n int) int {
	switch {
	case n <= 125:
		return 2
	case n <= 0xFFFF:
		return 4
	}
	return 10
}

// appendHeader appends an unmasked, final frame header.
func appendHeader(dst []byte, op byte, n int) []byte {
	dst = append(dst, 0x80|op)
	switch {
	case n <= 125:
		return append(dst, byte(n))
	case n <= 0xFFFF:
		return append(dst, 126, byte(n>>8), byte(n))
	}
	return append(dst, 127, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// appendText appends one text frame holding msg.
func appendText(dst []byte, msg string) []byte {
	dst = appendHeader(dst, opText, len(msg))
	return append(dst, msg...)
}

// ParseTS finds "ts":DIGITS in a result and returns it; 0 when absent.
func ParseTS(b []byte) int64 {
	const key = `"ts":`
	i := indexOf(b, key)
	if i < 0 {
		return 0
	}
	var v int64
	for j := i + len(key); j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
		v = v*10 + int64(b[j]-'0')
	}
	return v
}

// ParseN finds "n":DIGITS in a result and returns it; -1 when absent.
func ParseN(b []byte) int64 {
	const key = `"n":`
	i := indexOf(b, key)
	if i < 0 {
		return -1
	}
	var v int64
	for j := i + len(key); j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
		v = v*10 + int64(b[j]-'0')
	}
	return v
}

func indexOf(b []byte, s string) int {
	// The members sit near the start of a result: a short scan suffices.
	lim := min(len(b), 128)
	return bytes.Index(b[:lim], []byte(s))
}

// FrameLen is the wire size of one result frame of the operation id.
func FrameLen(id string) int { return newNextTemplate(id).frameLen() }

// BuildRate measures how many result frames per second the server can
// build, without any network: the upstream's own ceiling.
func BuildRate(n int64) float64 {
	tpl := newNextTemplate("1")
	const flushAt = 128 << 10
	buf := make([]byte, 0, flushAt+4096)
	start := time.Now()
	ts := start.UnixNano()
	for i := int64(1); i <= n; i++ {
		if i&63 == 0 {
			ts = time.Now().UnixNano()
		}
		buf = tpl.appendNext(buf, i, ts)
		if len(buf) >= flushAt {
			buf = buf[:0]
		}
	}
	return float64(n) / time.Since(start).Seconds()
}
