package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gqlbridge/gqlbridge/admin"
	"github.com/gqlbridge/gqlbridge/bridge"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
	"github.com/gqlbridge/gqlbridge/session"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSnapshot is a populated snapshot: two upstreams, connections in every
// state, and recent events including a 1012 reconnect and a 4401 refresh.
func fakeSnapshot(now time.Time) bridge.Snapshot {
	return bridge.Snapshot{Upstreams: []bridge.UpstreamSnapshot{
		{
			Name: "orders", URL: "wss://orders.example.com/graphql",
			Operations: 7, Shared: 2, Subscriptions: 9,
			Connections: []bridge.ConnSnapshot{
				{State: session.StateReady, Subprotocol: "graphql-transport-ws", Operations: 5, Since: now.Add(-3 * time.Minute), Attempt: 1},
				{State: session.StateBackoff, Subprotocol: "graphql-transport-ws", Operations: 2, Since: now.Add(-2 * time.Second), Attempt: 3},
			},
			Events: []bridge.ConnEvent{
				{At: now.Add(-90 * time.Second), Kind: bridge.EventReconnect, Code: 1012, Reason: "service restart", Class: "transient", Attempt: 1},
				{At: now.Add(-30 * time.Second), Kind: bridge.EventRefresh, Code: 4401, Reason: "token expired", Class: "auth", Attempt: 2},
			},
		},
		{
			Name: "legacy", URL: "ws://legacy.internal:8080/subscriptions",
			Operations: 1, Subscriptions: 1,
			Connections: []bridge.ConnSnapshot{
				{State: session.StateConnecting, Operations: 0, Since: now.Add(-time.Second), Attempt: 1},
				{State: session.StateClosed, Subprotocol: "graphql-ws", Operations: 1, Since: now.Add(-10 * time.Second), Attempt: 5},
			},
			Events: []bridge.ConnEvent{
				{At: now.Add(-10 * time.Second), Kind: bridge.EventFailed, HTTPStatus: 403, Reason: "handshake refused <script>alert(1)</script>", Class: "misconfiguration", Attempt: 5},
			},
		},
	}}
}

func get(t *testing.T, h http.Handler, method, path string) (int, http.Header, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Code, rec.Header(), rec.Body.String()
}

func TestStatusPage(t *testing.T) {
	now := time.Now()
	h := admin.Handler(admin.Options{
		Snapshot: func() bridge.Snapshot { return fakeSnapshot(now) },
		Version:  "v1.2.3",
		Started:  now.Add(-(2*time.Hour + 5*time.Minute)),
	})
	code, hdr, body := get(t, h, http.MethodGet, "/")
	if code != http.StatusOK {
		t.Fatalf("GET / = %d\n%s", code, body)
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("Content-Type = %q", ct)
	}
	for _, want := range []string{
		`<meta http-equiv="refresh" content="5">`,
		"v1.2.3", "2h 05m", ">serving<",
		"<h2>orders</h2>", "wss://orders.example.com/graphql",
		"<h2>legacy</h2>", "ws://legacy.internal:8080/subscriptions",
		`<b class="subscriptions">9</b>`, "<b>2</b> shared",
		`class="pill state ok">ready<`, `class="pill state warn">backoff<`,
		`class="pill state warn">connecting<`, `class="pill state bad">closed<`,
		"graphql-transport-ws", "graphql-ws", "3m 00s ago",
		">reconnect<", "1012", "service restart", ">refresh<", "4401", "unauthorized",
		">failed<", "403", "misconfiguration", "token expired",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	// Newest event first.
	if i, j := strings.Index(body, ">refresh<"), strings.Index(body, ">reconnect<"); i < 0 || j < 0 || i > j {
		t.Errorf("events not newest first: refresh at %d, reconnect at %d", i, j)
	}
	if strings.Contains(body, "<script>") {
		t.Error("a reason's <script> reached the page unescaped")
	}
	if !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Error("the escaped reason is missing")
	}
	if strings.Contains(body, "no connections yet") {
		t.Error("empty state shown with connections")
	}
	if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}
}

