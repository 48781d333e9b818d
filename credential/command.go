package credential

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// Command runs a program for every token it yields. The program prints the
// token on stdout, or a JSON object {"token": "...", "expires_at":
// "RFC 3339"} or {"access_token": "...", "expires_in": seconds}. It learns
// why it runs from GQLBRIDGE_UPSTREAM, GQLBRIDGE_REASON (connect, rejected,
// expiring) and GQLBRIDGE_CLOSE_CODE.
type Command struct {
	Argv    []string
	Timeout time.Duration // default 10s
}

// Token runs the command.
func (c Command) Token(ctx context.Context, req Request) (Token, error) {
	if len(c.Argv) == 0 {
		return Token{}, errors.New("credential: command is empty")
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Argv[0], c.Argv[1:]...)
	cmd.Env = append(cmd.Environ(),
		"GQLBRIDGE_UPSTREAM="+req.Upstream,
		"GQLBRIDGE_REASON="+req.reason(),
		fmt.Sprintf("GQLBRIDGE_CLOSE_CODE=%d", req.CloseCode))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return Token{}, fmt.Errorf("credential: command %s timed out after %s", c.Argv[0], timeout)
		}
		// stderr is the program's own diagnostics; the token travels on
		// stdout only, so stderr is safe to quote (trimmed).
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return Token{}, fmt.Errorf("credential: command %s failed: %v: %s", c.Argv[0], err, msg)
	}
	return parseTokenOutput(stdout.Bytes(), c.Argv[0])
}

func parseTokenOutput(out []byte, what string) (Token, error) {
	out = bytes.TrimSpace(out)
	if len(out) == 0 {
		return Token{}, fmt.Errorf("credential: %s printed no token", what)
	}
	if out[0] != '{' {
		return Token{Value: string(out), Expiry: jwtExpiry(string(out))}, nil
	}
	var v struct {
		Token       string    `json:"token"`
		AccessToken string    `json:"access_token"`
		ExpiresAt   time.Time `json:"expires_at"`
		ExpiresIn   float64   `json:"expires_in"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return Token{}, fmt.Errorf("credential: %s printed JSON that is not a token object (want {\"token\", \"expires_at\"})", what)
	}
	t := Token{Value: v.Token, Expiry: v.ExpiresAt}
	if t.Value == "" {
		t.Value = v.AccessToken
	}
	if t.Value == "" {
		return Token{}, fmt.Errorf("credential: %s printed a JSON object without \"token\"", what)
	}
	if t.Expiry.IsZero() && v.ExpiresIn > 0 {
		t.Expiry = time.Now().Add(time.Duration(v.ExpiresIn * float64(time.Second)))
	}
	if t.Expiry.IsZero() {
		t.Expiry = jwtExpiry(t.Value)
	}
	return t, nil
}

func (r Request) reason() string {
	switch {
	case r.Expiring:
		return "expiring"
	case r.Refresh:
		return "rejected"
	}
	return "connect"
}
