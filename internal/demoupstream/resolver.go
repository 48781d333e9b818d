package demoupstream

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/gqlbridge/gqlbridge/internal/demoupstream/graph"
)

// maxTickSize bounds ticker's size argument so that a typo in a demo cannot
// make the server allocate gigabytes per tick.
const maxTickSize = 16 << 20

// resolver implements graph.ResolverRoot. It is hand-written (gqlgen.yml has
// no resolver section) and reports every subscription to the server's stats.
type resolver struct{ s *Server }

var _ graph.ResolverRoot = resolver{}

func (r resolver) Query() graph.QueryResolver               { return queryResolver(r) }
func (r resolver) Subscription() graph.SubscriptionResolver { return subscriptionResolver(r) }

type queryResolver resolver

func (queryResolver) Hello(_ context.Context, name *string) (string, error) {
	who := "world"
	if name != nil && *name != "" {
		who = *name
	}
	return "Hello, " + who + "!", nil
}

type subscriptionResolver resolver

// errShuttingDown refuses a subscription that arrives while the server closes.
var errShuttingDown = errors.New("server shutting down")

func (r subscriptionResolver) Ticker(ctx context.Context, count, intervalMs, size *int) (<-chan *graph.Tick, error) {
	// The schema has defaults, but a client may still pass an explicit null.
	n, interval, pad := deref(count, 10), deref(intervalMs, 100), deref(size, 0)
	switch {
	case interval < 0:
		return nil, gqlerror.Errorf("intervalMs must not be negative")
	case pad < 0 || pad > maxTickSize:
		return nil, gqlerror.Errorf("size must be between 0 and %d", maxTickSize)
	}
	var payload *string
	if pad > 0 {
		p := strings.Repeat("x", pad)
		payload = &p
	}

	// Unbuffered, so a tick is produced only when gqlgen is ready to send it
	// and a slow client slows the ticker instead of piling up ticks.
	if !r.s.subscriptionStarted() {
		return nil, errShuttingDown
	}
	ch := make(chan *graph.Tick)
	go func() {
		defer r.s.subscriptionEnded()
		defer close(ch) // closing the channel is how gqlgen learns the stream completed

		var tick <-chan time.Time
		if interval > 0 {
			t := time.NewTicker(time.Duration(interval) * time.Millisecond)
			defer t.Stop()
			tick = t.C
		}
		for i := 1; n <= 0 || i <= n; i++ {
			// The first tick goes out at once; the following ones are
			// intervalMs apart.
			if i > 1 && tick != nil {
				select {
				case <-ctx.Done():
					return
				case <-tick:
				}
			}
			t := &graph.Tick{N: i, At: time.Now().UTC().Format(time.RFC3339Nano), Payload: payload}
			select {
			case <-ctx.Done():
				return
			case ch <- t:
			}
		}
	}()
	return ch, nil
}

// Failing returns its error from the resolver, the ordinary gqlgen way. On the
// wire that is a single `next` (graphql-transport-ws) or `data` (graphql-ws)
// message whose payload is {"errors":[{"message":...,"path":["failing"],
// "locations":[...]}],"data":null}, followed by `complete`: the same thing the graphql-ws
// reference server does when a subscription's source stream cannot be
// created. (A protocol-level `error` message is what an invalid document,
// such as an unknown field, gets.)
func (r subscriptionResolver) Failing(_ context.Context, message *string) (<-chan *graph.Tick, error) {
	if !r.s.subscriptionStarted() {
		return nil, errShuttingDown
	}
	r.s.subscriptionEnded()
	return nil, errors.New(deref(message, "boom"))
}

func (r subscriptionResolver) CompleteImmediately(context.Context) (<-chan *graph.Tick, error) {
	if !r.s.subscriptionStarted() {
		return nil, errShuttingDown
	}
	r.s.subscriptionEnded()
	ch := make(chan *graph.Tick)
	close(ch)
	return ch, nil
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
