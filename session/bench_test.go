package session

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/gqlbridge/gqlbridge/internal/scripted"
)

// countingHandler counts results and closes done at the target.
type countingHandler struct {
	n      atomic.Int64
	target int64
	bytes  atomic.Int64
	done   chan struct{}
	ended  chan error
}

func (h *countingHandler) OnNext(p []byte) {
	h.bytes.Add(int64(len(p)))
	if h.n.Add(1) == h.target {
		close(h.done)
	}
}
func (h *countingHandler) OnEvent(Event)    {}
func (h *countingHandler) OnDone(err error) { h.ended <- err }

// BenchmarkEventsThroughSession: a scripted upstream on loopback sends b.N
// "next" frames of 1 KiB as fast as it can to one operation; the benchmark
// measures how fast they reach the operation's handler. allocs/op counts the
// whole process, the scripted server's writes included.
func BenchmarkEventsThroughSession(b *testing.B) {
	for _, proto := range protocols() {
		b.Run(proto, func(b *testing.B) {
			sub, next := wire(proto)
			start := make(chan int, 1)
			srv := scripted.Start(b, scripted.Options{Subprotocols: []string{proto}}, func(p *scripted.Peer) {
				if _, ok := p.Handshake(); !ok {
					return
				}
				m, ok := p.Expect(sub)
				if !ok {
					return
				}
				head := `{"type":"` + next + `","id":"` + m.ID + `","payload":{"data":{"blob":"`
				tail := `"}}}`
				frame := []byte(head + strings.Repeat("x", 1024-len(head)-len(tail)) + tail)
				n := <-start
				ctx := context.Background() // never cancelled: no watcher per write
				for range n {
					if p.Conn.Write(ctx, websocket.MessageText, frame) != nil {
						return
					}
				}
				p.Drain()
			})
			c, err := Dial(Config{URL: srv.URL, Subprotocols: []string{proto}, KeepAlive: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close(CodeNormal, nil)
			h := &countingHandler{target: int64(b.N), done: make(chan struct{}), ended: make(chan error, 1)}
			if _, err := c.Subscribe(Request{Query: "subscription { blob }"}, h); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(1024)
			b.ResetTimer()
			t0 := time.Now()
			start <- b.N
			select {
			case <-h.done:
			case err := <-h.ended:
				b.Fatalf("operation ended after %d results: %v", h.n.Load(), err)
			case <-time.After(5 * time.Minute):
				b.Fatal("results stopped arriving")
			}
			elapsed := time.Since(t0)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
			if got := h.bytes.Load(); got < int64(b.N)*900 {
				b.Fatalf("%d bytes for %d results", got, b.N)
			}
		})
	}
}
