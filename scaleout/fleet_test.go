package scaleout

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gqlbridge/gqlbridge/client"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/testpeer"
)

// retryRec is a stream end the caller will retry after.
type retryRec struct {
	at         time.Time
	code       codes.Code
	reason     string // ErrorInfo.reason; "" when gRPC made the status
	retryInfo  bool
	retryDelay time.Duration
	peer       string
}

// resubRec is the first event of a stream after a retry.
type resubRec struct {
	at   time.Time
	down time.Duration
	peer string
}

// sub is what one subscription's caller saw.
type sub struct {
	id   int
	lang string

	mu         sync.Mutex
	peer       string // replica of the live stream; "" between streams
	lastResult time.Time
	results    int
	retries    []retryRec
	resubs     []resubRec
	ended      bool
	end        string // how Subscribe returned
}

func (s *sub) result(at time.Time, peer string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.peer, s.results = peer, s.results+1
	if at.After(s.lastResult) {
		s.lastResult = at
	}
}

func (s *sub) retry(r retryRec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.peer = ""
	s.retries = append(s.retries, r)
}

func (s *sub) resubscribed(r resubRec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.peer = r.peer
	s.resubs = append(s.resubs, r)
}

func (s *sub) finish(end string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended, s.end = true, end
}

// snapshot is a copy of a sub's state.
type snapshot struct {
	id         int
	lang       string
	peer       string
	lastResult time.Time
	results    int
	retries    []retryRec
	resubs     []resubRec
	ended      bool
	end        string
}

func (s *sub) snap() snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return snapshot{id: s.id, lang: s.lang, peer: s.peer, lastResult: s.lastResult, results: s.results,
		retries: append([]retryRec(nil), s.retries...), resubs: append([]resubRec(nil), s.resubs...), ended: s.ended, end: s.end}
}

// retriesSince returns the retries at or after mark.
func (s snapshot) retriesSince(mark time.Time) []retryRec {
	var out []retryRec
	for _, r := range s.retries {
		if !r.at.Before(mark) {
			out = append(out, r)
		}
	}
	return out
}

func (s snapshot) resubsSince(mark time.Time) []resubRec {
	var out []resubRec
	for _, r := range s.resubs {
		if !r.at.Before(mark) {
			out = append(out, r)
		}
	}
	return out
}

// fleet is every subscription of the test, whichever caller runs it.
type fleet struct{ subs []*sub }

func (f *fleet) snaps() []snapshot {
	out := make([]snapshot, len(f.subs))
	for i, s := range f.subs {
		out[i] = s.snap()
	}
	return out
}

