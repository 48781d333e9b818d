package bridge

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gqlbridge/gqlbridge/session"
)

// TestFanoutDoneWhileLeaving: the operation ends (OnDone, on the upstream
// reader's goroutine) while a subscriber leaves (its stream's goroutine).
// OnDone must give every subscriber it saw the outcome, and never touch a
// slot that leave cleared. The interleaving is forced: OnDone is held in
// the first subscriber's finish while the second one leaves.
func TestFanoutDoneWhileLeaving(t *testing.T) {
	t.Parallel()
	a, b, c := newSubscriber(queueConfig{size: 4, maxBytes: 1 << 20}), newSubscriber(queueConfig{size: 4, maxBytes: 1 << 20}), newSubscriber(queueConfig{size: 4, maxBytes: 1 << 20})
	f := &fanout{subs: []*subscriber{a, b, c}}
	outcome := errors.New("upstream went away")

	a.mu.Lock() // OnDone will wait in a.finish
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("OnDone panicked: %v", r)
			}
		}()
		f.OnDone(outcome)
		done <- nil
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.mu.Lock()
		closed := f.closed
		f.mu.Unlock()
		if closed {
			break // OnDone took its list of subscribers and is in a.finish
		}
		if time.Now().After(deadline) {
			t.Fatal("OnDone did not start")
		}
		time.Sleep(time.Millisecond)
	}
	if last, _ := f.leave(b); last {
		t.Fatal("b was not the last subscriber")
	}
	a.mu.Unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*subscriber{"a": a, "c": c} {
		if _, fin, err := s.take(nil, 1); !fin || err != outcome {
			t.Errorf("subscriber %s: done %v, outcome %v; want the operation's outcome", name, fin, err)
		}
	}
}

// TestFanoutJoinBeforeStart: a subscriber that joins a shared operation
// which has never started upstream (its first dial failed: the fanout heard
// only Reconnecting) hears where it stands, STATE_RECONNECTING, and not
// STATE_SUBSCRIBED; when the operation starts, both subscribers hear
// STATE_SUBSCRIBED exactly once. A joiner after the start hears
// STATE_SUBSCRIBED at once, then STATE_RECONNECTING if it is reconnecting.
func TestFanoutJoinBeforeStart(t *testing.T) {
	t.Parallel()
	states := func(s *subscriber) []string {
		items, _, _ := s.take(nil, 1)
		var out []string
		for _, it := range items {
			if it.ev != nil {
				out = append(out, it.ev.State.String())
			}
		}
		return out
	}
	check := func(name string, got []string, want ...string) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s heard %v, want %v", name, got, want)
		}
	}
	first := newSubscriber(queueConfig{size: 8, maxBytes: 1 << 20})
	f := &fanout{}
	f.join(first)
	f.OnEvent(session.Event{Kind: session.Reconnecting, Code: 1006, Attempt: 1})
	joiner := newSubscriber(queueConfig{size: 8, maxBytes: 1 << 20})
	f.join(joiner)
	check("the first subscriber", states(first), "STATE_RECONNECTING")
	check("the joiner, before the start", states(joiner), "STATE_RECONNECTING")

	f.OnEvent(session.Event{Kind: session.Subscribed})
	check("the first subscriber", states(first), "STATE_SUBSCRIBED")
	check("the joiner, at the start", states(joiner), "STATE_SUBSCRIBED")

	late := newSubscriber(queueConfig{size: 8, maxBytes: 1 << 20})
	f.join(late)
	check("a joiner after the start", states(late), "STATE_SUBSCRIBED")
	f.OnEvent(session.Event{Kind: session.Reconnecting, Code: 1012, Attempt: 1})
	later := newSubscriber(queueConfig{size: 8, maxBytes: 1 << 20})
	f.join(later)
	check("a joiner while reconnecting", states(later), "STATE_SUBSCRIBED", "STATE_RECONNECTING")
}
