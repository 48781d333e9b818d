package bridge

import (
	"fmt"
	"testing"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// TestSubscriberQueueBounded: a subscriber whose caller never reads (its
// stream is blocked in Send, so take is never called) keeps at most size
// results, drops the oldest and counts them, never drops lifecycle events,
// and does not grow its memory with the number of results pushed.
func TestSubscriberQueueBounded(t *testing.T) {
	t.Parallel()
	const size, pushed = 8, 20_000
	drops := 0
	s := newSubscriber(size, DropOldest, func() { drops++ })
	s.pushEvent(&bridgev1.Lifecycle{State: bridgev1.Lifecycle_STATE_SUBSCRIBED})
	for i := 1; i <= pushed; i++ {
		s.pushNext([]byte(fmt.Sprint(i)))
		if i == pushed/2 {
			s.pushEvent(&bridgev1.Lifecycle{State: bridgev1.Lifecycle_STATE_RECONNECTING})
		}
	}
	s.mu.Lock()
	held, capacity := len(s.q)-s.head, cap(s.q)
	s.mu.Unlock()
	if held != size+2 {
		t.Fatalf("queue holds %d items, want %d results and 2 lifecycle events", held, size)
	}
	if capacity > 4*(size+2) {
		t.Fatalf("queue capacity %d after %d results: it grows with what was dropped", capacity, pushed)
	}
	if drops != pushed-size {
		t.Fatalf("%d drops counted, want %d", drops, pushed-size)
	}
	items, done, _ := s.take(nil)
	if done || len(items) != size+2 {
		t.Fatalf("take: %d items, done %v", len(items), done)
	}
	if items[0].ev.GetState() != bridgev1.Lifecycle_STATE_SUBSCRIBED || items[1].ev.GetState() != bridgev1.Lifecycle_STATE_RECONNECTING {
		t.Fatalf("lifecycle events not kept first, in order: %v %v", items[0], items[1])
	}
	for i, it := range items[2:] {
		want := uint64(pushed - size + 1 + i)
		if it.seq != want || string(it.payload) != fmt.Sprint(want) {
			t.Fatalf("result %d: sequence %d payload %q, want %d", i, it.seq, it.payload, want)
		}
	}
}

// TestSubscriberFailPolicy: under Fail, one result too many ends the
// subscriber with ErrSlowConsumer at once, without what is queued.
func TestSubscriberFailPolicy(t *testing.T) {
	t.Parallel()
	s := newSubscriber(4, Fail, nil)
	for i := range 4 {
		s.pushNext([]byte{byte(i)})
	}
	if items, done, err := s.take(nil); done || err != nil || len(items) != 4 {
		t.Fatalf("take: %d items, done %v, %v", len(items), done, err)
	}
	for i := range 5 {
		s.pushNext([]byte{byte(i)})
	}
	s.finish(nil) // a later outcome does not replace the failure
	if items, done, err := s.take(nil); !done || err != ErrSlowConsumer || len(items) != 0 {
		t.Fatalf("take: %d items, done %v, %v; want ErrSlowConsumer at once", len(items), done, err)
	}
}

// TestQueueArraysShrinkAfterABurst: a burst grows the subscriber's queue
// and what its pump took to thousands of items; once they have drained,
// neither keeps that array for the rest of the stream's life.
func TestQueueArraysShrinkAfterABurst(t *testing.T) {
	t.Parallel()
	const burst = 20_000
	s := newSubscriber(DefaultQueueSize, DropOldest, nil)
	q := &taken{sub: s}
	for i := range burst {
		s.pushNext([]byte(fmt.Sprint(i)))
	}
	q.takeMore()
	if len(q.items) != burst {
		t.Fatalf("took %d items, want %d", len(q.items), burst)
	}
	grown := cap(q.items)
	// The pump sends them in batches while a result arrives now and then,
	// and takes what was queued meanwhile.
	for sent := 0; q.head < len(q.items); {
		n := min(256, len(q.items)-q.head)
		clear(q.items[q.head : q.head+n])
		q.head += n
		if sent += n; sent < burst {
			s.pushNext([]byte("meanwhile"))
		}
		if q.head == len(q.items) {
			q.takeMore()
		}
	}
	s.mu.Lock()
	queueCap := cap(s.q)
	s.mu.Unlock()
	if cap(q.items) > keepItems || queueCap > keepItems {
		t.Fatalf("after the burst drained: the pump keeps %d items of room (it grew to %d), the queue %d; want at most %d each",
			cap(q.items), grown, queueCap, keepItems)
	}
}
