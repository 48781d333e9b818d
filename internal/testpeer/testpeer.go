// Package testpeer launches reference GraphQL-over-WebSocket servers from the
// npm registry (testpeers/node/server.mjs) as peers for tests.
//
// Two subprotocols are available:
//
//   - TransportWS ("graphql-transport-ws"), served by the graphql-ws library;
//   - LegacyWS ("graphql-ws"), served by subscriptions-transport-ws.
//
// The node dependencies must be installed first (`make peers`, i.e.
// `cd testpeers/node && npm ci`).
package testpeer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ModulePath is the Go module whose root RepoRoot looks for.
const ModulePath = "github.com/gqlbridge/gqlbridge"

// Protocol is a GraphQL WebSocket subprotocol name.
type Protocol string

const (
	// TransportWS is the graphql-transport-ws subprotocol (library graphql-ws).
	TransportWS Protocol = "graphql-transport-ws"
	// LegacyWS is the legacy graphql-ws subprotocol (library subscriptions-transport-ws).
	LegacyWS Protocol = "graphql-ws"
)

// Timeouts used by the launcher. Variables so that a slow environment can raise them.
var (
	// StartTimeout bounds how long node may take to print its URL.
	StartTimeout = 30 * time.Second
	// WaitTimeout bounds Node.WaitFor.
	WaitTimeout = 10 * time.Second
)

// NodeOptions configure a node test peer.
type NodeOptions struct {
	// Protocol selects the subprotocol and library. Required.
	Protocol Protocol
	// Token, when set, must be sent in the connection_init payload as
	// Authorization (or authorization): "Bearer <Token>".
	Token string
	// TokenTTL, when positive, makes the server close every accepted
	// connection that long after its connection_init, with ExpiryCloseCode
	// and reason "token expired".
	TokenTTL time.Duration
	// ExpiryCloseCode is the close code used for TokenTTL expiry and
	// CloseAfterResults (server default 4401).
	ExpiryCloseCode int
	// CloseAfterResults, when positive, makes the server close every
	// accepted connection right after it sent that many results (next or
	// data messages, of any operation), with ExpiryCloseCode and reason
	// "token expired": a token that was good and expired while results
	// flowed.
	CloseAfterResults int
	// RejectSubscribeFrom, when positive, makes the server close the
	// accepted connection with that number (counted from 1) and every
	// later one with 4403 "Forbidden" at their first subscribe: a
	// credential acknowledged, then refused for every operation.
	RejectSubscribeFrom int
	// KeepAlive, when positive, enables the library's keep-alive: `ka`
	// messages for LegacyWS, WebSocket ping frames for TransportWS.
	KeepAlive time.Duration
}

// Node is a running server.mjs process.
type Node struct {
	// URL is the WebSocket endpoint, ws://127.0.0.1:PORT/graphql.
	URL string
	// Control is the base URL of the control API, http://127.0.0.1:PORT.
	Control string

	opts   NodeOptions
	script string
	dir    string
	port   int
	logf   func(format string, args ...any)
	client *http.Client

	mu   sync.Mutex
	proc *process

	logMu   sync.Mutex
	logDone bool // set in Cleanup: t.Logf after the test ended would panic
}

// process is one node child with its pipes.
type process struct {
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	stderrEOF chan struct{} // closed when the stderr forwarder returns
	stdoutEOF chan struct{} // closed when the stdout reader returns
	waitOnce  sync.Once
	waitErr   error
}

// Stats is the server's GET /stats answer.
type Stats struct {
	Connections  int               `json:"connections"`
	Active       int               `json:"active"`
	Started      int               `json:"started"`
	Ended        int               `json:"ended"`
	Inits        int               `json:"inits"`
	Rejected     int               `json:"rejected"`
	InitPayloads []json.RawMessage `json:"initPayloads"`
	SubscribeIDs []string          `json:"subscribeIds"`
	// Open holds the connection_init payload of every open socket that
	// sent one (null for a connection_init without payload).
	Open []json.RawMessage `json:"open"`
	// Closes are the last 5000 sockets that ended, oldest first.
	Closes []Close `json:"closes"`
}

// Close is how a socket of the server ended.
type Close struct {
	// Code is the close code the client sent; 1006 when the connection
	// ended without a close frame, 1005 for a close frame without code.
	Code int `json:"code"`
	// Reason is the close frame's reason.
	Reason string `json:"reason"`
	// Params is the socket's connection_init payload; null when it sent
	// none (or no connection_init at all).
	Params json.RawMessage `json:"params"`
}

// RepoRoot finds the module root (the directory holding this module's go.mod)
// by walking up from the working directory.
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && modulePathOf(data) == ModulePath {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("testpeer: no go.mod for module %s above %s", ModulePath, wd)
		}
		dir = parent
	}
}

