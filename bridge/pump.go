package bridge

import (
	"context"

	"google.golang.org/grpc"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// pump sends what the subscriber's queue holds until the outcome, the
// caller leaving, the drain or the connection's ageing. One goroutine per
// stream: this one. It takes from the queue only what it is about to send
// (one result, or with maxBatch above 1 at most maxBatch results, in one
// lock, for one Batch event: batch.go), so that a caller that stops
// reading pins only that; the rest stays in the queue, where the policy
// can drop it.
func (s *Server) pump(ctx context.Context, upstream string, sub *subscriber, stream grpc.ServerStreamingServer[bridgev1.SubscribeResponse], maxBatch int) error {
	var (
		q    = &taken{sub: sub}
		next = &bridgev1.Next{}
		onN  = &bridgev1.SubscribeResponse_Next{Next: next}
		onL  = &bridgev1.SubscribeResponse_Lifecycle{}
		resp = &bridgev1.SubscribeResponse{}
		own  = &ownedResponse{}
		out  = s.cfg.Metrics.eventOut(upstream)
		aged = connAged(ctx)
		b    *batcher
	)
	if maxBatch > 1 {
		b = newBatcher(maxBatch, s.cfg.MaxBatchBytes)
	}
	for {
		if q.head == len(q.items) {
			if q.done {
				return q.outcome
			}
			if err := s.ended(ctx, aged); err != nil {
				return err
			}
			if !q.takeMore(1) {
				select {
				case <-sub.signal:
				case <-ctx.Done():
					return ctx.Err()
				case <-s.drained:
					return ErrDraining
				case <-aged:
					return ErrConnectionAged
				}
			}
			continue
		}
		it, n := q.items[q.head], 1
		switch {
		case it.ev != nil:
			onL.Lifecycle = it.ev
			resp.Event = onL
		case b == nil:
			next.Result, next.Sequence, next.Cursor = it.res.b, it.seq, it.res.cursor
			resp.Event = onN
		default:
			var err error
			if n, err = s.fill(ctx, aged, q, b); err != nil {
				return err
			}
			resp.Event = b.set(q.items[q.head : q.head+n])
		}
		// Messages are reused: Send has marshalled them when it returns.
		var err error
		if it.ev == nil && owned(q.items[q.head:q.head+n]) {
			own.SubscribeResponse = resp
			err = stream.SendMsg(own)
		} else {
			err = stream.Send(resp)
		}
		if err != nil {
			return err
		}
		// Hold no result while waiting for the next: a stream's last
		// result would otherwise live as long as the stream.
		next.Result, next.Cursor, onL.Lifecycle = nil, nil, nil
		if b != nil {
			b.reset()
		}
		clear(q.items[q.head : q.head+n])
		q.head += n
		if it.ev == nil {
			sub.sent(n)
			if out != nil {
				out.Add(float64(n))
			}
		}
	}
}

// ended reports, without waiting, why the stream must end now, if it must.
// It is asked before every message: each channel is polled on its own,
// which is lock-free while the channel is open, where one select over all
// three locks them all.
func (s *Server) ended(ctx context.Context, aged <-chan struct{}) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	default:
	}
	select {
	case <-s.drained:
		return ErrDraining
	default:
	}
	select {
	case <-aged:
		return ErrConnectionAged
	default:
		return nil
	}
}

// taken holds what the pump took from its subscriber and has not sent yet:
// items[head:].
type taken struct {
	sub     *subscriber
	items   []item
	head    int
	done    bool // the subscriber is done: nothing more will be queued
	outcome error
}

// takeMore appends the subscriber's oldest queued events, up to and
// including max results, moving what is left to the front first. It
// reports whether it took anything or learnt the outcome.
func (t *taken) takeMore(max int) bool {
	if t.head > 0 {
		n := copy(t.items, t.items[t.head:])
		clear(t.items[n:])
		t.items, t.head = t.items[:n], 0
	}
	before := len(t.items)
	t.items, t.done, t.outcome = t.sub.take(t.items, max)
	return len(t.items) > before || t.done
}
