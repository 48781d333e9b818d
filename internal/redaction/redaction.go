// Package redaction hides what a URL can carry of a credential: its user
// info and its query values. Everything that shows an upstream URL, or text
// that may quote one (a dial error from net/http or the WebSocket library),
// passes it through here first: logs, statuses, lifecycle events, the admin
// pages and check-config. It never hides the scheme, host, port, path or
// query keys, which operators need to tell upstreams apart.
package redaction

import (
	"net/url"
	"regexp"
	"strings"
)

// Mask stands in for what was hidden.
const Mask = "REDACTED"

// URL returns raw with its user info and every query value replaced by
// Mask, and its fragment dropped; a URL without these is returned as
// written. A query item without "=" is replaced
// whole: it may be a bare key. Text that does not parse as a URL is replaced
// whole.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL " + Mask + ")"
	}
	if u.User == nil && u.Opaque == "" && u.RawQuery == "" && !u.ForceQuery && u.Fragment == "" {
		return raw // nothing to hide: shown as written
	}
	if u.User != nil {
		u.User = url.User(Mask)
	}
	if u.Opaque != "" {
		u.Opaque = Mask
	}
	if u.RawQuery != "" {
		items := strings.Split(u.RawQuery, "&")
		for i, item := range items {
			key, _, found := strings.Cut(item, "=")
			if !found {
				items[i] = Mask
				continue
			}
			items[i] = key + "=" + Mask
		}
		u.RawQuery = strings.Join(items, "&")
	}
	u.ForceQuery = false
	u.Fragment, u.RawFragment = "", ""
	return u.String()
}

// urlInText matches a URL inside a message: a scheme, "://", and everything
// up to a space or a quote.
var urlInText = regexp.MustCompile(`(?i)[a-z][a-z0-9+.-]*://[^\s"'<>` + "`" + `]*`)

// Text returns s with every URL in it passed through [URL].
func Text(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	return urlInText.ReplaceAllStringFunc(s, URL)
}
