package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/Khan/genqlient/graphql"
	cws "github.com/coder/websocket"
	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gqlbridge/gqlbridge/bench/upstream"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// result is one consumer run.
type result struct {
	count   int64         // results received
	dur     time.Duration // subscribe sent → complete received
	dropped int64         // bridged: gaps in Next.sequence
	batches int64         // bridged with max_batch: Batch events received
	// peerCPU is the CPU a consumer in a process of its own (Node) used
	// from subscribe to complete, as that process measured it.
	peerCPU time.Duration
}

func (r result) rate() float64 { return float64(r.count) / r.dur.Seconds() }

// subscribeFrame is the graphql-transport-ws subscribe message.
func subscribeFrame(id string, v upstream.Vars) []byte {
	b, _ := json.Marshal(map[string]any{"id": id, "type": "subscribe",
		"payload": map[string]any{"query": upstream.Query, "variables": v}})
	return b
}

// dialRaw opens an acknowledged graphql-transport-ws connection with a bare
// gorilla/websocket client.
func dialRaw(ctx context.Context, url string) (*websocket.Conn, error) {
	d := websocket.Dialer{Subprotocols: []string{"graphql-transport-ws"}, HandshakeTimeout: 10 * time.Second,
		ReadBufferSize: 64 << 10, WriteBufferSize: 4 << 10}
	ws, resp, err := d.DialContext(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"connection_init"}`)); err != nil {
		ws.Close()
		return nil, err
	}
	_, msg, err := ws.ReadMessage()
	if err != nil || !bytes.Contains(msg, []byte(`"connection_ack"`)) {
		ws.Close()
		return nil, fmt.Errorf("no connection_ack: %q %v", msg, err)
	}
	return ws, nil
}

// subscribeRaw dials url and subscribes to v as operation "1". start is
// when the subscribe was sent; done closes the connection (so does the end
// of ctx).
func subscribeRaw(ctx context.Context, url string, v upstream.Vars) (ws *websocket.Conn, start time.Time, done func(), err error) {
	if ws, err = dialRaw(ctx, url); err != nil {
		return nil, start, nil, err
	}
	stop := context.AfterFunc(ctx, func() { ws.Close() })
	done = func() { stop(); ws.Close() }
	start = time.Now()
	if err := ws.WriteMessage(websocket.TextMessage, subscribeFrame("1", v)); err != nil {
		done()
		return nil, start, nil, err
	}
	return ws, start, done, nil
}

// rawConsume is consumer (a): a bare frame reader that reuses one buffer,
// counts results until complete, and optionally records each result's
// latency (receive time minus the ts the upstream stamped).
func rawConsume(ctx context.Context, url string, v upstream.Vars, lat *[]time.Duration) (result, error) {
	ws, start, done, err := subscribeRaw(ctx, url, v)
	if err != nil {
		return result{}, err
	}
	defer done()
	n, err := countResults(func() (io.Reader, error) { _, r, err := ws.NextReader(); return r, err }, lat)
	return result{count: n, dur: time.Since(start)}, err
}

// countResults reads messages into one reused buffer and counts results
// until complete, recording each result's latency (receive time minus the
// ts the upstream stamped) when lat is set.
func countResults(next func() (io.Reader, error), lat *[]time.Duration) (int64, error) {
	var buf bytes.Buffer
	buf.Grow(8 << 10)
	var n int64
	for {
		r, err := next()
		if err != nil {
			return n, err
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			return n, err
		}
		b := buf.Bytes()
		if len(b) < 128 && bytes.Contains(b, []byte(`"complete"`)) {
			return n, nil
		}
		if lat != nil {
			*lat = append(*lat, time.Duration(time.Now().UnixNano()-upstream.ParseTS(b)))
		}
		n++
	}
}

// coderConsume is a bare frame reader on coder/websocket, the library the
// bridge's session is built on, reading with a context that is never
// cancelled (docs/protocols.md §5): that library's ceiling on this machine.
func coderConsume(ctx context.Context, url string, v upstream.Vars) (result, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, _, err := cws.Dial(dctx, url, &cws.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		return result{}, err
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	stop := context.AfterFunc(ctx, func() { c.CloseNow() })
	defer stop()
	bg := context.Background()
	if err := c.Write(bg, cws.MessageText, []byte(`{"type":"connection_init"}`)); err != nil {
		return result{}, err
	}
	if _, msg, err := c.Read(bg); err != nil || !bytes.Contains(msg, []byte(`"connection_ack"`)) {
		return result{}, fmt.Errorf("no connection_ack: %q %v", msg, err)
	}
	start := time.Now()
	if err := c.Write(bg, cws.MessageText, subscribeFrame("1", v)); err != nil {
		return result{}, err
	}
	n, err := countResults(func() (io.Reader, error) { _, r, err := c.Reader(bg); return r, err }, nil)
	return result{count: n, dur: time.Since(start)}, err
}

// tcpCeiling reads the same stream as raw bytes off the socket, without
// WebSocket framing: what loopback TCP and the upstream can do together.
func tcpCeiling(ctx context.Context, url string, v upstream.Vars) (result, error) {
	ws, start, done, err := subscribeRaw(ctx, url, v)
	if err != nil {
		return result{}, err
	}
	defer done()
	nc := ws.NetConn()
	need := v.Count * int64(upstream.FrameLen("1"))
	buf := make([]byte, 256<<10)
	var got int64
	for got < need {
		n, err := nc.Read(buf)
		got += int64(n)
		if err != nil {
			return result{}, err
		}
	}
	return result{count: v.Count, dur: time.Since(start)}, nil
}

// What genqlient generates for
//
//	subscription Tick($mode: String!, …) { tick(…) { n ts pad } }
//
// (generate/operation.go.tmpl of v0.8.1), written out by hand.
type tickResponse struct {
	Tick tickTick `json:"tick"`
}

type tickTick struct {
	N   int64  `json:"n"`
	Ts  int64  `json:"ts"`
	Pad string `json:"pad"`
}

type tickWsResponse graphql.BaseResponse[*tickResponse]

func tickForwardData(interfaceChan interface{}, jsonRawMsg json.RawMessage) error {
	var gqlResp graphql.Response
	var wsResp tickWsResponse
	err := json.Unmarshal(jsonRawMsg, &gqlResp)
	if err != nil {
		return err
	}
	if len(gqlResp.Errors) == 0 {
		err = json.Unmarshal(jsonRawMsg, &wsResp)
		if err != nil {
			return err
		}
	} else {
		wsResp.Errors = gqlResp.Errors
	}
	dataChan_, ok := interfaceChan.(chan tickWsResponse)
	if !ok {
		return errors.New("failed to cast interface into 'chan tickWsResponse'")
	}
	dataChan_ <- wsResp
	return nil
}

// genqlientDialer is the gorilla adapter from genqlient's documentation; it
// keeps the connection so the benchmark can close it (genqlient's own Close
// panics on a subscription the server completed).
type genqlientDialer struct {
	d    *websocket.Dialer
	conn *websocket.Conn
}

func (g *genqlientDialer) DialContext(ctx context.Context, url string, h http.Header) (graphql.WSConn, error) {
	c, resp, err := g.d.DialContext(ctx, url, h)
	if resp != nil {
		resp.Body.Close()
	}
	g.conn = c
	return c, err
}

// genqlientConsume is consumer (b): Khan/genqlient's WebSocket client, used
// the way its generated code uses it.
func genqlientConsume(ctx context.Context, url string, v upstream.Vars) (result, error) {
	d := &genqlientDialer{d: websocket.DefaultDialer}
	client := graphql.NewClientUsingWebSocket(url, d)
	errCh, err := client.Start(ctx)
	if err != nil {
		return result{}, err
	}
	defer func() {
		d.conn.Close()
		go func() {
			for range errCh { // the reader reports the close; nobody else listens
			}
		}()
	}()
	dataChan := make(chan tickWsResponse)
	start := time.Now()
	if _, err := client.Subscribe(&graphql.Request{OpName: "Tick", Query: upstream.Query, Variables: &v}, dataChan, tickForwardData); err != nil {
		return result{}, err
	}
	var n int64
	for {
		select {
		case resp, ok := <-dataChan:
			if !ok {
				return result{count: n, dur: time.Since(start)}, nil
			}
			if resp.Data != nil {
				n++
			}
		case err := <-errCh:
			return result{}, fmt.Errorf("genqlient: %w", err)
		case <-ctx.Done():
			return result{}, ctx.Err()
		}
	}
}

// nodeConsume is consumer (c): the reference graphql-ws client in Node.
func nodeConsume(ctx context.Context, dir, url string, v upstream.Vars) (result, error) {
	vars, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(dir, "client.mjs"), url, upstream.Query, string(vars))
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return result{}, fmt.Errorf("node client: %v: %s", err, stderr.String())
	}
	var r struct {
		Count      int64   `json:"count"`
		Seconds    float64 `json:"seconds"`
		CPUSeconds float64 `json:"cpu_seconds"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return result{}, fmt.Errorf("node client output %q: %v", out, err)
	}
	return result{count: r.Count, dur: time.Duration(r.Seconds * float64(time.Second)),
		peerCPU: time.Duration(r.CPUSeconds * float64(time.Second))}, nil
}

