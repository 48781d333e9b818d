package session

import (
	"context"
	"net"
	"net/http"
	"testing"
)

// TestBufferedClient: an *http.Transport is copied with its dials wrapped
// in a read buffer (the caller's transport is left alone); any other
// RoundTripper is used as it is.
func TestBufferedClient(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = c.Write([]byte("hello"))
			c.Close()
		}
	}()
	orig := &http.Transport{}
	hc := bufferedClient(&http.Client{Transport: orig})
	if orig.DialContext != nil {
		t.Fatal("the caller's transport was changed")
	}
	nc, err := hc.Transport.(*http.Transport).DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	bc, ok := nc.(*bufferedConn)
	if !ok || bc.r.Size() != readBufferSize {
		t.Fatalf("dial returned %T, want a *bufferedConn with a %d-byte buffer", nc, readBufferSize)
	}
	buf := make([]byte, 16)
	if n, err := nc.Read(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}

	other := &http.Client{Transport: roundTripperFunc(func(*http.Request) (*http.Response, error) { return nil, nil })}
	if bufferedClient(other) != other {
		t.Fatal("a client with a custom RoundTripper was replaced")
	}
	if tr, ok := bufferedClient(&http.Client{}).Transport.(*http.Transport); !ok || tr == http.DefaultTransport || tr.DialContext == nil {
		t.Fatal("the default transport was not copied with a buffered dial")
	}
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
