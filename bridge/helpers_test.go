package bridge_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gqlbridge/gqlbridge/bridge"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/session"
)

// Helpers shared by the tests of issue 4 (validation, dedup, backpressure,
// load, the Node client). harness_test.go has the basic ones.

// waitTimeout bounds every wait on a condition.
const waitTimeout = 20 * time.Second

// waitUntil polls cond until it holds, failing the test with what after
// waitTimeout. The poll interval is not a synchronisation: only cond is.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// withMetrics gives cfg a fresh registry so tests can observe the bridge's
// gauges and counters.
func withMetrics(cfg *bridge.Config) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	cfg.Metrics = bridge.NewMetrics(reg)
	return reg
}

// metricValue returns the value of the gauge or counter name with exactly
// the given labels (0 when it does not exist yet).
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; !ok || v != lp.GetValue() {
					continue metrics
				}
			}
			switch {
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// subscribers is the bridge's count of open streams attached to upstream.
func subscribers(t *testing.T, reg *prometheus.Registry, upstream string) int {
	return int(metricValue(t, reg, "gqlbridge_subscribers", map[string]string{"upstream": upstream}))
}

// gate holds every upstream connection attempt in its handshake until it is
// opened. Tests use it to attach all subscribers before the upstream
// operation starts, so that each of them sees every event (a subscriber that
// joins a running deduplicated operation sees only live events).
type gate struct {
	open  chan struct{}
	dials atomic.Int32
}

func newGate() *gate { return &gate{open: make(chan struct{})} }

func (g *gate) handshake(ctx context.Context, _ session.Attempt) (session.Handshake, error) {
	g.dials.Add(1)
	select {
	case <-g.open:
		return session.Handshake{}, nil
	case <-ctx.Done():
		return session.Handshake{}, ctx.Err()
	}
}

// serveTCP serves cfg on a loopback port (with the request codec cmd/bridge
// installs, and opts) and returns the service and its address; everything
// stops in t.Cleanup. Unlike startBridge it leaves the clients to the test.
func serveTCP(t *testing.T, cfg bridge.Config, opts ...grpc.ServerOption) (*bridge.Server, string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	svc, err := bridge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(append([]grpc.ServerOption{svc.Codec()}, opts...)...) // as cmd/bridge wires it
	bridgev1.RegisterSubscriptionServiceServer(gs, svc)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = gs.Serve(lis); close(done) }()
	t.Cleanup(func() {
		svc.Close()
		gs.Stop()
		<-done
	})
	return svc, lis.Addr().String()
}

// dial connects a client to addr; the connection closes in t.Cleanup.
func dial(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// open starts a Subscribe call on client, cancelled in t.Cleanup.
func open(t *testing.T, client bridgev1.SubscriptionServiceClient, req *bridgev1.SubscribeRequest) *stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	s, err := client.Subscribe(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return &stream{t: t, s: s, cancel: cancel}
}

// tickN returns the n of a ticker result.
func tickN(t *testing.T, n *bridgev1.Next) int {
	t.Helper()
	var r struct {
		Data struct {
			Ticker struct {
				N int `json:"n"`
			} `json:"ticker"`
		} `json:"data"`
		Errors json.RawMessage `json:"errors"`
	}
	if err := json.Unmarshal(n.GetResult(), &r); err != nil || r.Data.Ticker.N == 0 || r.Errors != nil {
		t.Fatalf("result %q is not a tick: %v", n.GetResult(), err)
	}
	return r.Data.Ticker.N
}

// ownHTTP gives sc an HTTP client of its own that keeps no idle
// connections. A dial the session abandons (its connection was closed while
// it dialed) completes in the background and, on http.DefaultClient, parks
// in the shared idle pool: an open TCP connection to the test server that
// the server's Shutdown waits for and goleak reports.
func ownHTTP(t *testing.T, sc *session.Config) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true
	sc.HTTPClient = &http.Client{Transport: tr}
	t.Cleanup(tr.CloseIdleConnections)
}
