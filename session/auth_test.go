package session

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gqlbridge/gqlbridge/internal/scripted"
	"github.com/gqlbridge/gqlbridge/internal/testpeer"
)

// TestAuthFreshCredentialSurvivesTransientFailure: after a rejection the
// session asks for a fresh credential; when the attempt with it fails
// before the upstream could judge it (here HTTP 503), the next attempt uses
// that same fresh credential, and its rejection is "rejected again right
// after a fresh token": terminal, after exactly one refresh.
func TestAuthFreshCredentialSurvivesTransientFailure(t *testing.T) {
	t.Parallel()
	srv := scripted.Start(t, scripted.Options{Subprotocols: []string{TransportWS}, Upgrade: func(w http.ResponseWriter, r *http.Request, n int) bool {
		if n == 2 {
			http.Error(w, "restarting", http.StatusServiceUnavailable)
			return true
		}
		return false
	}}, func(p *scripted.Peer) {
		if _, ok := p.Expect(msgConnectionInit); ok {
			p.Close(4403, "Forbidden")
		}
	})
	hs := &handshakes{gate: make(chan struct{})} // the operation hears every failure
	c := dialTest(t, Config{URL: srv.URL, Handshake: hs.fn})
	p := newProbe()
	subscribe(t, c, p)
	close(hs.gate)
	e := asError(t, p.waitDone(t))
	if e.Class != ClassAuth || e.Code != 4403 {
		t.Fatalf("outcome %+v, want auth 4403", e)
	}
	var got []string
	for _, a := range hs.list() {
		s := "stale"
		if a.Refresh {
			s = "refresh"
		}
		got = append(got, s)
	}
	if strings.Join(got, ",") != "stale,refresh,stale" || srv.Conns() != 3 {
		t.Fatalf("handshakes %v over %d connections, want stale,refresh,stale over 3", got, srv.Conns())
	}
	if log, _, _ := p.snap(); joinLog(log) != "reconnecting:4403,reconnecting:0,done" {
		t.Fatalf("log %v", log)
	}
}

// TestAuthRefreshOwedAfterCallbackFailure: when the credential callback
// fails to produce the fresh credential, the next attempt asks for it again
// instead of sending the rejected one.
func TestAuthRefreshOwedAfterCallbackFailure(t *testing.T) {
	t.Parallel()
	srv := scripted.Start(t, tws, func(p *scripted.Peer) {
		m, ok := p.Expect(msgConnectionInit)
		if !ok {
			return
		}
		if !strings.Contains(string(m.Payload), "fresh") {
			p.Close(4401, "token expired")
			return
		}
		p.SendMsg(msgConnectionAck, "", "")
		sub, ok := p.Expect(msgSubscribe)
		if !ok {
			return
		}
		p.SendMsg(msgNext, sub.ID, `{"data":{}}`)
		p.Drain()
	})
	var (
		mu       sync.Mutex
		calls    []bool
		failOnce = true
		token    = "stale"
		gate     = make(chan struct{}) // the operation hears every failure
	)
	c := dialTest(t, Config{URL: srv.URL, Handshake: func(ctx context.Context, a Attempt) (Handshake, error) {
		<-gate
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, a.Refresh)
		if a.Refresh {
			if failOnce {
				failOnce = false
				return Handshake{}, errors.New("token service unavailable")
			}
			token = "fresh"
		}
		return Handshake{InitPayload: []byte(`{"token":"` + token + `"}`)}, nil
	}})
	p := newProbe()
	subscribe(t, c, p)
	close(gate)
	p.waitNexts(t, 1)
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 3 || calls[0] || !calls[1] || !calls[2] {
		t.Fatalf("Refresh per call %v, want false, true (failed), true", calls)
	}
	if srv.Conns() != 2 {
		t.Fatalf("%d connections, want 2: the rejected credential was sent again", srv.Conns())
	}
	expectLogPrefix(t, p, "reconnecting:4401", "reconnecting:0", "subscribed", "next")
}

// nodeAuthPeer starts the reference server of proto with opts and a
// session that sends its token, fresh or not: the server judges only by
// what it does with the connection.
func nodeAuthPeer(t *testing.T, proto string, opts testpeer.NodeOptions) (*testpeer.Node, *Conn, *handshakes, *states) {
	t.Helper()
	opts.Protocol, opts.Token = testpeer.Protocol(proto), "tok"
	n := testpeer.StartNode(t, opts)
	hs, st := &handshakes{payload: func(Attempt) string { return string(bearer("tok")) }}, &states{}
	c := dialTest(t, Config{URL: n.URL, Subprotocols: []string{proto}, Handshake: hs.fn, OnState: st.fn,
		// stable_after keeps its default (10s): no connection here lives
		// that long, so none is ever healthy.
		Backoff: Backoff{Initial: 5 * time.Millisecond, Max: 100 * time.Millisecond}})
	return n, c, hs, st
}

