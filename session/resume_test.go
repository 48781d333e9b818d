package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
	"github.com/gqlbridge/gqlbridge/internal/scripted"
	"github.com/gqlbridge/gqlbridge/internal/testpeer"
)

// follower records what an operation on the event log receives: the ids of
// the events in each result (events or eventBatches), the cursor each
// result came with, and the lifecycle.
type follower struct {
	t       *testing.T
	cursors bool // OnNextCursor was called, not OnNext
	notify  chan struct{}

	mu      sync.Mutex
	ids     []int
	curs    []string
	log     []string
	resubs  []Event
	done    bool
	outcome error
}

func newFollower(t *testing.T) *follower {
	return &follower{t: t, notify: make(chan struct{}, 1)}
}

func (f *follower) OnNext(p []byte) { f.record(p, nil) }

func (f *follower) OnNextCursor(p, cursor []byte) {
	if cursor == nil {
		panic("OnNextCursor without a cursor")
	}
	f.record(p, cursor)
}

func (f *follower) record(p, cursor []byte) {
	var r struct {
		Data struct {
			Events       *struct{ ID int }  `json:"events"`
			EventBatches []struct{ ID int } `json:"eventBatches"`
		} `json:"data"`
	}
	if err := json.Unmarshal(p, &r); err != nil {
		panic(fmt.Sprintf("result %s: %v", p, err))
	}
	f.mu.Lock()
	if r.Data.Events != nil {
		f.ids = append(f.ids, r.Data.Events.ID)
	}
	for _, e := range r.Data.EventBatches {
		f.ids = append(f.ids, e.ID)
	}
	f.curs = append(f.curs, string(cursor)) // copied: cursor is valid only during the call
	f.log = append(f.log, "next")
	f.mu.Unlock()
	f.poke()
}

func (f *follower) OnEvent(ev Event) {
	f.mu.Lock()
	switch ev.Kind {
	case Subscribed:
		f.log = append(f.log, "subscribed")
	case Reconnecting:
		f.log = append(f.log, fmt.Sprintf("reconnecting:%d", ev.Code))
	case Resubscribed:
		f.log = append(f.log, "resubscribed")
		f.resubs = append(f.resubs, ev)
	}
	f.mu.Unlock()
	f.poke()
}

func (f *follower) OnDone(err error) {
	f.mu.Lock()
	f.done, f.outcome = true, err
	f.mu.Unlock()
	f.poke()
}

func (f *follower) poke() {
	select {
	case f.notify <- struct{}{}:
	default:
	}
}

// waitFor waits until cond holds (called with f.mu held).
func (f *follower) waitFor(what string, cond func() bool) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(f.t.Context(), 20*time.Second)
	defer cancel()
	for {
		f.mu.Lock()
		ok := cond()
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-f.notify:
		case <-ctx.Done():
			f.mu.Lock()
			defer f.mu.Unlock()
			f.t.Fatalf("waiting for %s: ids %v, log %v, outcome %v", what, summarize(f.ids), compact(f.log), f.outcome)
		}
	}
}

// waitIDs waits until n more ids than now arrived.
func (f *follower) waitMore(n int) {
	f.t.Helper()
	f.mu.Lock()
	want := len(f.ids) + n
	f.mu.Unlock()
	f.waitFor(fmt.Sprintf("%d ids", want), func() bool { return len(f.ids) >= want })
}

// gaps counts the ids missing and repeated between the first and the last.
func (f *follower) gaps() (missing, repeated int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return countGaps(f.ids)
}

func countGaps(ids []int) (missing, repeated int) {
	for i := 1; i < len(ids); i++ {
		switch d := ids[i] - ids[i-1]; {
		case d > 1:
			missing += d - 1
		case d < 1:
			repeated += 1 - d
		}
	}
	return missing, repeated
}

// compact shortens a log by counting repeated entries: "next×40".
func compact(log []string) string {
	var b strings.Builder
	for i := 0; i < len(log); {
		j := i
		for j < len(log) && log[j] == log[i] {
			j++
		}
		if j-i > 1 {
			fmt.Fprintf(&b, "%s×%d ", log[i], j-i)
		} else {
			b.WriteString(log[i] + " ")
		}
		i = j
	}
	return strings.TrimSpace(b.String())
}

