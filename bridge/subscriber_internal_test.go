package bridge

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// takeAll takes everything queued, as the stream's goroutine does when its
// caller reads: each result taken is reported sent before the next take.
func takeAll(s *subscriber) (items []item, done bool, outcome error) {
	for {
		batch, d, o := s.take(nil, 1)
		items = append(items, batch...)
		for _, it := range batch {
			if it.res != nil {
				s.sent(1)
			}
		}
		if d || len(batch) == 0 {
			return items, d, o
		}
	}
}

func res(b []byte, budget *queueBudget) *result { return &result{b: b, budget: budget} }

// TestSubscriberQueueBounded: a subscriber whose caller never reads (its
// stream is blocked in Send, so take is never called) keeps at most size
// results, drops the oldest and counts them, never drops lifecycle events,
// and does not grow its memory with the number of results pushed.
func TestSubscriberQueueBounded(t *testing.T) {
	t.Parallel()
	const size, pushed = 8, 20_000
	drops := 0
	s := newSubscriber(queueConfig{size: size, maxBytes: 1 << 20, onDrop: func() { drops++ }})
	s.pushEvent(&bridgev1.Lifecycle{State: bridgev1.Lifecycle_STATE_SUBSCRIBED})
	for i := 1; i <= pushed; i++ {
		s.pushNext(res([]byte(fmt.Sprint(i)), nil))
		if i == pushed/2 {
			s.pushEvent(&bridgev1.Lifecycle{State: bridgev1.Lifecycle_STATE_RECONNECTING})
		}
	}
	s.mu.Lock()
	held, blocks := s.q.len(), s.q.blocks()
	s.mu.Unlock()
	if held != size+2 {
		t.Fatalf("queue holds %d items, want %d results and 2 lifecycle events", held, size)
	}
	if blocks > 2 {
		t.Fatalf("queue holds %d blocks after %d results: it grows with what was dropped", blocks, pushed)
	}
	if drops != pushed-size {
		t.Fatalf("%d drops counted, want %d", drops, pushed-size)
	}
	items, done, _ := takeAll(s)
	if done || len(items) != size+2 {
		t.Fatalf("take: %d items, done %v", len(items), done)
	}
	if items[0].ev.GetState() != bridgev1.Lifecycle_STATE_SUBSCRIBED || items[1].ev.GetState() != bridgev1.Lifecycle_STATE_RECONNECTING {
		t.Fatalf("lifecycle events not kept first, in order: %v %v", items[0], items[1])
	}
	for i, it := range items[2:] {
		want := uint64(pushed - size + 1 + i)
		if it.seq != want || string(it.res.b) != fmt.Sprint(want) {
			t.Fatalf("result %d: sequence %d payload %q, want %d", i, it.seq, it.res.b, want)
		}
	}
}

// TestSubscriberFailPolicy: under Fail, one result too many ends the
// subscriber with ErrSlowConsumer at once, without what is queued.
func TestSubscriberFailPolicy(t *testing.T) {
	t.Parallel()
	s := newSubscriber(queueConfig{size: 4, maxBytes: 1 << 20, policy: Fail})
	for i := range 4 {
		s.pushNext(res([]byte{byte(i)}, nil))
	}
	if items, done, err := takeAll(s); done || err != nil || len(items) != 4 {
		t.Fatalf("take: %d items, done %v, %v", len(items), done, err)
	}
	for i := range 5 {
		s.pushNext(res([]byte{byte(i)}, nil))
	}
	s.finish(nil) // a later outcome does not replace the failure
	if items, done, err := s.take(nil, 1); !done || err != ErrSlowConsumer || len(items) != 0 {
		t.Fatalf("take: %d items, done %v, %v; want ErrSlowConsumer at once", len(items), done, err)
	}
}

