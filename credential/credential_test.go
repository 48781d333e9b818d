package credential

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/timestamppb"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func jwt(exp int64) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none"}`)) + "." + enc([]byte(fmt.Sprintf(`{"sub":"x","exp":%d}`, exp))) + ".sig"
}

func TestStaticSourcesAndJWTExpiry(t *testing.T) {
	ctx := t.Context()
	exp := time.Now().Add(time.Hour).Unix()
	tok, err := Value(jwt(exp)).Token(ctx, Request{})
	if err != nil || tok.Expiry.Unix() != exp {
		t.Fatalf("value: %v %v", tok.Expiry, err)
	}
	t.Setenv("GQLBRIDGE_CRED_TEST", "envtok")
	if tok, err := Env("GQLBRIDGE_CRED_TEST").Token(ctx, Request{}); err != nil || tok.Value != "envtok" || !tok.Expiry.IsZero() {
		t.Fatalf("env: %+v %v", tok, err)
	}
	if _, err := Env("GQLBRIDGE_CRED_UNSET").Token(ctx, Request{}); err == nil || !strings.Contains(err.Error(), "GQLBRIDGE_CRED_UNSET") {
		t.Fatalf("unset env: %v", err)
	}
	path := filepath.Join(t.TempDir(), "token")
	os.WriteFile(path, []byte("first\n"), 0o600)
	f := File(path)
	if tok, _ := f.Token(ctx, Request{}); tok.Value != "first" {
		t.Fatalf("file: %q", tok.Value)
	}
	os.WriteFile(path, []byte("rotated"), 0o600) // a projected token rotates in place
	if tok, _ := f.Token(ctx, Request{}); tok.Value != "rotated" {
		t.Fatalf("file after rotation: %q", tok.Value)
	}
	os.WriteFile(path, []byte("  "), 0o600)
	if _, err := f.Token(ctx, Request{}); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty file: %v", err)
	}
}

func TestCommand(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	tok, err := Command{Argv: []string{"sh", "-c", `echo "{\"token\":\"t-$GQLBRIDGE_REASON-$GQLBRIDGE_CLOSE_CODE\",\"expires_in\":60}"`}}.
		Token(ctx, Request{Upstream: "u", Refresh: true, CloseCode: 4401})
	if err != nil || tok.Value != "t-rejected-4401" || time.Until(tok.Expiry) < 50*time.Second {
		t.Fatalf("json output: %+v %v", tok, err)
	}
	tok, err = Command{Argv: []string{"sh", "-c", "echo plain-token"}}.Token(ctx, Request{})
	if err != nil || tok.Value != "plain-token" {
		t.Fatalf("plain output: %+v %v", tok, err)
	}
	_, err = Command{Argv: []string{"sh", "-c", "echo secret-on-stdout; echo oops >&2; exit 3"}}.Token(ctx, Request{})
	if err == nil || !strings.Contains(err.Error(), "oops") || strings.Contains(err.Error(), "secret-on-stdout") {
		t.Fatalf("failing command: %v", err)
	}
	_, err = Command{Argv: []string{"sleep", "5"}, Timeout: 50 * time.Millisecond}.Token(ctx, Request{})
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("slow command: %v", err)
	}
}

// countingSource blocks until released and counts calls.
type countingSource struct {
	calls   atomic.Int32
	release chan struct{}
	expiry  time.Time
}

func (s *countingSource) Token(ctx context.Context, req Request) (Token, error) {
	n := s.calls.Add(1)
	<-s.release
	return Token{Value: fmt.Sprintf("tok-%d", n), Expiry: s.expiry}, nil
}

func TestCacheCollapsesConcurrentRefreshes(t *testing.T) {
	t.Parallel()
	src := &countingSource{release: make(chan struct{})}
	c := NewCache(src)
	var (
		wg      sync.WaitGroup
		started atomic.Int32
	)
	results := make(chan string, 50)
	for range 50 {
		wg.Go(func() {
			started.Add(1)
			tok, err := c.Token(t.Context(), Request{Refresh: true})
			if err != nil {
				t.Error(err)
			}
			results <- tok.Value
		})
	}
	// Release the fetch only when every caller is waiting on it: a refresh
	// asked after a fetch completed rightly starts another.
	for src.calls.Load() == 0 || started.Load() < 50 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // from started.Add to waiting in Token
	close(src.release)
	wg.Wait()
	close(results)
	for v := range results {
		if v != "tok-1" {
			t.Fatalf("got %q; every caller should share the one fetch", v)
		}
	}
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
	// Cached now: no fetch without a reason.
	if tok, _ := c.Token(t.Context(), Request{}); tok.Value != "tok-1" || src.calls.Load() != 1 {
		t.Fatalf("not cached: %q after %d fetches", tok.Value, src.calls.Load())
	}
}

func TestCacheRefetchesNearExpiry(t *testing.T) {
	t.Parallel()
	src := &countingSource{release: make(chan struct{}), expiry: time.Now().Add(10 * time.Second)}
	close(src.release)
	c := NewCache(src) // default skew 30s: a token with 10s left is stale
	c.Token(t.Context(), Request{})
	c.Token(t.Context(), Request{})
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2 (token within the skew of its expiry)", n)
	}
}

func TestOAuth2ClientCredentials(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, secret, ok := r.BasicAuth()
		if !ok || id != "bridge" || secret != "s3cret" || r.FormValue("grant_type") != "client_credentials" {
			http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"access_token":"at-1","token_type":"bearer","expires_in":3600}`)
	}))
	defer srv.Close()
	tok, err := NewOAuth2(srv.URL, "bridge", "s3cret", []string{"subs"}, nil, srv.Client()).Token(t.Context(), Request{})
	if err != nil || tok.Value != "at-1" || time.Until(tok.Expiry) < 59*time.Minute {
		t.Fatalf("%+v %v", tok, err)
	}
	_, err = NewOAuth2(srv.URL, "bridge", "wrong", nil, nil, srv.Client()).Token(t.Context(), Request{})
	if err == nil || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("bad secret: %v", err)
	}
}

