package bridge

import (
	"context"
	"sync"
	"time"

	"github.com/gqlbridge/gqlbridge/session"
)

// enter counts a Subscribe call in, unless the service is draining.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.open++
	return true
}

func (s *Server) leave() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.open--
	if s.open == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// Drain stops the service: new Subscribes are refused at once; open streams
// may run until grace passes (or ctx ends), then end with UNAVAILABLE and
// RetryInfo so callers resubscribe on another replica; then every upstream
// connection closes with 1001. It returns early when no stream is open, and
// at most drainWait after grace; the caller then stops the gRPC server,
// which frees handlers stuck sending to callers that stopped reading.
func (s *Server) Drain(ctx context.Context, grace time.Duration) {
	s.mu.Lock()
	s.draining = true
	idle := make(chan struct{})
	if s.open == 0 {
		close(idle)
	} else {
		s.idle = idle
	}
	s.mu.Unlock()
	t := time.NewTimer(grace)
	select {
	case <-t.C:
	case <-idle:
	case <-ctx.Done():
	}
	t.Stop()
	s.once.Do(func() { close(s.drained) })
	// A handler blocked in Send (its caller stopped reading and the HTTP/2
	// window is full) does not see the drain; only the gRPC server's Stop
	// frees it. Do not wait for it past drainWait.
	w := time.NewTimer(drainWait)
	select {
	case <-idle:
	case <-w.C:
		s.log.Warn("streams still open after the drain; closing upstreams anyway", "open", s.openStreams())
	}
	w.Stop()
	s.Close()
}

// drainWait bounds how long Drain waits for streams after telling them to end.
const drainWait = 5 * time.Second

func (s *Server) openStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open
}

// Close ends every open stream with UNAVAILABLE and closes every upstream
// connection with 1001 at once.
func (s *Server) Close() {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	s.once.Do(func() { close(s.drained) })
	var wg sync.WaitGroup
	for _, p := range s.pools {
		wg.Go(func() { p.close(session.CodeGoingAway) })
	}
	wg.Wait()
}