// TestSubscriberByteBound: a caller that never reads holds at most
// maxBytes of results, whatever the count allows, the result its stream
// is blocked sending included; the newest are kept and every drop is
// counted and shows as a gap.
func TestSubscriberByteBound(t *testing.T) {
	t.Parallel()
	const maxBytes, size, pushed = 10 << 10, 128, 1000
	drops := 0
	s := newSubscriber(queueConfig{size: size, maxBytes: maxBytes, onDrop: func() { drops++ }})
	s.pushNext(res(bytes.Repeat([]byte{'a'}, 1024), nil))
	// The stream took the first result and is blocked sending it.
	if items, _, _ := s.take(nil, 1); len(items) != 1 || items[0].seq != 1 {
		t.Fatalf("took %v", items)
	}
	for range pushed - 1 {
		s.pushNext(res(bytes.Repeat([]byte{'b'}, 1024), nil))
		if n := s.queuedBytes(); n > maxBytes {
			t.Fatalf("the queue holds %d bytes, over its %d", n, maxBytes)
		}
	}
	if n := s.queuedBytes(); n != maxBytes {
		t.Fatalf("the queue holds %d bytes, want %d (full)", n, maxBytes)
	}
	s.sent(1)
	items, _, _ := takeAll(s)
	if len(items) != maxBytes/1024-1 || drops != pushed-1-len(items) {
		t.Fatalf("%d results kept, %d drops counted, of %d", len(items), drops, pushed)
	}
	for i, it := range items {
		if want := uint64(pushed - len(items) + 1 + i); it.seq != want {
			t.Fatalf("result %d has sequence %d, want %d (the newest kept)", i, it.seq, want)
		}
	}
	if n := s.queuedBytes(); n != 0 {
		t.Fatalf("%d bytes still counted after everything was sent", n)
	}
}

// TestSubscriberCountsCursors: a result's cursor (resume.go) counts with
// it against the queue's byte bound and the server's budget, from the push
// until the stream reports it sent.
func TestSubscriberCountsCursors(t *testing.T) {
	t.Parallel()
	b := newQueueBudget(1 << 20)
	drops := 0
	// Room for two 400-byte results, not for two with 200-byte cursors.
	s := newSubscriber(queueConfig{size: 8, maxBytes: 1000, onDrop: func() { drops++ }, budget: b})
	push := func(i byte) {
		s.pushNext(&result{b: bytes.Repeat([]byte{'r'}, 400), cursor: bytes.Repeat([]byte{'0' + i}, 200), budget: b})
	}
	push(1)
	if n, used := s.queuedBytes(), b.used.Load(); n != 600 || used != 600 {
		t.Fatalf("one result with its cursor: the queue counts %d bytes and the budget %d, want 600", n, used)
	}
	push(2)
	if drops != 1 {
		t.Fatalf("%d drops, want 1: 1200 bytes do not fit a 1000-byte queue", drops)
	}
	items, _, _ := s.take(nil, 1)
	if len(items) != 1 || items[0].seq != 2 || items[0].res.cursor[0] != '2' {
		t.Fatalf("took %d items, want the second result and its cursor", len(items))
	}
	if n, used := s.queuedBytes(), b.used.Load(); n != 600 || used != 600 {
		t.Fatalf("a result being sent: the queue counts %d bytes and the budget %d, want 600", n, used)
	}
	s.sent(1)
	if n, used := s.queuedBytes(), b.used.Load(); n != 0 || used != 0 {
		t.Fatalf("after the send the queue counts %d bytes and the budget %d, want 0", n, used)
	}
}

