package bridge

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/gqlbridge/gqlbridge/session"
)

// Snapshot describes the service for operators: every upstream, its
// connections and their states, operations, subscribers and recent
// connection events. It holds no credential.
type Snapshot struct {
	Upstreams []UpstreamSnapshot `json:"upstreams"`
	Draining  bool               `json:"draining"`
}

// UpstreamSnapshot describes one upstream's pool.
type UpstreamSnapshot struct {
	Name string `json:"name"`
	// URL is the upstream's URL with its user info and query values
	// redacted.
	URL           string         `json:"url"`
	Connections   []ConnSnapshot `json:"connections"`
	Operations    int            `json:"operations"`    // upstream operations placed on connections
	Shared        int            `json:"shared"`        // operations with more than one subscriber (deduplication)
	Subscriptions int            `json:"subscriptions"` // open Subscribe streams
	Events        []ConnEvent    `json:"events"`
}

// ConnSnapshot describes one upstream connection.
type ConnSnapshot struct {
	State       session.State `json:"state"` // connecting, ready, backoff, closed
	Subprotocol string        `json:"subprotocol,omitempty"`
	Operations  int           `json:"operations"`
	Since       time.Time     `json:"since"` // when it entered State
	Attempt     int           `json:"attempt"`
}

// ConnEvent is a notable connection event: a reconnect (with the close code
// that caused it), a credential refresh, a rotation, a terminal failure.
type ConnEvent struct {
	At         time.Time     `json:"at"`
	Kind       ConnEventKind `json:"kind"` // reconnect, refresh, rotated, failed
	Code       int           `json:"close_code,omitempty"`
	HTTPStatus int           `json:"http_status,omitempty"`
	Reason     string        `json:"reason,omitempty"`
	Class      string        `json:"class,omitempty"`
	Attempt    int           `json:"attempt"`
}

// ConnEventKind is what a ConnEvent reports.
type ConnEventKind int

// The kinds of ConnEvent.
const (
	EventReconnect ConnEventKind = iota + 1 // the connection was lost; it reconnects
	EventRefresh                            // the credential was rejected; it reconnects with a fresh one
	EventRotated                            // the credential was rotated make-before-break
	EventFailed                             // the connection ended for good
)

func (k ConnEventKind) String() string {
	switch k {
	case EventReconnect:
		return "reconnect"
	case EventRefresh:
		return "refresh"
	case EventRotated:
		return "rotated"
	case EventFailed:
		return "failed"
	}
	return "ConnEventKind(" + strconv.Itoa(int(k)) + ")"
}

// MarshalText writes the kind's name, as /status.json shows it.
func (k ConnEventKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText reads a kind's name.
func (k *ConnEventKind) UnmarshalText(b []byte) error {
	for c := EventReconnect; c <= EventFailed; c++ {
		if c.String() == string(b) {
			*k = c
			return nil
		}
	}
	return fmt.Errorf("bridge: unknown connection event kind %q", b)
}

// QueuedBytes is the bytes of results held in all subscribers' queues,
// each result counted once: what Config.MaxQueuedBytes bounds.
func (s *Server) QueuedBytes() int64 { return s.budget.used.Load() }

// Snapshot reports the state of every upstream, sorted by name.
func (s *Server) Snapshot() Snapshot {
	s.mu.Lock()
	snap := Snapshot{Draining: s.draining}
	s.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(s.pools)) {
		snap.Upstreams = append(snap.Upstreams, s.pools[name].snapshot())
	}
	return snap
}

// UpstreamStats counts one upstream's pool. Shared counts operations with
// more than one subscriber.
type UpstreamStats struct {
	Connections, Operations, Shared int
}

// Stats counts each upstream's connections and operations.
func (s *Server) Stats() map[string]UpstreamStats {
	out := make(map[string]UpstreamStats, len(s.pools))
	for name, p := range s.pools {
		snap := p.snapshot()
		out[name] = UpstreamStats{Connections: len(snap.Connections), Operations: snap.Operations, Shared: snap.Shared}
	}
	return out
}
