// Package upstream is a purpose-built GraphQL-over-WebSocket server for the
// benchmarks. It speaks graphql-transport-ws, and what a subscription
// streams is chosen by its variables (see [Vars]), so every consumer (the
// raw reader, genqlient, the Node client, the bridge) asks for the same
// thing the same way.
//
// It is built not to be the bottleneck: results are written as pre-framed
// WebSocket frames from a template (only n, ts and the pad length change),
// many frames per write system call, straight to the socket. The handshake
// and the client's frames go through gorilla/websocket.
package upstream

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Vars are a subscription's variables; they choose what it streams.
type Vars struct {
	// Mode is burst (Count results as fast as possible, then complete),
	// rate (Count results at Rate per second, then complete) or periodic
	// (one result every PeriodMS for ever, n counted per Key).
	Mode     string  `json:"mode"`
	Count    int64   `json:"count,omitempty"`
	Rate     float64 `json:"rate,omitempty"`
	PeriodMS int     `json:"periodMs,omitempty"`
	// Key names a subscriber across reconnects (periodic): its n keeps
	// counting when the operation is resubscribed.
	Key string `json:"key,omitempty"`
	// Gate, when set, holds burst and rate results until Release(Gate).
	Gate string `json:"gate,omitempty"`
}

// Query is the document the consumers send; the server only reads the
// variables.
const Query = `subscription Tick($mode: String!, $count: Int, $rate: Float, $periodMs: Int, $key: String, $gate: String) {
  tick(mode: $mode, count: $count, rate: $rate, periodMs: $periodMs, key: $key, gate: $gate) { n ts pad }
}`

// Server is the benchmark upstream.
type Server struct {
	addr string

	mu       sync.Mutex
	ln       net.Listener
	hs       *http.Server
	conns    map[*conn]struct{}
	gates    map[string]chan struct{}
	counters map[string]*atomic.Int64
	active   map[string]int      // live periodic operations per key
	dupKeys  map[string]struct{} // keys that had two live operations at once
	wg       sync.WaitGroup      // connection goroutines

	upgrades   atomic.Int64
	subscribes atomic.Int64
	sent       atomic.Int64
}

var upgrader = websocket.Upgrader{
	Subprotocols:    []string{"graphql-transport-ws"},
	CheckOrigin:     func(*http.Request) bool { return true },
	ReadBufferSize:  16 << 10,
	WriteBufferSize: 4 << 10,
}

// Start listens on addr (127.0.0.1:0 picks a port).
func Start(addr string) (*Server, error) {
	s := &Server{conns: map[*conn]struct{}{}, gates: map[string]chan struct{}{},
		counters: map[string]*atomic.Int64{}, active: map[string]int{}, dupKeys: map[string]struct{}{}}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s.addr = ln.Addr().String()
	s.serve(ln)
	return s, nil
}

func (s *Server) serve(ln net.Listener) {
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.mu.Lock()
	s.ln, s.hs = ln, hs
	s.mu.Unlock()
	go func() { _ = hs.Serve(ln) }()
}

// URL is the endpoint.
func (s *Server) URL() string { return "ws://" + s.addr + "/graphql" }

// Addr is the listening address.
func (s *Server) Addr() string { return s.addr }

// Kill stops the server the way a crashed process would: the listener and
// every connection close at once, without close frames.
func (s *Server) Kill() {
	s.mu.Lock()
	hs := s.hs
	s.hs, s.ln = nil, nil
	var all []*conn
	for c := range s.conns {
		all = append(all, c)
	}
	s.mu.Unlock()
	if hs != nil {
		_ = hs.Close()
	}
	for _, c := range all {
		if tc, ok := c.nc.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.nc.Close()
	}
	s.wg.Wait()
}