func modulePathOf(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "module"); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// peerDir checks the prerequisites under root and returns testpeers/node.
func peerDir(root string) (string, error) {
	dir := filepath.Join(root, "testpeers", "node")
	if _, err := os.Stat(filepath.Join(dir, "server.mjs")); err != nil {
		return "", fmt.Errorf("testpeer: %s missing: %w", filepath.Join(dir, "server.mjs"), err)
	}
	for _, pkg := range []string{"graphql", "graphql-ws", "subscriptions-transport-ws", "ws"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
			return "", fmt.Errorf("testpeer: %s is not installed: run `make peers` (cd testpeers/node && npm ci)",
				filepath.Join(dir, "node_modules", pkg))
		}
	}
	return dir, nil
}

func nodeBinary() (string, error) {
	path, err := exec.LookPath("node")
	if err != nil {
		return "", fmt.Errorf("testpeer: node (Node.js >= 20) not found in PATH: install it, then run `make peers`: %w", err)
	}
	return path, nil
}

// StartNode starts server.mjs with node and returns once it printed its URL.
// The process is killed and waited for in t.Cleanup; its stderr goes to the test log.
func StartNode(t testing.TB, opts NodeOptions) *Node {
	t.Helper()
	if opts.Protocol != TransportWS && opts.Protocol != LegacyWS {
		t.Fatalf("testpeer: unknown protocol %q", opts.Protocol)
	}
	if _, err := nodeBinary(); err != nil {
		t.Fatal(err)
	}
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := peerDir(root)
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{
		opts:   opts,
		script: filepath.Join(dir, "server.mjs"),
		dir:    dir,
		client: &http.Client{Timeout: 10 * time.Second},
	}
	n.logf = func(format string, args ...any) {
		n.logMu.Lock()
		defer n.logMu.Unlock()
		if !n.logDone {
			t.Logf(format, args...)
		}
	}

	t.Cleanup(func() {
		n.stop() // joins the stderr forwarder
		n.logMu.Lock()
		n.logDone = true
		n.logMu.Unlock()
	})
	if err := n.start(0); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *Node) args(port int) []string {
	args := []string{n.script, "--protocol", string(n.opts.Protocol), "--port", strconv.Itoa(port)}
	if n.opts.Token != "" {
		args = append(args, "--token", n.opts.Token)
	}
	if n.opts.TokenTTL > 0 {
		args = append(args, "--token-ttl-ms", strconv.FormatInt(max(1, n.opts.TokenTTL.Milliseconds()), 10))
	}
	if n.opts.ExpiryCloseCode != 0 {
		args = append(args, "--expiry-close-code", strconv.Itoa(n.opts.ExpiryCloseCode))
	}
	if n.opts.CloseAfterResults > 0 {
		args = append(args, "--close-after-results", strconv.Itoa(n.opts.CloseAfterResults))
	}
	if n.opts.RejectSubscribeFrom > 0 {
		args = append(args, "--reject-subscribe-from", strconv.Itoa(n.opts.RejectSubscribeFrom))
	}
	if n.opts.KeepAlive > 0 {
		args = append(args, "--keep-alive-ms", strconv.FormatInt(max(1, n.opts.KeepAlive.Milliseconds()), 10))
	}
	return args
}

// start launches a process listening on port (0 = any) and records it.
func (n *Node) start(port int) error {
	nodeBin, err := nodeBinary()
	if err != nil {
		return err
	}
	cmd := exec.Command(nodeBin, n.args(port)...)
	cmd.Dir = n.dir
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testpeer: starting node: %w", err)
	}
	p := &process{cmd: cmd, stdin: stdin, stderrEOF: make(chan struct{}), stdoutEOF: make(chan struct{})}
	tag := fmt.Sprintf("node[%s pid %d]", n.opts.Protocol, cmd.Process.Pid)
	go func() {
		defer close(p.stderrEOF)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			n.logf("%s: %s", tag, sc.Text())
		}
		_, _ = io.Copy(io.Discard, stderr) // drain an over-long line
	}()

	type ready struct {
		URL     string `json:"url"`
		Control string `json:"control"`
	}
	lineCh := make(chan ready, 1)
	errCh := make(chan error, 1)
	go func() {
		defer close(p.stdoutEOF)
		br := bufio.NewReader(stdout)
		line, err := br.ReadBytes('\n')
		if err != nil {
			errCh <- fmt.Errorf("testpeer: node exited before printing its URL (output %q): %w", line, err)
			return
		}
		var r ready
		if err := json.Unmarshal(bytes.TrimSpace(line), &r); err != nil || r.URL == "" || r.Control == "" {
			errCh <- fmt.Errorf("testpeer: unexpected first line from node: %q", line)
			return
		}
		lineCh <- r
		_, _ = io.Copy(io.Discard, br) // keep stdout drained
	}()

	var r ready
	select {
	case r = <-lineCh:
	case err = <-errCh:
	case <-time.After(StartTimeout):
		err = fmt.Errorf("testpeer: node did not print its URL within %v", StartTimeout)
	}
	if err != nil {
		p.kill()
		return err
	}
	u, perr := url.Parse(r.Control)
	if perr != nil {
		p.kill()
		return fmt.Errorf("testpeer: bad control URL %q: %w", r.Control, perr)
	}
	gotPort, perr := strconv.Atoi(u.Port())
	if perr != nil {
		p.kill()
		return fmt.Errorf("testpeer: bad control URL %q: %w", r.Control, perr)
	}
	n.mu.Lock()
	n.proc = p
	n.URL, n.Control, n.port = r.URL, r.Control, gotPort
	n.mu.Unlock()
	return nil
}