// summarize shortens a list of ids to its runs, "5-17 19-30".
func summarize(ids []int) string {
	var b strings.Builder
	for i := 0; i < len(ids); {
		j := i
		for j+1 < len(ids) && ids[j+1] == ids[j]+1 {
			j++
		}
		fmt.Fprintf(&b, "%d-%d ", ids[i], ids[j])
		i = j + 1
	}
	return strings.TrimSpace(b.String())
}

// checkCursors checks that each result came with its last id as cursor.
func (f *follower) checkCursors() {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.cursors {
		return
	}
	// One id per result (events) or several (eventBatches): the cursor of
	// a result is the id of its last event, so the cursors, as numbers,
	// are ids in order, the last one the last id.
	k := 0
	for i, c := range f.curs {
		n, err := strconv.Atoi(c)
		if err != nil {
			f.t.Fatalf("result %d has cursor %q, want an id", i, c)
		}
		for k < len(f.ids) && f.ids[k] != n {
			k++
		}
		if k == len(f.ids) {
			f.t.Fatalf("result %d has cursor %s, which is not the id of one of its events (ids %s)", i, c, summarize(f.ids))
		}
	}
	if last := f.curs[len(f.curs)-1]; last != strconv.Itoa(f.ids[len(f.ids)-1]) {
		f.t.Fatalf("the last cursor is %s, the last id %d", last, f.ids[len(f.ids)-1])
	}
}

func resumeEvents(query, pointer string) Request {
	return Request{Query: query, Resume: &Resume{Variable: "after", Pointer: MustParsePointer(pointer)}}
}

const eventsQuery = `subscription ($after: Int) { events(after: $after) { id } }`

// TestResumeAcrossRestart: the reference servers are killed and started
// again while events are appended every 5ms. The operation that follows the
// cursor resubscribes from it and hears Resubscribed with Gapless: its ids
// run on without a gap or a repeat, each result with its cursor. The same
// subscription without Resume starts again at the live edge and loses what
// was appended during the outage.
func TestResumeAcrossRestart(t *testing.T) {
	t.Parallel()
	for _, proto := range protocols() {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			peer := testpeer.StartNode(t, testpeer.NodeOptions{Protocol: testpeer.Protocol(proto), EventInterval: 5 * time.Millisecond})
			c := dialTest(t, Config{URL: peer.URL, Subprotocols: []string{proto}})
			gapless, plain := newFollower(t), newFollower(t)
			gapless.cursors = true
			if _, err := c.Subscribe(resumeEvents(eventsQuery, "/data/events/id"), gapless); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Subscribe(Request{Query: eventsQuery}, plain); err != nil {
				t.Fatal(err)
			}
			gapless.waitMore(5)
			plain.waitMore(5)
			for i := range 2 {
				peer.Restart(t)
				for _, f := range []*follower{gapless, plain} {
					f.waitFor("resubscribed", func() bool { return len(f.resubs) > i })
					f.waitMore(10)
				}
			}
			if m, r := gapless.gaps(); m != 0 || r != 0 {
				t.Fatalf("with Resume: %d ids missing, %d repeated: %s", m, r, summarize(gapless.ids))
			}
			gapless.checkCursors()
			for _, ev := range gapless.resubs {
				if !ev.Gapless {
					t.Fatalf("with Resume: Resubscribed %+v, want Gapless", ev)
				}
			}
			if m, _ := plain.gaps(); m == 0 {
				t.Fatalf("without Resume no id is missing across two restarts: %s", summarize(plain.ids))
			}
			for _, ev := range plain.resubs {
				if ev.Gapless {
					t.Fatalf("without Resume: Resubscribed %+v, want not Gapless", ev)
				}
			}
		})
	}
}

