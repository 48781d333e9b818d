package session

import (
	"bufio"
	"context"
	"net"
	"net/http"
)

// readBufferSize is how much the session asks of an upstream socket per
// read(2). coder/websocket reads frames through a 4 KiB bufio.Reader, about
// four 1 KiB results per system call; on a busy subscription the reads, not
// the decoding, were then the larger part of the reader's CPU.
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

// bufferedConn is a net.Conn that reads through a buffer.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