// TestSubscriberOversizedResult: a result bigger than the queue's byte
// bound is queued when the subscriber holds nothing else, so it can be
// delivered; while one is queued or being sent, the policy applies.
func TestSubscriberOversizedResult(t *testing.T) {
	t.Parallel()
	big := func(c byte) *result { return res(bytes.Repeat([]byte{c}, 4096), nil) }
	drops := 0
	s := newSubscriber(queueConfig{size: 128, maxBytes: 1024, onDrop: func() { drops++ }})
	s.pushNext(big('a')) // empty: queued
	s.pushNext(big('b')) // drops a, then queued into the emptied queue
	items, _, _ := s.take(nil, 1)
	if len(items) != 1 || items[0].res.b[0] != 'b' || items[0].seq != 2 || drops != 1 {
		t.Fatalf("took %d items (first %q), %d drops; want b, sequence 2, a dropped", len(items), items[0].res.b[:1], drops)
	}
	s.pushNext(big('c')) // b is being sent: nothing queued can make room, c is dropped
	if drops != 2 || s.queuedBytes() != 4096 {
		t.Fatalf("%d drops, %d bytes held; want c dropped while b is sent", drops, s.queuedBytes())
	}
	s.sent(1)
	s.pushNext(big('d'))
	if items, _, _ := takeAll(s); len(items) != 1 || items[0].res.b[0] != 'd' || items[0].seq != 4 {
		t.Fatalf("after b was sent, took %v", items)
	}

	f := newSubscriber(queueConfig{size: 128, maxBytes: 1024, policy: Fail})
	f.pushNext(big('a'))
	if items, done, _ := f.take(nil, 1); len(items) != 1 || done {
		t.Fatal("an oversized result into an empty queue was not delivered under Fail")
	}
	f.pushNext(big('b'))
	if _, done, err := f.take(nil, 1); !done || err != ErrSlowConsumer {
		t.Fatalf("done %v, %v; want ErrSlowConsumer: the queue's bytes were exceeded", done, err)
	}
}

// TestQueueBudgetShared: a result shared by the subscribers of a fan-out
// counts once against the server's budget, until the last one lets go.
func TestQueueBudgetShared(t *testing.T) {
	t.Parallel()
	b := newQueueBudget(10 << 10)
	var subs []*subscriber
	for range 3 {
		subs = append(subs, newSubscriber(queueConfig{size: 8, maxBytes: 1 << 20, budget: b}))
	}
	r := res(make([]byte, 4096), b)
	for _, s := range subs {
		s.pushNext(r)
	}
	if got := b.used.Load(); got != 4096 {
		t.Fatalf("budget used %d, want 4096: one result, three queues", got)
	}
	takeAll(subs[0])
	subs[1].discard()
	if got := b.used.Load(); got != 4096 {
		t.Fatalf("budget used %d while one queue still holds the result", got)
	}
	subs[2].take(nil, 1) // being sent
	if got := b.used.Load(); got != 4096 {
		t.Fatalf("budget used %d while the result is being sent", got)
	}
	subs[2].discard() // the stream ended before it was sent
	if got := b.used.Load(); got != 0 {
		t.Fatalf("budget used %d after every queue let go", got)
	}
}