func TestStatusPageEmptyAndDraining(t *testing.T) {
	h := admin.Handler(admin.Options{Snapshot: func() bridge.Snapshot {
		return bridge.Snapshot{Draining: true, Upstreams: []bridge.UpstreamSnapshot{{Name: "demo", URL: "ws://127.0.0.1:1/graphql"}}}
	}})
	_, _, body := get(t, h, http.MethodGet, "/")
	for _, want := range []string{"no connections yet — they open on the first Subscribe", ">draining<", "<h2>demo</h2>", "version <b>unknown</b>"} {
		if !strings.Contains(body, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	// No Snapshot func at all still renders.
	if code, _, body := get(t, admin.Handler(admin.Options{}), http.MethodGet, "/"); code != http.StatusOK || !strings.Contains(body, "no upstreams configured") {
		t.Errorf("GET / without Snapshot = %d\n%s", code, body)
	}
}

func TestStatusJSON(t *testing.T) {
	now := time.Now().UTC().Round(0) // as JSON decodes it: UTC, no monotonic reading
	want := fakeSnapshot(now)
	h := admin.Handler(admin.Options{Snapshot: func() bridge.Snapshot { return want }})
	code, hdr, body := get(t, h, http.MethodGet, "/status.json")
	if code != http.StatusOK || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /status.json = %d %q", code, hdr.Get("Content-Type"))
	}
	var got bridge.Snapshot
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded snapshot differs:\n got %+v\nwant %+v", got, want)
	}
}

func TestHealthAndReady(t *testing.T) {
	var ready atomic.Bool
	ready.Store(true)
	h := admin.Handler(admin.Options{Ready: ready.Load})
	if code, _, body := get(t, h, http.MethodGet, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, _, body := get(t, h, http.MethodGet, "/readyz"); code != 200 || body != "ok\n" {
		t.Errorf("/readyz ready = %d %q", code, body)
	}
	ready.Store(false)
	if code, _, body := get(t, h, http.MethodGet, "/readyz"); code != 503 || body != "draining\n" {
		t.Errorf("/readyz draining = %d %q", code, body)
	}
	if code, _, _ := get(t, h, http.MethodGet, "/healthz"); code != 200 {
		t.Errorf("/healthz while draining = %d", code)
	}
	ready.Store(true)
	if code, _, _ := get(t, h, http.MethodGet, "/readyz"); code != 200 {
		t.Errorf("/readyz ready again = %d", code)
	}
	if code, _, _ := get(t, h, http.MethodHead, "/readyz"); code != 200 {
		t.Errorf("HEAD /readyz = %d", code)
	}
}

func TestMetrics(t *testing.T) {
	if code, _, _ := get(t, admin.Handler(admin.Options{}), http.MethodGet, "/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics without a handler = %d, want 404", code)
	}
	m := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "up 1\n") })
	if code, _, body := get(t, admin.Handler(admin.Options{Metrics: m}), http.MethodGet, "/metrics"); code != 200 || body != "up 1\n" {
		t.Errorf("/metrics = %d %q", code, body)
	}
}

func TestPprof(t *testing.T) {
	off := admin.Handler(admin.Options{})
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap"} {
		if code, _, _ := get(t, off, http.MethodGet, p); code != http.StatusNotFound {
			t.Errorf("%s without Pprof = %d, want 404", p, code)
		}
	}
	on := admin.Handler(admin.Options{Pprof: true})
	if code, _, body := get(t, on, http.MethodGet, "/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/ = %d", code)
	}
	if code, _, _ := get(t, on, http.MethodGet, "/debug/pprof/cmdline"); code != 200 {
		t.Errorf("/debug/pprof/cmdline = %d", code)
	}
	if code, _, _ := get(t, on, http.MethodGet, "/debug/pprof/goroutine?debug=1"); code != 200 {
		t.Errorf("/debug/pprof/goroutine = %d", code)
	}
}

func TestMethodsAndPaths(t *testing.T) {
	h := admin.Handler(admin.Options{Pprof: true, Metrics: http.NotFoundHandler()})
	for _, p := range []string{"/", "/status.json", "/healthz", "/readyz", "/metrics", "/debug/pprof/"} {
		for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
			code, hdr, _ := get(t, h, m, p)
			if code != http.StatusMethodNotAllowed || hdr.Get("Allow") != "GET, HEAD" {
				t.Errorf("%s %s = %d Allow %q, want 405", m, p, code, hdr.Get("Allow"))
			}
		}
	}
	if code, _, _ := get(t, h, http.MethodGet, "/nope"); code != http.StatusNotFound {
		t.Errorf("GET /nope = %d, want 404", code)
	}
}

