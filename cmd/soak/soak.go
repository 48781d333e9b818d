package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/gqlbridge/gqlbridge/config"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
	"github.com/gqlbridge/gqlbridge/session"
	"github.com/gqlbridge/gqlbridge/wiring"
)

const (
	token = "soak-token"
	// sharedOps is how many distinct operations the deduplicated half of
	// the long-lived subscriptions shares.
	sharedOps = 10
	// fastConns spreads the fast callers over a few HTTP/2 connections.
	fastConns = 4
	// maxChurn bounds churn cycles in flight: if the bridge stalls the
	// soak reports a backlog rather than piling up goroutines.
	maxChurn = 1000
	// churnTimeout bounds one churn cycle; hitting it is a hang.
	churnTimeout = 30 * time.Second
	// slowEvery is how often a slow reader takes one event.
	slowEvery = 100 * time.Millisecond
)

// soak is one run: the upstream, the bridge, the callers and what they saw.
type soak struct {
	o     options
	log   *slog.Logger
	out   io.Writer
	begin time.Time

	up      *upstream
	tokens  *tokenService
	svc     *wiring.Service
	served  chan struct{}
	reg     *prometheus.Registry
	fast    []bridgev1.SubscriptionServiceClient
	slowCli bridgev1.SubscriptionServiceClient
	conns   []*grpc.ClientConn

	baseGoroutines int
	baseFDs        int

	long []*longSub

	events     atomic.Int64 // results received by every caller
	slowEvents atomic.Int64 // results received by slow readers
	gaps       atomic.Int64 // results fast long-lived callers missed (sequence gaps)
	rotations  atomic.Int64
	refreshes  atomic.Int64
	churnDone  atomic.Int64
	churnSkip  atomic.Int64 // cycles not started: maxChurn in flight
	churnLive  atomic.Int64
	restarts   atomic.Int64
	restarting atomic.Bool  // from an upstream restart until every subscription resumed
	resumeMaxN atomic.Int64 // slowest resume after a restart, ns

	mu           sync.Mutex
	outcomes     map[string]int // terminal statuses by code and kind of caller
	violations   []string
	samples      []sample
	lastRestarts int64 // restarts at the previous sample
}

// longSub is one long-lived subscription.
type longSub struct {
	id       int
	upstream string
	query    string
	slow     bool

	state      atomic.Int32 // the last lifecycle state heard
	resubAt    atomic.Int64 // when STATE_RESUBSCRIBED was last heard, unix ns
	lastResult atomic.Int64 // when the last result arrived, unix ns
	stalled    atomic.Bool  // reported as stalled and not flowing since
	ended      atomic.Bool
}

// stallAfter is how long a long-lived subscription may go without a result
// before it counts as stalled: its ticker ticks at least every second, and a
// reconnect must be over well within this. A slow reader drains the results
// queued before a stall for up to its queue length times slowEvery.
func (sub *longSub) stallAfter() time.Duration {
	if sub.slow {
		return time.Minute
	}
	return 15 * time.Second
}

// upstream is the demo server, restartable on the same address.
type upstream struct {
	addr string
	mu   sync.Mutex
	srv  *demoupstream.Server
	ttl  time.Duration
}

