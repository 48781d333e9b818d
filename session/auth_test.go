package session

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/gqlbridge/gqlbridge/internal/scripted"
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