// waitAll waits until cond holds for every subscription. The timeout only
// detects a hang: it fails the test naming the subscriptions that never got
// there.
func (f *fleet) waitAll(t *testing.T, what string, timeout time.Duration, cond func(snapshot) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var missing []string
		for _, s := range f.snaps() {
			if !cond(s) {
				missing = append(missing, fmt.Sprintf("%s#%d(peer %q, %d results, last %s, %d retries, ended %v %s)",
					s.lang, s.id, s.peer, s.results, s.lastResult.Format("15:04:05.000"), len(s.retries), s.ended, s.end))
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			if len(missing) > 10 {
				missing = append(missing[:10], fmt.Sprintf("and %d more", len(missing)-10))
			}
			t.Fatalf("%s: %d subscriptions not there after %v: %s", what, len(missing), timeout, strings.Join(missing, "; "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// subscription is the query every caller sends, with a distinct $i per
// subscription (its tick interval in ms), so that no two are deduplicated
// into one upstream operation.
const subscription = `subscription ($i: Int!) { ticker(count: 0, intervalMs: $i) { n } }`

// startGoCallers runs n subscriptions with package client over conn, with
// $i = first, first+1, ...; they stop when ctx ends. wait returns once
// every Subscribe returned.
func startGoCallers(ctx context.Context, t *testing.T, conn *grpc.ClientConn, f *fleet, n, first int) (wait func()) {
	t.Helper()
	c := client.New(conn)
	var wg sync.WaitGroup
	for k := range n {
		s := &sub{id: len(f.subs), lang: "go"}
		f.subs = append(f.subs, s)
		vars, err := structpb.NewStruct(map[string]any{"i": first + k})
		if err != nil {
			t.Fatal(err)
		}
		req := &bridgev1.SubscribeRequest{Upstream: "up", Query: subscription, Variables: vars}
		h := client.Handler{
			OnResult: func(r client.Result) { s.result(time.Now(), r.Peer) },
			OnRetry: func(r client.Retrying) {
				rec := retryRec{at: time.Now(), code: r.Status.Code(), peer: r.Peer, reason: r.ErrorInfo.GetReason()}
				if r.RetryInfo != nil {
					rec.retryInfo, rec.retryDelay = true, r.RetryInfo.GetRetryDelay().AsDuration()
				}
				s.retry(rec)
			},
			OnResubscribed: func(r client.Resubscribed) {
				s.resubscribed(resubRec{at: time.Now(), down: r.Down, peer: r.Peer})
			},
		}
		wg.Go(func() {
			err := c.Subscribe(ctx, req, h)
			end := "nil"
			if err != nil {
				end = err.Error()
			}
			s.finish(end)
		})
	}
	return wg.Wait
}

// nodeLine is a line of testpeers/node/scaleout-caller.mjs.
type nodeLine struct {
	Sub    int   `json:"sub"`
	At     int64 `json:"at"` // ms since the epoch
	Result *struct {
		Peer string `json:"peer"`
	} `json:"result"`
	Retry *struct {
		Code         codes.Code `json:"code"`
		Reason       *string    `json:"reason"`
		RetryDelayMs *int64     `json:"retryDelayMs"`
		Peer         string     `json:"peer"`
	} `json:"retry"`
	Resubscribed *struct {
		DownMs int64  `json:"downMs"`
		Peer   string `json:"peer"`
	} `json:"resubscribed"`
	End json.RawMessage `json:"end"`
}

// nodeCaller is testpeers/node/scaleout-caller.mjs running n subscriptions.
type nodeCaller struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *syncBuffer
	read   chan struct{} // closed when stdout is read to the end
	done   chan struct{} // closed when the process exited
	err    error
}

// startNodeCaller starts n Node subscriptions on target with $i = first,
// first+1, ...
func startNodeCaller(t *testing.T, target string, f *fleet, n, first int) *nodeCaller {
	t.Helper()
	node, dir := nodeModules(t)
	base := len(f.subs)
	for range n {
		f.subs = append(f.subs, &sub{id: len(f.subs), lang: "node"})
	}
	nc := &nodeCaller{stderr: &syncBuffer{}, read: make(chan struct{}), done: make(chan struct{})}
	nc.cmd = exec.Command(node, filepath.Join(dir, "scaleout-caller.mjs"), target, "up", subscription, fmt.Sprint(n), fmt.Sprint(first),
		"subscription { ticker(count: 1, intervalMs: 0) { n } }")
	nc.cmd.Dir = dir
	nc.cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(dir, "node_modules"))
	nc.cmd.Stderr = nc.stderr
	stdout, err := nc.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if nc.stdin, err = nc.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := nc.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(nc.read)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var l nodeLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Sub < 0 || l.Sub >= n {
				fmt.Fprintf(nc.stderr, "unexpected line %q: %v\n", sc.Text(), err)
				continue
			}
			s, at := f.subs[base+l.Sub], time.UnixMilli(l.At)
			switch {
			case l.Result != nil:
				s.result(at, l.Result.Peer)
			case l.Retry != nil:
				rec := retryRec{at: at, code: l.Retry.Code, peer: l.Retry.Peer}
				if l.Retry.Reason != nil {
					rec.reason = *l.Retry.Reason
				}
				if l.Retry.RetryDelayMs != nil {
					rec.retryInfo, rec.retryDelay = true, time.Duration(*l.Retry.RetryDelayMs)*time.Millisecond
				}
				s.retry(rec)
			case l.Resubscribed != nil:
				s.resubscribed(resubRec{at: at, down: time.Duration(l.Resubscribed.DownMs) * time.Millisecond, peer: l.Resubscribed.Peer})
			case l.End != nil:
				var end struct {
					Cancelled bool `json:"cancelled"`
				}
				if json.Unmarshal(l.End, &end) == nil && end.Cancelled {
					s.finish("cancelled")
				} else {
					s.finish(string(l.End))
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		<-nc.read // Wait closes stdout: read it to the end first
		nc.err = nc.cmd.Wait()
		close(nc.done)
	}()
	t.Cleanup(func() {
		nc.stdin.Close()
		select {
		case <-nc.done:
		case <-time.After(10 * time.Second):
			_ = nc.cmd.Process.Kill()
			<-nc.done
		}
	})
	return nc
}

// stop closes stdin: the caller cancels every subscription, prints their
// ends and exits.
func (nc *nodeCaller) stop(t *testing.T) {
	t.Helper()
	nc.stdin.Close()
	select {
	case <-nc.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the Node caller did not exit after stdin closed; stderr:\n%s", nc.stderr.String())
	}
	if nc.err != nil {
		t.Fatalf("the Node caller: %v; stderr:\n%s", nc.err, nc.stderr.String())
	}
}

// nodeModules returns the node binary and testpeers/node, failing when the
// Node dependencies are not installed (make peers).
func nodeModules(t *testing.T) (node, dir string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node (Node.js >= 20) is not in PATH: install it, then run make peers: %v", err)
	}
	root, err := testpeer.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(root, "testpeers", "node")
	for _, pkg := range []string{"@grpc/grpc-js", "@grpc/proto-loader", "protobufjs"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
			t.Fatalf("%s is not installed in %s: run make peers", pkg, dir)
		}
	}
	return node, dir
}