// TestResumeTokenExpiry: gqlgen closes every connection with 4401 when its
// token expires; the session refreshes the credential and resubscribes from
// the cursor. The operation started from cursor 0 reads the log from id 1
// on without a gap or a repeat across the refreshes.
func TestResumeTokenExpiry(t *testing.T) {
	t.Parallel()
	for _, proto := range protocols() {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			srv, err := demoupstream.Start(demoupstream.Options{Token: "tok", TokenTTL: 300 * time.Millisecond, EventInterval: 2 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = srv.Close() })
			hs := &handshakes{payload: func(Attempt) string { return `{"Authorization":"Bearer tok"}` }}
			c := dialTest(t, Config{URL: srv.URL(), Subprotocols: []string{proto}, Handshake: hs.fn})
			f := newFollower(t)
			f.cursors = true
			req := resumeEvents(eventsQuery, "/data/events/id")
			req.Variables = json.RawMessage(`{"after": 0}`)
			if _, err := c.Subscribe(req, f); err != nil {
				t.Fatal(err)
			}
			f.waitFor("three refreshes", func() bool { return len(f.resubs) >= 3 })
			f.waitMore(10)
			if len(hs.refreshes()) < 3 {
				t.Fatalf("%d refreshes, want ≥ 3", len(hs.refreshes()))
			}
			f.mu.Lock()
			first := f.ids[0]
			f.mu.Unlock()
			if m, r := f.gaps(); m != 0 || r != 0 || first != 1 {
				t.Fatalf("%d ids missing, %d repeated, first %d: %s", m, r, first, summarize(f.ids))
			}
			f.checkCursors()
			for _, ev := range f.resubs {
				if !ev.Gapless {
					t.Fatalf("Resubscribed %+v, want Gapless", ev)
				}
			}
		})
	}
}

// TestResumeRotation: the credential's expiry is known, so the session
// rotates make-before-break. Results keep arriving on the old socket while
// the new one subscribes: those the new subscription replays are dropped
// from the old one, so nothing is repeated, and nothing is missed.
func TestResumeRotation(t *testing.T) {
	t.Parallel()
	const ttl = 1200 * time.Millisecond
	peer := testpeer.StartNode(t, testpeer.NodeOptions{Protocol: testpeer.TransportWS, Token: "tok", TokenTTL: ttl, EventInterval: 2 * time.Millisecond})
	var expiring atomic.Int32
	c := dialTest(t, Config{URL: peer.URL, RotateBefore: time.Second,
		Handshake: func(ctx context.Context, a Attempt) (Handshake, error) {
			if a.Expiring {
				expiring.Add(1)
			}
			return Handshake{InitPayload: bearer("tok"), Expiry: time.Now().Add(ttl)}, nil
		}})
	f := newFollower(t)
	f.cursors = true
	if _, err := c.Subscribe(resumeEvents(eventsQuery, "/data/events/id"), f); err != nil {
		t.Fatal(err)
	}
	for expiring.Load() < 3 {
		f.waitMore(1)
	}
	f.waitMore(20)
	f.mu.Lock()
	log := compact(f.log)
	f.mu.Unlock()
	if strings.Contains(log, "reconnecting") {
		t.Fatalf("the operation noticed a rotation: %v", log)
	}
	if m, r := f.gaps(); m != 0 || r != 0 {
		t.Fatalf("across %d rotations: %d ids missing, %d repeated: %s", expiring.Load(), m, r, summarize(f.ids))
	}
	f.checkCursors()
}

