package session

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/coder/websocket"
)

// FuzzConnUpstream plays an arbitrary upstream against a whole Conn, in
// fake time: the fuzzer chooses the protocol (first byte: even for
// graphql-transport-ws, odd for legacy graphql-ws) and the frames the
// upstream sends after connection_init, one per line. In a line, "$id"
// stands for the id of the client's latest subscribe/start (the fuzzer
// cannot guess ids); a line "!close CODE REASON" closes the socket with
// that code; a line starting "!bin " is sent as a binary frame. When the
// frames run out the upstream goes silent for a while, then drops the
// connection, and later dials are refused.
//
// Whatever the frames, the Conn must not panic, the operation must hear
// exactly one outcome (after Close at the latest) and nothing after it,
// and every goroutine must end (synctest.Test fails on one left blocked).
func FuzzConnUpstream(f *testing.F) {
	for _, seed := range []string{
		"\x00{\"type\":\"connection_ack\"}\n{\"type\":\"next\",\"id\":\"$id\",\"payload\":{\"data\":{\"n\":1}}}\n{\"type\":\"complete\",\"id\":\"$id\"}",
		"\x01{\"type\":\"connection_ack\"}\n{\"type\":\"ka\"}\n{\"type\":\"data\",\"id\":\"$id\",\"payload\":{\"data\":{\"n\":1}}}\n{\"type\":\"complete\",\"id\":\"$id\"}",
		"\x00{\"type\":\"connection_ack\"}\n{\"type\":\"error\",\"id\":\"$id\",\"payload\":[{\"message\":\"bad\"}]}",
		"\x01{\"type\":\"connection_ack\"}\n{\"type\":\"error\",\"id\":\"$id\",\"payload\":{\"message\":\"bad\"}}",
		"\x01{\"type\":\"connection_error\",\"payload\":{\"message\":\"bad token\"}}",
		"\x00{\"type\":\"ping\"}\n{\"type\":\"connection_ack\"}\n{\"type\":\"pong\"}\n!close 4401 Unauthorized",
		"\x00{\"type\":\"connection_ack\"}\n{\"type\":\"next\",\"id\":\"$id\",\"payload\":{\"data\":{}}}\n!close 1012 restart",
		"\x00{\"type\":\"connection_ack\"}\n{\"type\":\"next\",\"id\":\"nope\",\"payload\":{}}\n!bin {\"type\":\"next\"}",
		"\x00!close 4400 Invalid message",
		"\x00{\"type\":\"connection_ack\"}\n{\"type\":\"connection_ack\"}\n{\"type\":\"next\",\"id\":\"$id\"}\n{}",
		"\x01{\"type\":\"connection_ack\"}\n{\"type\":\"data\",\"id\":\"$id\",\"payload\":null}\n{\"type\":\"stop\",\"id\":\"$id\"}\n[1,2]",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 || len(in) > 4096 {
			return
		}
		proto := TransportWS
		if in[0]%2 == 1 {
			proto = LegacyWS
		}
		frames := bytes.Split(in[1:], []byte("\n"))
		synctest.Test(t, func(t *testing.T) { playUpstream(t, proto, frames) })
	})
}

// playUpstream runs one upstream script against a Conn and returns what
// the operation heard.
func playUpstream(t *testing.T, proto string, frames [][]byte) []string {
	sub, _ := wire(proto)
	var m *memNet
	m = newMemNet(memScript(t, []string{proto}, func(p *memPeer) {
		defer m.refuse.Store(true) // one connection only: later dials are refused
		var (
			mu    sync.Mutex
			id    string
			gotID = make(chan struct{})
			seen  sync.Once
			wg    sync.WaitGroup
		)
		defer wg.Wait()
		defer p.ws.CloseNow()
		wg.Go(func() { // the client's messages, for "$id"; also keeps reading control frames
			for {
				_, b, err := p.ws.Read(context.Background())
				if err != nil {
					return
				}
				env, err := decodeEnvelope(b)
				if err != nil || env.typ != sub {
					continue
				}
				mu.Lock()
				id = string(env.id)
				mu.Unlock()
				seen.Do(func() { close(gotID) })
			}
		})
		for _, fr := range frames {
			if bytes.Contains(fr, []byte("$id")) {
				select {
				case <-gotID:
				case <-time.After(time.Second):
				}
				mu.Lock()
				fr = bytes.ReplaceAll(fr, []byte("$id"), []byte(id))
				mu.Unlock()
			}
			var err error
			switch {
			case bytes.HasPrefix(fr, []byte("!close ")):
				code, reason, _ := bytes.Cut(fr[len("!close "):], []byte(" "))
				n, _ := strconv.Atoi(string(code))
				err = p.ws.Close(websocket.StatusCode(n), string(reason))
			case bytes.HasPrefix(fr, []byte("!bin ")):
				err = p.ws.Write(context.Background(), websocket.MessageBinary, fr[len("!bin "):])
			default:
				err = p.ws.Write(context.Background(), websocket.MessageText, fr)
			}
			if err != nil {
				return
			}
		}
		time.Sleep(30 * time.Second) // silent: the keep-alive has to act
	}))
	gate := make(chan struct{})
	c := memDial(t, m, Config{
		KeepAlive: 5 * time.Second, KeepAliveTimeout: 5 * time.Second,
		AckTimeout: 3 * time.Second, DialTimeout: 3 * time.Second,
		Handshake: func(ctx context.Context, a Attempt) (Handshake, error) {
			<-gate // the operation is live before the first attempt
			return Handshake{}, nil
		},
	})
	p := newBubbleProbe()
	if _, err := c.Subscribe(Request{Query: "subscription { n }"}, p); err != nil {
		t.Fatal(err)
	}
	close(gate)
	time.Sleep(2 * time.Minute) // every frame played, the connection gone, retries refused
	c.Close(CodeNormal, nil)
	p.waitDone(t)
	time.Sleep(time.Minute)
	log, _, dones := p.snap()
	if len(dones) != 1 {
		t.Fatalf("%d outcomes, want exactly one; log %v", len(dones), log)
	}
	if log[len(log)-1] != "done" {
		t.Fatalf("events after the outcome: %v", log)
	}
	return log
}

// TestPlayUpstream checks the fuzz harness itself: the frames reach the
// Conn as the script says ("$id" included), for both protocols.
func TestPlayUpstream(t *testing.T) {
	t.Parallel()
	for proto, script := range map[string]string{
		TransportWS: `{"type":"connection_ack"}` + "\n" + `{"type":"next","id":"$id","payload":{"data":{"n":1}}}` + "\n" + `{"type":"complete","id":"$id"}`,
		LegacyWS:    `{"type":"connection_ack"}` + "\n" + `{"type":"data","id":"$id","payload":{"data":{"n":1}}}` + "\n" + `!close 4400 Invalid message`, // a bridge fault: terminal
	} {
		synctest.Test(t, func(t *testing.T) {
			log := playUpstream(t, proto, bytes.Split([]byte(script), []byte("\n")))
			want := map[string]string{TransportWS: "subscribed,next,done", LegacyWS: "subscribed,next,done"}[proto]
			if got := joinLog(log); got != want {
				t.Errorf("%s: heard %s, want %s", proto, got, want)
			}
		})
	}
}