// Restart listens again on the same address after Kill.
func (s *Server) Restart() error {
	var err error
	for i := 0; i < 50; i++ {
		var ln net.Listener
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			s.serve(ln)
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// Close is Kill.
func (s *Server) Close() { s.Kill() }

// Release lets the operations waiting on gate stream.
func (s *Server) Release(gate string) {
	close(s.gate(gate))
}

func (s *Server) gate(name string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.gates[name]
	if g == nil {
		g = make(chan struct{})
		s.gates[name] = g
	}
	return g
}

// Stats are the server's counters since the last ResetStats.
type Stats struct {
	Upgrades   int64 // WebSocket upgrades (dials that reached the server)
	Subscribes int64
	Sent       int64 // results written
	Conns      int   // connections open now
	DupKeys    int   // periodic keys that had two live operations at once
	LiveKeys   int   // periodic keys with a live operation
}

// Stats reports the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	live := 0
	for _, n := range s.active {
		if n > 0 {
			live++
		}
	}
	return Stats{Upgrades: s.upgrades.Load(), Subscribes: s.subscribes.Load(), Sent: s.sent.Load(),
		Conns: len(s.conns), DupKeys: len(s.dupKeys), LiveKeys: live}
}

// ResetStats zeroes the counters (not the per-key n).
func (s *Server) ResetStats() {
	s.upgrades.Store(0)
	s.subscribes.Store(0)
	s.sent.Store(0)
	s.mu.Lock()
	clear(s.dupKeys)
	s.mu.Unlock()
}

func (s *Server) counter(key string) *atomic.Int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.counters[key]
	if c == nil {
		c = new(atomic.Int64)
		s.counters[key] = c
	}
	s.active[key]++
	if s.active[key] > 1 {
		s.dupKeys[key] = struct{}{}
	}
	return c
}