// grpcClient dials the bridge.
func grpcClient(addr string) (*grpc.ClientConn, bridgev1.SubscriptionServiceClient, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, err
	}
	cc.Connect()
	return cc, bridgev1.NewSubscriptionServiceClient(cc), nil
}

// request is the Subscribe request for v on upstream "x".
func request(v upstream.Vars) *bridgev1.SubscribeRequest {
	b, _ := json.Marshal(v)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	st, err := structpb.NewStruct(m)
	if err != nil {
		panic(err)
	}
	return &bridgev1.SubscribeRequest{Upstream: "x", Query: upstream.Query, Variables: st}
}

// bridgedConsume is consumer (d): a Go gRPC client of the bridge. With
// maxBatch above 1 it asks for batches (SubscribeRequest.max_batch) and
// counts every result of each.
func bridgedConsume(ctx context.Context, client bridgev1.SubscriptionServiceClient, v upstream.Vars, maxBatch uint32, lat *[]time.Duration) (result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	req := request(v)
	req.MaxBatch = maxBatch
	stream, err := client.Subscribe(ctx, req)
	if err != nil {
		return result{}, err
	}
	var n, batches int64
	var seq uint64
	one := func(next *bridgev1.Next, at time.Time) {
		if lat != nil {
			*lat = append(*lat, time.Duration(at.UnixNano()-upstream.ParseTS(next.Result)))
		}
		n++
		seq = next.Sequence
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return result{}, err
		}
		switch ev := resp.Event.(type) {
		case *bridgev1.SubscribeResponse_Next:
			one(ev.Next, time.Now())
		case *bridgev1.SubscribeResponse_Batch:
			at := time.Now()
			batches++
			for _, next := range ev.Batch.GetNexts() {
				one(next, at)
			}
		}
	}
	return result{count: n, dur: time.Since(start), dropped: int64(seq) - n, batches: batches}, nil
}