func (u *upstream) start() error {
	var err error
	for range 50 { // the port may linger for a moment after Close
		var srv *demoupstream.Server
		if srv, err = demoupstream.Start(demoupstream.Options{Addr: u.addr, Token: token, TokenTTL: u.ttl}); err == nil {
			u.mu.Lock()
			u.srv = srv
			u.mu.Unlock()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

func (u *upstream) close() {
	u.mu.Lock()
	srv := u.srv
	u.srv = nil
	u.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

func (u *upstream) url() string { return "ws://" + u.addr + "/graphql" }

// start brings up the upstream and the bridge and connects the callers.
func start(o options, log *slog.Logger, out io.Writer) (*soak, error) {
	s := &soak{o: o, log: log, out: out, outcomes: map[string]int{}, served: make(chan struct{})}
	s.baseGoroutines, s.baseFDs = runtime.NumGoroutine(), countFDs()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.up = &upstream{addr: l.Addr().String(), ttl: o.tokenTTL}
	_ = l.Close()
	if err := s.up.start(); err != nil {
		return nil, fmt.Errorf("start upstream: %w", err)
	}

	// The upstreams' token comes from a TokenService callback that says
	// when it expires, so that the session rotates to a fresh connection
	// before the upstream closes this one with 4401 (and refreshes if it
	// does).
	if s.tokens, err = startTokenService(o.tokenTTL); err != nil {
		return nil, fmt.Errorf("start token service: %w", err)
	}
	cfg, err := config.Parse([]byte(soakConfig(s.up.url(), s.tokens.addr)), os.LookupEnv)
	if err != nil {
		return nil, err
	}
	s.reg = prometheus.NewRegistry()
	s.svc, err = wiring.New(cfg, wiring.Options{Logger: log, Registry: s.reg, OnState: func(_ string, sc session.StateChange) {
		switch {
		case sc.State == session.StateReady && sc.Rotated:
			s.rotations.Add(1)
		case sc.State == session.StateBackoff && sc.Cause != nil && sc.Cause.Class == session.ClassAuth:
			s.refreshes.Add(1)
		}
	}})
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() { _ = s.svc.GRPC.Serve(lis); close(s.served) }()
	for i := range fastConns + 1 {
		cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		s.conns = append(s.conns, cc)
		if i < fastConns {
			s.fast = append(s.fast, bridgev1.NewSubscriptionServiceClient(cc))
		} else {
			s.slowCli = bridgev1.NewSubscriptionServiceClient(cc)
		}
	}
	fmt.Fprintf(out, "soak: upstream %s (token ttl %s, restart every %s), bridge %s; %d long-lived, %d slow, churn %.0f/s, for %s\n",
		s.up.url(), o.tokenTTL, o.restartEvery, lis.Addr(), o.long, o.slow, o.churn, o.duration)
	return s, nil
}

// violate records a broken invariant.
func (s *soak) violate(format string, args ...any) {
	msg := fmt.Sprintf("[%s] ", time.Since(s.begin).Round(time.Second)) + fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.violations = append(s.violations, msg)
	n := len(s.violations)
	s.mu.Unlock()
	if n <= 20 {
		fmt.Fprintln(s.out, "VIOLATION", msg)
	}
}

func (s *soak) outcome(kind string, st *status.Status) {
	s.mu.Lock()
	s.outcomes[kind+" "+st.Code().String()]++
	s.mu.Unlock()
}

// runLoad runs the callers, the restarts and the sampler for the duration.
func (s *soak) runLoad(ctx context.Context) {
	s.begin = time.Now()
	ctx, cancel := context.WithTimeout(ctx, s.o.duration)
	defer cancel()
	load, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup

	for i := range s.o.long {
		sub := &longSub{id: i, upstream: "direct", query: "subscription { ticker(count: 0, intervalMs: 1000, size: 64) { n at payload } }"}
		switch {
		case i%2 == 1 && i/2%5 == 0:
			sub.upstream = "refresh"
		case i%2 == 0:
			sub.upstream = "shared"
			sub.query = fmt.Sprintf("subscription { ticker(count: 0, intervalMs: %d, size: 64) { n payload } }", 200+i/2%sharedOps)
		}
		s.long = append(s.long, sub)
		wg.Go(func() { s.runLong(load, s.fast[i%fastConns], sub) })
	}
	for i := range s.o.slow {
		sub := &longSub{id: s.o.long + i, upstream: "direct", slow: true,
			query: "subscription { ticker(count: 0, intervalMs: 10, size: 512) { n payload } }"}
		s.long = append(s.long, sub)
		wg.Go(func() { s.runLong(load, s.slowCli, sub) })
	}
	s.awaitSubscribed(ctx)
	per := map[string]int{}
	for _, sub := range s.long {
		per[sub.upstream]++
	}
	fmt.Fprintf(s.out, "soak: %d long-lived subscriptions subscribed after %s: shared=%d (deduplicated to %d operations) direct=%d (incl. %d slow readers) refresh=%d (no known expiry: 4401 then refresh)\n",
		len(s.long), time.Since(s.begin).Round(time.Millisecond), per["shared"], min(sharedOps, per["shared"]), per["direct"], s.o.slow, per["refresh"])

	var churn sync.WaitGroup
	if s.o.churn > 0 {
		wg.Go(func() { s.churnLoop(ctx, load, &churn) })
	}
	if s.o.restartEvery > 0 {
		wg.Go(func() { s.restartLoop(ctx) })
	}
	s.sampleLoop(ctx)
	if s.o.heapProfile != "" { // while every long-lived subscription still runs
		if err := writeHeapProfile(s.o.heapProfile); err != nil {
			fmt.Fprintln(s.out, "soak: -heap-profile:", err)
		}
	}

	// The duration is over: wait for churn cycles in flight, then end every
	// caller.
	churn.Wait()
	stopLoad()
	wg.Wait()
}

// awaitSubscribed waits (bounded) for every long-lived subscription to start.
func (s *soak) awaitSubscribed(ctx context.Context) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		pending := 0
		for _, sub := range s.long {
			if sub.state.Load() == int32(bridgev1.Lifecycle_STATE_UNSPECIFIED) {
				pending++
			}
		}
		if pending == 0 {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.violate("%d long-lived subscriptions never heard STATE_SUBSCRIBED", pending)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runLong reads one long-lived subscription until the load stops.
func (s *soak) runLong(ctx context.Context, c bridgev1.SubscriptionServiceClient, sub *longSub) {
	kind := "long"
	if sub.slow {
		kind = "slow"
	}
	stream, err := c.Subscribe(ctx, &bridgev1.SubscribeRequest{Upstream: sub.upstream, Query: sub.query})
	if err != nil {
		s.violate("%s subscription %d: %v", kind, sub.id, err)
		return
	}
	var last uint64
	var pace *time.Ticker
	if sub.slow {
		pace = time.NewTicker(slowEvery)
		defer pace.Stop()
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			st := status.Convert(err)
			if ctx.Err() != nil && st.Code() == codes.Canceled {
				s.outcome(kind, st) // ended by the soak
				return
			}
			sub.ended.Store(true)
			s.outcome(kind, st)
			s.violate("%s subscription %d on %s ended: %v", kind, sub.id, sub.upstream, st)
			return
		}
		if n := resp.GetNext(); n != nil {
			s.events.Add(1)
			if sub.slow {
				s.slowEvents.Add(1)
			}
			sub.lastResult.Store(time.Now().UnixNano())
			if sub.stalled.CompareAndSwap(true, false) {
				fmt.Fprintf(s.out, "%s subscription %d on %s flows again\n", kind, sub.id, sub.upstream)
			}
			switch seq := n.GetSequence(); {
			case seq <= last:
				s.violate("%s subscription %d: sequence %d after %d", kind, sub.id, seq, last)
			case seq > last+1 && !sub.slow:
				s.gaps.Add(int64(seq - last - 1))
			}
			last = max(last, n.GetSequence())
		} else if lc := resp.GetLifecycle(); lc != nil {
			sub.state.Store(int32(lc.GetState()))
			if lc.GetState() == bridgev1.Lifecycle_STATE_RESUBSCRIBED {
				sub.resubAt.Store(time.Now().UnixNano())
			}
		}
		if pace != nil {
			select {
			case <-pace.C:
			case <-ctx.Done():
			}
		}
	}
}

// churnLoop starts subscribe/cancel cycles at the churn rate.
func (s *soak) churnLoop(ctx, load context.Context, wg *sync.WaitGroup) {
	t := time.NewTicker(time.Duration(float64(time.Second) / s.o.churn))
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.churnLive.Load() >= maxChurn {
			s.churnSkip.Add(1)
			continue
		}
		s.churnLive.Add(1)
		wg.Go(func() {
			defer s.churnLive.Add(-1)
			s.churnCycle(load, s.fast[i%fastConns])
		})
	}
}

// churnCycle is one short subscription: it joins a shared operation, runs
// one to completion, or cancels one at a random moment (before or after it
// started upstream).
func (s *soak) churnCycle(load context.Context, c bridgev1.SubscriptionServiceClient) {
	ctx, cancel := context.WithTimeout(load, churnTimeout)
	defer cancel()
	var req *bridgev1.SubscribeRequest
	cancelAfter := time.Duration(0)
	switch r := rand.IntN(10); {
	case r < 4:
		req = &bridgev1.SubscribeRequest{Upstream: "shared",
			Query: fmt.Sprintf("subscription { ticker(count: 0, intervalMs: %d, size: 64) { n payload } }", 200+rand.IntN(sharedOps))}
		cancelAfter = time.Duration(100+rand.IntN(900)) * time.Millisecond
	case r < 7:
		req = &bridgev1.SubscribeRequest{Upstream: "direct", Query: "subscription { ticker(count: 3, intervalMs: 20) { n } }"}
	default:
		req = &bridgev1.SubscribeRequest{Upstream: "direct", Query: "subscription { ticker(count: 0, intervalMs: 20) { n } }"}
		cancelAfter = time.Duration(1+rand.IntN(500)) * time.Millisecond
	}
	var ours atomic.Bool
	if cancelAfter > 0 {
		t := time.AfterFunc(cancelAfter, func() { ours.Store(true); cancel() })
		defer t.Stop()
	}
	stream, err := c.Subscribe(ctx, req)
	if err == nil {
		for {
			var resp *bridgev1.SubscribeResponse
			if resp, err = stream.Recv(); err != nil {
				break
			}
			if resp.GetNext() != nil {
				s.events.Add(1)
			}
		}
	}
	s.churnDone.Add(1)
	st := status.Convert(err)
	if errors.Is(err, io.EOF) {
		st = status.New(codes.OK, "")
	}
	s.outcome("churn", st)
	switch {
	case st.Code() == codes.OK, st.Code() == codes.Canceled && (ours.Load() || load.Err() != nil):
	case st.Code() == codes.DeadlineExceeded && load.Err() == nil:
		s.violate("churn subscription %q hung for %s", req.GetQuery(), churnTimeout)
	default:
		s.violate("churn subscription on %s ended with %v", req.GetUpstream(), st)
	}
}

// restartLoop restarts the upstream periodically and checks that every fast
// long-lived subscription resumed within resumeWithin of its return.
func (s *soak) restartLoop(ctx context.Context) {
	t := time.NewTicker(s.o.restartEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < s.o.resumeWithin+s.o.sampleEvery {
			return // not enough time left to check the resume
		}
		n := s.restarts.Add(1)
		s.restarting.Store(true)
		down := time.Now()
		s.up.close()
		if err := s.up.start(); err != nil {
			s.violate("restart %d: upstream did not start again: %v", n, err)
			return
		}
		back := time.Now()
		took, pending := s.awaitResumed(down, back.Add(s.o.resumeWithin))
		s.restarting.Store(false)
		if pending > 0 {
			s.violate("restart %d: %d subscriptions had not resumed %s after the upstream was back", n, pending, s.o.resumeWithin)
			continue
		}
		if d := int64(took); d > s.resumeMaxN.Load() {
			s.resumeMaxN.Store(d)
		}
		fmt.Fprintf(s.out, "restart %d: upstream down %s, every subscription resumed %s after it was back\n",
			n, back.Sub(down).Round(time.Millisecond), took.Round(time.Millisecond))
	}
}

// awaitResumed waits until every fast long-lived subscription heard
// STATE_RESUBSCRIBED after down and is not reconnecting, or until deadline.
// Slow readers are left out: a lifecycle event waits behind their queue.
func (s *soak) awaitResumed(down, deadline time.Time) (time.Duration, int) {
	back := time.Now()
	for {
		pending := 0
		for _, sub := range s.long {
			if sub.slow || sub.ended.Load() {
				continue
			}
			if sub.resubAt.Load() < down.UnixNano() || sub.state.Load() == int32(bridgev1.Lifecycle_STATE_RECONNECTING) {
				pending++
			}
		}
		if pending == 0 {
			return time.Since(back), 0
		}
		if time.Now().After(deadline) {
			return time.Since(back), pending
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkStalls reports long-lived subscriptions that stopped receiving
// results: the silent failure no status would reveal.
func (s *soak) checkStalls() {
	now := time.Now()
	for _, sub := range s.long {
		last := sub.lastResult.Load()
		if sub.ended.Load() || last == 0 || now.Sub(time.Unix(0, last)) < sub.stallAfter() {
			continue
		}
		if sub.stalled.CompareAndSwap(false, true) {
			s.violate("subscription %d on %s (slow=%v) received no result for %s; last lifecycle state %s",
				sub.id, sub.upstream, sub.slow, now.Sub(time.Unix(0, last)).Round(time.Second), bridgev1.Lifecycle_State(sub.state.Load()))
		}
	}
}

// shutdown stops everything and checks that the goroutines and file
// descriptors the run started are gone.
func (s *soak) shutdown() {
	// As the binary stops on SIGTERM. The callers are gone: the drain ends
	// as soon as the bridge has seen the last of their streams end.
	s.svc.Drain(10 * time.Second)
	<-s.served
	for _, cc := range s.conns {
		_ = cc.Close()
	}
	s.tokens.stop()
	s.up.close()
	// Failed upgrades may leave keep-alive connections in the default
	// transport's pool: they are not the bridge's to keep.
	http.DefaultClient.CloseIdleConnections()

	deadline := time.Now().Add(15 * time.Second)
	for {
		g, fds := runtime.NumGoroutine(), countFDs()
		if g <= s.baseGoroutines+5 && fds <= s.baseFDs+2 {
			fmt.Fprintf(s.out, "\nshutdown: %d goroutines (%d before the run), %d fds (%d before)\n", g, s.baseGoroutines, fds, s.baseFDs)
			return
		}
		if time.Now().After(deadline) {
			s.violate("after shutdown: %d goroutines (%d before the run), %d fds (%d before)", g, s.baseGoroutines, fds, s.baseFDs)
			_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sortedOutcomes lists the terminal statuses seen, most frequent first.
func (s *soak) sortedOutcomes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.outcomes))
	for k := range s.outcomes {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if s.outcomes[keys[i]] != s.outcomes[keys[j]] {
			return s.outcomes[keys[i]] > s.outcomes[keys[j]]
		}
		return keys[i] < keys[j]
	})
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = fmt.Sprintf("%s=%d", k, s.outcomes[k])
	}
	return out
}
