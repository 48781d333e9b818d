package bridge

import (
	"sync"
	"sync/atomic"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// result is one result of an upstream operation, shared read-only by the
// queues of the subscribers of a fan-out. Its bytes, its cursor's included,
// count against the server's budget once, however many queues hold it, for
// as long as one does (the stream sending it included).
//
// The bytes of a result made by newResult live in storage that is reused
// once nothing holds the result: no queue, and not the fan-out still
// pushing it (the pin). A stream that is the only holder of what it sends
// has the codec copy it into the message (ownedResponse, copyNext), so
// nothing refers to the bytes once Send returns; on a busy subscription
// the same few buffers then carry every result, where a fresh copy of each
// cost an allocation, page faults and the collector's time (BENCHMARKS.md).
// A result several streams send (a fan-out) is encoded without a copy, as
// copying it per stream would cost more, and is marked kept: the transport
// may refer to its bytes after Send returns, so its storage is left to the
// collector.
type result struct {
	b      []byte
	cursor []byte       // its cursor, Next.cursor (resume.go); nil without resume
	budget *queueBudget // nil: not counted
	// refs counts the queues holding r (the stream sending it included),
	// plus pinned while the fan-out pushes it.
	refs atomic.Int32
	buf  []byte      // the reusable storage of b and cursor; nil: not reused
	kept atomic.Bool // encoded without a copy: never reused
}

// pinned is the fan-out's hold on a result it is pushing, in result.refs;
// the bits below count queues.
const pinned = 1 << 30

// maxReusedResult is the largest storage kept for reuse: a rare big
// result does not stay in the pool.
const maxReusedResult = 64 << 10

var resultPool = sync.Pool{New: func() any { return new(result) }}

// newResult copies payload and cursor into one reused buffer and returns
// them as a result pinned by the caller, who pushes it to the queues and
// then calls unpin.
func newResult(payload, cursor []byte, budget *queueBudget) *result {
	r := resultPool.Get().(*result)
	n := len(payload) + len(cursor)
	if cap(r.buf) < n {
		r.buf = make([]byte, n)
	}
	buf := r.buf[:n]
	k := copy(buf, payload)
	copy(buf[k:], cursor)
	r.b = buf[:k:k]
	if len(cursor) > 0 {
		r.cursor = buf[k:n:n]
	}
	r.budget = budget
	r.refs.Store(pinned)
	return r
}

// size is what r counts against the queues' bounds and the budget: the
// result and its cursor.
func (r *result) size() int { return len(r.b) + len(r.cursor) }

// hold counts one more queue holding r; false when r was held by none and
// the budget has no room for it.
func (r *result) hold() bool {
	if r.refs.Add(1)&^pinned == 1 && !r.budget.acquire(int64(r.size())) {
		// Only the fan-out pushes a result no queue holds, one queue at a
		// time: nobody else can have seen the count at 1.
		r.refs.Add(-1)
		return false
	}
	return true
}

// release counts one queue less; the last one returns r's bytes to the
// budget, and r is reused when the fan-out is done with it too.
func (r *result) release() {
	if n, budget := r.drop(); n > 0 {
		budget.release(n)
	}
}

// drop is release without returning the bytes to the budget: it returns
// them, and their budget, for the caller to return with others in one
// step (sentLocked, once per message sent). n is 0 while other queues hold
// r.
func (r *result) drop() (n int64, budget *queueBudget) {
	// Read r before letting go of it: once the count drops another
	// goroutine may reuse it.
	n, budget = int64(r.size()), r.budget
	v := r.refs.Add(-1)
	if v == 0 {
		r.reuse()
	}
	if v&^pinned != 0 {
		return 0, nil
	}
	return n, budget
}

// unpin ends the fan-out's hold taken by newResult.
func (r *result) unpin() {
	if r.refs.Add(-pinned) == 0 {
		r.reuse()
	}
}

// reuse puts r, held by nothing, back in the pool; storage over
// maxReusedResult is left to the collector.
func (r *result) reuse() {
	if r.buf == nil || r.kept.Load() {
		return // not made by newResult, or the transport may still read it
	}
	r.b, r.cursor, r.budget = nil, nil, nil
	if cap(r.buf) <= maxReusedResult {
		resultPool.Put(r)
	}
}

// ownedResponse is a message of results that only the stream sending it
// holds: the bridge's codec copies them (copyNext, copyBatch). It is the
// SubscribeResponse itself to any other codec (the embedded message's
// ProtoReflect), which copies too, so a server registered without
// Server.Codec works the same.
type ownedResponse struct{ *bridgev1.SubscribeResponse }

// owned reports whether the stream about to send items is the only holder
// of their results, which it holds (refs 1: no other queue, and not the
// fan-out still pushing them). When not, it marks them kept, before the
// codec refers to them.
func owned(items []item) bool {
	for _, it := range items {
		if it.res.refs.Load() != 1 {
			for _, it := range items {
				it.res.kept.Store(true)
			}
			return false
		}
	}
	return true
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
