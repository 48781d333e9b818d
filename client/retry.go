package client

import (
	"math/rand/v2"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Retryable says whether a subscription whose stream ended with st should
// subscribe again, and the least delay the bridge asked for with
// google.rpc.RetryInfo (0 when the status carries none). It is the "retry?"
// column of docs/status.md turned into code, and the only place this package
// decides it (TestRetryableMatchesStatusDoc checks it against every row):
//
//   - a status with RetryInfo: yes, after at least its delay. The bridge
//     puts RetryInfo exactly on UNAVAILABLE BRIDGE_DRAINING (a replica is
//     shutting down, or the connection reached its maximum age),
//     UNAVAILABLE UPSTREAM_UNAVAILABLE and RESOURCE_EXHAUSTED LIMIT_REACHED;
//   - any other status from the bridge (it carries ErrorInfo): no, the same
//     request fails the same way (INVALID_ARGUMENT, NOT_FOUND,
//     UNAUTHENTICATED, PERMISSION_DENIED, FAILED_PRECONDITION, INTERNAL,
//     RESOURCE_EXHAUSTED without RetryInfo, ...);
//   - UNAVAILABLE, UNKNOWN or INTERNAL without ErrorInfo: yes, with backoff.
//     gRPC itself produced them: the connection to the replica broke (it
//     crashed or was killed), or a proxy or the transport failed;
//   - anything else (OK, CANCELLED, DEADLINE_EXCEEDED, UNIMPLEMENTED, gRPC's
//     own RESOURCE_EXHAUSTED for an oversized message, ...): no.
func Retryable(st *status.Status) (retry bool, after time.Duration) {
	if ri := retryInfo(st); ri != nil {
		return true, max(0, ri.GetRetryDelay().AsDuration())
	}
	if errorInfo(st) != nil {
		return false, 0
	}
	switch st.Code() {
	case codes.Unavailable, codes.Unknown, codes.Internal:
		return true, 0
	}
	return false, 0
}

func errorInfo(st *status.Status) *errdetails.ErrorInfo { return detail[*errdetails.ErrorInfo](st) }

func retryInfo(st *status.Status) *errdetails.RetryInfo { return detail[*errdetails.RetryInfo](st) }

func detail[T any](st *status.Status) T {
	for _, d := range st.Details() {
		if v, ok := d.(T); ok {
			return v
		}
	}
	var zero T
	return zero
}

// Retry is the resubscribe policy of a Client.
//
// A subscription is live while its stream delivers events. Before its nth
// retry since it was last live, the client waits a random delay between 0
// and a ceiling of Initial·2ⁿ⁻¹ (at most Max). With RetryInfo that random
// delay comes on top of the bridge's RetryDelay, so the bridge's minimum is
// honoured and the callers of one draining replica still spread out; without
// it the wait is the random delay alone ("full jitter").
type Retry struct {
	// Initial is the first backoff ceiling. 0: 100ms.
	Initial time.Duration
	// Max caps the backoff ceiling. 0: 30s.
	Max time.Duration
	// MaxAttempts is how many retries Subscribe makes before it gives up,
	// counted since the subscription was last live. 0: no limit.
	MaxAttempts int
	// MaxElapsed is how long a subscription may stay down (since its last
	// live stream ended, or since Subscribe was called) before Subscribe
	// gives up instead of waiting again. 0: no limit.
	MaxElapsed time.Duration
}

// DefaultRetry is the policy of a Client made without WithRetry: give up
// when a subscription has been down for 5 minutes.
var DefaultRetry = Retry{Initial: 100 * time.Millisecond, Max: 30 * time.Second, MaxElapsed: 5 * time.Minute}

func (r Retry) withDefaults() Retry {
	if r.Initial <= 0 {
		r.Initial = 100 * time.Millisecond
	}
	if r.Max <= 0 {
		r.Max = 30 * time.Second
	}
	r.Max = max(r.Max, r.Initial)
	return r
}

// ceiling is the backoff ceiling after failures streams in a row (from 1).
func (r Retry) ceiling(failures int) time.Duration {
	c := r.Initial
	for i := 1; i < failures && c < r.Max; i++ {
		c *= 2
	}
	return min(c, r.Max)
}

// delay is the wait before the next stream after failures streams in a
// row; after and hasRetryInfo are the bridge's RetryInfo. jitter returns a
// random duration in [0, n].
func (r Retry) delay(failures int, after time.Duration, hasRetryInfo bool, jitter func(n time.Duration) time.Duration) time.Duration {
	j := jitter(r.ceiling(failures))
	if hasRetryInfo {
		return after + j
	}
	return j
}

// fullJitter is a random duration in [0, n].
func fullJitter(n time.Duration) time.Duration {
	if n <= 0 {
		return 0
	}
	return rand.N(n + 1)
}
