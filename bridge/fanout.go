package bridge

import (
	"sync"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/session"
)

// fanout is one upstream operation and the subscribers it feeds. Without
// deduplication it has exactly one subscriber. It is the operation's
// session.Handler: it copies each result once and queues the copy for every
// subscriber.
type fanout struct {
	key  string // dedup key; "" when not shared
	pc   *pooledConn
	pool *upstreamPool

	mu         sync.Mutex
	op         *session.Operation
	subs       []*subscriber
	subscribed bool                // the operation started upstream
	last       *bridgev1.Lifecycle // the latest lifecycle event, for late joiners
	closed     bool                // no subscriber may join: ended or abandoned
	stopped    bool                // the last subscriber left before op was set
	cur        cursorState         // with resume: where the operation's cursor stands (resume.go)
}

func (f *fanout) OnNext(payload []byte) {
	r := newResult(payload, nil, f.pool.budget)
	f.mu.Lock()
	for _, s := range f.subs {
		s.pushNext(r)
	}
	f.mu.Unlock()
	r.unpin()
	if f.pool.in != nil {
		f.pool.in.Inc()
	}
}

func (f *fanout) OnEvent(ev session.Event) {
	lc := &bridgev1.Lifecycle{Attempt: uint32(ev.Attempt)}
	switch ev.Kind {
	case session.Subscribed:
		lc.State = bridgev1.Lifecycle_STATE_SUBSCRIBED
	case session.Reconnecting:
		lc.State = bridgev1.Lifecycle_STATE_RECONNECTING
		lc.CloseCode = uint32(ev.Code)
		lc.CloseReason = ev.Reason
	case session.Resubscribed:
		lc.State = bridgev1.Lifecycle_STATE_RESUBSCRIBED
		lc.Gapless = ev.Gapless
	}
	f.mu.Lock()
	if ev.Kind != session.Reconnecting {
		f.subscribed = true
	}
	f.last = lc
	for _, s := range f.subs {
		s.pushEvent(lc)
	}
	f.mu.Unlock()
}

func (f *fanout) OnDone(err error) {
	f.mu.Lock()
	f.closed = true
	// A copy: leave rearranges f.subs in place once the lock is released.
	subs := append([]*subscriber(nil), f.subs...)
	f.mu.Unlock()
	for _, s := range subs {
		s.finish(outcomeFor(s, err)) // resume.go
	}
}

// join adds s unless the operation is closed for joiners, or its cursor
// moved past where s would start (resume.go). A late joiner
// hears STATE_SUBSCRIBED at once if the operation has started upstream, and
// STATE_RECONNECTING if that is where it stands now (before it ever started,
// too: then STATE_SUBSCRIBED follows when it does, as for the first
// subscriber); then every later event. No result is replayed.
func (f *fanout) join(s *subscriber) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || f.cur.moved {
		return false
	}
	f.subs = append(f.subs, s)
	if f.subscribed {
		s.pushEvent(&bridgev1.Lifecycle{State: bridgev1.Lifecycle_STATE_SUBSCRIBED})
	}
	if f.last != nil && f.last.State == bridgev1.Lifecycle_STATE_RECONNECTING {
		s.pushEvent(f.last)
	}
	return true
}

// leave removes s and reports whether it was the last subscriber, in which
// case the fanout is closed for joiners and the operation to stop (if it
// was set) is returned.
func (f *fanout) leave(s *subscriber) (last bool, op *session.Operation) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, x := range f.subs {
		if x == s {
			f.subs[i] = f.subs[len(f.subs)-1]
			f.subs[len(f.subs)-1] = nil
			f.subs = f.subs[:len(f.subs)-1]
			break
		}
	}
	if len(f.subs) > 0 {
		return false, nil
	}
	f.closed = true
	if f.op == nil {
		f.stopped = true
	}
	return true, f.op
}

// subscribers counts the subscribers the operation feeds.
func (f *fanout) subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

// setOp records the started operation; false means every subscriber left
// meanwhile and the caller must stop it.
func (f *fanout) setOp(op *session.Operation) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.op = op
	return !f.stopped
}
