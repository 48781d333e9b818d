package client

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// bridgeStatus is a status as the bridge makes it: ErrorInfo with reason
// (none when reason is ""), and RetryInfo when retry >= 0.
func bridgeStatus(t *testing.T, code codes.Code, reason string, retry time.Duration) *status.Status {
	t.Helper()
	st := status.New(code, "test")
	if reason != "" {
		var err error
		if st, err = st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: "gqlbridge"}); err != nil {
			t.Fatal(err)
		}
	}
	if retry >= 0 {
		var err error
		if st, err = st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(retry)}); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// TestRetryableMatchesStatusDoc reads both status tables of docs/status.md
// and checks Retryable against every row: a row of the bridge's table whose
// "retry?" column starts with "Yes" comes with RetryInfo and must be
// retried after its delay; every other row of it must not be. A row of the
// table of statuses gRPC produces must be retried exactly when its cause
// says "Retry with backoff".
func TestRetryableMatchesStatusDoc(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "docs", "status.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	table := ""
	rows := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "|") {
			table = ""
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		switch {
		case len(cells) == 4 && cells[0] == "gRPC code" && strings.HasPrefix(cells[3], "retry?"):
			table = "bridge"
			continue
		case len(cells) == 2 && cells[0] == "gRPC code" && cells[1] == "cause":
			table = "grpc"
			continue
		case table == "" || strings.HasPrefix(cells[0], "---"):
			continue
		}
		for _, name := range strings.Split(cells[0], ",") {
			var code codes.Code
			if err := code.UnmarshalJSON([]byte(`"` + strings.Trim(strings.TrimSpace(name), "`") + `"`)); err != nil {
				t.Fatalf("docs/status.md row %q: code: %v", line, err)
			}
			rows++
			switch table {
			case "bridge":
				reason := strings.Trim(cells[1], "`")
				if strings.HasPrefix(reason, "—") {
					reason = ""
				}
				want := strings.HasPrefix(cells[3], "Yes")
				delay := time.Duration(-1)
				if want {
					delay = 700 * time.Millisecond
				}
				retry, after := Retryable(bridgeStatus(t, code, reason, delay))
				if retry != want || (want && after != delay) {
					t.Errorf("%s %s: Retryable = %v, %v; docs/status.md says %q", code, reason, retry, after, cells[3])
				}
			case "grpc":
				want := strings.Contains(cells[1], "Retry with backoff")
				if retry, after := Retryable(status.New(code, "from gRPC")); retry != want || after != 0 {
					t.Errorf("%s from gRPC: Retryable = %v, %v; docs/status.md says %q", code, retry, after, cells[1])
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if rows < 20 {
		t.Fatalf("read %d rows of status tables from docs/status.md; the tables moved or changed shape", rows)
	}
}

func TestRetryDelay(t *testing.T) {
	r := Retry{Initial: 100 * time.Millisecond, Max: time.Second}.withDefaults()
	whole := func(n time.Duration) time.Duration { return n } // the top of the jitter range
	none := func(time.Duration) time.Duration { return 0 }    // the bottom
	for _, c := range []struct {
		failures int
		ceiling  time.Duration
	}{{1, 100 * time.Millisecond}, {2, 200 * time.Millisecond}, {3, 400 * time.Millisecond}, {4, 800 * time.Millisecond},
		{5, time.Second}, {60, time.Second}} {
		if got := r.delay(c.failures, 0, false, whole); got != c.ceiling {
			t.Errorf("failure %d without RetryInfo: at most %v, want %v", c.failures, got, c.ceiling)
		}
		if got := r.delay(c.failures, 0, false, none); got != 0 {
			t.Errorf("failure %d without RetryInfo: at least %v, want 0 (full jitter)", c.failures, got)
		}
		if got := r.delay(c.failures, 300*time.Millisecond, true, none); got != 300*time.Millisecond {
			t.Errorf("failure %d with RetryInfo 300ms: at least %v, want the RetryInfo", c.failures, got)
		}
		if got := r.delay(c.failures, 300*time.Millisecond, true, whole); got != 300*time.Millisecond+c.ceiling {
			t.Errorf("failure %d with RetryInfo 300ms: at most %v, want %v", c.failures, got, 300*time.Millisecond+c.ceiling)
		}
	}
	if d := (Retry{}).withDefaults(); d.Initial != 100*time.Millisecond || d.Max != 30*time.Second {
		t.Errorf("defaults %+v", d)
	}
	for range 1000 {
		if j := fullJitter(10 * time.Millisecond); j < 0 || j > 10*time.Millisecond {
			t.Fatalf("fullJitter(10ms) = %v", j)
		}
	}
	if j := fullJitter(0); j != 0 {
		t.Fatalf("fullJitter(0) = %v", j)
	}
}