// TestQueueBudgetBound: subscribers that never read, each within its own
// queue's bounds, together hold at most the server's budget; a subscriber
// that keeps up still gets its results, because the ones holding the most
// give way (DropOldest: their oldest results; Fail: they end). Discarding
// returns everything.
func TestQueueBudgetBound(t *testing.T) {
	t.Parallel()
	const budget = 8 << 10
	for _, policy := range []SlowPolicy{DropOldest, Fail} {
		b := newQueueBudget(budget)
		drops := 0
		cfg := queueConfig{size: 128, maxBytes: 1 << 20, policy: policy, onDrop: func() { drops++ }, budget: b}
		stuck := []*subscriber{newSubscriber(cfg), newSubscriber(cfg)}
		reader := newSubscriber(cfg)
		for i := 1; i <= 100; i++ {
			for _, s := range stuck {
				s.pushNext(res(make([]byte, 1000), b))
			}
			reader.pushNext(res(make([]byte, 1000), b))
			held := 0
			for _, s := range append(stuck, reader) {
				held += s.queuedBytes()
			}
			if used := b.used.Load(); used > budget || int64(held) != used {
				t.Fatalf("policy %d, push %d: budget used %d (limit %d), queues hold %d", policy, i, used, budget, held)
			}
			items, done, err := takeAll(reader)
			if done || err != nil || len(items) != 1 || items[0].seq != uint64(i) {
				t.Fatalf("policy %d, push %d: the subscriber keeping up took %d results (done %v, %v); want result %d", policy, i, len(items), done, err, i)
			}
		}
		switch policy {
		case DropOldest:
			if drops == 0 {
				t.Fatal("DropOldest: the stuck subscribers dropped nothing")
			}
			items, _, _ := takeAll(stuck[1])
			if last := items[len(items)-1].seq; last != 100 {
				t.Fatalf("DropOldest: a stuck subscriber's newest kept result is %d, want 100", last)
			}
		case Fail:
			for _, s := range stuck {
				if _, done, err := s.take(nil, 1); !done || err != ErrSlowConsumer {
					t.Fatalf("Fail: a stuck subscriber is done %v, %v; want ErrSlowConsumer", done, err)
				}
			}
		}
		for _, s := range append(stuck, reader) {
			s.discard()
		}
		if used := b.used.Load(); used != 0 {
			t.Fatalf("policy %d: budget used %d after every subscriber was discarded", policy, used)
		}
	}
}

// TestQueueBudgetResultsBeingSent: results being sent cannot be taken back;
// when they fill the budget, a result that does not fit is dropped (or its
// subscriber ends, under Fail), and is queued again once they are sent.
func TestQueueBudgetResultsBeingSent(t *testing.T) {
	t.Parallel()
	b := newQueueBudget(2000)
	drops := 0
	a := newSubscriber(queueConfig{size: 8, maxBytes: 1 << 20, onDrop: func() { drops++ }, budget: b})
	a.pushNext(res(make([]byte, 1500), b))
	a.take(nil, 1) // being sent, never finishing
	c := newSubscriber(queueConfig{size: 8, maxBytes: 1 << 20, onDrop: func() { drops++ }, budget: b})
	c.pushNext(res(make([]byte, 1000), b))
	if drops != 1 || c.queuedBytes() != 0 {
		t.Fatalf("%d drops, %d bytes queued; want the result that does not fit dropped", drops, c.queuedBytes())
	}
	a.sent(1)
	c.pushNext(res(make([]byte, 1000), b))
	if items, _, _ := takeAll(c); len(items) != 1 || items[0].seq != 2 {
		t.Fatalf("after the budget emptied, took %v", items)
	}
	a.discard()
	c.discard()
}

// TestQueueBudgetEvictsJustEnough: a result that does not fit makes the
// queue holding the most drop its oldest results until it fits, and no
// more.
func TestQueueBudgetEvictsJustEnough(t *testing.T) {
	t.Parallel()
	b := newQueueBudget(10_000)
	drops := 0
	stuck := newSubscriber(queueConfig{size: 128, maxBytes: 1 << 20, onDrop: func() { drops++ }, budget: b})
	small := newSubscriber(queueConfig{size: 128, maxBytes: 1 << 20, onDrop: func() { drops++ }, budget: b})
	for range 6 {
		stuck.pushNext(res(make([]byte, 1000), b))
	}
	small.pushNext(res(make([]byte, 500), b))
	reader := newSubscriber(queueConfig{size: 128, maxBytes: 1 << 20, onDrop: func() { drops++ }, budget: b})
	reader.pushNext(res(make([]byte, 4000), b)) // 500 over: one of stuck's goes
	if drops != 1 || stuck.queuedBytes() != 5000 || small.queuedBytes() != 500 || reader.queuedBytes() != 4000 {
		t.Fatalf("%d drops; queues hold %d, %d, %d; want stuck's oldest dropped, nothing else", drops,
			stuck.queuedBytes(), small.queuedBytes(), reader.queuedBytes())
	}
	if items, _, _ := takeAll(stuck); len(items) != 5 || items[0].seq != 2 {
		t.Fatalf("stuck kept %d results from sequence %d; want 5 from 2", len(items), items[0].seq)
	}
	for _, s := range []*subscriber{stuck, small, reader} {
		s.discard()
	}
}

