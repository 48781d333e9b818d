package bridge_test

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/gqlbridge/gqlbridge/bridge"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
	"github.com/gqlbridge/gqlbridge/internal/rpcstatus"
)

const eventsQuery = `subscription Events($after: Int) { events(after: $after) { id } }`

func resumeAfter(pointer string) *bridgev1.Resume {
	return &bridgev1.Resume{CursorVariable: "after", CursorPointer: pointer}
}

// eventIDs returns the ids of the events in a result of events or
// eventBatches.
func eventIDs(t *testing.T, n *bridgev1.Next) []int {
	t.Helper()
	var r struct {
		Data struct {
			Events       *struct{ ID int }
			EventBatches []struct{ ID int }
		}
	}
	if err := json.Unmarshal(n.GetResult(), &r); err != nil {
		t.Fatalf("result %d: %v: %s", n.GetSequence(), err, n.GetResult())
	}
	var ids []int
	if r.Data.Events != nil {
		ids = append(ids, r.Data.Events.ID)
	}
	for _, e := range r.Data.EventBatches {
		ids = append(ids, e.ID)
	}
	if len(ids) == 0 {
		t.Fatalf("result %d holds no event: %s", n.GetSequence(), n.GetResult())
	}
	return ids
}

// results reads the stream until it has delivered n results, failing on
// anything but results and the lifecycle states in allow; batches are
// unpacked.
func (s *stream) results(n int) []*bridgev1.Next {
	s.t.Helper()
	var out []*bridgev1.Next
	for len(out) < n {
		r, err := s.next()
		if err != nil {
			s.t.Fatalf("after %d results: %v", len(out), err)
		}
		switch {
		case r.GetNext() != nil:
			out = append(out, r.GetNext())
		case r.GetBatch() != nil:
			out = append(out, r.GetBatch().GetNexts()...)
		}
	}
	return out
}

