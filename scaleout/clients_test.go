package scaleout

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/gqlbridge/gqlbridge/client"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
	"github.com/gqlbridge/gqlbridge/internal/testpeer"
)

// exampleLine is a line printed by examples/clients/node/subscribe.cjs and
// examples/clients/python/subscribe.py (they print the same lines).
type exampleLine struct {
	Result *struct {
		Stream   int             `json:"stream"`
		Sequence uint64          `json:"sequence"`
		Peer     string          `json:"peer"`
		Data     json.RawMessage `json:"data"`
	} `json:"result"`
	Lifecycle json.RawMessage `json:"lifecycle"`
	Retry     *struct {
		Code         int     `json:"code"`
		Reason       *string `json:"reason"`
		RetryDelayMs *int64  `json:"retryDelayMs"`
		Attempt      int     `json:"attempt"`
		Stream       int     `json:"stream"`
		Peer         string  `json:"peer"`
	} `json:"retry"`
	Resubscribed *struct {
		Stream   int     `json:"stream"`
		DownMs   float64 `json:"downMs"`
		Attempts int     `json:"attempts"`
		Peer     string  `json:"peer"`
	} `json:"resubscribed"`
	End *struct {
		OK        bool   `json:"ok"`
		Cancelled bool   `json:"cancelled"`
		Code      int    `json:"code"`
		Reason    string `json:"reason"`
	} `json:"end"`
}

// example is a running example client.
type example struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	mu     sync.Mutex
	lines  []exampleLine
	raw    []string
	done   chan struct{}
	err    error
}

func runExample(t *testing.T, cmd *exec.Cmd) *example {
	t.Helper()
	e := &example{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = e.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var l exampleLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				fmt.Fprintf(e.stderr, "unexpected line %q: %v\n", sc.Text(), err)
				continue
			}
			e.mu.Lock()
			e.lines, e.raw = append(e.lines, l), append(e.raw, sc.Text())
			e.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() { <-read; e.err = cmd.Wait(); close(e.done) }()
	t.Cleanup(func() {
		select {
		case <-e.done:
		default:
			_ = cmd.Process.Kill()
			<-e.done
		}
	})
	return e
}