// TestQueueBudgetConcurrent: operations pushing shared results to their
// subscribers, streams taking and sending, others never reading, all at
// once against a small budget: the budget is never exceeded, nothing
// deadlocks, and everything is returned once every subscriber is
// discarded. (Run with -race.)
func TestQueueBudgetConcurrent(t *testing.T) {
	t.Parallel()
	const ops, subsPerOp, pushes, budget = 6, 3, 2000, 64 << 10
	b := newQueueBudget(budget)
	var all []*subscriber
	stop := make(chan struct{})
	var readers, pushers sync.WaitGroup
	var over atomic.Int64
	for o := range ops {
		var subs []*subscriber
		for i := range subsPerOp {
			policy := DropOldest
			if (o+i)%4 == 3 {
				policy = Fail
			}
			s := newSubscriber(queueConfig{size: 16, maxBytes: 16 << 10, policy: policy, budget: b})
			subs = append(subs, s)
			all = append(all, s)
			if i%2 == 0 { // this one reads
				readers.Go(func() {
					for {
						select {
						case <-s.signal:
						case <-stop:
							return
						}
						for {
							batch, done, _ := s.take(nil, 1)
							for _, it := range batch {
								if it.res != nil {
									s.sent(1)
								}
							}
							if done || len(batch) == 0 {
								break
							}
						}
					}
				})
			}
		}
		pushers.Go(func() {
			for i := range pushes {
				r := res(make([]byte, 512+(i*37+o*101)%4096), b)
				for _, s := range subs {
					s.pushNext(r)
				}
				if used := b.used.Load(); used > budget {
					over.Store(used)
				}
			}
		})
	}
	pushers.Wait()
	close(stop)
	readers.Wait()
	if v := over.Load(); v != 0 {
		t.Fatalf("budget used %d, over %d", v, budget)
	}
	for _, s := range all {
		s.discard()
	}
	if used := b.used.Load(); used != 0 {
		t.Fatalf("budget used %d after every subscriber was discarded", used)
	}
}

// TestQueueArraysShrinkAfterABurst: a burst grows the subscriber's queue
// to thousands of items; once they have drained, it keeps none of that
// memory for the rest of the stream's life.
func TestQueueArraysShrinkAfterABurst(t *testing.T) {
	t.Parallel()
	const burst = 20_000
	s := newSubscriber(queueConfig{size: DefaultQueueSize, maxBytes: 1 << 30})
	for i := range burst {
		s.pushNext(res([]byte(fmt.Sprint(i)), nil))
	}
	s.mu.Lock()
	grown := s.q.blocks()
	s.mu.Unlock()
	if items, _, _ := takeAll(s); len(items) != burst {
		t.Fatalf("took %d items, want %d", len(items), burst)
	}
	s.mu.Lock()
	left := s.q.blocks()
	s.mu.Unlock()
	if grown*blockItems < burst || left != 0 {
		t.Fatalf("the queue grew to %d blocks of %d items and keeps %d once drained; want none", grown, blockItems, left)
	}
}

