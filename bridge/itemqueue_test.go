package bridge

import (
	"math/rand/v2"
	"testing"
)

// TestItemQueueAgainstSlice: random pushes, pops and removals, across
// block boundaries and through empty, agree with a plain slice, and the
// queue holds exactly the blocks its items need.
func TestItemQueueAgainstSlice(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	var q itemQueue
	var want []item
	next := uint64(0)
	for step := range 20_000 {
		switch op := r.IntN(10); {
		case len(want) == 0 || op < 5 && len(want) < 20*blockItems: // push a burst
			for range r.IntN(3 * blockItems) {
				next++
				it := item{seq: next}
				q.push(it)
				want = append(want, it)
			}
		case op < 9: // pop some
			for range min(r.IntN(3*blockItems), len(want)) {
				if got := q.pop(); got != want[0] {
					t.Fatalf("step %d: pop %v, want %v", step, got, want[0])
				}
				want = want[1:]
			}
		default: // remove one near the front
			i := r.IntN(min(len(want), 2*blockItems))
			if got := q.removeAt(i); got != want[i] {
				t.Fatalf("step %d: removeAt(%d) %v, want %v", step, i, got, want[i])
			}
			want = append(want[:i:i], want[i+1:]...)
		}
		if q.len() != len(want) {
			t.Fatalf("step %d: len %d, want %d", step, q.len(), len(want))
		}
		for _, i := range []int{0, len(want) / 2, len(want) - 1} {
			if len(want) > 0 && *q.at(i) != want[i] {
				t.Fatalf("step %d: at(%d) %v, want %v", step, i, *q.at(i), want[i])
			}
		}
		// The blocks from the oldest item's to the newest's, no more.
		if len(want) == 0 {
			if q.blocks() != 0 {
				t.Fatalf("step %d: empty, holding %d blocks", step, q.blocks())
			}
		} else if wantBlocks := (q.first+len(want)-1)/blockItems + 1; q.blocks() != wantBlocks {
			t.Fatalf("step %d: %d blocks for %d items from offset %d, want %d", step, q.blocks(), len(want), q.first, wantBlocks)
		}
	}
}

// TestItemQueueClearsWhatItPops: a popped item's slot is zeroed, so that
// neither the queue nor, once drained, the pooled block keeps a result or
// an event alive.
func TestItemQueueClearsWhatItPops(t *testing.T) {
	t.Parallel()
	var q itemQueue
	res := &result{}
	for range 2 * blockItems {
		q.push(item{res: res, seq: 1})
	}
	b := q.head
	for range blockItems - 1 {
		q.pop()
	}
	for i, it := range b.items[:blockItems-1] {
		if it != (item{}) {
			t.Fatalf("popped item %d still set: %v", i, it)
		}
	}
	if b.items[blockItems-1].res != res {
		t.Fatal("the item not popped yet was cleared")
	}
}

// blocks is how many blocks the queue holds.
func (q *itemQueue) blocks() int {
	n := 0
	for b := q.head; b != nil; b = b.next {
		n++
	}
	return n
}
