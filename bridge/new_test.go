package bridge_test

import (
	"strings"
	"testing"

	"github.com/gqlbridge/gqlbridge/bridge"
	"github.com/gqlbridge/gqlbridge/session"
)

// TestNewRefusesURLsTheSessionCannotDial: an upstream URL the session would
// refuse on every Subscribe is refused when the service is built, without
// quoting the URL; one in upper case is accepted.
func TestNewRefusesURLsTheSessionCannotDial(t *testing.T) {
	t.Parallel()
	for url, want := range map[string]string{
		"http://h/graphql":                 "must be a ws:// or wss:// URL",
		"ws://h:99999/graphql?k=s3cret":    "out of range",
		"WS://h/graphql":                   "",
		"wss://user:pw@h:8443/g?k=v&k2=v2": "",
	} {
		svc, err := bridge.New(bridge.Config{Upstreams: map[string]*bridge.Upstream{"a": {Session: session.Config{URL: url}}}, Logger: quietLogger()})
		if want == "" {
			if err != nil {
				t.Errorf("%s: %v", url, err)
			} else {
				svc.Close()
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "upstream a") || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: %v, want an error naming upstream a and containing %q", url, err, want)
		}
	}
}

// TestNewLeavesItsConfigAlone: New fills in defaults in its own copy; the
// Upstream the caller handed it is left as given, so one value can build
// several services (or be compared with the configuration it came from).
func TestNewLeavesItsConfigAlone(t *testing.T) {
	t.Parallel()
	up := &bridge.Upstream{Session: session.Config{URL: "ws://127.0.0.1:1/graphql"}}
	given := *up
	svc, err := bridge.New(bridge.Config{Upstreams: map[string]*bridge.Upstream{"a": up}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	svc.Close()
	if up.MaxOpsPerConn != given.MaxOpsPerConn || up.QueueSize != given.QueueSize || up.QueueMaxBytes != given.QueueMaxBytes || up.IdleTimeout != given.IdleTimeout {
		t.Fatalf("New wrote into the caller's Upstream: %+v, given %+v", *up, given)
	}
}