// kill ends the process, joins the stderr forwarder and reaps the child.
func (p *process) kill() {
	p.waitOnce.Do(func() {
		_ = p.stdin.Close() // EOF alone makes node exit; kill to be quick and sure
		_ = p.cmd.Process.Kill()
		// Join the pipe readers before Wait closes the pipes. They end at
		// EOF once the process is gone (bounded, in case something else
		// inherited the pipes).
		timeout := time.After(10 * time.Second)
		for _, ch := range []chan struct{}{p.stderrEOF, p.stdoutEOF} {
			select {
			case <-ch:
			case <-timeout:
			}
		}
		p.waitErr = p.cmd.Wait()
	})
}

func (n *Node) stop() {
	n.mu.Lock()
	p := n.proc
	n.proc = nil
	n.mu.Unlock()
	if p != nil {
		p.kill()
	}
}

// Restart kills the process and starts it again on the same port, so URL and
// Control stay valid; it returns once the new process listens. Clients of the
// old process see an abnormal closure (no close frame).
func (n *Node) Restart(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	port, oldURL := n.port, n.URL
	n.mu.Unlock()
	n.stop()
	var err error
	deadline := time.Now().Add(StartTimeout)
	for {
		err = n.start(port)
		if err == nil || time.Now().After(deadline) {
			break
		}
		// The port may linger briefly after the kill; try again.
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("testpeer: restart on port %d: %v", port, err)
	}
	if n.URL != oldURL {
		t.Fatalf("testpeer: restart changed URL from %s to %s", oldURL, n.URL)
	}
}

func (n *Node) control(t testing.TB, method, path string, query url.Values, out any) {
	t.Helper()
	u := n.Control + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatalf("testpeer: %s %s: %v", method, path, err)
	}
	resp, err := n.client.Do(req)
	if err != nil {
		t.Fatalf("testpeer: %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("testpeer: %s %s: reading body: %v", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("testpeer: %s %s: %s: %s", method, path, resp.Status, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("testpeer: %s %s: decoding %q: %v", method, path, body, err)
		}
	}
}

// Stats returns the server's counters.
func (n *Node) Stats(t testing.TB) Stats {
	t.Helper()
	var s Stats
	n.control(t, http.MethodGet, "/stats", nil, &s)
	return s
}

// CloseAll closes every open WebSocket with a close frame carrying code and
// reason, and returns how many were closed.
func (n *Node) CloseAll(t testing.TB, code int, reason string) int {
	t.Helper()
	var out struct {
		Closed int `json:"closed"`
	}
	n.control(t, http.MethodPost, "/close-all", url.Values{"code": {strconv.Itoa(code)}, "reason": {reason}}, &out)
	return out.Closed
}

// DropAll destroys every WebSocket's TCP connection without a close frame
// (abnormal closure, 1006, on the client).
func (n *Node) DropAll(t testing.TB) {
	t.Helper()
	n.control(t, http.MethodPost, "/drop-all", nil, nil)
}

// SetToken changes the token accepted from now on (empty: no token needed).
// Open connections are not affected.
func (n *Node) SetToken(t testing.TB, token string) {
	t.Helper()
	n.control(t, http.MethodPost, "/token", url.Values{"value": {token}}, nil)
}

// WaitFor polls Stats until cond holds, failing the test with the last stats
// after WaitTimeout. It must be called from the test goroutine.
func (n *Node) WaitFor(t testing.TB, cond func(Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	for {
		s := n.Stats(t)
		if cond(s) {
			return
		}
		if time.Now().After(deadline) {
			b, _ := json.Marshal(s)
			t.Fatalf("testpeer: condition not met within %v; last stats: %s", WaitTimeout, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
