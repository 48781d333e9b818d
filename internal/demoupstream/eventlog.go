package demoupstream

import (
	"context"
	"time"

	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/gqlbridge/gqlbridge/internal/demoupstream/graph"
)

// defaultEventInterval is how often the event log grows unless
// Options.EventInterval says otherwise.
const defaultEventInterval = 100 * time.Millisecond

// eventLog is the append-only log behind the events and eventBatches
// subscriptions. It is a function of time: the event with id k (from 1) is
// appended at epoch + k·interval, whether or not anyone listens or the
// server runs. Two servers given the same epoch and interval (one started
// after the other was stopped, as in an upstream restart) serve the same
// log, as servers backed by the same database would.
type eventLog struct {
	epoch    time.Time
	interval time.Duration
}

// at is when event id is appended.
func (l eventLog) at(id int) time.Time { return l.epoch.Add(time.Duration(id) * l.interval) }

// latest is the id of the last event appended by now; 0 before the first.
func (l eventLog) latest(now time.Time) int {
	if now.Before(l.epoch) {
		return 0
	}
	return int(now.Sub(l.epoch) / l.interval)
}

func (l eventLog) event(id int) *graph.Event {
	return &graph.Event{ID: id, At: l.at(id).UTC().Format(time.RFC3339Nano)}
}

// first is the id a subscription starts with: the one after the cursor, or
// the next event to be appended without one.
func (l eventLog) first(after *int) (int, error) {
	if after == nil {
		return l.latest(time.Now()) + 1, nil
	}
	if *after < 0 {
		return 0, gqlerror.Errorf("after must not be negative")
	}
	return *after + 1, nil
}

// waitFor waits until event id exists; false when ctx ended first.
func (l eventLog) waitFor(ctx context.Context, id int) bool {
	d := time.Until(l.at(id))
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (r subscriptionResolver) Events(ctx context.Context, after *int) (<-chan *graph.Event, error) {
	log := r.s.events
	id, err := log.first(after)
	if err != nil {
		return nil, err
	}
	if !r.s.subscriptionStarted() {
		return nil, errShuttingDown
	}
	// Unbuffered, as ticker's: an event is taken from the log only when
	// gqlgen is ready to send it.
	ch := make(chan *graph.Event)
	go func() {
		defer r.s.subscriptionEnded()
		defer close(ch)
		for ; ; id++ {
			if !log.waitFor(ctx, id) {
				return
			}
			select {
			case <-ctx.Done():
				return
			case ch <- log.event(id):
			}
		}
	}()
	return ch, nil
}

func (r subscriptionResolver) EventBatches(ctx context.Context, after *int, batchSize *int) (<-chan []*graph.Event, error) {
	log := r.s.events
	id, err := log.first(after)
	if err != nil {
		return nil, err
	}
	size := deref(batchSize, 10)
	if size < 1 || size > 1000 {
		return nil, gqlerror.Errorf("batchSize must be between 1 and 1000")
	}
	if !r.s.subscriptionStarted() {
		return nil, errShuttingDown
	}
	ch := make(chan []*graph.Event)
	go func() {
		defer r.s.subscriptionEnded()
		defer close(ch)
		for {
			if !log.waitFor(ctx, id) {
				return
			}
			last := min(log.latest(time.Now()), id+size-1)
			batch := make([]*graph.Event, 0, last-id+1)
			for k := id; k <= last; k++ {
				batch = append(batch, log.event(k))
			}
			select {
			case <-ctx.Done():
				return
			case ch <- batch:
			}
			id = last + 1
		}
	}()
	return ch, nil
}