type tokenServer struct {
	bridgev1.UnimplementedTokenServiceServer
	mu   sync.Mutex
	seen []*bridgev1.GetTokenRequest
}

func (s *tokenServer) GetToken(ctx context.Context, r *bridgev1.GetTokenRequest) (*bridgev1.GetTokenResponse, error) {
	s.mu.Lock()
	s.seen = append(s.seen, r)
	s.mu.Unlock()
	return &bridgev1.GetTokenResponse{Token: "cb-" + r.GetReason().String(), ExpiresAt: timestamppb.New(time.Now().Add(time.Hour))}, nil
}

func TestCallback(t *testing.T) {
	t.Parallel()
	lis := bufconn.Listen(1 << 16)
	gs := grpc.NewServer()
	ts := &tokenServer{}
	bridgev1.RegisterTokenServiceServer(gs, ts)
	go gs.Serve(lis)
	defer gs.Stop()
	conn, err := grpc.NewClient("passthrough:///x", grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cb := NewCallback(conn, time.Second)
	tok, err := cb.Token(t.Context(), Request{Upstream: "orders", Refresh: true, CloseCode: 4401, CloseReason: "expired"})
	if err != nil || tok.Value != "cb-REASON_REJECTED" || tok.Expiry.IsZero() {
		t.Fatalf("%+v %v", tok, err)
	}
	ts.mu.Lock()
	got := ts.seen[0]
	ts.mu.Unlock()
	if got.GetUpstream() != "orders" || got.GetCloseCode() != 4401 || got.GetCloseReason() != "expired" {
		t.Fatalf("request %v", got)
	}
}

// TestOAuth2SecretFileRotated: with client_secret_file the secret is read
// for every token, so a rotated secret is used from the next token on; a
// file that cannot be read, or is empty, fails that token, naming the key,
// never the secret.
func TestOAuth2SecretFileRotated(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	want := "secret-1"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if _, secret, ok := r.BasicAuth(); !ok || secret != want {
			http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"for-%s","token_type":"bearer","expires_in":3600}`, want)
	}))
	defer srv.Close()
	file := filepath.Join(t.TempDir(), "client-secret")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(file+".new", []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".new", file); err != nil {
			t.Fatal(err)
		}
	}
	write("secret-1\n")
	src := NewOAuth2SecretFile(srv.URL, "bridge", file, nil, nil, srv.Client())
	if tok, err := src.Token(t.Context(), Request{}); err != nil || tok.Value != "for-secret-1" {
		t.Fatalf("first token: %+v %v", tok, err)
	}
	mu.Lock()
	want = "secret-2"
	mu.Unlock()
	write("secret-2\n")
	if tok, err := src.Token(t.Context(), Request{}); err != nil || tok.Value != "for-secret-2" {
		t.Fatalf("after the secret was rotated: %+v %v", tok, err)
	}
	write("\n")
	if _, err := src.Token(t.Context(), Request{}); err == nil || !strings.Contains(err.Error(), "client_secret_file "+file+" is empty") {
		t.Fatalf("with the file emptied: %v, want an error saying it is empty", err)
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	_, err := src.Token(t.Context(), Request{})
	if err == nil || !strings.Contains(err.Error(), "client_secret_file") || strings.Contains(err.Error(), "secret-2") {
		t.Fatalf("with the file gone: %v, want an error naming client_secret_file", err)
	}
}
