package session

import (
	"strings"
	"testing"
)

func TestCheckURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"ws://h/graphql":            "ws://h/graphql",
		"WS://h:8080/graphql?A=B":   "ws://h:8080/graphql?A=B",
		"Wss://u:p@H.example/g":     "wss://u:p@H.example/g",
		"wss://[::1]:443/subscribe": "wss://[::1]:443/subscribe",
		"ws://h:65535":              "ws://h:65535",
	} {
		got, err := CheckURL(in)
		if err != nil || got != want {
			t.Errorf("CheckURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"http://h/g":             "ws:// or wss://",
		"h/g":                    "ws:// or wss://",
		"ws:///g":                "must name a host",
		"ws:h":                   "must name a host",
		"ws://h:99999/g":         "port 99999 is out of range",
		"ws://h:0/g":             "port 0 is out of range",
		"ws://h:/g":              "empty port",
		"ws://h/%zz?k=s3cret":    "invalid %-escape",
		"ws://s3cret@h:x/g":      "not a valid URL",
		"ws://u:p@h:99999/g?k=v": "out of range",
	} {
		_, err := CheckURL(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckURL(%q) = %v, want an error containing %q", in, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("CheckURL(%q) = %v: quotes the URL", in, err)
		}
	}
}
