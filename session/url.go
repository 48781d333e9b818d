package session

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// CheckURL reports whether raw is an upstream URL the session can dial:
// scheme ws or wss, in any case (schemes are case-insensitive, RFC 3986
// §3.1), a host, and a port, when one is given, from 1 to 65535. It returns
// raw with its scheme in lower case and nothing else changed. The config
// validator and [Dial] both call it, so what loads is what dials. Its errors
// never quote the URL, which may carry a credential.
func CheckURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		var esc url.EscapeError
		switch {
		case errors.As(err, &esc):
			return "", errors.New("has an invalid %-escape")
		case errors.As(err, &ue):
			return "", fmt.Errorf("is not a valid URL: %v", ue.Err)
		}
		return "", errors.New("is not a valid URL")
	}
	if u.Scheme != "ws" && u.Scheme != "wss" { // url.Parse lowers the scheme
		return "", errors.New("must be a ws:// or wss:// URL")
	}
	if u.Opaque != "" || u.Hostname() == "" {
		return "", errors.New("must name a host: ws://HOST[:PORT]/PATH or wss://HOST[:PORT]/PATH")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("port %s is out of range: use 1 to 65535", p)
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return "", errors.New("has an empty port after the host: remove the colon or give a port from 1 to 65535")
	}
	i := strings.IndexByte(raw, ':')
	return u.Scheme + raw[i:], nil
}