// TestResumeBatchesLastElement: eventBatches lists rows like a Hasura
// streaming subscription; the pointer's "-" takes the cursor from the last
// row. The gqlgen server is closed and started again on the same address
// with the same log.
func TestResumeBatchesLastElement(t *testing.T) {
	t.Parallel()
	epoch := time.Now()
	opts := demoupstream.Options{EventEpoch: epoch, EventInterval: 2 * time.Millisecond}
	srv, err := demoupstream.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	c := dialTest(t, Config{URL: srv.URL()})
	f := newFollower(t)
	f.cursors = true
	req := resumeEvents(`subscription ($after: Int, $n: Int) { eventBatches(after: $after, batchSize: $n) { id } }`, "/data/eventBatches/-/id")
	req.Variables = json.RawMessage(`{"n": 5}`)
	if _, err := c.Subscribe(req, f); err != nil {
		t.Fatal(err)
	}
	f.waitMore(10)
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	f.waitFor("reconnecting", func() bool { return strings.Contains(strings.Join(f.log, ","), "reconnecting") })
	opts.Addr = strings.TrimSuffix(strings.TrimPrefix(srv.URL(), "ws://"), "/graphql")
	srv2, err := demoupstream.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv2.Close() })
	f.waitFor("resubscribed", func() bool { return len(f.resubs) == 1 })
	f.waitMore(50) // the replay comes in full batches of 5
	if m, r := f.gaps(); m != 0 || r != 0 {
		t.Fatalf("%d ids missing, %d repeated: %s", m, r, summarize(f.ids))
	}
	f.checkCursors()
	if !f.resubs[0].Gapless {
		t.Fatalf("Resubscribed %+v, want Gapless", f.resubs[0])
	}
}