// TestResumeRequestChecks: a resume the bridge cannot follow is refused with
// INVALID_ARGUMENT and a message that says what to fix, before any upstream
// is dialed.
func TestResumeRequestChecks(t *testing.T) {
	t.Parallel()
	e := startBridge(t, inMemory, bridge.Config{Upstreams: map[string]*bridge.Upstream{"up": {Session: fast("ws://127.0.0.1:1/graphql")}}})
	for _, tc := range []struct {
		name, variable, pointer, query, opName, want string
	}{
		{"no variable", "", "/data/events/id", eventsQuery, "", "resume.cursor_variable is required"},
		{"dollar", "$after", "/data/events/id", eventsQuery, "", `resume.cursor_variable "$after": give the name without the "$" ("after")`},
		{"not a name", "1st", "/data/events/id", eventsQuery, "", `resume.cursor_variable "1st" is not a GraphQL name`},
		{"no pointer", "after", "", eventsQuery, "", "resume.cursor_pointer: empty JSON pointer"},
		{"relative pointer", "after", "data/events/id", eventsQuery, "", `resume.cursor_pointer: JSON pointer "data/events/id" must start with "/"`},
		{"bad escape", "after", "/data/a~2", eventsQuery, "", `resume.cursor_pointer: JSON pointer "/data/a~2": segment "a~2" has a "~" that is not "~0"`},
		{"long pointer", "after", "/data" + strings.Repeat("/-", 600), eventsQuery, "", "resume.cursor_pointer is 1205 bytes; the limit is 1024"},
		{"undeclared", "after", "/data/events/id", `subscription { events(after: 3) { id } }`, "",
			`resume.cursor_variable "after" is not a variable of the operation, which declares no variables: declare it`},
		{"other variables", "after", "/data/events/id", `subscription ($since: Int, $n: Int) { events(after: $since) { id } }`, "",
			`is not a variable of the operation, which declares $since, $n`},
		{"declared by another operation", "after", "/data/events/id", `subscription A($after: Int) { events(after: $after) { id } } subscription B { events { id } }`, "B",
			`which declares no variables`},
		{"unparsable", "after", "/data/events/id", `subscription ($after: Int) { events(after: $after) { id }`, "", "resume: the query does not parse"},
		{"two operations", "after", "/data/events/id", `subscription A($after: Int) { events(after: $after) { id } } subscription B($after: Int) { events(after: $after) { id } }`, "",
			"resume: the document holds 2 operations: set operation_name"},
		{"unknown operation", "after", "/data/events/id", eventsQuery, "Nope", `resume: the document has no operation named "Nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "up", Query: tc.query, OperationName: tc.opName,
				Resume: &bridgev1.Resume{CursorVariable: tc.variable, CursorPointer: tc.pointer}})
			_, st := s.end()
			if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tc.want) {
				t.Fatalf("got %v %q, want INVALID_ARGUMENT containing %q", st.Code(), st.Message(), tc.want)
			}
			if info := rpcstatus.ErrorInfo(st); info.GetReason() != bridge.ReasonInvalidRequest {
				t.Fatalf("ErrorInfo %v, want reason %s", info, bridge.ReasonInvalidRequest)
			}
		})
	}
}

// TestResumeNextCarriesCursor: with resume every result carries its cursor,
// in next events and inside batches; a caller that subscribes again with
// the cursor of the last result it took continues right after it. Without
// resume no result has a cursor.
func TestResumeNextCarriesCursor(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{EventEpoch: time.Now().Add(-time.Second), EventInterval: 2 * time.Millisecond})
	// A queue that holds the whole replay: no result is dropped however
	// slowly the test reads.
	e := startBridge(t, inMemory, bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL()), QueueSize: 4096}}})
	for _, maxBatch := range []uint32{0, 8} {
		t.Run(fmt.Sprintf("max_batch=%d", maxBatch), func(t *testing.T) {
			last := 10
			for round := range 2 {
				s := e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "demo", Query: eventsQuery, MaxBatch: maxBatch,
					Variables: mustStruct(t, fmt.Sprintf(`{"after": %d}`, last)), Resume: resumeAfter("/data/events/id")})
				s.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
				for _, n := range s.results(100) {
					id := eventIDs(t, n)[0]
					if id != last+1 || string(n.GetCursor()) != strconv.Itoa(id) {
						t.Fatalf("round %d: result %d is event %d with cursor %q, after %d", round, n.GetSequence(), id, n.GetCursor(), last)
					}
					last = id
				}
				s.cancel()
			}
		})
	}
	s := e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "demo", Query: eventsQuery, Variables: mustStruct(t, `{"after": 1}`)})
	s.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
	if n := s.expectNext(); n.GetCursor() != nil {
		t.Fatalf("without resume a result has cursor %q", n.GetCursor())
	}
}

// TestResumeCursorMissing: a result in which the pointer finds nothing ends
// the stream with INVALID_ARGUMENT naming the sequence that result would
// have had; the results before it were delivered, it was not, and the
// upstream operation is stopped.
func TestResumeCursorMissing(t *testing.T) {
	t.Parallel()
	// 200 events exist: the replay comes in full batches of 5, which have a
	// fifth row; the live ones that follow hold fewer.
	demo := startDemo(t, demoupstream.Options{EventEpoch: time.Now().Add(-time.Second), EventInterval: 5 * time.Millisecond})
	e := startBridge(t, inMemory, bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL()), QueueSize: 4096}}})
	const ptr = "/data/eventBatches/4/id"
	s := e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "demo", Query: `subscription ($after: Int) { eventBatches(after: $after, batchSize: 5) { id } }`,
		Variables: mustStruct(t, `{"after": 0}`), Resume: resumeAfter(ptr)})
	results, st := s.end()
	if len(results) < 30 {
		t.Fatalf("%d results before the end, want the replay's full batches (≥ 30)", len(results))
	}
	last := 0
	for _, n := range results {
		ids := eventIDs(t, n)
		if ids[0] != last+1 || len(ids) != 5 || string(n.GetCursor()) != strconv.Itoa(ids[4]) {
			t.Fatalf("result %d: ids %v cursor %q after %d", n.GetSequence(), ids, n.GetCursor(), last)
		}
		last = ids[4]
	}
	want := fmt.Sprintf("the result with sequence %d has no cursor at resume.cursor_pointer %q", len(results)+1, ptr)
	if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), want) {
		t.Fatalf("ended with %v %q, want INVALID_ARGUMENT containing %q", st.Code(), st.Message(), want)
	}
	waitDemo(t, demo, "the operation stopped", func(s demoupstream.Stats) bool { return s.ActiveSubscriptions == 0 })
}

// TestResumeGaplessLifecycle: the upstream is closed and started again on
// its address with the same log. The stream with resume hears
// STATE_RESUBSCRIBED with gapless and continues without a gap or a repeat;
// the stream without it hears gapless false and misses what was appended
// meanwhile.
func TestResumeGaplessLifecycle(t *testing.T) {
	t.Parallel()
	opts := demoupstream.Options{EventEpoch: time.Now(), EventInterval: 2 * time.Millisecond}
	demo, err := demoupstream.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { demo.Close() })
	e := startBridge(t, inMemory, bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL())}}})
	gapless := e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "demo", Query: eventsQuery, Resume: resumeAfter("/data/events/id")})
	plain := e.subscribe(t, &bridgev1.SubscribeRequest{Upstream: "demo", Query: eventsQuery})
	before := map[*stream][]int{}
	for _, s := range []*stream{gapless, plain} {
		s.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
		for _, n := range s.results(5) {
			before[s] = append(before[s], eventIDs(t, n)...)
		}
	}
	if err := demo.Close(); err != nil {
		t.Fatal(err)
	}
	opts.Addr = strings.TrimSuffix(strings.TrimPrefix(demo.URL(), "ws://"), "/graphql")
	demo2 := startDemo(t, opts)
	_ = demo2
	for _, s := range []*stream{gapless, plain} {
		ids := before[s]
		var lc *bridgev1.Lifecycle
		for lc == nil {
			r, err := s.next()
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case r.GetNext() != nil:
				ids = append(ids, eventIDs(t, r.GetNext())...)
			case r.GetLifecycle().GetState() == bridgev1.Lifecycle_STATE_RESUBSCRIBED:
				lc = r.GetLifecycle()
			}
		}
		for _, n := range s.results(20) {
			ids = append(ids, eventIDs(t, n)...)
		}
		missing, repeated := gaps(ids)
		switch s {
		case gapless:
			if !lc.GetGapless() || missing != 0 || repeated != 0 {
				t.Fatalf("with resume: %v, %d missing, %d repeated: %v", lc, missing, repeated, ids)
			}
		case plain:
			if lc.GetGapless() || missing == 0 {
				t.Fatalf("without resume: %v, %d missing: %v", lc, missing, ids)
			}
		}
	}
}

// gaps counts the ids missing and repeated in a run of ids.
func gaps(ids []int) (missing, repeated int) {
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

// TestResumeDedup: callers with the same request and the same starting
// cursor share one upstream operation while its cursor has not moved; a
// caller with that request after the cursor moved gets an operation of its
// own, which replays from the cursor it gave; the same request without
// resume is another operation.
func TestResumeDedup(t *testing.T) {
	t.Parallel()
	demo := startDemo(t, demoupstream.Options{EventEpoch: time.Now().Add(-time.Second), EventInterval: 2 * time.Millisecond})
	g := newGate()
	sc := fast(demo.URL())
	sc.Handshake = g.handshake
	e := startBridge(t, inMemory, bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: sc, Dedup: true, IdleTimeout: time.Hour, QueueSize: 4096}}})
	req := func() *bridgev1.SubscribeRequest {
		return &bridgev1.SubscribeRequest{Upstream: "demo", Query: eventsQuery, Variables: mustStruct(t, `{"after": 7}`), Resume: resumeAfter("/data/events/id")}
	}
	first := []*stream{e.subscribe(t, req()), e.subscribe(t, req())}
	// Both streams are counted before they attach to an operation: wait for
	// the pool, not the count (without sharing it never gets there).
	waitUntil(t, "2 subscriptions sharing one operation", func() bool {
		return e.svc.Stats()["demo"] == bridge.UpstreamStats{Connections: 1, Operations: 1, Shared: 1}
	})
	close(g.open)
	check := func(s *stream, from, n int) {
		t.Helper()
		for _, r := range s.results(n) {
			if id := eventIDs(t, r)[0]; id != from+1 || string(r.GetCursor()) != strconv.Itoa(id) {
				t.Fatalf("result %d: event %d, cursor %q; want %d", r.GetSequence(), id, r.GetCursor(), from+1)
			}
			from++
		}
	}
	for _, s := range first {
		s.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
		check(s, 7, 20)
	}
	late := e.subscribe(t, req())
	late.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
	check(late, 7, 20) // not the shared operation's 28 on: a replay from 8
	plainReq := req()
	plainReq.Resume = nil
	plain := e.subscribe(t, plainReq)
	plain.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
	plain.expectNext()
	expectStats(t, e.svc, "demo", bridge.UpstreamStats{Connections: 1, Operations: 3, Shared: 1})
}
