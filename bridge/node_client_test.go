package bridge_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/gqlbridge/gqlbridge/bridge"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
	"github.com/gqlbridge/gqlbridge/internal/testpeer"
)

// nodeLine is one line printed by testpeers/node/grpc-client.mjs.
type nodeLine struct {
	Next *struct {
		Sequence uint64          `json:"sequence"`
		Result   json.RawMessage `json:"result"`
	} `json:"next"`
	// Batch precedes the Size next lines of a batch (--max-batch).
	Batch *struct {
		Size int `json:"size"`
	} `json:"batch"`
	Lifecycle *struct {
		State       string `json:"state"`
		CloseCode   uint32 `json:"closeCode"`
		CloseReason string `json:"closeReason"`
		Attempt     uint32 `json:"attempt"`
	} `json:"lifecycle"`
	Status *struct {
		Code      codes.Code `json:"code"`
		Details   string     `json:"details"`
		ErrorInfo *struct {
			Reason   string            `json:"reason"`
			Domain   string            `json:"domain"`
			Metadata map[string]string `json:"metadata"`
		} `json:"errorInfo"`
		RetryInfo *struct {
			RetryDelayMs int64 `json:"retryDelayMs"`
		} `json:"retryInfo"`
	} `json:"status"`
}

// nodeClient returns the node binary and the client script, failing the
// test when the Node dependencies are not installed.
func nodeClient(t *testing.T) (node, script string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node (Node.js >= 20) is not in PATH: install it, then run make peers: %v", err)
	}
	root, err := testpeer.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "testpeers", "node")
	for _, pkg := range []string{"@grpc/grpc-js", "@grpc/proto-loader"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
			t.Fatalf("%s is not installed in %s: run make peers", pkg, dir)
		}
	}
	return node, filepath.Join(dir, "grpc-client.mjs")
}

// runNodeClient runs the Node client against addr and returns its lines
// (the last one being the status) and its exit code.
func runNodeClient(t *testing.T, addr string, args ...string) ([]nodeLine, int) {
	t.Helper()
	node, script := nodeClient(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{script, addr}, args...)...)
	cmd.Dir = filepath.Dir(script)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	exit := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		exit = ee.ExitCode()
	case err != nil:
		t.Fatalf("node client: %v\nstderr: %s", err, stderr.String())
	}
	if exit == 2 || stderr.Len() > 0 {
		t.Logf("node client stderr: %s", stderr.String())
	}
	var lines []nodeLine
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l nodeLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("node client printed %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
	}
	if len(lines) == 0 || lines[len(lines)-1].Status == nil {
		t.Fatalf("node client (exit %d) printed no status last:\n%s\nstderr: %s", exit, stdout.String(), stderr.String())
	}
	return lines, exit
}

