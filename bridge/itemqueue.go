package bridge

import "sync"

// itemQueue is a subscriber's queue: first in, first out, in blocks of
// blockItems items linked from the oldest to the newest.
//
// It used to be one slice. A burst grew it by doubling, copying every
// queued item each time, and it was dropped once drained so that a stream
// would not keep a burst's array for the rest of its life: the next burst
// grew it again from nothing. On a fast stream whose caller reads slower
// than the upstream writes, that growth was 5 % of the bridge's CPU
// (BENCHMARKS.md). Blocks are never copied, and each goes back to a pool
// as soon as it is drained: a queue holds a block only while it holds an
// item, and memory follows what is queued, block by block.
type itemQueue struct {
	head, tail *itemBlock
	first      int // index in head of the oldest item
	end        int // index in tail after the newest item
	n          int // items queued
}

// blockItems items of 24 bytes: 1.5 KiB a block.
const blockItems = 64

type itemBlock struct {
	items [blockItems]item
	next  *itemBlock
}

// blockPool holds drained blocks: every item zero, next nil.
var blockPool = sync.Pool{New: func() any { return new(itemBlock) }}

func (q *itemQueue) len() int { return q.n }

// push queues it after the newest item.
func (q *itemQueue) push(it item) {
	switch {
	case q.tail == nil:
		b := blockPool.Get().(*itemBlock)
		q.head, q.tail, q.first, q.end = b, b, 0, 0
	case q.end == blockItems:
		b := blockPool.Get().(*itemBlock)
		q.tail.next = b
		q.tail, q.end = b, 0
	}
	q.tail.items[q.end] = it
	q.end++
	q.n++
}

// pop removes the oldest item and returns it; the queue must not be
// empty. A block it drains goes back to the pool.
func (q *itemQueue) pop() item {
	b := q.head
	it := b.items[q.first]
	b.items[q.first] = item{}
	q.first++
	q.n--
	switch {
	case q.n == 0:
		q.head, q.tail, q.first, q.end = nil, nil, 0, 0
		blockPool.Put(b)
	case q.first == blockItems:
		q.head, q.first = b.next, 0
		b.next = nil
		blockPool.Put(b)
	}
	return it
}

// at returns the item i places after the oldest (i < len). It walks the
// blocks: for the first few items, which is all its callers look at.
func (q *itemQueue) at(i int) *item {
	b, k := q.head, q.first+i
	for k >= blockItems {
		b, k = b.next, k-blockItems
	}
	return &b.items[k]
}

// removeAt removes the item i places after the oldest, keeping the order
// of the others, and returns it. The items before it move up one place,
// so it costs i moves: callers remove the oldest result, which only
// lifecycle events ever precede.
func (q *itemQueue) removeAt(i int) item {
	it := *q.at(i)
	for j := i; j > 0; j-- {
		*q.at(j) = *q.at(j - 1)
	}
	q.pop()
	return it
}
