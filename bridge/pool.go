package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/gqlbridge/gqlbridge/internal/redaction"
	"github.com/gqlbridge/gqlbridge/session"
)

// pooledConn is one upstream connection and the operations it carries.
type pooledConn struct {
	c    *session.Conn
	ops  int // operations the pool placed here and not yet removed
	idle *time.Timer
	gone bool // removed from the pool

	// For the status page; guarded by the pool's mu.
	state       session.State
	subprotocol string
	since       time.Time
	attempt     int
}

// upstreamPool holds the connections and shared operations of one upstream.
type upstreamPool struct {
	name    string
	up      *Upstream
	log     *slog.Logger
	metrics *Metrics
	in      prometheus.Counter // results read from the upstream; nil without metrics
	budget  *queueBudget       // the server's bound on queued bytes

	mu       sync.Mutex
	conns    map[string][]*pooledConn // by credential identity
	shared   map[string]*fanout       // by dedup key
	shutdown bool
	events   []ConnEvent    // recent connection events, newest last
	reserved int            // open streams on this upstream
	closing  sync.WaitGroup // idle closes under way
}

func newUpstreamPool(name string, up *Upstream, log *slog.Logger, m *Metrics, budget *queueBudget) *upstreamPool {
	return &upstreamPool{name: name, up: up, log: log.With("upstream", name), metrics: m, in: m.eventIn(name),
		budget: budget, conns: map[string][]*pooledConn{}, shared: map[string]*fanout{}}
}

var errShuttingDown = errors.New("bridge: shutting down")

// attach connects s to an upstream operation for req: an identical running
// one when deduplication is on, else a new one on a connection with room.
// The returned detach must be called when the subscriber leaves.
func (p *upstreamPool) attach(identity string, req session.Request, key string, s *subscriber) (detach func(), err error) {
	p.mu.Lock()
	if p.shutdown {
		p.mu.Unlock()
		return nil, errShuttingDown
	}
	if key != "" {
		if f := p.shared[key]; f != nil {
			if f.join(s) {
				p.mu.Unlock()
				p.metrics.subscriberJoined(p.name, true)
				return func() { p.detach(f, s) }, nil
			}
			p.supersedeLocked(f) // resume.go
		}
	}
	pc, err := p.pickLocked(identity)
	if err != nil {
		p.mu.Unlock()
		return nil, err
	}
	f := &fanout{key: key, pc: pc, pool: p, subs: []*subscriber{s}}
	f.followCursor(req) // resume.go
	if key != "" {
		p.shared[key] = f
	}
	p.mu.Unlock()

	// Counted before Subscribe so that the detach of a failed one balances.
	p.metrics.subscriberJoined(p.name, false)
	// Subscribe outside the pool lock: it may call the fanout's handler.
	op, err := pc.c.Subscribe(req, f)
	if err != nil {
		p.detach(f, s)
		return nil, err
	}
	if !f.setOp(op) {
		op.Stop()
	}
	return func() { p.detach(f, s) }, nil
}

// pickLocked returns a connection of identity with room for one more
// operation, dialing one when none has. Dial does not block, so concurrent
// first subscribers share that one dial.
func (p *upstreamPool) pickLocked(identity string) (*pooledConn, error) {
	list := p.conns[identity]
	live := list[:0]
	var pick *pooledConn
	for _, pc := range list {
		select {
		case <-pc.c.Done():
			pc.gone = true // failed terminally; its operations had their outcome
			continue
		default:
		}
		live = append(live, pc)
		if pick == nil && pc.ops < p.up.MaxOpsPerConn {
			pick = pc
		}
	}
	clear(list[len(live):])
	p.conns[identity] = live
	if pick == nil {
		cfg := p.up.Session
		if p.up.HandshakeFor != nil {
			cfg.Handshake = p.up.HandshakeFor(identity)
		}
		userHook := cfg.OnState
		prev := ""
		pick = &pooledConn{state: session.StateConnecting, since: time.Now()}
		pc := pick
		cfg.OnState = func(sc session.StateChange) {
			p.logState(sc)
			p.record(pc, sc)
			if sc.State == session.StateReady && !sc.Rotated {
				p.upstreamBack(pc)
			}
			p.metrics.connState(p.name, sc)
			next := sc.State.String()
			if sc.State == session.StateClosed {
				next = ""
			}
			if next != prev {
				p.metrics.connMoved(p.name, prev, next)
				prev = next
			}
			if userHook != nil {
				userHook(sc)
			}
		}
		c, err := session.Dial(cfg)
		if err != nil {
			return nil, err
		}
		pick.c = c
		p.conns[identity] = append(p.conns[identity], pick)
	}
	pick.ops++
	if pick.idle != nil {
		pick.idle.Stop()
		pick.idle = nil
	}
	return pick, nil
}

// upstreamBack tells every other connection of the upstream that it is
// reachable (pc was just acknowledged): those waiting out a backoff retry
// now instead of each finding out on its own, up to the backoff cap later.
// After an outage the first connection back brings the others with it.
func (p *upstreamPool) upstreamBack(pc *pooledConn) {
	p.mu.Lock()
	var others []*session.Conn
	for _, list := range p.conns {
		for _, o := range list {
			if o != pc && o.c != nil && !o.gone {
				others = append(others, o.c)
			}
		}
	}
	p.mu.Unlock()
	for _, c := range others {
		c.RetryNow()
	}
}

