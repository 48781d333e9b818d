package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/gqlbridge/gqlbridge/bench/upstream"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// swarm is many Subscribe streams spread over a few gRPC connections
// (HTTP/2 multiplexes them; the bridge's server sets no
// MaxConcurrentStreams, so the client may open as many as it likes per
// connection).
type swarm struct {
	conns   []*grpc.ClientConn
	clients []bridgev1.SubscriptionServiceClient
	stats   []subStat
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	launched     atomic.Int64
	subscribed   atomic.Int64 // streams that heard STATE_SUBSCRIBED
	withEvent    atomic.Int64 // streams that received at least one result
	events       atomic.Int64 // results received in total
	reconnecting atomic.Int64 // streams that heard STATE_RECONNECTING (after mark)
	reconnEvents atomic.Int64 // STATE_RECONNECTING heard in total (after mark): one per failed attempt
	resubscribed atomic.Int64 // streams that heard STATE_RESUBSCRIBED (after mark)
	afterResub   atomic.Int64 // streams that received a result after their RESUBSCRIBED
	ended        atomic.Int64 // streams that ended (EOF or error)
	failed       atomic.Int64 // streams that ended with an error other than our cancel
	marked       atomic.Bool  // count reconnect lifecycle from now on

	errMu    sync.Mutex
	firstErr error
}

// subStat is one stream's record. The stream's goroutine writes it; the
// atomics are read while it runs.
type subStat struct {
	events     atomic.Int64
	dupN       atomic.Int64 // a result whose n was not above the previous one
	gapN       atomic.Int64 // results the upstream sent that never arrived (n jumped)
	seqGaps    atomic.Int64 // results the bridge dropped (Next.sequence jumped)
	resubs     atomic.Int64
	reconns    atomic.Int64
	resubAt    atomic.Int64 // unix nanos of the first RESUBSCRIBED after mark
	afterResub atomic.Int64
	lastSeq    atomic.Uint64
	ended      atomic.Bool
	lastN      int64
}

func newSwarm(ctx context.Context, addr string, conns, n int) (*swarm, error) {
	s := &swarm{stats: make([]subStat, n)}
	s.ctx, s.cancel = context.WithCancel(ctx)
	for range max(conns, 1) {
		cc, client, err := grpcClient(addr)
		if err != nil {
			s.close()
			return nil, err
		}
		s.conns = append(s.conns, cc)
		s.clients = append(s.clients, client)
	}
	return s, nil
}

// open starts n streams, request(i) each, keeping at most window of them
// waiting for STATE_SUBSCRIBED so the bridge is not flooded. It returns
// when every stream is subscribed, or at timeout/stall, with how many are.
func (s *swarm) open(n int, window int64, timeout time.Duration, req func(i int) *bridgev1.SubscribeRequest) (int64, error) {
	deadline := time.Now().Add(timeout)
	lastProgress, lastSub := time.Now(), int64(0)
	for i := 0; i < n; i++ {
		for s.launched.Load()-s.subscribed.Load()-s.ended.Load() >= window {
			if err := s.waitTick(deadline, &lastProgress, &lastSub); err != nil {
				return s.subscribed.Load(), err
			}
		}
		s.launched.Add(1)
		s.wg.Add(1)
		go s.run(i, s.clients[i%len(s.clients)], req(i))
	}
	for s.subscribed.Load() < int64(n) {
		if err := s.waitTick(deadline, &lastProgress, &lastSub); err != nil {
			return s.subscribed.Load(), err
		}
	}
	return s.subscribed.Load(), nil
}

func (s *swarm) waitTick(deadline time.Time, lastProgress *time.Time, lastSub *int64) error {
	time.Sleep(2 * time.Millisecond)
	if err := s.ctx.Err(); err != nil {
		return err
	}
	if sub := s.subscribed.Load(); sub != *lastSub {
		*lastSub, *lastProgress = sub, time.Now()
	}
	if time.Now().After(deadline) {
		return fmt.Errorf("timeout: %d of %d launched streams subscribed (%d ended, first error: %v)",
			s.subscribed.Load(), s.launched.Load(), s.ended.Load(), s.err())
	}
	if time.Since(*lastProgress) > 30*time.Second {
		return fmt.Errorf("stalled for 30s: %d of %d launched streams subscribed (%d ended, first error: %v)",
			s.subscribed.Load(), s.launched.Load(), s.ended.Load(), s.err())
	}
	return nil
}

// waitFor polls cond until it holds or timeout passes.
func (s *swarm) waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) || s.ctx.Err() != nil {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

func (s *swarm) err() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.firstErr
}

func (s *swarm) run(i int, client bridgev1.SubscriptionServiceClient, req *bridgev1.SubscribeRequest) {
	defer s.wg.Done()
	st := &s.stats[i]
	defer func() {
		st.ended.Store(true)
		s.ended.Add(1)
	}()
	stream, err := client.Subscribe(s.ctx, req)
	if err != nil {
		s.fail(err)
		return
	}
	subscribed := false
	resubbed := false
	for {
		resp, err := stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				s.fail(err)
			}
			return
		}
		switch ev := resp.Event.(type) {
		case *bridgev1.SubscribeResponse_Next:
			n := upstream.ParseN(ev.Next.Result)
			if st.lastN != 0 {
				if n <= st.lastN {
					st.dupN.Add(1)
				} else if n > st.lastN+1 {
					st.gapN.Add(n - st.lastN - 1)
				}
			}
			if n > st.lastN {
				st.lastN = n
			}
			if prev := st.lastSeq.Load(); ev.Next.Sequence > prev+1 {
				st.seqGaps.Add(int64(ev.Next.Sequence - prev - 1))
			}
			st.lastSeq.Store(ev.Next.Sequence)
			if st.events.Add(1) == 1 {
				s.withEvent.Add(1)
			}
			s.events.Add(1)
			if resubbed && st.afterResub.Add(1) == 1 {
				s.afterResub.Add(1)
			}
		case *bridgev1.SubscribeResponse_Lifecycle:
			switch ev.Lifecycle.State {
			case bridgev1.Lifecycle_STATE_SUBSCRIBED:
				if !subscribed {
					subscribed = true
					s.subscribed.Add(1)
				}
			case bridgev1.Lifecycle_STATE_RECONNECTING:
				if s.marked.Load() {
					s.reconnEvents.Add(1)
					if st.reconns.Add(1) == 1 {
						s.reconnecting.Add(1)
					}
				}
			case bridgev1.Lifecycle_STATE_RESUBSCRIBED:
				if s.marked.Load() && st.resubs.Add(1) == 1 {
					st.resubAt.Store(time.Now().UnixNano())
					resubbed = true
					s.resubscribed.Add(1)
				}
			}
		}
	}
}

func (s *swarm) fail(err error) {
	if s.ctx.Err() != nil {
		return // our own cancel
	}
	s.failed.Add(1)
	s.errMu.Lock()
	if s.firstErr == nil {
		s.firstErr = err
		if st, ok := status.FromError(err); ok {
			log.Printf("first stream error: %s: %s", st.Code(), st.Message())
		}
	}
	s.errMu.Unlock()
}

// close cancels every stream and waits for them (bounded).
func (s *swarm) close() {
	s.cancel()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		log.Printf("swarm: streams still running 30s after cancel")
	}
	for _, cc := range s.conns {
		cc.Close()
	}
}
