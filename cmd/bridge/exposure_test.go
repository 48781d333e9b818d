package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/types/known/structpb"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
	"github.com/gqlbridge/gqlbridge/internal/rpcstatus"
)

// TestSecretsNeverExposed: a bridge with secrets in every place they can be
// (a static upstream token accepted and one rejected, a forwarded caller
// credential accepted and one rejected, a caller bearer token, a wrong
// caller token, the user info and a query value of an upstream URL, both of
// a reachable upstream and of one that refuses connections), driven through
// success and every rejection path, at debug log level with the admin server
// and pprof on. No secret appears in the logs, the lifecycle events, the gRPC
// statuses (message and details), /metrics, the status page, /status.json,
// /debug/pprof/cmdline or the output of check-config.
func TestSecretsNeverExposed(t *testing.T) {
	demo := startDemo(t, demoupstream.Options{Token: "good-upstream-secret"})
	tokenFile := t.TempDir() + "/caller-token"
	if err := os.WriteFile(tokenFile, []byte("caller-bearer-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	refused := freeAddr(t) // nothing listens there: every dial fails
	demoURL, err := url.Parse(demo.URL())
	if err != nil {
		t.Fatal(err)
	}
	secretURL := func(hostport string) string {
		return "ws://url-user-secret:url-password-secret@" + hostport + demoURL.Path + "?apikey=url-query-secret&v=2"
	}
	cfg := `
server:
  grpc_address: ADDR
  admin_address: ADMIN
  pprof: true
  drain_grace: 100ms
  callers:
    app:
      token_file: ` + tokenFile + `
      upstreams: [good, rejected, forwarded, keyed, refused]
upstreams:
  good:
    url: ` + demo.URL() + `
    token: {value: good-upstream-secret}
    connection_params: {Authorization: "Bearer {{token}}"}
  rejected:
    url: ` + demo.URL() + `
    token: {value: stale-upstream-secret}
    connection_params: {Authorization: "Bearer {{token}}"}
  forwarded:
    url: ` + demo.URL() + `
    token: {forward: x-upstream-authorization}
    connection_params: {Authorization: "Bearer {{token}}"}
  keyed:
    url: ` + secretURL(demoURL.Host) + `
    token: {value: good-upstream-secret}
    connection_params: {Authorization: "Bearer {{token}}"}
  refused:
    url: ` + secretURL(refused) + `
    retry: {initial: 10ms, max: 20ms, max_elapsed: 300ms}
`
	s := startServe(t, cfg)
	conn := s.dial(t)
	appMD := metadata.Pairs("authorization", "Bearer caller-bearer-secret")
	query := func(upstream string) *bridgev1.SubscribeRequest {
		return &bridgev1.SubscribeRequest{Upstream: upstream, Query: "subscription { ticker(count: 2, intervalMs: 5) { n } }"}
	}
	var statuses []*status.Status
	var lifecycles []string
	sub := func(md metadata.MD, req *bridgev1.SubscribeRequest, want codes.Code) {
		t.Helper()
		ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(t.Context(), md), 30*time.Second)
		defer cancel()
		st := status.New(codes.OK, "")
		stream, err := bridgev1.NewSubscriptionServiceClient(conn).Subscribe(ctx, req)
		for err == nil {
			var r *bridgev1.SubscribeResponse
			if r, err = stream.Recv(); err == nil && r.GetLifecycle() != nil {
				lifecycles = append(lifecycles, prototext.Format(r.GetLifecycle()))
			}
		}
		if !errors.Is(err, io.EOF) {
			st = status.Convert(err)
		}
		if st.Code() != want {
			t.Errorf("%s: %v, want %v", req.Upstream, st, want)
		}
		statuses = append(statuses, st)
	}
	md := func(kv ...string) metadata.MD { return metadata.Pairs(kv...) }
	sub(appMD, query("good"), codes.OK)
	sub(appMD, query("rejected"), codes.PermissionDenied)
	sub(metadata.Join(appMD, md("x-upstream-authorization", "Bearer good-upstream-secret")), query("forwarded"), codes.OK)
	sub(metadata.Join(appMD, md("x-upstream-authorization", "Bearer forwarded-wrong-secret")), query("forwarded"), codes.PermissionDenied)
	sub(md("authorization", "Bearer caller-wrong-secret"), query("good"), codes.Unauthenticated)
	sub(appMD, query("keyed"), codes.OK)
	sub(appMD, query("refused"), codes.Unavailable)

	get := func(path string) string {
		t.Helper()
		resp, err := http.Get("http://" + s.admin + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		return string(b)
	}
	exposed := map[string]string{
		"/metrics":               get("/metrics"),
		"the status page":        get("/"),
		"/status.json":           get("/status.json"),
		"/debug/pprof/cmdline":   get("/debug/pprof/cmdline"),
		"/debug/pprof/goroutine": get("/debug/pprof/goroutine?debug=2"),
	}
	if !strings.Contains(exposed["/metrics"], `gqlbridge_`) || !strings.Contains(exposed["/status.json"], `"rejected"`) {
		t.Fatal("the admin server does not show the bridge's data; the check below would prove nothing")
	}
	for i, st := range statuses {
		exposed[fmt.Sprintf("status %d", i)] = fmt.Sprint(st.Proto())
		exposed[fmt.Sprintf("status %d message", i)] = st.Message()
		exposed[fmt.Sprintf("status %d ErrorInfo", i)] = prototext.Format(rpcstatus.ErrorInfo(st))
	}
	exposed["the lifecycle events"] = strings.Join(lifecycles, "\n")
	if !strings.Contains(exposed["the lifecycle events"], "connection refused") ||
		!strings.Contains(exposed[fmt.Sprintf("status %d ErrorInfo", len(statuses)-1)], "connection refused") {
		t.Fatalf("the refused dial is not described; the check below would prove nothing:\n%s\n%s",
			exposed["the lifecycle events"], exposed[fmt.Sprintf("status %d ErrorInfo", len(statuses)-1)])
	}
	cfgFile := filepath.Join(t.TempDir(), "bridge.yaml")
	if err := os.WriteFile(cfgFile, []byte(strings.NewReplacer("ADDR", "127.0.0.1:0", "ADMIN", "127.0.0.1:0").Replace(cfg)), 0o600); err != nil {
		t.Fatal(err)
	}
	var checkOut, checkErr bytes.Buffer
	if code := run(t.Context(), []string{"check-config", cfgFile}, &checkOut, &checkErr); code != 0 {
		t.Fatalf("check-config exit %d: %s", code, checkErr.String())
	}
	exposed["the output of check-config"] = checkOut.String() + checkErr.String()
	if !strings.Contains(exposed["the output of check-config"], refused) {
		t.Fatalf("check-config does not show the upstream URLs; the check below would prove nothing:\n%s", checkOut.String())
	}
	s.stop()
	exposed["the logs"] = s.logs.String()
	if !strings.Contains(exposed["the logs"], "rejected") {
		t.Fatal("the debug logs do not mention the rejection; the check below would prove nothing")
	}
	for _, secret := range []string{"good-upstream-secret", "stale-upstream-secret", "forwarded-wrong-secret", "caller-bearer-secret", "caller-wrong-secret",
		"url-user-secret", "url-password-secret", "url-query-secret"} {
		for where, text := range exposed {
			if strings.Contains(text, secret) {
				t.Errorf("secret %q appears in %s", secret, where)
			}
		}
	}
}

// TestRequestCannotChooseAddress: callers name configured upstreams; no
// request field (upstream, query, operation name, variables, extensions) or
// metadata makes the bridge dial anything else. A listener that counts
// connections stands at the address every request names; it sees none.
func TestRequestCannotChooseAddress(t *testing.T) {
	trap, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer trap.Close()
	var dialed atomic.Int32
	go func() {
		for {
			c, err := trap.Accept()
			if err != nil {
				return
			}
			dialed.Add(1)
			c.Close()
		}
	}()
	demo := startDemo(t, demoupstream.Options{})
	s := startServe(t, `
server:
  grpc_address: ADDR
  admin_address: "off"
  drain_grace: 100ms
upstreams:
  demo:
    url: `+demo.URL()+`
`)
	conn := s.dial(t)
	addr := trap.Addr().String()
	url := "ws://" + addr + "/graphql"
	vars, _ := structpb.NewStruct(map[string]any{"url": url, "upstream": url})
	ext, _ := structpb.NewStruct(map[string]any{"url": url, "endpoint": addr})
	for _, up := range []string{url, addr, "demo@" + addr, "demo/" + addr, "http://" + addr, "demo\x00" + addr, " demo"} {
		if _, _, st := consume(t.Context(), t, conn, &bridgev1.SubscribeRequest{Upstream: up, Query: "subscription { ticker { n } }"}); st.Code() != codes.NotFound {
			t.Errorf("upstream %q: %v, want NOT_FOUND", up, st)
		}
	}
	// Addresses everywhere else in a request to a real upstream: it goes to
	// the configured URL, nowhere else.
	ctx := metadata.AppendToOutgoingContext(t.Context(), "x-upstream-url", url, "host", addr, ":authority", addr)
	req := &bridgev1.SubscribeRequest{Upstream: "demo", Query: "subscription { ticker(count: 1, intervalMs: 1) { n } }",
		OperationName: url, Variables: vars, Extensions: ext}
	if n, _, st := consume(ctx, t, conn, req); st.Code() == codes.OK && n != 1 {
		t.Errorf("demo: %d results, %v", n, st)
	}
	time.Sleep(100 * time.Millisecond) // a dial, had one started, would have landed
	if n := dialed.Load(); n != 0 {
		t.Fatalf("the bridge dialed the address a request named %d times", n)
	}
}
