package session

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestURLSecretsNotInErrors: the user info and query values of the upstream
// URL reach neither the close reasons of state changes and lifecycle events,
// nor the terminal error, nor the logger, although net/http and the
// WebSocket library quote the URL in their dial errors; nor does a
// credential error that quotes a token endpoint's URL. The host and the
// cause stay.
func TestURLSecretsNotInErrors(t *testing.T) {
	t.Parallel()
	addr := deadAddr(t)
	st := &states{}
	var logs bytes.Buffer
	var calls int
	c := dialTest(t, Config{URL: "ws://user-s3cret:pw-s3cret@" + addr + "/graphql?apikey=key-s3cret",
		OnState: st.fn, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Handshake: func(ctx context.Context, a Attempt) (Handshake, error) {
			if calls++; calls == 1 {
				return Handshake{}, errors.New(`Post "https://auth.internal/token?client_secret=cs-s3cret": connection refused`)
			}
			return Handshake{}, nil
		},
		Backoff: Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond, MaxElapsed: 200 * time.Millisecond}})
	p := newProbe()
	subscribe(t, c, p)
	err := p.waitDone(t)
	<-c.Done()
	texts := []string{err.Error(), c.Err().Error(), logs.String()}
	for _, ev := range p.Events() {
		texts = append(texts, ev.Reason)
	}
	for _, sc := range st.list() {
		if sc.Cause != nil {
			texts = append(texts, sc.Cause.Reason, sc.Cause.Error())
		}
	}
	all := strings.Join(texts, "\n")
	if strings.Contains(all, "s3cret") {
		t.Fatalf("a secret of a URL is shown:\n%s", all)
	}
	if !strings.Contains(all, addr+"/graphql?apikey=REDACTED") || !strings.Contains(all, "connection refused") ||
		!strings.Contains(all, "auth.internal/token?client_secret=REDACTED") {
		t.Fatalf("the errors lost the host or the cause:\n%s", all)
	}
}
