package access

import (
	"errors"
	"testing"
)

// TestBearer: the one reader of "Bearer TOKEN" values, shared by caller
// authentication and forwarded credentials.
func TestBearer(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]struct {
		tok string
		ok  bool
	}{
		"Bearer abc":     {"abc", true},
		"bearer abc":     {"abc", true},
		"Bearer  abc \n": {"abc", true},
		"Basic abc":      {"", false},
		"abc":            {"", false},
		"Bearerabc":      {"", false},
	} {
		if tok, ok := Bearer(v); ok != want.ok || (ok && tok != want.tok) {
			t.Errorf("Bearer(%q) = %q, %v; want %q, %v", v, tok, ok, want.tok, want.ok)
		}
	}
}

// TestAllows: a caller may use the upstreams it lists, or all with "*";
// the refusal names the caller and its list.
func TestAllows(t *testing.T) {
	t.Parallel()
	c := &Caller{Name: "reports", Upstreams: []string{"a", "b"}}
	if err := c.Allows("a"); err != nil {
		t.Errorf("a: %v", err)
	}
	err := c.Allows("c")
	if !errors.Is(err, ErrForbidden) || err.Error() != "caller may not use this upstream: caller reports may use a, b" {
		t.Errorf("c: %v", err)
	}
	if err := (&Caller{Name: "ops", Upstreams: []string{"*"}}).Allows("c"); err != nil {
		t.Errorf("*: %v", err)
	}
}
