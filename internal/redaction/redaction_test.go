package redaction

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	t.Parallel()
	cases := []struct{ in, want string }{
		{"ws://host:8080/graphql", "ws://host:8080/graphql"},
		{"wss://user:pw@host/graphql", "wss://REDACTED@host/graphql"},
		{"ws://apikey@host/g", "ws://REDACTED@host/g"},
		{"ws://host/g?apikey=s3cret&v=2", "ws://host/g?apikey=REDACTED&v=REDACTED"},
		{"ws://host/g?s3cret", "ws://host/g?REDACTED"},
		{"ws://host/g?a=1;b=s3cret", "ws://host/g?a=REDACTED"},
		{"ws://host/g#s3cret", "ws://host/g"},
		{"ws:s3cret", "ws:REDACTED"},
		{"ws://host/%zz?k=s3cret", "(unparsable URL REDACTED)"},
	}
	for _, tc := range cases {
		if got := URL(tc.in); got != tc.want {
			t.Errorf("URL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestTextHidesDialErrors: the errors net/http produces for a URL with user
// info and a query keep the host and the cause and lose the secrets.
func TestTextHidesDialErrors(t *testing.T) {
	t.Parallel()
	_, err := http.Get("http://user-s3cret:pw-s3cret@127.0.0.1:0/graphql?apikey=key-s3cret")
	if err == nil {
		t.Fatal("a request to port 0 succeeded")
	}
	wrapped := fmt.Errorf("failed to WebSocket dial: failed to send handshake request: %w", err)
	for _, msg := range []string{wrapped.Error(), fmt.Sprintf("%q", wrapped.Error()),
		"url WS://user-s3cret@h/g?apikey=key-s3cret must start with ws://", errors.New("parse \"ws://h/%zz?k=key-s3cret\": invalid URL escape").Error()} {
		got := Text(msg)
		if strings.Contains(got, "s3cret") {
			t.Errorf("Text(%q) = %q: a secret is left", msg, got)
		}
	}
	if got := Text(wrapped.Error()); !strings.Contains(got, "127.0.0.1:0/graphql?apikey=REDACTED") || !strings.Contains(got, "failed to send handshake request") {
		t.Errorf("Text(%q) = %q: lost what an operator needs", wrapped.Error(), got)
	}
	if got := Text("no url here: a://"); got != "no url here: a://" {
		t.Errorf("Text changed text without a URL: %q", got)
	}
}
