package session

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// naiveSpecial is indexSpecial byte by byte.
func naiveSpecial(s []byte) int {
	for i, c := range s {
		if c == '"' || c == '\\' || c < 0x20 {
			return i
		}
	}
	return len(s)
}

// TestIndexSpecial puts each byte that ends a plain run, and the plain
// bytes around them, at every offset of strings of every length around
// the 8- and 16-byte steps, at every alignment, and checks indexSpecial,
// specialBlocks (the assembly on amd64) and specialBlocksGeneric against a
// byte-by-byte scan.
func TestIndexSpecial(t *testing.T) {
	t.Parallel()
	buf := make([]byte, 128)
	check := func(s []byte) {
		t.Helper()
		want := naiveSpecial(s)
		if got := indexSpecial(s); got != want {
			t.Fatalf("indexSpecial(%q) = %d, want %d", s, got, want)
		}
		blocks := len(s) &^ 15
		wantBlocks := min(want, blocks)
		if got := specialBlocks(s); got != wantBlocks {
			t.Fatalf("specialBlocks(%q) = %d, want %d", s, got, wantBlocks)
		}
		if got := specialBlocksGeneric(s); got != wantBlocks {
			t.Fatalf("specialBlocksGeneric(%q) = %d, want %d", s, got, wantBlocks)
		}
	}
	for align := range 16 {
		for n := 0; n <= 70; n++ {
			s := buf[align : align+n]
			for i := range s {
				s[i] = byte(0x20 + (i*37)%(256-0x20)) // every plain byte: 0x20 up, but '"' and '\\'
				if s[i] == '"' || s[i] == '\\' {
					s[i] = 'a'
				}
			}
			check(s)
			plain := bytes.Clone(s)
			for pos := range n {
				for _, c := range []byte{'"', '\\', 0x00, 0x01, 0x0a, 0x1f, 0x20, 0x21, 0x5b, 0x5d, 0x7f, 0x80, 0xff} {
					copy(s, plain)
					s[pos] = c
					check(s)
					if pos+3 < n { // a later special byte never wins over an earlier one
						s[pos+3] = '"'
						check(s)
					}
				}
			}
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		s := buf[r.IntN(16):][:r.IntN(100)]
		for i := range s {
			s[i] = byte(0x20 + r.IntN(256-0x20))
			if r.IntN(200) == 0 {
				s[i] = byte(r.IntN(256))
			}
		}
		check(s)
	}
}

func BenchmarkIndexSpecial(b *testing.B) {
	s := append(bytes.Repeat([]byte("x"), 1000), '"')
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		if indexSpecial(s) != 1000 {
			b.Fatal("quote not found")
		}
	}
}
