package bridge

import (
	"sync"
	"sync/atomic"

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

// item is one queued event: a result or a lifecycle change.
type item struct {
	res *result
	seq uint64
	ev  *bridgev1.Lifecycle
}

// subscriber is the queue between an upstream operation and one gRPC
// stream. Pushing never blocks; the stream's goroutine takes what is queued
// and reports each result sent.
//
// The queue is bounded by count (size results) and by bytes (maxBytes of
// results, the one being sent included), and the server's budget bounds
// the bytes of every queue together; the policy applies when any bound is
// hit. A result bigger than maxBytes on its own is queued when the
// subscriber holds no other, so that it can be delivered at all.
type subscriber struct {
	size     int
	maxBytes int
	policy   SlowPolicy
	signal   chan struct{} // capacity 1: "something was queued"
	onDrop   func()        // counts a dropped result
	budget   *queueBudget  // the server's; nil bounds nothing
	queued   atomic.Int64  // bytes of the results in q, for the budget's eviction

	mu      sync.Mutex
	q       itemQueue // itemqueue.go
	results int       // results queued (lifecycle items are never dropped)
	bytes   int       // bytes of the results queued and in hand
	hand    []*result // the results taken and not yet sent, oldest first
	seq     uint64
	done    bool
	outcome error
}

// queueConfig configures a subscriber's queue.
type queueConfig struct {
	size     int
	maxBytes int
	policy   SlowPolicy
	onDrop   func()
	budget   *queueBudget
}

func newSubscriber(c queueConfig) *subscriber {
	s := &subscriber{size: c.size, maxBytes: c.maxBytes, policy: c.policy, signal: make(chan struct{}, 1),
		onDrop: c.onDrop, budget: c.budget}
	c.budget.register(s)
	return s
}

func (s *subscriber) wake() {
	if len(s.signal) > 0 {
		// A wake-up is pending, and the pump takes from the queue,
		// under s.mu, after it receives one: it will see what the
		// caller queued before calling wake. Skipping the send saves
		// the channel's lock on every result of a busy stream.
		return
	}
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// pushNext queues a result, making room by the policy when a bound is hit.
// Over the queue's own bounds, DropOldest drops queued results, oldest
// first, and drops r itself when no queued result is left to drop (the one
// being sent cannot be); Fail ends the subscriber. Over the server's
// budget, the subscribers holding the most give way first (see
// queueBudget.evict), then this one as above. Either way the sequence
// number is used, so a drop shows as a gap.
func (s *subscriber) pushNext(r *result) {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return
	}
	s.seq++
	seq, n := s.seq, r.size()
	evicted := false
	for {
		holds := s.results > 0 || len(s.hand) > 0
		full := s.results >= s.size || holds && s.bytes+n > s.maxBytes
		if !full {
			if r.hold() {
				break
			}
			if !evicted {
				// Eviction locks other subscribers: never while holding ours.
				s.mu.Unlock()
				s.budget.evict(int64(n))
				evicted = true
				s.mu.Lock()
				if s.done {
					s.mu.Unlock()
					return
				}
				continue
			}
		}
		if s.policy == Fail {
			s.failLocked()
			s.mu.Unlock()
			s.wake()
			return
		}
		if s.results == 0 {
			s.mu.Unlock()
			if s.onDrop != nil {
				s.onDrop()
			}
			return
		}
		s.dropOldestLocked()
	}
	s.q.push(item{res: r, seq: seq})
	s.results++
	s.bytes += n
	s.queued.Add(int64(n))
	s.mu.Unlock()
	s.wake()
}

// failLocked ends the subscriber with ErrSlowConsumer and lets go of what
// it queued: it will never be delivered.
func (s *subscriber) failLocked() {
	s.done, s.outcome = true, ErrSlowConsumer
	s.clearLocked()
}

// clearLocked empties the queue, results and lifecycle events.
func (s *subscriber) clearLocked() {
	for s.q.len() > 0 {
		if it := s.q.pop(); it.res != nil {
			s.bytes -= it.res.size()
			it.res.release()
		}
	}
	s.results = 0
	s.queued.Store(0)
}

// shed applies the policy to make room for n bytes in the server's budget:
// DropOldest drops queued results until there is room or none is left;
// Fail ends the subscriber. It reports whether it let go of anything.
func (s *subscriber) shed(n int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.results == 0 {
		return false
	}
	if s.policy == Fail {
		s.failLocked()
		s.wake()
		return true
	}
	for s.results > 0 && s.budget.used.Load()+n > s.budget.max {
		s.dropOldestLocked()
	}
	return true
}

func (s *subscriber) dropOldestLocked() {
	for i := range s.q.len() {
		if s.q.at(i).res != nil {
			r := s.q.removeAt(i).res
			s.results--
			s.bytes -= r.size()
			s.queued.Add(-int64(r.size()))
			r.release()
			if s.onDrop != nil {
				s.onDrop()
			}
			return
		}
	}
}

func (s *subscriber) pushEvent(ev *bridgev1.Lifecycle) {
	s.mu.Lock()
	if !s.done {
		s.q.push(item{ev: ev})
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

// take moves queued events into dst, up to and including the max-th
// result, and reports the outcome once nothing is left queued and the
// subscriber is done. A result taken stays counted in the queue's bytes
// until sent reports it written: a stream blocked sending to a caller that
// does not read still holds it (a batch being filled holds several). A
// Fail-policy overflow ends the subscriber at once, without delivering
// what was queued.
func (s *subscriber) take(dst []item, max int) (_ []item, done bool, outcome error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done && s.outcome == ErrSlowConsumer {
		return dst, true, s.outcome
	}
	taken, size := 0, 0
	for s.q.len() > 0 && taken < max {
		it := s.q.pop()
		if it.res != nil {
			s.hand = append(s.hand, it.res)
			taken++
			size += it.res.size()
		}
		dst = append(dst, it)
	}
	s.results -= taken
	s.queued.Add(-int64(size))
	return dst, s.done && s.q.len() == 0, s.outcome
}

// sent reports that the n oldest results take returned were written to
// the stream.
func (s *subscriber) sent(n int) {
	s.mu.Lock()
	s.sentLocked(n)
	s.mu.Unlock()
}

func (s *subscriber) sentLocked(n int) {
	n = min(n, len(s.hand))
	// The budget is shared by every stream and the fan-outs that fill
	// them: its bytes go back once per message, not once per result
	// (the bytes of the message's results stay counted until the end of
	// this loop, no longer).
	var budget *queueBudget
	var freed int64
	for _, r := range s.hand[:n] {
		s.bytes -= r.size()
		k, b := r.drop()
		if k == 0 {
			continue
		}
		if b != budget && freed > 0 {
			budget.release(freed)
			freed = 0
		}
		budget = b
		freed += k
	}
	if freed > 0 {
		budget.release(freed)
	}
	k := copy(s.hand, s.hand[n:])
	clear(s.hand[k:])
	s.hand = s.hand[:k]
}

// discard lets go of everything the subscriber holds once its stream has
// ended and it has left its operation: nothing is pushed any more.
func (s *subscriber) discard() {
	s.budget.unregister(s)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	s.clearLocked()
	s.sentLocked(len(s.hand)) // never sent now: let go of them
}

// queuedBytes is what the queue holds in results, the one being sent
// included.
func (s *subscriber) queuedBytes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}