// TestResultReusedWhenNothingHoldsIt: a result's storage goes back to the
// pool only once no queue holds it and the fan-out has finished pushing it,
// whichever comes last, and the budget is charged while a queue holds it.
func TestResultReusedWhenNothingHoldsIt(t *testing.T) {
	t.Parallel()
	// Results over maxReusedResult are released like the others but not
	// put in the pool, so that this test can look at them afterwards while
	// other tests take results from the pool.
	payload := bytes.Repeat([]byte{'p'}, maxReusedResult+1)
	reused := func(r *result) bool { return r.b == nil }
	for _, fanoutLast := range []bool{false, true} {
		b := newQueueBudget(1 << 20)
		r := newResult(payload, []byte("7"), b)
		if !bytes.Equal(r.b, payload) || string(r.cursor) != "7" {
			t.Fatalf("newResult holds %d bytes and %q", len(r.b), r.cursor)
		}
		for range 2 {
			if !r.hold() {
				t.Fatal("hold refused with room in the budget")
			}
		}
		if got, want := b.used.Load(), int64(len(payload)+1); got != want {
			t.Fatalf("two queues hold %d bytes: the budget counts %d", want, got)
		}
		r.release()
		if fanoutLast {
			r.release()
			if reused(r) || b.used.Load() != 0 {
				t.Fatalf("no queue holds it: reused %v (want false while pinned), budget %d (want 0)", reused(r), b.used.Load())
			}
			r.unpin()
		} else {
			r.unpin()
			if reused(r) {
				t.Fatal("reused while a queue holds it")
			}
			r.release()
		}
		if !reused(r) || b.used.Load() != 0 {
			t.Fatalf("fan-out last %v: reused %v, budget %d; want true, 0", fanoutLast, reused(r), b.used.Load())
		}
	}
	// A result no queue took is reused when the fan-out is done with it.
	r := newResult(payload, nil, nil)
	r.unpin()
	if !reused(r) {
		t.Fatal("a result nobody held was not reused")
	}
}

// TestSharedResultsKept: a result two queues hold is not owned by the
// stream about to send it, which then encodes it without a copy; it is
// marked kept and never reused, since the transport may still read it. A
// result only the sending stream holds is owned.
func TestSharedResultsKept(t *testing.T) {
	t.Parallel()
	payload := bytes.Repeat([]byte{'s'}, maxReusedResult+1) // never pooled: see TestResultReusedWhenNothingHoldsIt
	one, two := newResult(payload, nil, nil), newResult(payload, nil, nil)
	one.hold()
	two.hold()
	two.hold()
	one.unpin()
	two.unpin()
	if !owned([]item{{res: one}}) {
		t.Fatal("a result only one queue holds is not owned")
	}
	if owned([]item{{res: one}, {res: two}}) {
		t.Fatal("a batch with a result two queues hold is owned")
	}
	if !one.kept.Load() || !two.kept.Load() {
		t.Fatal("the results of a batch sent without a copy are not all kept")
	}
	two.release()
	two.release()
	if two.b == nil {
		t.Fatal("a kept result was reused")
	}
}

// TestTakeN: take takes the queued events up to and including the max-th
// result, lifecycle events among them, counts what it took as in hand (out
// of the queue's count and the budget's eviction, still in its bytes), and
// leaves the rest queued.
func TestTakeN(t *testing.T) {
	t.Parallel()
	s := newSubscriber(queueConfig{size: 16, maxBytes: 1 << 20})
	for i := range 5 {
		s.pushNext(res([]byte("r"), nil))
		if i == 1 {
			s.pushEvent(&bridgev1.Lifecycle{State: bridgev1.Lifecycle_STATE_RECONNECTING})
		}
	}
	items, done, _ := s.take(nil, 3)
	if len(items) != 4 || done || items[2].ev == nil || items[3].seq != 3 {
		t.Fatalf("take(3) took %d items (want 3 results and the event between): %+v", len(items), items)
	}
	if s.results != 2 || s.queued.Load() != 2 || s.bytes != 5 || len(s.hand) != 3 {
		t.Fatalf("after take(3): %d results queued, %d bytes for eviction, %d bytes held, %d in hand; want 2, 2, 5, 3",
			s.results, s.queued.Load(), s.bytes, len(s.hand))
	}
	s.sent(3)
	if items, _, _ = s.take(nil, 10); len(items) != 2 || items[1].seq != 5 || s.results != 0 {
		t.Fatalf("take(10) took %+v, %d left", items, s.results)
	}
}
