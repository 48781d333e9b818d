package bridge

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gqlbridge/gqlbridge/session"
)

// Metrics are the bridge's Prometheus metrics (docs/deploy.md lists them). Labels carry
// upstream names, states, close codes and reasons from a fixed set: never a
// credential or a caller-supplied value. A nil *Metrics records nothing.
type Metrics struct {
	connections   *prometheus.GaugeVec
	subscribers   *prometheus.GaugeVec
	operations    *prometheus.GaugeVec
	eventsInC     *prometheus.CounterVec
	eventsOut     *prometheus.CounterVec
	dropped       *prometheus.CounterVec
	queuedBytes   prometheus.GaugeFunc
	budget        atomic.Pointer[queueBudget] // what queuedBytes reports
	reconnects    *prometheus.CounterVec
	terminations  *prometheus.CounterVec
	ackLatency    *prometheus.HistogramVec
	subscribeReqs *prometheus.CounterVec
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "gqlbridge_upstream_connections",
			Help: "Upstream connections by state."}, []string{"upstream", "state"}),
		subscribers: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "gqlbridge_subscribers",
			Help: "Open Subscribe streams."}, []string{"upstream"}),
		operations: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "gqlbridge_upstream_operations",
			Help: "Upstream operations (after deduplication)."}, []string{"upstream"}),
		eventsInC: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gqlbridge_events_in_total",
			Help: "Results received from upstreams."}, []string{"upstream"}),
		eventsOut: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gqlbridge_events_out_total",
			Help: "Results sent to callers."}, []string{"upstream"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gqlbridge_events_dropped_total",
			Help: "Results dropped because a caller read too slowly (drop_oldest policy)."}, []string{"upstream"}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gqlbridge_reconnects_total",
			Help: "Upstream reconnects by the close code that caused them."}, []string{"upstream", "close_code", "class"}),
		terminations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gqlbridge_terminations_total",
			Help: "Ended Subscribe streams by gRPC code and reason."}, []string{"upstream", "code", "reason"}),
		ackLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "gqlbridge_upstream_ack_latency_seconds",
			Help: "Time from dial to connection_ack.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"upstream"}),
		subscribeReqs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gqlbridge_token_refreshes_total",
			Help: "Credential refreshes requested after an upstream rejected a credential."}, []string{"upstream"}),
	}
	// Read when scraped, so that results are not counted twice over.
	m.queuedBytes = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gqlbridge_queued_bytes",
		Help: "Bytes of results held for callers in subscribers' queues, each result counted once."},
		func() float64 {
			if b := m.budget.Load(); b != nil {
				return float64(b.used.Load())
			}
			return 0
		})
	reg.MustRegister(m.connections, m.subscribers, m.operations, m.eventsInC, m.eventsOut, m.dropped, m.queuedBytes,
		m.reconnects, m.terminations, m.ackLatency, m.subscribeReqs)
	return m
}

// eventIn returns the counter of results read from upstream, looked up once
// rather than per result; nil without metrics.
func (m *Metrics) eventIn(upstream string) prometheus.Counter {
	if m == nil {
		return nil
	}
	return m.eventsInC.WithLabelValues(upstream)
}

func (m *Metrics) eventOut(upstream string) prometheus.Counter {
	if m == nil {
		return nil
	}
	return m.eventsOut.WithLabelValues(upstream)
}

func (m *Metrics) dropCounter(upstream string) func() {
	if m == nil {
		return nil
	}
	c := m.dropped.WithLabelValues(upstream)
	return c.Inc
}

// reportBudget makes gqlbridge_queued_bytes report b.
func (m *Metrics) reportBudget(b *queueBudget) {
	if m != nil {
		m.budget.Store(b)
	}
}

func (m *Metrics) subscriberJoined(upstream string, shared bool) {
	if m == nil {
		return
	}
	m.subscribers.WithLabelValues(upstream).Inc()
	if !shared {
		m.operations.WithLabelValues(upstream).Inc()
	}
}

func (m *Metrics) subscriberLeft(upstream string) {
	if m != nil {
		m.subscribers.WithLabelValues(upstream).Dec()
	}
}

func (m *Metrics) operationEnded(upstream string) {
	if m != nil {
		m.operations.WithLabelValues(upstream).Dec()
	}
}

func (m *Metrics) terminated(upstream, code, reason string) {
	if m != nil {
		m.terminations.WithLabelValues(upstream, code, reason).Inc()
	}
}

// connState tracks connection states: each change moves one connection
// from its previous state's gauge to the new one.
func (m *Metrics) connState(upstream string, sc session.StateChange) {
	if m == nil {
		return
	}
	switch sc.State {
	case session.StateReady:
		m.ackLatency.WithLabelValues(upstream).Observe(sc.AckLatency.Seconds())
	case session.StateBackoff:
		m.reconnects.WithLabelValues(upstream, strconv.Itoa(int(sc.Cause.Code)), sc.Cause.Class.String()).Inc()
		if sc.Cause.Class == session.ClassAuth {
			m.subscribeReqs.WithLabelValues(upstream).Inc()
		}
	}
}

// connMoved moves one connection between state gauges; "" is no state.
func (m *Metrics) connMoved(upstream, from, to string) {
	if m == nil {
		return
	}
	if from != "" {
		m.connections.WithLabelValues(upstream, from).Dec()
	}
	if to != "" {
		m.connections.WithLabelValues(upstream, to).Inc()
	}
}