// TestNodeClient: a Node caller (@grpc/grpc-js, the proto loaded from the
// repository at run time) over real TCP gets the lifecycle event, the
// results byte-for-byte as JSON with their sequence, and OK; and, for
// failures, the status code and the ErrorInfo (and RetryInfo) decoded from
// the grpc-status-details-bin trailer.
func TestNodeClient(t *testing.T) {
	t.Parallel()
	nodeClient(t)
	demo := startDemo(t, demoupstream.Options{})
	_, addr := serveTCP(t, bridge.Config{Upstreams: map[string]*bridge.Upstream{
		"demo":   {Session: fast(demo.URL())},
		"capped": {Session: fast(demo.URL()), MaxSubscriptions: 1},
	}})

	t.Run("events", func(t *testing.T) {
		t.Parallel()
		lines, exit := runNodeClient(t, addr, "demo", tickQuery, `{"count": 3, "interval": 5, "ignored": [1, "x", null, {"y": true}]}`)
		if exit != 0 {
			t.Fatalf("exit %d", exit)
		}
		if len(lines) != 5 {
			t.Fatalf("%d lines, want SUBSCRIBED, 3 results, status: %+v", len(lines), lines)
		}
		if l := lines[0].Lifecycle; l == nil || l.State != "STATE_SUBSCRIBED" || l.CloseCode != 0 || l.Attempt != 0 {
			t.Fatalf("first line %+v, want STATE_SUBSCRIBED", lines[0])
		}
		for i, l := range lines[1:4] {
			want := `{"data":{"ticker":{"n":` + string(rune('1'+i)) + `}}}`
			if l.Next == nil || l.Next.Sequence != uint64(i+1) || string(compact(l.Next.Result)) != want {
				t.Fatalf("line %d: %+v, want sequence %d result %s", i+1, l, i+1, want)
			}
		}
		if st := lines[4].Status; st.Code != codes.OK || st.ErrorInfo != nil {
			t.Fatalf("status %+v, want OK", st)
		}
	})

	t.Run("unknown upstream", func(t *testing.T) {
		t.Parallel()
		lines, exit := runNodeClient(t, addr, "orders", infiniteTicker)
		st := lines[len(lines)-1].Status
		if exit != 1 || len(lines) != 1 || st.Code != codes.NotFound || !strings.Contains(st.Details, `unknown upstream "orders"`) {
			t.Fatalf("exit %d, lines %+v", exit, lines)
		}
		if ei := st.ErrorInfo; ei == nil || ei.Reason != bridge.ReasonUnknownUpstream || ei.Domain != "gqlbridge" || ei.Metadata["upstream"] != "orders" {
			t.Fatalf("ErrorInfo %+v", st.ErrorInfo)
		}
		if st.RetryInfo != nil {
			t.Fatalf("RetryInfo %+v for an unknown upstream", st.RetryInfo)
		}
	})

	t.Run("GraphQL error", func(t *testing.T) {
		t.Parallel()
		lines, exit := runNodeClient(t, addr, "demo", "subscription { nope { n } }")
		st := lines[len(lines)-1].Status
		if exit != 1 || st.Code != codes.InvalidArgument || !strings.Contains(st.Details, "nope") {
			t.Fatalf("exit %d, lines %+v", exit, lines)
		}
		if ei := st.ErrorInfo; ei == nil || ei.Reason != bridge.ReasonGraphQLError || ei.Domain != "gqlbridge" ||
			ei.Metadata["upstream"] != "demo" || !json.Valid([]byte(ei.Metadata["graphql_errors"])) || !strings.Contains(ei.Metadata["graphql_errors"], "nope") {
			t.Fatalf("ErrorInfo %+v", st.ErrorInfo)
		}
	})

	t.Run("limit reached", func(t *testing.T) {
		t.Parallel()
		// A Go caller holds the only slot of "capped".
		hold := open(t, bridgev1.NewSubscriptionServiceClient(dial(t, addr)), &bridgev1.SubscribeRequest{Upstream: "capped", Query: infiniteTicker})
		hold.expectLifecycle(bridgev1.Lifecycle_STATE_SUBSCRIBED)
		lines, exit := runNodeClient(t, addr, "capped", infiniteTicker)
		st := lines[len(lines)-1].Status
		if exit != 1 || st.Code != codes.ResourceExhausted {
			t.Fatalf("exit %d, lines %+v", exit, lines)
		}
		if ei := st.ErrorInfo; ei == nil || ei.Reason != bridge.ReasonLimitReached || ei.Metadata["upstream"] != "capped" {
			t.Fatalf("ErrorInfo %+v", st.ErrorInfo)
		}
		if ri := st.RetryInfo; ri == nil || ri.RetryDelayMs != 1000 {
			t.Fatalf("RetryInfo %+v, want 1000 ms", st.RetryInfo)
		}
	})
}

// TestNodeClientBatches: a Node caller that sets max_batch gets its results
// in batches, which protobufjs decodes; the bridge's sends are held until
// all 20 results are queued, so the batches hold 8, 8 and 4, and the
// results are in order, numbered 1 to 20.
func TestNodeClientBatches(t *testing.T) {
	t.Parallel()
	nodeClient(t)
	const total = 20
	demo := startDemo(t, demoupstream.Options{})
	cfg := bridge.Config{Upstreams: map[string]*bridge.Upstream{"demo": {Session: fast(demo.URL()), QueueSize: total}}}
	reg := withMetrics(&cfg)
	v := newValve(0)
	_, addr := serveTCP(t, cfg, v.option())
	// The Node client runs on this goroutine; release the sends from
	// another once the results are queued (or the test is over).
	go func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			mfs, _ := reg.Gather()
			for _, mf := range mfs {
				if mf.GetName() == "gqlbridge_events_in_total" && mf.GetMetric()[0].GetCounter().GetValue() >= total {
					v.release()
					return
				}
			}
			select {
			case <-t.Context().Done():
				return
			case <-tick.C:
			}
		}
	}()
	lines, exit := runNodeClient(t, addr, "demo", fmt.Sprintf("subscription { ticker(count: %d, intervalMs: 0) { n } }", total), "--max-batch", "8")
	if exit != 0 {
		t.Fatalf("exit %d: %+v", exit, lines)
	}
	if l := lines[0].Lifecycle; l == nil || l.State != "STATE_SUBSCRIBED" {
		t.Fatalf("first line %+v, want STATE_SUBSCRIBED", lines[0])
	}
	var sizes []int
	seq := uint64(0)
	for i := 1; i < len(lines)-1; i++ {
		b := lines[i].Batch
		if b == nil {
			t.Fatalf("line %d: %+v, want a batch", i, lines[i])
		}
		sizes = append(sizes, b.Size)
		for range b.Size {
			i++
			seq++
			want := fmt.Sprintf(`{"data":{"ticker":{"n":%d}}}`, seq)
			if n := lines[i].Next; n == nil || n.Sequence != seq || string(compact(n.Result)) != want {
				t.Fatalf("line %d: %+v, want sequence %d result %s", i, lines[i], seq, want)
			}
		}
	}
	if fmt.Sprint(sizes) != "[8 8 4]" || seq != total {
		t.Fatalf("batches of %v, %d results; want [8 8 4], %d", sizes, seq, total)
	}
	if st := lines[len(lines)-1].Status; st.Code != codes.OK {
		t.Fatalf("status %+v, want OK", st)
	}
}
