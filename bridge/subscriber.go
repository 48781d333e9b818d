package bridge

import (
	"sync"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// SlowPolicy says what happens when a subscriber's queue is full.
type SlowPolicy int

const (
	// DropOldest drops the oldest queued result and counts it; the caller
	// sees the gap in Next.sequence.
	DropOldest SlowPolicy = iota
	// Fail ends that subscriber with RESOURCE_EXHAUSTED.
	Fail
)

// item is one queued event: a result (payload, shared read-only between the
// subscribers of a fan-out) or a lifecycle change.
type item struct {
	payload []byte
	seq     uint64
	ev      *bridgev1.Lifecycle
}

// subscriber is the queue between an upstream operation and one gRPC
// stream. Pushing never blocks; the stream's goroutine takes what is queued.
type subscriber struct {
	size   int
	policy SlowPolicy
	signal chan struct{} // capacity 1: "something was queued"
	onDrop func()        // counts a dropped result

	mu      sync.Mutex
	q       []item
	head    int
	results int // results queued (lifecycle items are never dropped)
	seq     uint64
	done    bool
	outcome error
}

// keepItems is the largest queue array (of a subscriber, or of what its
// pump took) kept once what it holds has fallen under a quarter of it. A
// burst grows a queue up to its size (tens of thousands of items by
// default); without this a stream would keep that array, empty, for the
// rest of its life, and a replica holds 100,000 streams.
const keepItems = 1024

func newSubscriber(size int, policy SlowPolicy, onDrop func()) *subscriber {
	return &subscriber{size: size, policy: policy, signal: make(chan struct{}, 1), onDrop: onDrop}
}

func (s *subscriber) wake() {
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// pushNext queues a result. payload must not be modified afterwards.
func (s *subscriber) pushNext(payload []byte) {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return
	}
	s.seq++
	if s.results >= s.size {
		if s.policy == Fail {
			s.done, s.outcome = true, ErrSlowConsumer
			s.mu.Unlock()
			s.wake()
			return
		}
		s.dropOldestLocked()
	}
	s.appendLocked(item{payload: payload, seq: s.seq})
	s.results++
	s.mu.Unlock()
	s.wake()
}

func (s *subscriber) dropOldestLocked() {
	for i := s.head; i < len(s.q); i++ {
		if s.q[i].ev == nil {
			copy(s.q[s.head+1:i+1], s.q[s.head:i])
			s.q[s.head] = item{}
			s.head++
			s.results--
			if s.onDrop != nil {
				s.onDrop()
			}
			return
		}
	}
}

// appendLocked queues it, reusing the room of dropped items when they are
// at least half the queue: a caller that never reads must not make the
// queue grow with every result, and compacting only then keeps the copying
// amortised O(1) per result.
func (s *subscriber) appendLocked(it item) {
	if len(s.q) == cap(s.q) && s.head > 0 && s.head >= len(s.q)/2 {
		n := copy(s.q, s.q[s.head:])
		clear(s.q[n:])
		s.q = s.q[:n]
		s.head = 0
	}
	s.q = append(s.q, it)
}

func (s *subscriber) pushEvent(ev *bridgev1.Lifecycle) {
	s.mu.Lock()
	if !s.done {
		s.appendLocked(item{ev: ev})
	}
	s.mu.Unlock()
	s.wake()
}

// finish records the outcome; queued events are still delivered first.
func (s *subscriber) finish(err error) {
	s.mu.Lock()
	if !s.done {
		s.done, s.outcome = true, err
	}
	s.mu.Unlock()
	s.wake()
}

// take moves the queued events into dst and reports the outcome once the
// queue is empty and the subscriber is done. A Fail-policy overflow ends the
// subscriber at once, without delivering what is queued.
func (s *subscriber) take(dst []item) (_ []item, done bool, outcome error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done && s.outcome == ErrSlowConsumer {
		return dst, true, s.outcome
	}
	n := len(s.q) - s.head
	dst = append(dst, s.q[s.head:]...)
	clear(s.q[s.head:])
	s.q = s.q[:0]
	if cap(s.q) > keepItems && n < cap(s.q)/4 {
		s.q = nil // the burst that grew it is over: see keepItems
	}
	s.head = 0
	s.results = 0
	return dst, s.done, s.outcome
}
