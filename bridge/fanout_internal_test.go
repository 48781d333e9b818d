package bridge

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestFanoutDoneWhileLeaving: the operation ends (OnDone, on the upstream
// reader's goroutine) while a subscriber leaves (its stream's goroutine).
// OnDone must give every subscriber it saw the outcome, and never touch a
// slot that leave cleared. The interleaving is forced: OnDone is held in
// the first subscriber's finish while the second one leaves.
func TestFanoutDoneWhileLeaving(t *testing.T) {
	t.Parallel()
	a, b, c := newSubscriber(4, DropOldest, nil), newSubscriber(4, DropOldest, nil), newSubscriber(4, DropOldest, nil)
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
		if _, fin, err := s.take(nil); !fin || err != outcome {
			t.Errorf("subscriber %s: done %v, outcome %v; want the operation's outcome", name, fin, err)
		}
	}
}