// waitFor waits until cond holds for the lines printed so far.
func (e *example) waitFor(t *testing.T, what string, cond func([]exampleLine) bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		e.mu.Lock()
		ok := cond(e.lines)
		e.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-e.done:
			t.Fatalf("%s: the example exited (%v) first; stdout:\n%s\nstderr:\n%s", what, e.err, e.output(), e.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; stdout:\n%s\nstderr:\n%s", what, waitTimeout, e.output(), e.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *example) output() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.raw, "\n")
}

// subscriptions returns how many Subscribe streams r serves, from its
// /status.json.
func subscriptions(t *testing.T, r *replica) int {
	t.Helper()
	resp, err := http.Get("http://" + r.admin + "/status.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Upstreams []struct {
			Subscriptions int `json:"subscriptions"`
		} `json:"upstreams"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("%s/status.json: %v", r.admin, err)
	}
	n := 0
	for _, u := range st.Upstreams {
		n += u.Subscriptions
	}
	return n
}

// hostPort strips grpcio's "ipv4:" from a peer.
func hostPort(peer string) string { return strings.TrimPrefix(peer, "ipv4:") }

// checkExampleResubscribes runs an example client (cmd, whose last
// argument list is completed here with TARGET UPSTREAM QUERY) against two
// replicas, drains the one serving it, and checks that it printed the
// drain's UNAVAILABLE BRIDGE_DRAINING with its RetryInfo, resubscribed on
// the other replica and went on receiving; then SIGTERM cancels it.
func checkExampleResubscribes(t *testing.T, name string, args ...string) {
	t.Helper()
	demo, err := demoupstream.Start(demoupstream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { demo.Close() })
	ips := loopbackIPs(2)
	reps := []*replica{startReplica(t, ips[0], "", demo.URL(), "a"), startReplica(t, ips[1], "", demo.URL(), "b")}
	target := "ipv4:" + reps[0].addr + "," + reps[1].addr
	args = append(args, target, "up", `subscription { ticker(count: 0, intervalMs: 100) { n } }`)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = os.Environ()
	if strings.HasSuffix(args[1], ".cjs") {
		_, dir := nodeModules(t)
		cmd.Env = append(cmd.Env, "NODE_PATH="+filepath.Join(dir, "node_modules"))
	}
	e := runExample(t, cmd)

	e.waitFor(t, name+": two results", func(ls []exampleLine) bool {
		n := 0
		for _, l := range ls {
			if l.Result != nil {
				n++
			}
		}
		return n >= 2
	})
	// The replica serving the stream says so on its status page (the
	// Node client also prints it as the peer; grpcio does not tell).
	serving := func() []*replica {
		var out []*replica
		for _, r := range reps {
			if subscriptions(t, r) > 0 {
				out = append(out, r)
			}
		}
		return out
	}
	s := serving()
	if len(s) != 1 {
		t.Fatalf("%s: %d replicas serve the one subscription", name, len(s))
	}
	drained, other := s[0], reps[0]
	if other == drained {
		other = reps[1]
	}
	first := drained.addr
	drained.terminate(t)
	bad := ""
	e.waitFor(t, name+": drained, resubscribed, two more results", func(ls []exampleLine) bool {
		step, n := 0, 0
		for _, l := range ls {
			switch {
			case step == 0 && l.Retry != nil:
				r := l.Retry
				if r.Code != 14 || r.Reason == nil || *r.Reason != "BRIDGE_DRAINING" || r.RetryDelayMs == nil || *r.RetryDelayMs < 100 || (r.Peer != "" && hostPort(r.Peer) != first) {
					bad = fmt.Sprintf("the first retry is %+v, want UNAVAILABLE (14) BRIDGE_DRAINING with a RetryInfo of at least 100ms from %s", *r, first)
					return true
				}
				step = 1
			case step == 1 && l.Resubscribed != nil:
				if p := hostPort(l.Resubscribed.Peer); p == first {
					bad = fmt.Sprintf("resubscribed on %q, want the other replica", p)
					return true
				}
				step = 2
			case step == 2 && l.Result != nil && l.Result.Stream > 1 && hostPort(l.Result.Peer) != first:
				n++
			}
		}
		return step == 2 && n >= 2
	})
	if bad != "" {
		t.Fatalf("%s: %s; stdout:\n%s", name, bad, e.output())
	}
	if n := subscriptions(t, other); n != 1 {
		t.Fatalf("%s: the other replica serves %d subscriptions, want the resubscribed one", name, n)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.done:
	case <-time.After(waitTimeout):
		t.Fatalf("%s: did not exit after SIGTERM; stderr:\n%s", name, e.stderr.String())
	}
	e.mu.Lock()
	last := e.lines[len(e.lines)-1]
	e.mu.Unlock()
	if e.err != nil || last.End == nil || !last.End.Cancelled {
		t.Fatalf("%s: exit %v, last line %s; want exit 0 after {\"end\":{\"cancelled\":true}}\nstderr:\n%s", name, e.err, e.output(), e.stderr.String())
	}
	t.Logf("%s output:\n%s", name, e.output())
}

// TestNodeExampleResubscribes: examples/clients/node/subscribe.cjs
// (@grpc/grpc-js, round robin over an ipv4: list) resubscribes on the other
// replica when the one serving it drains.
func TestNodeExampleResubscribes(t *testing.T) {
	node, _ := nodeModules(t)
	root, err := testpeer.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	checkExampleResubscribes(t, "node", node, filepath.Join(root, "examples", "clients", "node", "subscribe.cjs"))
}

// TestPythonExampleResubscribes: examples/clients/python/subscribe.py
// (grpcio, message classes from a FileDescriptorSet) resubscribes on the
// other replica when the one serving it drains.
func TestPythonExampleResubscribes(t *testing.T) {
	py := pythonWithGRPC(t)
	root, err := testpeer.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	checkExampleResubscribes(t, "python", py, filepath.Join(root, "examples", "clients", "python", "subscribe.py"),
		"--descriptors", descriptorSet(t))
}

// pythonWithGRPC returns a Python interpreter that imports grpc and
// google.protobuf: Debian's /usr/bin/python3 first (where apt installs
// python3-grpcio), then python3 on PATH.
func pythonWithGRPC(t *testing.T) string {
	t.Helper()
	candidates := []string{"/usr/bin/python3"}
	if p, err := exec.LookPath("python3"); err == nil {
		candidates = append(candidates, p)
	}
	for _, py := range candidates {
		if exec.Command(py, "-c", "import grpc, google.protobuf").Run() == nil {
			return py
		}
	}
	t.Fatalf("no python3 (of %v) imports grpc and google.protobuf: run make python-grpc (apt-get install python3-grpcio python3-protobuf)", candidates)
	return ""
}

// TestDrainingReplicaLeavesRotation: from SIGTERM on, a replica answers
// /readyz with 503 and its health service NOT_SERVING while its open
// streams go on; a Go caller with client.DialOptions (client-side health
// checking) then sends new subscriptions to the other replica only, with no
// BRIDGE_DRAINING refusal; and the draining replica exits as soon as its
// last stream ends, long before its drain_grace.
func TestDrainingReplicaLeavesRotation(t *testing.T) {
	demo, err := demoupstream.Start(demoupstream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { demo.Close() })
	ips := loopbackIPs(2)
	draining := startReplicaGrace(t, ips[0], "", demo.URL(), "draining", time.Hour)
	healthy := startReplica(t, ips[1], "", demo.URL(), "healthy")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	conn := dialReplicas(ctx, t, []string{draining.addr, healthy.addr})
	c := client.New(conn)
	query := &bridgev1.SubscribeRequest{Upstream: "up", Query: `subscription { ticker(count: 0, intervalMs: 50) { n } }`}

	// Subscribe until one stream runs on the replica to drain.
	type stream struct {
		cancel  context.CancelFunc
		results chan client.Result
		retries chan client.Retrying
		done    chan error
	}
	open := func() *stream {
		sctx, scancel := context.WithCancel(ctx)
		s := &stream{cancel: scancel, results: make(chan client.Result, 1000), retries: make(chan client.Retrying, 100), done: make(chan error, 1)}
		go func() {
			// Never block the receiving goroutine: keep what fits.
			s.done <- c.Subscribe(sctx, query, client.Handler{
				OnResult: func(r client.Result) {
					select {
					case s.results <- r:
					default:
					}
				},
				OnRetry: func(r client.Retrying) {
					select {
					case s.retries <- r:
					default:
					}
				},
			})
		}()
		return s
	}
	var streams []*stream
	defer func() {
		for _, s := range streams {
			s.cancel()
			<-s.done
		}
	}()
	var onDraining *stream
	for onDraining == nil {
		s := open()
		streams = append(streams, s)
		select {
		case r := <-s.results:
			if r.Peer == draining.addr {
				onDraining = s
			}
		case <-ctx.Done():
			t.Fatal("no stream reached a replica")
		}
	}

	sent := time.Now()
	draining.sigterm(t)
	hc := &http.Client{Timeout: time.Second}
	dconn, err := grpc.NewClient(draining.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer dconn.Close()
	for {
		code := 0
		if resp, err := hc.Get("http://" + draining.admin + "/readyz"); err == nil {
			resp.Body.Close()
			code = resp.StatusCode
		}
		h, err := healthpb.NewHealthClient(dconn).Check(ctx, &healthpb.HealthCheckRequest{Service: bridgev1.SubscriptionService_ServiceDesc.ServiceName})
		if code == http.StatusServiceUnavailable && err == nil && h.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("after SIGTERM: /readyz %d, health %v %v", code, h.GetStatus(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The open stream goes on.
	for range 3 {
		select {
		case r := <-onDraining.results:
			if r.Peer != draining.addr {
				t.Fatalf("a result from %s, want the draining replica", r.Peer)
			}
		case r := <-onDraining.retries:
			t.Fatalf("the draining replica's stream ended within its grace: %v", r.Status)
		case <-ctx.Done():
			t.Fatal("no result from the draining replica's stream")
		}
	}
	// Round robin alternates between the replicas it picks from: two
	// health checks in a row answered by the healthy one mean the
	// caller's picker has left the draining one out.
	hcl := healthpb.NewHealthClient(conn)
	for inARow := 0; inARow < 2; {
		var p peer.Peer
		if _, err := hcl.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
			t.Fatal(err)
		}
		if p.Addr != nil && p.Addr.String() == healthy.addr {
			inARow++
		} else {
			inARow = 0
		}
	}
	for range 10 {
		s := open()
		streams = append(streams, s)
		select {
		case r := <-s.results:
			if r.Peer != healthy.addr {
				t.Fatalf("a new subscription went to %s, want the healthy replica %s", r.Peer, healthy.addr)
			}
		case r := <-s.retries:
			t.Fatalf("a new subscription was refused: %v", r.Status)
		case <-ctx.Done():
			t.Fatal("a new subscription got no result")
		}
	}
	// The last stream on the draining replica ends: it exits at once.
	onDraining.cancel()
	if err := <-onDraining.done; !errors.Is(err, context.Canceled) {
		t.Fatalf("the draining replica's stream ended with %v", err)
	}
	streams = slices.DeleteFunc(streams, func(s *stream) bool { return s == onDraining })
	for _, s := range streams { // the ones that landed on the healthy replica at first
		s.cancel()
		<-s.done
	}
	streams = nil
	took := draining.wait(t, sent)
	t.Logf("SIGTERM to exit with drain_grace 1h, the last stream cancelled after the checks: %s", ms(took))
}