// TestStatusPageInBrowser renders the status page of a real bridge, fed by
// the gqlgen demo upstream, in headless Chromium.
func TestStatusPageInBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		if testing.Short() {
			t.Skip("chromium not installed (run make browser)")
		}
		t.Fatal("chromium not installed: run make browser")
	}

	// The demo upstream and a bridge in front of it, served over gRPC.
	demo, err := demoupstream.Start(demoupstream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { demo.Close() })
	svc, err := bridge.New(bridge.Config{
		Upstreams: map[string]*bridge.Upstream{"demo": {Session: session.Config{URL: demo.URL()}}},
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	bridgev1.RegisterSubscriptionServiceServer(gs, svc)
	served := make(chan struct{})
	go func() { _ = gs.Serve(lis); close(served) }()
	t.Cleanup(func() { gs.Stop(); <-served })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := bridgev1.NewSubscriptionServiceClient(conn)

	// Two streams, each until its first result.
	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		t.Cleanup(cancel)
		s, err := client.Subscribe(ctx, &bridgev1.SubscribeRequest{Upstream: "demo", Query: "subscription { ticker(count: 0, intervalMs: 50) { n } }"})
		if err != nil {
			t.Fatal(err)
		}
		for {
			r, err := s.Recv()
			if err != nil {
				t.Fatalf("stream %d: %v", i, err)
			}
			if r.GetNext() != nil {
				break
			}
		}
	}

	hs := httptest.NewServer(admin.Handler(admin.Options{Snapshot: svc.Snapshot, Version: "test", Started: time.Now().Add(-42 * time.Second)}))
	t.Cleanup(hs.Close)
	if !strings.HasPrefix(hs.URL, "http://127.0.0.1:") {
		t.Fatalf("admin server at %s, want 127.0.0.1", hs.URL)
	}
	url := hs.URL + "/"

	dom := runChromium(t, chromium, "--dump-dom", url)
	for name, re := range map[string]string{
		"upstream demo":        `<h2>\s*demo\s*</h2>`,
		"state ready":          `class="pill state ok">\s*ready\s*<`,
		"subprotocol":          `>\s*graphql-transport-ws\s*<`,
		"2 subscriptions":      `<b class="subscriptions">\s*2\s*</b>`,
		"upstream URL":         regexp.QuoteMeta(demo.URL()),
		"no connection events": `no reconnects, refreshes or failures`,
	} {
		if !regexp.MustCompile(re).MatchString(dom) {
			t.Errorf("rendered DOM lacks %s (%s)\n%s", name, re, dom)
		}
	}

	shot := filepath.Join(t.TempDir(), "status.png")
	runChromium(t, chromium, "--screenshot="+shot, url)
	b, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	if dir := os.Getenv("GQLBRIDGE_SCREENSHOT_DIR"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "status.png")
		if err := os.WriteFile(out, b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", out)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if got := img.Bounds().Size(); got != image.Pt(1280, 900) {
		t.Errorf("screenshot is %v, want 1280x900", got)
	}
	if n := colours(img); n < 64 {
		t.Errorf("screenshot has %d distinct colours; the page looks blank", n)
	}
}

// runChromium runs headless Chromium on url with the extra flag and returns
// its standard output.
func runChromium(t *testing.T, chromium, flag, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), "--window-size=1280,900", flag, url)
	// Chromium forks helpers; kill the whole process group on timeout and
	// do not wait forever on pipes they may hold.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("timed out after 30s: %w", err)
		}
		t.Fatalf("chromium %s: %v\n%s", flag, err, stderr.String())
	}
	return stdout.String()
}

// colours counts the distinct colours of img, up to a bound.
func colours(img image.Image) int {
	seen := map[[4]uint32]struct{}{}
	r := img.Bounds()
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			c0, c1, c2, c3 := img.At(x, y).RGBA()
			seen[[4]uint32{c0, c1, c2, c3}] = struct{}{}
			if len(seen) >= 4096 {
				return len(seen)
			}
		}
	}
	return len(seen)
}