// detach removes s; the last subscriber of an operation stops it, and a
// connection left without operations closes after the idle grace period.
func (p *upstreamPool) detach(f *fanout, s *subscriber) {
	last, op := f.leave(s)
	p.metrics.subscriberLeft(p.name)
	if !last {
		return
	}
	p.mu.Lock()
	if f.key != "" && p.shared[f.key] == f {
		delete(p.shared, f.key)
	}
	p.metrics.operationEnded(p.name)
	pc := f.pc
	pc.ops--
	if pc.ops == 0 && !pc.gone && !p.shutdown {
		pc.idle = time.AfterFunc(p.up.IdleTimeout, func() { p.closeIdle(pc) })
	}
	p.mu.Unlock()
	if op != nil {
		op.Stop()
	}
}

func (p *upstreamPool) closeIdle(pc *pooledConn) {
	p.mu.Lock()
	if pc.ops > 0 || pc.gone || p.shutdown {
		p.mu.Unlock()
		return
	}
	pc.gone = true
	for id, list := range p.conns {
		for i, x := range list {
			if x == pc {
				p.conns[id] = append(list[:i], list[i+1:]...)
				break
			}
		}
	}
	p.closing.Add(1)
	p.mu.Unlock()
	defer p.closing.Done()
	pc.c.Close(session.CodeNormal, nil)
}

// close shuts every connection with code (CodeGoingAway when the bridge
// stops).
func (p *upstreamPool) close(code session.CloseCode) {
	p.mu.Lock()
	p.shutdown = true
	var all []*pooledConn
	for _, list := range p.conns {
		for _, pc := range list {
			if pc.idle != nil {
				pc.idle.Stop()
			}
			pc.gone = true
			all = append(all, pc)
		}
	}
	clear(p.conns)
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, pc := range all {
		wg.Go(func() { pc.c.Close(code, errShuttingDown) })
	}
	wg.Wait()
	p.closing.Wait()
}

// snapshot describes the pool for the status page and tests.
func (p *upstreamPool) snapshot() UpstreamSnapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := UpstreamSnapshot{Name: p.name, URL: redaction.URL(p.up.Session.URL),
		Subscriptions: p.reserved, Events: append([]ConnEvent(nil), p.events...)}
	// p.shared holds every deduplicable operation, most with one subscriber.
	for _, f := range p.shared {
		if f.subscribers() > 1 {
			s.Shared++
		}
	}
	for _, list := range p.conns {
		for _, pc := range list {
			s.Connections = append(s.Connections, ConnSnapshot{State: pc.state, Subprotocol: pc.subprotocol,
				Operations: pc.ops, Since: pc.since, Attempt: pc.attempt})
			s.Operations += pc.ops
		}
	}
	return s
}

// maxEvents bounds the recent connection events kept per upstream.
const maxEvents = 50

// record keeps the state of pc and notable events for the status page.
func (p *upstreamPool) record(pc *pooledConn, sc session.StateChange) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	pc.state, pc.since, pc.attempt = sc.State, now, sc.Attempt
	if sc.Subprotocol != "" {
		pc.subprotocol = sc.Subprotocol
	}
	ev := ConnEvent{At: now}
	switch {
	case sc.State == session.StateReady && sc.Rotated:
		ev.Kind = EventRotated
	case sc.State == session.StateBackoff:
		ev.Kind = EventReconnect
		if sc.Cause.Class == session.ClassAuth {
			ev.Kind = EventRefresh
		}
	case sc.State == session.StateClosed && sc.Cause != nil:
		ev.Kind = EventFailed
	default:
		return
	}
	if c := sc.Cause; c != nil {
		ev.Code, ev.Reason, ev.Class, ev.HTTPStatus = int(c.Code), c.Reason, c.Class.String(), c.HTTPStatus
	}
	ev.Attempt = sc.Attempt
	if len(p.events) == maxEvents {
		copy(p.events, p.events[1:])
		p.events = p.events[:maxEvents-1]
	}
	p.events = append(p.events, ev)
}

// logState writes one line per connection state change, never per event.
func (p *upstreamPool) logState(sc session.StateChange) {
	switch sc.State {
	case session.StateReady:
		if sc.Rotated {
			p.log.Info("upstream connection rotated to a fresh credential", "subprotocol", sc.Subprotocol)
			return
		}
		p.log.Info("upstream connection ready", "subprotocol", sc.Subprotocol, "attempt", sc.Attempt, "ack_latency", sc.AckLatency)
	case session.StateBackoff:
		p.log.Warn("upstream connection lost, reconnecting", "close_code", sc.Cause.Code, "close_reason", sc.Cause.Reason,
			"class", sc.Cause.Class.String(), "attempt", sc.Attempt, "delay", sc.Delay)
	case session.StateClosed:
		if sc.Cause != nil {
			lvl := slog.LevelWarn
			if sc.Cause.Class == session.ClassBridgeFault {
				lvl = slog.LevelError // the upstream says we broke the protocol
			}
			p.log.Log(context.Background(), lvl, "upstream connection failed", "close_code", sc.Cause.Code, "close_reason", sc.Cause.Reason,
				"http_status", sc.Cause.HTTPStatus, "class", sc.Cause.Class.String())
		} else {
			p.log.Info("upstream connection closed")
		}
	}
}

// reserve counts a stream on the upstream, against its cap if it has one.
func (p *upstreamPool) reserve() (func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.up.MaxSubscriptions > 0 && p.reserved >= p.up.MaxSubscriptions {
		return nil, &RequestError{Code: codes.ResourceExhausted, Reason: ReasonLimitReached,
			Msg: fmt.Sprintf("upstream %q serves at most %d subscriptions on this replica; retry later", p.name, p.up.MaxSubscriptions)}
	}
	p.reserved++
	return func() {
		p.mu.Lock()
		p.reserved--
		p.mu.Unlock()
	}, nil
}
