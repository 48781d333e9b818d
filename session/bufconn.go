package session

import (
	"bufio"
	"context"
	"net"
	"net/http"
)

// readBufferSize is how much the session asks of an upstream socket per
// read(2), beneath TLS when there is TLS: tls.Conn reads a record at a time,
// and on a busy subscription small reads, not the decoding, were the larger
// part of the reader's CPU. Without TLS the WebSocket reader's own buffer
// (wsconn.BufferSize) asks as much, and its reads pass straight through.
const readBufferSize = 64 << 10

// bufferedClient returns a copy of hc whose connections read through a
// readBufferSize buffer, beneath TLS when there is TLS, and are never kept
// for reuse. A client whose
// transport is not an *http.Transport is returned as it is.
func bufferedClient(hc *http.Client) *http.Client {
	var tr *http.Transport
	switch t := hc.Transport.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		tr = t.Clone()
	default:
		return hc
	}
	dial := tr.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	// An upgraded connection is never returned to the pool, and one whose
	// upgrade was refused (a 503, a 401) must not wait there either: it
	// would hold a socket and two goroutines until the idle timeout.
	tr.DisableKeepAlives = true
	tr.DialContext = bufferedDial(dial)
	if tr.DialTLSContext != nil {
		tr.DialTLSContext = bufferedDial(tr.DialTLSContext)
	}
	c := *hc
	c.Transport = tr
	return &c
}

func bufferedDial(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &bufferedConn{Conn: nc, r: bufio.NewReaderSize(nc, readBufferSize)}, nil
	}
}

// bufferedConn is a net.Conn that reads through a buffer, except a read
// of at least half the buffer's size while the buffer is empty, which goes
// straight to the connection: buffering it would only add a copy.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) {
	if len(p) >= readBufferSize/2 && c.r.Buffered() == 0 {
		return c.Conn.Read(p)
	}
	return c.r.Read(p)
}
