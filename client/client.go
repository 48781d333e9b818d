// Package client is the Go client of gqlbridge: it runs a GraphQL
// subscription through the bridge's SubscriptionService and keeps it alive
// across replica drains, rolling updates, crashed replicas and full
// replicas, the way docs/status.md and docs/deploy.md tell callers to.
//
// A Client wraps a gRPC connection to the bridge. Dial it with
// DialOptions (round robin over every replica, client-side health checking,
// keepalive), then call Subscribe with a Handler:
//
//	conn, err := grpc.NewClient("dns:///gqlbridge-headless.ns.svc.cluster.local:50051",
//		append(client.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
//	c := client.New(conn)
//	err = c.Subscribe(ctx, &bridgev1.SubscribeRequest{Upstream: "orders", Query: q}, client.Handler{
//		OnResult: func(r client.Result) { fmt.Printf("%s\n", r.Data) },
//	})
//
// Subscribe delivers every result in order (the results of a Batch one by
// one), passes lifecycle events on, and when a stream ends with a status
// that Retryable accepts (UNAVAILABLE from a draining replica or a broken
// connection, RESOURCE_EXHAUSTED with RetryInfo, ...) it waits as Retry
// says, subscribes again, and tells the Handler both. It returns nil when
// the upstream completed the operation, ctx.Err() when ctx ended, and an
// *Error with the status and its google.rpc.ErrorInfo otherwise.
//
// A new stream is a new subscription: its sequence counts from 1 again, and
// results published between the old stream's end and the new stream's
// first event are not replayed (Result.Stream tells the streams apart).
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// Client subscribes through a bridge. It is safe for concurrent use: each
// Subscribe is independent.
type Client struct {
	svc         bridgev1.SubscriptionServiceClient
	retry       Retry
	resubscribe bool
	jitter      func(time.Duration) time.Duration
}

// Option configures a Client.
type Option func(*Client)

// WithRetry sets the resubscribe policy (default DefaultRetry).
func WithRetry(r Retry) Option { return func(c *Client) { c.retry = r.withDefaults() } }

// WithoutResubscribe makes Subscribe return the first stream's end, even a
// retryable one, as an *Error.
func WithoutResubscribe() Option { return func(c *Client) { c.resubscribe = false } }