// TestResumeCursorMissing: a result in which the pointer finds nothing ends
// the operation with a CursorError naming the result and the pointer (and
// the result's GraphQL errors, if any); the result is not delivered and the
// upstream stops the operation.
func TestResumeCursorMissing(t *testing.T) {
	t.Parallel()
	srv, err := demoupstream.Start(demoupstream.Options{EventInterval: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	c := dialTest(t, Config{URL: srv.URL()})
	for _, tc := range []struct {
		name, pointer, vars, errs string
	}{
		{"wrong pointer", "/data/events/nope", "", ""},
		{"errors only", "/data/events/id", `{"after": -1}`, "after must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFollower(t)
			req := resumeEvents(eventsQuery, tc.pointer)
			if tc.vars != "" {
				req.Variables = json.RawMessage(tc.vars)
			}
			if _, err := c.Subscribe(req, f); err != nil {
				t.Fatal(err)
			}
			f.waitFor("the outcome", func() bool { return f.done })
			var ce *CursorError
			if !errors.As(f.outcome, &ce) || ce.Result != 1 || ce.Pointer != tc.pointer || !strings.Contains(string(ce.Errors), tc.errs) {
				t.Fatalf("outcome %#v, want a CursorError for result 1 at %s", f.outcome, tc.pointer)
			}
			if tc.errs == "" && ce.Errors != nil {
				t.Fatalf("errors %s in a result without any", ce.Errors)
			}
			if len(f.ids) != 0 {
				t.Fatalf("the result without a cursor was delivered: %v", f.ids)
			}
			if !strings.Contains(ce.Error(), "result 1 of the operation has no cursor at "+tc.pointer) {
				t.Fatalf("message %q", ce.Error())
			}
		})
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := srv.WaitFor(ctx, func(s demoupstream.Stats) bool { return s.ActiveSubscriptions == 0 }); err != nil {
		t.Fatalf("the upstream still runs the operations: %+v", srv.Stats())
	}
}

// TestResumeSubscribePayload: before any result the request goes as given;
// after one, with the cursor variable set to the latest cursor and the
// other variables kept. Variables that are not an object cannot carry a
// cursor.
func TestResumeSubscribePayload(t *testing.T) {
	req := resumeEvents(eventsQuery, "/data/events/id")
	req.Variables = json.RawMessage(`{"n": 5, "after": null, "o": {"a": [1]}}`)
	want, _ := req.Payload()
	op := &Operation{payload: want}
	if err := op.resumeFrom(req); err != nil {
		t.Fatal(err)
	}
	if got := op.subscribePayload(); string(got) != string(want) || op.gapless() {
		t.Fatalf("before any result: %s (gapless %v), want %s", got, op.gapless(), want)
	}
	op.rs.results, op.rs.cursor = 3, []byte(`"c-3"`)
	var p struct {
		Query     string
		Variables map[string]json.RawMessage
	}
	if err := json.Unmarshal(op.subscribePayload(), &p); err != nil {
		t.Fatal(err)
	}
	if p.Query != eventsQuery || string(p.Variables["after"]) != `"c-3"` || string(p.Variables["n"]) != "5" ||
		string(p.Variables["o"]) != `{"a":[1]}` || len(p.Variables) != 3 || !op.gapless() {
		t.Fatalf("after a result: %+v", p)
	}

	req.Variables = json.RawMessage(`{"after": 7}`)
	op = &Operation{}
	if err := op.resumeFrom(req); err != nil || !op.gapless() || string(op.rs.cursor) != "7" {
		t.Fatalf("the request's cursor is not the initial one: %v %+v", err, op.rs)
	}
	req.Variables = json.RawMessage(`[1]`)
	if err := (&Operation{}).resumeFrom(req); err == nil || !strings.Contains(err.Error(), "variables must be a JSON object") {
		t.Fatalf("variables [1]: %v", err)
	}
	req.Resume = &Resume{Variable: "after"}
	if err := (&Operation{}).resumeFrom(req); err == nil {
		t.Fatal("a Resume without a pointer was accepted")
	}
}

// TestResumeRotationScripted: a rotation subscribes the operation on the
// new socket with the cursor of the last result delivered (after: 2), and a
// result the old socket sends after the move (3, which the new subscription
// replays) is not delivered from there: the handler sees 1, 2, 3, 4 once
// each.
func TestResumeRotationScripted(t *testing.T) {
	t.Parallel()
	var (
		moved   = make(chan struct{}) // the new socket got its subscribe
		oldSent = make(chan struct{}) // the old socket sent its late result
		payload = make(chan string, 1)
	)
	event := func(id int) string { return fmt.Sprintf(`{"data":{"events":{"id":%d}}}`, id) }
	srv := scripted.Start(t, tws, func(p *scripted.Peer) {
		if _, ok := p.Handshake(); !ok {
			return
		}
		sub, ok := p.Expect(msgSubscribe)
		if !ok {
			return
		}
		switch p.N {
		case 1:
			p.SendMsg(msgNext, sub.ID, event(1))
			p.SendMsg(msgNext, sub.ID, event(2))
			select {
			case <-moved:
			case <-p.Context().Done():
				return
			}
			p.SendMsg(msgNext, sub.ID, event(3)) // too late: the operation moved
			close(oldSent)
		case 2:
			payload <- string(sub.Payload)
			close(moved)
			select {
			case <-oldSent:
			case <-p.Context().Done():
				return
			}
			p.SendMsg(msgNext, sub.ID, event(3))
			p.SendMsg(msgNext, sub.ID, event(4))
		}
		p.Drain()
	})
	f := newFollower(t)
	f.cursors = true
	delivered := make(chan struct{}) // ids 1 and 2 were delivered
	c := dialTest(t, Config{URL: srv.URL, RotateBefore: time.Hour, Handshake: func(ctx context.Context, a Attempt) (Handshake, error) {
		if a.Expiring {
			// The rotation starts once the first two results are in: the
			// cursor it moves with is 2.
			select {
			case <-delivered:
			case <-ctx.Done():
				return Handshake{}, ctx.Err()
			}
		}
		return Handshake{Expiry: time.Now().Add(2 * time.Second)}, nil
	}})
	if _, err := c.Subscribe(resumeEvents(eventsQuery, "/data/events/id"), f); err != nil {
		t.Fatal(err)
	}
	f.waitFor("ids 1 and 2", func() bool { return len(f.ids) >= 2 })
	close(delivered)
	f.waitFor("id 4", func() bool { return len(f.ids) > 0 && f.ids[len(f.ids)-1] == 4 })
	var p struct{ Variables map[string]json.RawMessage }
	if err := json.Unmarshal([]byte(<-payload), &p); err != nil || string(p.Variables["after"]) != "2" {
		t.Fatalf("the rotation subscribed with variables %s (%v), want after 2", p.Variables, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if fmt.Sprint(f.ids) != "[1 2 3 4]" || strings.Join(f.curs, " ") != "1 2 3 4" || strings.Contains(compact(f.log), "reconnecting") {
		t.Fatalf("ids %v, cursors %v, log %s; want 1 2 3 4 once each, no reconnect", f.ids, f.curs, compact(f.log))
	}
}
