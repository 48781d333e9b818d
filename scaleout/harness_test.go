package scaleout

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gqlbridge/gqlbridge/client"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/testpeer"
)

// The bridge binary, built from this tree once per test binary.
var (
	buildDir  string // made in TestMain, removed after the tests
	buildOnce sync.Once
	bridgeBin string
	buildErr  error
)

// bridgeBinary builds ./cmd/bridge into buildDir on first use, with the
// race detector when the test runs with it: a bridge process that races
// then reports it and exits 66, which fails the test.
func bridgeBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		root, err := testpeer.RepoRoot()
		if err != nil {
			buildErr = err
			return
		}
		bin := filepath.Join(buildDir, "bridge")
		args := []string{"build", "-o", bin}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/bridge")...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/bridge: %v\n%s", err, out)
			return
		}
		bridgeBin = bin
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bridgeBin
}

// drainGrace is the replicas' server.drain_grace: short, so that a drain
// ends its streams soon after SIGTERM.
const drainGrace = 300 * time.Millisecond

// replica is one `bridge serve` process.
type replica struct {
	tag   string // connection_params.replica: which process an upstream socket belongs to
	addr  string // gRPC
	admin string
	cmd   *exec.Cmd
	logs  *syncBuffer
	done  chan struct{} // closed when the process exited
	err   error         // Wait's error, set before done closes
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// loopbackIPs returns n addresses of 127.0.0.0/8 that no other test uses:
// a replica restarted in place takes the gRPC address of the process it
// replaces, and with an address of its own nothing else (other tests' and
// clients' sockets on 127.0.0.1) can take that port in between.
func loopbackIPs(n int) []string {
	a, b := 1+rand.IntN(254), rand.IntN(256)
	ips := make([]string, n)
	for i := range ips {
		ips[i] = fmt.Sprintf("127.%d.%d.%d", a, b, 10+i)
	}
	return ips
}

// freePort returns a port free on ip now. ip is used by this test alone,
// so the port stays free until the replica binds it.
func freePort(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startReplica runs `bridge serve` on addr (a free port on ip when addr is
// "") in front of upstreamURL, with drainGrace, and returns once its
// /readyz answers 200. The process is killed in t.Cleanup if still running.
func startReplica(t *testing.T, ip, addr, upstreamURL, tag string) *replica {
	t.Helper()
	return startReplicaGrace(t, ip, addr, upstreamURL, tag, drainGrace)
}

// startReplicaGrace is startReplica with another server.drain_grace.
func startReplicaGrace(t *testing.T, ip, addr, upstreamURL, tag string, grace time.Duration) *replica {
	t.Helper()
	if addr == "" {
		addr = freePort(t, ip)
	}
	r := &replica{tag: tag, addr: addr, admin: freePort(t, ip), logs: &syncBuffer{}, done: make(chan struct{})}
	cfg := fmt.Sprintf(`server:
  grpc_address: %s
  admin_address: %s
  drain_grace: %s
upstreams:
  up:
    url: %s
    subprotocols: [graphql-transport-ws]
    connection_params:
      replica: %q
`, r.addr, r.admin, grace, upstreamURL, tag)
	path := filepath.Join(t.TempDir(), "bridge.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(bridgeBinary(t), "serve", "--config", path, "--log-format", "json")
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.err = r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			_ = r.cmd.Process.Kill()
			<-r.done
		}
	})
	r.waitReady(t)
	return r
}

// waitReady polls /readyz until it answers 200 (the readiness probe of
// deploy/kubernetes/deployment.yaml).
func (r *replica) waitReady(t *testing.T) {
	t.Helper()
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := hc.Get("http://" + r.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-r.done:
			t.Fatalf("replica %s exited (%v) before it was ready; logs:\n%s", r.tag, r.err, r.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s not ready: %v; logs:\n%s", r.tag, err, r.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// terminate sends SIGTERM and returns how long the process took to exit;
// it must exit 0.
func (r *replica) terminate(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	r.sigterm(t)
	return r.wait(t, start)
}

func (r *replica) sigterm(t *testing.T) {
	t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
}

// wait waits for the process to exit 0 and returns the time since start.
func (r *replica) wait(t *testing.T, start time.Time) time.Duration {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("replica %s did not exit after SIGTERM; logs:\n%s", r.tag, r.logs.String())
	}
	if r.err != nil {
		t.Fatalf("replica %s exited with %v after SIGTERM; logs:\n%s", r.tag, r.err, r.logs.String())
	}
	return time.Since(start)
}

// kill sends SIGKILL and waits for the process to go.
func (r *replica) kill(t *testing.T) {
	t.Helper()
	if err := r.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-r.done
}

// dialReplicas connects to addrs as docs/clients.md recommends:
// client.DialOptions (round robin, health checking, keepalive) over a
// static list of the replicas. It returns once every replica has answered a
// health check through the connection, so that round robin spreads the
// first streams over all of them.
func dialReplicas(ctx context.Context, t *testing.T, addrs []string) *grpc.ClientConn {
	t.Helper()
	target, resolve := client.StaticAddresses(addrs...)
	conn, err := grpc.NewClient(target, append(client.DialOptions(), resolve, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	seen := map[string]bool{}
	hc := healthpb.NewHealthClient(conn)
	for len(seen) < len(addrs) {
		var p peer.Peer
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: bridgev1.SubscriptionService_ServiceDesc.ServiceName}, grpc.Peer(&p)); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("replicas answered health checks: %v of %v: %v", len(seen), len(addrs), err)
			}
			time.Sleep(10 * time.Millisecond) // no replica connected yet
			continue
		}
		if p.Addr != nil {
			seen[p.Addr.String()] = true
		}
	}
	return conn
}

// descriptorSet writes the FileDescriptorSet of subscription.proto and its
// imports, as `buf build proto -o` makes it, for the Python client.
func descriptorSet(t *testing.T) string {
	t.Helper()
	set := &descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{
		protodesc.ToFileDescriptorProto(structpb.File_google_protobuf_struct_proto),
		protodesc.ToFileDescriptorProto(bridgev1.File_graphqlbridge_v1_subscription_proto),
	}}
	b, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "bridge.binpb")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// upstreamTags returns the replica tags of the upstream's open sockets and
// the close codes of its ended ones, by tag.
func upstreamTags(t *testing.T, s testpeer.Stats) (open map[string]int, closes map[string][]int) {
	t.Helper()
	open, closes = map[string]int{}, map[string][]int{}
	tag := func(raw json.RawMessage) string {
		var p struct {
			Replica string `json:"replica"`
		}
		if len(raw) > 0 && string(raw) != "null" {
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatalf("connection_init payload %s: %v", raw, err)
			}
		}
		return p.Replica
	}
	for _, p := range s.Open {
		open[tag(p)]++
	}
	for _, c := range s.Closes {
		closes[tag(c.Params)] = append(closes[tag(c.Params)], c.Code)
	}
	return open, closes
}

// percentiles returns p50, p99 and the maximum of ds.
func percentiles(ds []time.Duration) (p50, p99, maxD time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return at(0.50), at(0.99), s[len(s)-1]
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 0, 64) + "ms"
}
