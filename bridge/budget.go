package bridge

import (
	"sync"
	"sync/atomic"
)

// result is one result of an upstream operation, shared read-only by the
// queues of the subscribers of a fan-out. Its bytes count against the
// server's budget once, however many queues hold it, for as long as one
// does (the stream sending it included).
type result struct {
	b      []byte
	budget *queueBudget // nil: not counted
	refs   atomic.Int32 // queues holding it
}

// hold counts one more queue holding r; false when r was held by none and
// the budget has no room for it.
func (r *result) hold() bool {
	if r.refs.Add(1) == 1 && !r.budget.acquire(int64(len(r.b))) {
		// Only the fan-out pushes a result no queue holds, one queue at a
		// time: nobody else can have seen the count at 1.
		r.refs.Add(-1)
		return false
	}
	return true
}

// release counts one queue less; the last one returns r's bytes.
func (r *result) release() {
	if r.refs.Add(-1) == 0 {
		r.budget.release(int64(len(r.b)))
	}
}

// queueBudget bounds the bytes of results held by all the subscribers of a
// server (Config.MaxQueuedBytes). When a result does not fit, the
// subscribers holding the most queued bytes give way first (evict), so that
// callers that stopped reading, not the ones keeping up, lose results. A
// nil budget bounds nothing.
type queueBudget struct {
	max  int64
	used atomic.Int64

	mu   sync.Mutex
	subs map[*subscriber]struct{} // every subscriber whose queue it bounds
}

func newQueueBudget(max int64) *queueBudget {
	return &queueBudget{max: max, subs: map[*subscriber]struct{}{}}
}

func (b *queueBudget) acquire(n int64) bool {
	if b == nil {
		return true
	}
	for {
		cur := b.used.Load()
		if cur+n > b.max {
			return false
		}
		if b.used.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

func (b *queueBudget) release(n int64) {
	if b == nil {
		return
	}
	b.used.Add(-n)
}

func (b *queueBudget) register(s *subscriber) {
	if b != nil {
		b.mu.Lock()
		b.subs[s] = struct{}{}
		b.mu.Unlock()
	}
}

func (b *queueBudget) unregister(s *subscriber) {
	if b != nil {
		b.mu.Lock()
		delete(b.subs, s)
		b.mu.Unlock()
	}
}

// maxEvictions bounds the subscribers evict sheds for one result: other
// results may take the room it makes while it works.
const maxEvictions = 16

// evict makes room for n more bytes, if it can, by applying their policy
// to the subscribers whose queues hold the most bytes, largest first:
// DropOldest drops queued results, oldest first; Fail ends the subscriber
// and lets go of its queue. Results being sent are never taken back. The
// caller holds no subscriber's lock.
func (b *queueBudget) evict(n int64) {
	for range maxEvictions {
		if b.used.Load()+n <= b.max {
			return
		}
		v := b.largest()
		if v == nil || !v.shed(n) {
			return
		}
	}
}

// largest is the subscriber with the most bytes of queued results; nil
// when none holds any.
func (b *queueBudget) largest() *subscriber {
	b.mu.Lock()
	defer b.mu.Unlock()
	var top *subscriber
	var most int64
	for s := range b.subs {
		if q := s.queued.Load(); q > most {
			top, most = s, q
		}
	}
	return top
}