func (s *Server) release(key string) {
	s.mu.Lock()
	s.active[key]--
	s.mu.Unlock()
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	s.upgrades.Add(1)
	c := &conn{s: s, ws: ws, nc: ws.NetConn(), ops: map[string]*op{}}
	s.mu.Lock()
	if s.hs == nil { // killed meanwhile
		s.mu.Unlock()
		_ = c.nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	c.serve()
}

// conn is one client connection.
type conn struct {
	s  *Server
	ws *websocket.Conn // reading only
	nc net.Conn        // every write goes here, under wmu

	wmu sync.Mutex

	mu       sync.Mutex
	ops      map[string]*op
	periodic []*op
	ticking  bool
	closed   bool
	wg       sync.WaitGroup // operation goroutines
}

type op struct {
	c     *conn
	id    string
	v     Vars
	tpl   nextTemplate
	stop  chan struct{}
	n     *atomic.Int64 // periodic: shared per key
	pidx  int           // index in conn.periodic
	ended bool          // guarded by conn.mu
}

func (c *conn) write(b []byte) error {
	c.wmu.Lock()
	_, err := c.nc.Write(b)
	c.wmu.Unlock()
	return err
}

func (c *conn) serve() {
	c.ws.SetReadLimit(1 << 20)
	c.ws.SetPingHandler(func(data string) error {
		_ = c.write(append(appendHeader(nil, opPong, len(data)), data...))
		return nil
	})
	c.ws.SetCloseHandler(func(code int, _ string) error {
		p := binary.BigEndian.AppendUint16(nil, uint16(code))
		_ = c.write(append(appendHeader(nil, opClose, len(p)), p...))
		return nil
	})
	defer c.shutdown()
	for {
		mt, data, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		if mt != websocket.TextMessage {
			continue
		}
		var m struct {
			Type    string          `json:"type"`
			ID      string          `json:"id"`
			Payload json.RawMessage `json:"payload"`
		}
		if json.Unmarshal(data, &m) != nil {
			return
		}
		switch m.Type {
		case "connection_init":
			_ = c.write(appendText(nil, `{"type":"connection_ack"}`))
		case "ping":
			_ = c.write(appendText(nil, `{"type":"pong"}`))
		case "subscribe":
			if err := c.subscribe(m.ID, m.Payload); err != nil {
				return
			}
		case "complete":
			c.mu.Lock()
			o := c.ops[m.ID]
			c.mu.Unlock()
			if o != nil {
				c.end(o)
			}
		}
	}
}

var errDuplicateID = errors.New("duplicate operation id")

func (c *conn) subscribe(id string, payload json.RawMessage) error {
	var p struct {
		Variables Vars `json:"variables"`
	}
	if err := json.Unmarshal(payload, &p); err != nil {
		return err
	}
	o := &op{c: c, id: id, v: p.Variables, tpl: newNextTemplate(id), stop: make(chan struct{})}
	c.s.subscribes.Add(1)
	if o.v.Mode == "periodic" {
		o.n = c.s.counter(o.v.Key)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errors.New("closed")
	}
	if c.ops[id] != nil {
		c.mu.Unlock()
		return errDuplicateID
	}
	c.ops[id] = o
	switch o.v.Mode {
	case "periodic":
		o.pidx = len(c.periodic)
		c.periodic = append(c.periodic, o)
		if !c.ticking {
			c.ticking = true
			c.wg.Go(func() { c.tick(time.Duration(max(o.v.PeriodMS, 1)) * time.Millisecond) })
		}
	case "rate":
		c.wg.Go(o.runRate)
	default:
		c.wg.Go(o.runBurst)
	}
	c.mu.Unlock()
	return nil
}

// end removes o; its goroutine (if any) stops.
func (c *conn) end(o *op) {
	c.mu.Lock()
	c.endLocked(o)
	c.mu.Unlock()
}

func (c *conn) endLocked(o *op) {
	if o.ended {
		return
	}
	o.ended = true
	delete(c.ops, o.id)
	close(o.stop)
	if o.v.Mode == "periodic" {
		last := c.periodic[len(c.periodic)-1]
		c.periodic[o.pidx] = last
		last.pidx = o.pidx
		c.periodic[len(c.periodic)-1] = nil
		c.periodic = c.periodic[:len(c.periodic)-1]
		c.s.release(o.v.Key)
	}
}

func (c *conn) shutdown() {
	_ = c.nc.Close()
	c.mu.Lock()
	c.closed = true
	for _, o := range c.ops {
		c.endLocked(o)
	}
	c.mu.Unlock()
	c.wg.Wait()
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
}

// complete sends complete for o and forgets it.
func (o *op) complete(buf []byte) {
	buf = appendText(buf, `{"id":"`+o.id+`","type":"complete"}`)
	_ = o.c.write(buf)
	o.c.end(o)
}

func (o *op) waitGate() bool {
	if o.v.Gate == "" {
		return true
	}
	select {
	case <-o.c.s.gate(o.v.Gate):
		return true
	case <-o.stop:
		return false
	}
}

func (o *op) stopped() bool {
	select {
	case <-o.stop:
		return true
	default:
		return false
	}
}

// runBurst writes Count results as fast as the socket takes them, about
// 128 KiB per write.
func (o *op) runBurst() {
	if !o.waitGate() {
		return
	}
	const flushAt = 128 << 10
	buf := make([]byte, 0, flushAt+4096)
	ts := time.Now().UnixNano()
	sent := int64(0)
	for n := int64(1); n <= o.v.Count; n++ {
		if n&63 == 0 {
			ts = time.Now().UnixNano()
		}
		buf = o.tpl.appendNext(buf, n, ts)
		if len(buf) >= flushAt {
			if o.stopped() || o.c.write(buf) != nil {
				o.c.s.sent.Add(sent)
				return
			}
			o.c.s.sent.Add(n - sent)
			sent = n
			buf = buf[:0]
		}
	}
	o.c.s.sent.Add(o.v.Count - sent)
	if !o.stopped() {
		o.complete(buf)
	}
}

// runRate writes Count results at Rate per second, each stamped with the
// time it is written.
func (o *op) runRate() {
	if !o.waitGate() {
		return
	}
	interval := time.Duration(float64(time.Second) / max(o.v.Rate, 0.001))
	buf := make([]byte, 0, 4096)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	start := time.Now()
	for n := int64(1); n <= o.v.Count; n++ {
		if d := time.Until(start.Add(time.Duration(n-1) * interval)); d > 0 {
			t.Reset(d)
			select {
			case <-t.C:
			case <-o.stop:
				return
			}
		} else if o.stopped() {
			return
		}
		buf = o.tpl.appendNext(buf[:0], n, time.Now().UnixNano())
		if o.c.write(buf) != nil {
			return
		}
		o.c.s.sent.Add(1)
	}
	o.complete(buf[:0])
}

// tick serves the periodic operations of the connection: every 10 ms it
// sends one result to the next slice of them, so each gets one per period.
func (c *conn) tick(period time.Duration) {
	const step = 10 * time.Millisecond
	t := time.NewTicker(step)
	defer t.Stop()
	const flushAt = 128 << 10
	buf := make([]byte, 0, flushAt+4096)
	var due []*op
	cursor := 0
	credit := 0.0
	for {
		<-t.C
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return
		}
		n := len(c.periodic)
		credit += float64(n) * float64(step) / float64(period)
		k := min(int(credit), n)
		credit -= float64(k)
		due = due[:0]
		for i := 0; i < k; i++ {
			if cursor >= n {
				cursor = 0
			}
			due = append(due, c.periodic[cursor])
			cursor++
		}
		c.mu.Unlock()
		now := time.Now().UnixNano()
		for _, o := range due {
			buf = o.tpl.appendNext(buf, o.n.Add(1), now)
			if len(buf) >= flushAt {
				if c.write(buf) != nil {
					return
				}
				buf = buf[:0]
			}
		}
		if len(buf) > 0 {
			if c.write(buf) != nil {
				return
			}
			buf = buf[:0]
		}
		c.s.sent.Add(int64(len(due)))
	}
}