// New returns a Client that calls the bridge over conn (a *grpc.ClientConn).
func New(conn grpc.ClientConnInterface, opts ...Option) *Client {
	c := &Client{
		svc:         bridgev1.NewSubscriptionServiceClient(conn),
		retry:       DefaultRetry.withDefaults(),
		resubscribe: true,
		jitter:      fullJitter,
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Handler receives the events of one subscription, in order, on the
// goroutine that called Subscribe. Every field is optional. The callbacks
// run on the receiving path: a slow callback makes the bridge queue (and,
// under its drop_oldest policy, drop) results for this caller.
type Handler struct {
	// OnResult receives every result.
	OnResult func(Result)
	// OnLifecycle receives the lifecycle events of the upstream operation
	// (STATE_SUBSCRIBED, STATE_RECONNECTING, STATE_RESUBSCRIBED).
	OnLifecycle func(*bridgev1.Lifecycle)
	// OnRetry is called when a stream ended with a retryable status, before
	// the client waits Retrying.Delay and subscribes again.
	OnRetry func(Retrying)
	// OnResubscribed is called when the first event of a stream after a
	// retryable end arrives: the subscription is live again (results may
	// have been missed in between).
	OnResubscribed func(Resubscribed)
}

// Result is one result of the operation.
type Result struct {
	// Data is the upstream's ExecutionResult ({"data", "errors",
	// "extensions"}) as JSON, byte for byte as the upstream sent it.
	Data []byte
	// Sequence counts the results of this stream from 1. A gap means the
	// bridge dropped results because this caller read too slowly.
	Sequence uint64
	// Stream counts the streams of this subscription from 1; it grows by
	// one with every resubscribe, and Sequence starts again at 1.
	Stream int
	// Peer is the address of the replica that serves the stream.
	Peer string
}

// Retrying describes a stream that ended with a retryable status.
type Retrying struct {
	// Status is the status the stream ended with.
	Status *status.Status
	// ErrorInfo is the bridge's google.rpc.ErrorInfo (its Reason is, for
	// example, "BRIDGE_DRAINING"), or nil when gRPC produced the status
	// (a broken connection).
	ErrorInfo *errdetails.ErrorInfo
	// RetryInfo is the bridge's google.rpc.RetryInfo, or nil.
	RetryInfo *errdetails.RetryInfo
	// Delay is how long the client waits before subscribing again.
	Delay time.Duration
	// Attempt numbers this retry among those since the subscription was
	// last live (a stream delivered an event), from 1.
	Attempt int
	// Stream is the number of the stream that ended.
	Stream int
	// Peer is the address of the replica that served the stream, or ""
	// when the stream never reached one.
	Peer string
}

// Resubscribed describes a stream that delivered its first event after a
// retryable end.
type Resubscribed struct {
	// Stream is the number of the new stream.
	Stream int
	// Down is how long the subscription was down: from the end of its last
	// live stream (or from the call to Subscribe) to this stream's first
	// event.
	Down time.Duration
	// Attempts is how many retries it took, at least 1.
	Attempts int
	// Peer is the address of the replica that serves the new stream.
	Peer string
}

// Error is how a subscription ended when it did not complete: a status
// that is not retryable, or a retryable one after the retry budget was
// spent (GaveUp). status.FromError and status.Code accept it.
type Error struct {
	// Status is the status of the last stream.
	Status *status.Status
	// ErrorInfo is the bridge's google.rpc.ErrorInfo, or nil when gRPC
	// produced the status.
	ErrorInfo *errdetails.ErrorInfo
	// RetryInfo is the bridge's google.rpc.RetryInfo, or nil.
	RetryInfo *errdetails.RetryInfo
	// GaveUp says the status was retryable but the Retry budget was spent
	// (or the client was made WithoutResubscribe).
	GaveUp bool
	// Attempts counts the streams that ended since the subscription was
	// last live (or since Subscribe was called), the last one included.
	Attempts int
}

func (e *Error) Error() string {
	s := fmt.Sprintf("gqlbridge: %s: %s", e.Status.Code(), e.Status.Message())
	if e.ErrorInfo != nil {
		s += " (" + e.ErrorInfo.GetReason() + ")"
	}
	if e.GaveUp {
		s += fmt.Sprintf("; gave up after %d attempts", e.Attempts)
	}
	return s
}

// GRPCStatus returns the status of the last stream.
func (e *Error) GRPCStatus() *status.Status { return e.Status }

// Subscribe runs req until the upstream completes it (nil), ctx ends
// (ctx.Err()), or it ends in a way that resubscribing will not fix or the
// Retry budget was spent (*Error). See the package documentation.
func (c *Client) Subscribe(ctx context.Context, req *bridgev1.SubscribeRequest, h Handler) error {
	var (
		streams  int          // streams opened
		failures int          // retryable ends since the subscription was last live
		down     = time.Now() // since when it is not live: its last live stream's end
	)
	for {
		streams++
		st, peerAddr, delivered := c.stream(ctx, req, h, streams, failures, down)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if st == nil {
			return nil // completed
		}
		if delivered {
			failures, down = 0, time.Now()
		}
		failures++
		retry, after := Retryable(st)
		e := &Error{Status: st, ErrorInfo: errorInfo(st), RetryInfo: retryInfo(st), Attempts: failures}
		if !retry {
			return e
		}
		if !c.resubscribe {
			e.GaveUp = true
			return e
		}
		d := c.retry.delay(failures, after, e.RetryInfo != nil, c.jitter)
		if (c.retry.MaxAttempts > 0 && failures > c.retry.MaxAttempts) ||
			(c.retry.MaxElapsed > 0 && time.Since(down)+d > c.retry.MaxElapsed) {
			e.GaveUp = true
			return e
		}
		if h.OnRetry != nil {
			h.OnRetry(Retrying{Status: st, ErrorInfo: e.ErrorInfo, RetryInfo: e.RetryInfo, Delay: d,
				Attempt: failures, Stream: streams, Peer: peerAddr})
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// stream runs one Subscribe call and returns how it ended (nil: completed
// with OK), the replica's address, and whether it delivered any event.
// failures and down describe the streams before it, for OnResubscribed.
func (c *Client) stream(ctx context.Context, req *bridgev1.SubscribeRequest, h Handler, n, failures int, down time.Time) (*status.Status, string, bool) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.svc.Subscribe(ctx, req)
	if err != nil {
		return status.Convert(err), "", false
	}
	delivered := false
	peerAddr := ""
	for {
		resp, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil, peerAddr, delivered
		}
		if err != nil {
			if peerAddr == "" {
				peerAddr = addrOf(s.Context())
			}
			return status.Convert(err), peerAddr, delivered
		}
		if !delivered {
			delivered = true
			peerAddr = addrOf(s.Context())
			if failures > 0 && h.OnResubscribed != nil {
				h.OnResubscribed(Resubscribed{Stream: n, Down: time.Since(down), Attempts: failures, Peer: peerAddr})
			}
		}
		switch ev := resp.Event.(type) {
		case *bridgev1.SubscribeResponse_Next:
			if h.OnResult != nil {
				h.OnResult(Result{Data: ev.Next.GetResult(), Sequence: ev.Next.GetSequence(), Stream: n, Peer: peerAddr})
			}
		case *bridgev1.SubscribeResponse_Batch:
			if h.OnResult != nil {
				for _, r := range ev.Batch.GetNexts() {
					h.OnResult(Result{Data: r.GetResult(), Sequence: r.GetSequence(), Stream: n, Peer: peerAddr})
				}
			}
		case *bridgev1.SubscribeResponse_Lifecycle:
			if h.OnLifecycle != nil {
				h.OnLifecycle(ev.Lifecycle)
			}
		}
	}
}

func addrOf(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
