package session

import (
	"net/http"
	"strings"
	"testing"
)

// TestRulesWellFormed: every row of the outcome table names exactly one
// close code or HTTP status, once, with a name and a verdict its class can
// have; 5xx is one row.
func TestRulesWellFormed(t *testing.T) {
	t.Parallel()
	codes, statuses := map[CloseCode]bool{}, map[int]bool{}
	for _, r := range rules {
		switch {
		case r.Code != 0 && r.HTTPStatus != 0, r.Code == 0 && r.HTTPStatus == 0:
			t.Errorf("row %+v: want a close code or an HTTP status", r)
		case r.Code != 0 && (r.Code < FirstCloseCode || r.Code > LastCloseCode):
			t.Errorf("row %+v: close code out of range", r)
		case r.Code != 0 && codes[r.Code], r.HTTPStatus != 0 && statuses[r.HTTPStatus]:
			t.Errorf("row %+v: named twice", r)
		}
		codes[r.Code], statuses[r.HTTPStatus] = true, true
		if r.Name == "" {
			t.Errorf("row %+v has no name", r)
		}
		if r.BeforeAck != r.AfterAck && r.Verdict != VerdictByClass {
			t.Errorf("row %+v: a row whose class depends on the ack takes the class's verdict", r)
		}
		if r.Verdict == VerdictByClass && r.BeforeAck == r.AfterAck {
			t.Errorf("row %+v: name its verdict", r)
		}
	}
	for _, status := range []int{500, 502, 503, 599} {
		if r := statusRule(status); r.HTTPStatus != http.StatusInternalServerError {
			t.Errorf("HTTP %d: row %+v, want the 5xx row", status, r)
		}
	}
	if r := statusRule(http.StatusBadRequest); r != &otherStatus {
		t.Errorf("HTTP 400: row %+v, want any other status", r)
	}
	if CloseCode(4321).Name() != "" || CodeForbidden.Name() != "forbidden" {
		t.Errorf("Name: %q %q", CloseCode(4321).Name(), CodeForbidden.Name())
	}
}

// TestParseOverride: the close_codes checks the config validator relies on.
func TestParseOverride(t *testing.T) {
	t.Parallel()
	if c, cl, err := ParseOverride(4429, "transient"); err != nil || c != CodeTooManyInits || cl != ClassTransient {
		t.Errorf("ParseOverride(4429, transient) = %v, %v, %v", c, cl, err)
	}
	for _, code := range []int{999, 5000, 0, -1} {
		if _, _, err := ParseOverride(code, "auth"); err == nil || !strings.Contains(err.Error(), "allowed: 1000-4999") {
			t.Errorf("ParseOverride(%d): %v, want an out-of-range error", code, err)
		}
	}
	if _, _, err := ParseOverride(4000, "fatal"); err == nil || !strings.Contains(err.Error(), `unknown class "fatal"`) {
		t.Errorf("ParseOverride(4000, fatal): %v", err)
	}
}

// TestEnumStrings: every value of the session's enumerations has its own
// name, and an unknown value says what it is.
func TestEnumStrings(t *testing.T) {
	t.Parallel()
	var names []string
	for _, s := range []State{StateConnecting, StateReady, StateBackoff, StateClosed} {
		names = append(names, s.String())
	}
	for _, k := range []EventKind{Subscribed, Reconnecting, Resubscribed} {
		names = append(names, k.String())
	}
	for _, c := range []Class{ClassTransient, ClassAuth, ClassMisconfig, ClassBridgeFault} {
		names = append(names, c.String())
	}
	for _, v := range Verdicts() {
		names = append(names, v.String())
	}
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] || strings.Contains(n, "(") {
			t.Errorf("name %q repeated or a fallback", n)
		}
		seen[n] = true
	}
	if got := EventKind(9).String(); got != "EventKind(9)" {
		t.Errorf("EventKind(9) = %q", got)
	}
}
