package demoupstream_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
)

type event struct {
	ID int    `json:"id"`
	At string `json:"at"`
}

// eventID decodes the id of an events result.
func eventID(t *testing.T, m msg) int {
	t.Helper()
	var res struct {
		Data   struct{ Events event } `json:"data"`
		Errors json.RawMessage        `json:"errors"`
	}
	if err := json.Unmarshal(m.Payload, &res); err != nil || res.Errors != nil || res.Data.Events.ID == 0 {
		t.Fatalf("not an event: %s (%v)", m.Payload, err)
	}
	return res.Data.Events.ID
}

// TestEventLog: events(after: k) replays the log from k+1 and follows it
// live without a gap; a second server with the same epoch (an upstream
// restart) serves the same log, including what was appended while no server
// ran; without a cursor the stream starts at the live edge.
func TestEventLog(t *testing.T) {
	const interval = 5 * time.Millisecond
	epoch := time.Now().Add(-200 * time.Millisecond) // about 40 events exist at once
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			srv := start(t, demoupstream.Options{EventEpoch: epoch, EventInterval: interval})
			c := dial(t, srv.URL(), p)
			c.init(nil)
			c.subscribe("1", `subscription { events(after: 5) { id at } }`)
			last := 5
			for range 60 { // past the events that existed: replay, then live
				if id := eventID(t, c.expect(p.next)); id != last+1 {
					t.Fatalf("event %d after %d", id, last)
				}
				last++
			}
			_ = c.conn.CloseNow()
			if err := srv.Close(); err != nil {
				t.Fatal(err)
			}

			srv = start(t, demoupstream.Options{EventEpoch: epoch, EventInterval: interval})
			c = dial(t, srv.URL(), p)
			c.init(nil)
			c.subscribe("1", `subscription { events(after: `+itoa(last)+`) { id } }`)
			for range 10 {
				if id := eventID(t, c.expect(p.next)); id != last+1 {
					t.Fatalf("after the restart: event %d after %d", id, last)
				}
				last++
			}
			c.stop("1")

			edge := int(time.Since(epoch) / interval)
			c.subscribe("2", `subscription { events { id } }`)
			m := c.next("2")
			if id := eventID(t, m); id <= edge {
				t.Fatalf("without a cursor the stream started at %d, an event that existed (up to %d) before it was subscribed", id, edge)
			}
		})
	}
}

// TestEventBatches: eventBatches sends the log in order in non-empty lists
// of at most batchSize; the first ones are full (the events existed).
func TestEventBatches(t *testing.T) {
	srv := start(t, demoupstream.Options{EventEpoch: time.Now().Add(-time.Second), EventInterval: 5 * time.Millisecond})
	c := dial(t, srv.URL(), transportWS)
	c.init(nil)
	c.subscribe("1", `subscription { eventBatches(after: 3, batchSize: 7) { id } }`)
	last := 3
	for i := range 40 {
		var res struct {
			Data struct{ EventBatches []event } `json:"data"`
		}
		m := c.expect("next")
		if err := json.Unmarshal(m.Payload, &res); err != nil {
			t.Fatal(err)
		}
		b := res.Data.EventBatches
		if len(b) == 0 || len(b) > 7 || i < 5 && len(b) != 7 {
			t.Fatalf("batch %d holds %d events: %s", i, len(b), m.Payload)
		}
		for _, e := range b {
			if e.ID != last+1 {
				t.Fatalf("batch %d: event %d after %d", i, e.ID, last)
			}
			last++
		}
	}
	c.stop("1")
	c.subscribe("2", `subscription { events(after: -1) { id } }`)
	m := c.next("2")
	var res struct {
		Errors []struct{ Message string } `json:"errors"`
	}
	if err := json.Unmarshal(m.Payload, &res); err != nil || len(res.Errors) != 1 || res.Errors[0].Message != "after must not be negative" {
		t.Fatalf("after: -1 answered %s", m.Payload)
	}
}

// next returns the next result of operation id, skipping what other
// operations send (results and the complete of a stopped one).
func (c *client) next(id string) msg {
	c.t.Helper()
	for {
		ctx, cancel := context.WithTimeout(c.t.Context(), 5*time.Second)
		m, err := c.read(ctx)
		cancel()
		if err != nil {
			c.t.Fatalf("waiting for a result of %s: %v", id, err)
		}
		if m.ID == id {
			if m.Type != c.p.next {
				c.t.Fatalf("%s: got %s %s, want a result", id, m.Type, m.Payload)
			}
			return m
		}
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
