package session

import (
	"math"
	"math/rand/v2"
	"time"
)

// Backoff is the retry budget of a connection: jittered exponential delays
// between attempts, an optional limit on the time spent retrying, and the
// uptime after which a connection counts as healthy again.
type Backoff struct {
	// Initial is the ceiling of the first delay. Default 100ms.
	Initial time.Duration
	// Max caps the ceiling of any delay. Default 10s.
	Max time.Duration
	// Multiplier grows the ceiling per attempt. Default 2.
	Multiplier float64
	// MaxElapsed ends retrying when this much time passed since the first
	// failure of an outage. 0 retries for ever. Default 0.
	MaxElapsed time.Duration
	// StableAfter is how long a connection must stay up after its ack before
	// the failure count and delays reset. Default 10s.
	StableAfter time.Duration
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = 100 * time.Millisecond
	}
	if b.Max <= 0 {
		b.Max = 10 * time.Second
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	if b.Multiplier < 1 {
		b.Multiplier = 2
	}
	if b.StableAfter <= 0 {
		b.StableAfter = 10 * time.Second
	}
	return b
}

// retrier tracks one outage. Full jitter: each delay is uniform in
// [0, min(Max, Initial·Multiplier^n)), so a fleet of bridges that lost the
// same upstream does not return in lockstep.
type retrier struct {
	b        Backoff
	rand     func() float64
	failures int       // since the last healthy connection
	since    time.Time // first failure of the outage
}

func newRetrier(b Backoff, rnd func() float64) *retrier {
	if rnd == nil {
		rnd = rand.Float64
	}
	return &retrier{b: b.withDefaults(), rand: rnd}
}

// next records a failure at now and returns the delay before the next
// attempt, or false when the budget is spent. floor (a Retry-After) raises
// the delay.
func (r *retrier) next(now time.Time, floor time.Duration) (time.Duration, bool) {
	if r.failures == 0 {
		r.since = now
	}
	r.failures++
	if r.b.MaxElapsed > 0 && now.Sub(r.since) >= r.b.MaxElapsed {
		return 0, false
	}
	ceil := float64(r.b.Initial) * math.Pow(r.b.Multiplier, float64(r.failures-1))
	if ceil > float64(r.b.Max) {
		ceil = float64(r.b.Max)
	}
	d := time.Duration(r.rand() * ceil)
	if d < floor {
		d = floor
	}
	if r.b.MaxElapsed > 0 {
		if left := r.b.MaxElapsed - now.Sub(r.since); d > left {
			d = left
		}
	}
	return d, true
}

// healthy resets the outage after a connection stayed up for uptime.
func (r *retrier) healthy(uptime time.Duration) bool {
	if uptime >= r.b.StableAfter {
		r.failures = 0
		return true
	}
	return false
}