// TestRealRefreshAfterServedCredential: the reference servers acknowledge
// the credential, send results and then close 4403 "token expired", again
// and again, each time within milliseconds of a refresh. A credential the
// upstream acknowledged and served results with was good: its rejection
// asks for a fresh one every time, and the operation keeps running.
func TestRealRefreshAfterServedCredential(t *testing.T) {
	t.Parallel()
	for _, proto := range []string{TransportWS, LegacyWS} {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			n, c, hs, st := nodeAuthPeer(t, proto, testpeer.NodeOptions{CloseAfterResults: 2, ExpiryCloseCode: 4403})
			p := newProbe()
			if _, err := c.Subscribe(ticker(0, 10), p); err != nil {
				t.Fatal(err)
			}
			p.waitFor(t, 20*time.Second, "three refreshes, results after each", func(p *probe) bool {
				return strings.Count(joinLog(p.log), "resubscribed,next") >= 3 || len(p.dones) > 0
			})
			if _, _, dones := p.snap(); len(dones) != 0 {
				t.Fatalf("the operation ended: %v", dones)
			}
			c.Close(CodeNormal, nil) // settles the counts
			bo := st.backoffs()
			for _, b := range bo {
				if b.Cause.Class != ClassAuth || b.Cause.Code != 4403 || b.Cause.Reason != "token expired" || b.Cause.BeforeAck {
					t.Fatalf("backoff cause %+v, want only 4403 token expired after the ack", b.Cause)
				}
			}
			all := hs.list()
			if len(bo) < 3 || len(all) < len(bo) || all[0].Refresh {
				t.Fatalf("%d rejections, handshakes %+v", len(bo), all)
			}
			for _, a := range all[1:] {
				if !a.Refresh || a.Cause == nil || a.Cause.Code != 4403 {
					t.Fatalf("handshakes %+v: every attempt after a rejection asks for a fresh credential", all)
				}
			}
			if s := n.Stats(t); s.Rejected != 0 {
				t.Fatalf("the server rejected %d connection_init", s.Rejected)
			}
		})
	}
}

// TestRealRefreshLoopGuard: a fresh credential that the reference server
// acknowledges and then refuses for every operation, closing 4403 at the
// subscribe before any result, is not refreshed again: the operations end,
// after one refresh when the server refuses from the start, after two when
// a refreshed credential first served results and expired.
func TestRealRefreshLoopGuard(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		opts      testpeer.NodeOptions
		refreshes int
	}{
		{"refuses every subscribe", testpeer.NodeOptions{RejectSubscribeFrom: 1}, 1},
		{"serves, expires, then refuses", testpeer.NodeOptions{CloseAfterResults: 2, ExpiryCloseCode: 4403, RejectSubscribeFrom: 3}, 2},
	} {
		for _, proto := range []string{TransportWS, LegacyWS} {
			t.Run(tc.name+"/"+proto, func(t *testing.T) {
				t.Parallel()
				n, c, hs, _ := nodeAuthPeer(t, proto, tc.opts)
				p := newProbe()
				if _, err := c.Subscribe(ticker(0, 10), p); err != nil {
					t.Fatal(err)
				}
				e := asError(t, p.waitDone(t))
				<-c.Done()
				if e.Class != ClassAuth || e.Code != 4403 || e.Reason != "Forbidden" || e.BeforeAck || e.Exhausted {
					t.Fatalf("outcome %+v (%v), want terminal 4403 Forbidden after the ack", e, e)
				}
				all, refreshes := hs.list(), hs.refreshes()
				if len(refreshes) != tc.refreshes || len(all) != tc.refreshes+1 || all[0].Refresh {
					t.Fatalf("handshakes %+v, want %d, all but the first refreshing", all, tc.refreshes+1)
				}
				if s := n.Stats(t); s.Inits != tc.refreshes+1 || s.Rejected != 0 {
					t.Fatalf("the server saw %d connection_init (%d rejected), want %d", s.Inits, s.Rejected, tc.refreshes+1)
				}
				if log, _, _ := p.snap(); strings.Count(joinLog(log), "reconnecting:4403") != tc.refreshes || log[len(log)-1] != "done" {
					t.Fatalf("log %v", log)
				}
			})
		}
	}
}
