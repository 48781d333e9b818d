package session

import (
	"encoding/binary"
	"math/bits"
)

// indexSpecial returns the index of the first byte of s that ends a plain
// run in a JSON string (a quote, a backslash or a control character below
// 0x20), or len(s) when there is none. Bytes of 0x80 and above (UTF-8)
// are plain.
//
// Results are mostly long strings with nothing to escape, so this one pass
// is most of what validating a result costs: specialBlocks tests 16 bytes
// per step (SSE2 on amd64, special_amd64.s), the words and bytes after the
// last whole block are tested here.
func indexSpecial(s []byte) int {
	// Keys and short values end in their first word: no call for them.
	if len(s) >= 8 {
		if m := specialMask(binary.LittleEndian.Uint64(s)); m != 0 {
			return bits.TrailingZeros64(m) / 8
		}
	}
	i := specialBlocks(s)
	if i < len(s)&^15 {
		return i
	}
	for ; i+8 <= len(s); i += 8 {
		if m := specialMask(binary.LittleEndian.Uint64(s[i:])); m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' || c < 0x20 {
			return i
		}
	}
	return len(s)
}

// specialMask is not zero when any of the eight bytes of x (little endian)
// ends a plain run in a JSON string: a quote, a backslash or a control
// character. Its lowest set bit is the high bit of the first such byte; the
// bits above it may be set by the borrow of the subtractions and mean
// nothing.
func specialMask(x uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	hasZero := func(v uint64) uint64 { return (v - ones) & ^v & highs }
	return hasZero(x^(ones*'"')) | hasZero(x^(ones*'\\')) | (x-ones*0x20)&^x&highs
}

// specialBlocksGeneric is specialBlocks in Go: the index of the first
// special byte in the whole 16-byte blocks of s, or the length of those
// blocks when there is none. It is the one used where there is no
// assembly, and the one the assembly is tested against.
func specialBlocksGeneric(s []byte) int {
	n := len(s) &^ 15
	for i := 0; i < n; i += 16 {
		if m := specialMask(binary.LittleEndian.Uint64(s[i:])); m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
		if m := specialMask(binary.LittleEndian.Uint64(s[i+8:])); m != 0 {
			return i + 8 + bits.TrailingZeros64(m)/8
		}
	}
	return n
}
