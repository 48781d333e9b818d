package wsconn

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// DialOptions configure Dial.
type DialOptions struct {
	// HTTPClient performs the upgrade; nil means http.DefaultClient. Its
	// Timeout, if any, bounds the handshake only.
	HTTPClient *http.Client
	// Header is sent with the upgrade request.
	Header http.Header
	// Subprotocols are offered in this order.
	Subprotocols []string
}

// keyGUID is the GUID of RFC 6455 §1.3 that the server appends to the key.
const keyGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// Dial opens a WebSocket to rawURL (ws, wss, http or https). ctx bounds the
// handshake only. The response is returned whenever there was one, also
// with an error: a refusal (401, 503) keeps its status and headers, its body
// closed; a 101 that breaks the rules of the upgrade is returned as it is.
func Dial(ctx context.Context, rawURL string, opts DialOptions) (*Conn, *http.Response, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, nil, fmt.Errorf("websocket dial: %w", err)
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	case "http", "https":
	default:
		return nil, nil, fmt.Errorf("websocket dial: unexpected url scheme %q", u.Scheme)
	}
	hc := client(opts.HTTPClient)
	if hc.Timeout > 0 {
		// http.Client.Timeout would also cut the upgraded stream.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, hc.Timeout)
		defer cancel()
		hc.Timeout = 0
	}
	var k [16]byte
	_, _ = rand.Read(k[:]) // never fails (crypto/rand)
	key := base64.StdEncoding.EncodeToString(k[:])

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("websocket dial: %w", err)
	}
	req.Header = opts.Header.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", key)
	if len(opts.Subprotocols) > 0 {
		req.Header.Set("Sec-WebSocket-Protocol", strings.Join(opts.Subprotocols, ","))
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, resp, fmt.Errorf("websocket dial: %w", err)
	}
	body := resp.Body
	resp.Body = http.NoBody
	if err := verify(resp, key, opts.Subprotocols); err != nil {
		_ = body.Close()
		return nil, resp, fmt.Errorf("websocket dial: %w", err)
	}
	rwc, ok := body.(io.ReadWriteCloser)
	if !ok {
		_ = body.Close()
		return nil, resp, fmt.Errorf("websocket dial: the upgraded response body is a %T, not an io.ReadWriteCloser", body)
	}
	return newConn(rwc, resp.Header.Get("Sec-WebSocket-Protocol")), resp, nil
}

// client copies hc (or the default client) so that a redirect to a ws or
// wss URL is followed over http or https.
func client(hc *http.Client) *http.Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	c := *hc
	check := hc.CheckRedirect
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		switch req.URL.Scheme {
		case "ws":
			req.URL.Scheme = "http"
		case "wss":
			req.URL.Scheme = "https"
		}
		if check != nil {
			return check(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &c
}

// verify checks the server's answer to the upgrade (RFC 6455 §4.1).
func verify(resp *http.Response, key string, offered []string) error {
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Errorf("expected handshake response status code 101 but got %d", resp.StatusCode)
	}
	if !hasToken(resp.Header, "Connection", "upgrade") {
		return fmt.Errorf("protocol violation: Connection header %q does not contain Upgrade", resp.Header.Get("Connection"))
	}
	if !hasToken(resp.Header, "Upgrade", "websocket") {
		return fmt.Errorf("protocol violation: Upgrade header %q does not contain websocket", resp.Header.Get("Upgrade"))
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != acceptKey(key) {
		return fmt.Errorf("protocol violation: invalid Sec-WebSocket-Accept %q", got)
	}
	if ext := resp.Header.Values("Sec-WebSocket-Extensions"); len(ext) > 0 {
		return fmt.Errorf("protocol violation: extensions %q were never offered", strings.Join(ext, ", "))
	}
	if p := resp.Header.Get("Sec-WebSocket-Protocol"); p != "" {
		for _, o := range offered {
			if strings.EqualFold(o, p) {
				return nil
			}
		}
		return fmt.Errorf("protocol violation: unexpected Sec-WebSocket-Protocol from server: %q", p)
	}
	return nil
}

func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + keyGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// hasToken reports whether a comma-separated header contains token,
// ignoring case.
func hasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
