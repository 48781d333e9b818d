package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
)

// TestServeBatchLimits: server.max_batch and server.max_batch_bytes reach
// the service. bridge subscribe --max-batch over the maximum exits with
// INVALID_ARGUMENT naming it; at the maximum it prints what it prints
// without the flag. With max_batch_bytes 1, a caller that read nothing
// until the upstream finished gets every result alone, in order.
func TestServeBatchLimits(t *testing.T) {
	demo := startDemo(t, demoupstream.Options{})
	s := startServe(t, `
server:
  grpc_address: ADDR
  admin_address: "off"
  drain_grace: 100ms
  max_batch: 8
  max_batch_bytes: 1
upstreams:
  demo:
    url: `+demo.URL()+`
    queue: {size: 1000}
`)
	const query = "subscription { ticker(count: 5, intervalMs: 0) { n } }"
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"subscribe", "--addr", s.addr, "--upstream", "demo", "--max-batch", "9", query}, &stdout, &stderr); code != 3 ||
		!strings.Contains(stderr.String(), "max_batch is 9; this bridge sends at most 8 results per batch") {
		t.Fatalf("--max-batch 9: exit %d, stderr %q; want 3 (INVALID_ARGUMENT) naming the maximum 8", code, stderr.String())
	}
	outputs := map[string]string{}
	for _, flag := range []string{"0", "8"} {
		stdout.Reset()
		stderr.Reset()
		if code := run(t.Context(), []string{"subscribe", "--addr", s.addr, "--upstream", "demo", "--max-batch", flag, query}, &stdout, &stderr); code != 0 {
			t.Fatalf("--max-batch %s: exit %d, stderr %q", flag, code, stderr.String())
		}
		outputs[flag] = stdout.String()
	}
	if want := "{\"data\":{\"ticker\":{\"n\":1}}}\n{\"data\":{\"ticker\":{\"n\":2}}}\n{\"data\":{\"ticker\":{\"n\":3}}}\n{\"data\":{\"ticker\":{\"n\":4}}}\n{\"data\":{\"ticker\":{\"n\":5}}}\n"; outputs["0"] != want || outputs["8"] != want {
		t.Fatalf("stdout without batches %q, with %q; want %q", outputs["0"], outputs["8"], want)
	}

	// A caller whose window fills after 64 KiB stops the bridge's sends;
	// the rest of 300 results of 1 KiB queue until it reads.
	const total = 300
	ended := demo.Stats().SubscriptionsEnded
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStaticStreamWindowSize(64<<10), grpc.WithStaticConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	stream, err := bridgev1.NewSubscriptionServiceClient(conn).Subscribe(ctx, &bridgev1.SubscribeRequest{Upstream: "demo", MaxBatch: 8,
		Query: fmt.Sprintf("subscription { ticker(count: %d, intervalMs: 0, size: 1024) { n payload } }", total)})
	if err != nil {
		t.Fatal(err)
	}
	if err := demo.WaitFor(ctx, func(st demoupstream.Stats) bool { return st.SubscriptionsEnded == ended+1 }); err != nil {
		t.Fatalf("the upstream did not finish: %+v", demo.Stats())
	}
	seq := uint64(0)
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if r.GetNext() != nil {
			t.Fatalf("a lone next with max_batch 8: %v", r.GetNext().GetSequence())
		}
		if b := r.GetBatch(); b != nil {
			if len(b.GetNexts()) != 1 {
				t.Fatalf("a batch of %d results over max_batch_bytes 1", len(b.GetNexts()))
			}
			if seq++; b.GetNexts()[0].GetSequence() != seq {
				t.Fatalf("sequence %d, want %d", b.GetNexts()[0].GetSequence(), seq)
			}
		}
	}
	if seq != total {
		t.Fatalf("%d results, want %d", seq, total)
	}
}

// TestSubscribeResume: bridge subscribe --resume-variable/--resume-pointer
// sends SubscribeRequest.resume and prints the last result's cursor when
// the stream ends: here when a live result lacks the fifth row the pointer
// names (INVALID_ARGUMENT, exit 3), after the replay's full batches. One
// flag without the other is a usage error.
func TestSubscribeResume(t *testing.T) {
	demo := startDemo(t, demoupstream.Options{EventEpoch: time.Now().Add(-time.Second), EventInterval: 5 * time.Millisecond})
	s := startServe(t, `
server:
  grpc_address: ADDR
  admin_address: "off"
  drain_grace: 100ms
upstreams:
  demo:
    url: `+demo.URL()+`
    queue: {size: 1000}
`)
	const query = "subscription ($after: Int) { eventBatches(after: $after, batchSize: 5) { id } }"
	var stdout, stderr bytes.Buffer
	args := []string{"subscribe", "--addr", s.addr, "--upstream", "demo", "--variables", `{"after": 3}`}
	if code := run(t.Context(), append(args, "--resume-variable", "after", query), &stdout, &stderr); code != 2 ||
		!strings.Contains(stderr.String(), "--resume-variable and --resume-pointer go together") {
		t.Fatalf("--resume-variable alone: exit %d, stderr %q", code, stderr.String())
	}
	stderr.Reset()
	code := run(t.Context(), append(args, "--resume-variable", "after", "--resume-pointer", "/data/eventBatches/4/id", query), &stdout, &stderr)
	if code != 3 || !strings.Contains(stderr.String(), "has no cursor at resume.cursor_pointer") {
		t.Fatalf("exit %d, stderr %q; want 3 (INVALID_ARGUMENT) for the result without a fifth row", code, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	last := 3
	for _, l := range lines {
		var r struct {
			Data struct{ EventBatches []struct{ ID int } }
		}
		if err := json.Unmarshal([]byte(l), &r); err != nil || len(r.Data.EventBatches) != 5 || r.Data.EventBatches[0].ID != last+1 {
			t.Fatalf("line %q after id %d (%v)", l, last, err)
		}
		last = r.Data.EventBatches[4].ID
	}
	if want := fmt.Sprintf("last cursor: %d (continue after it with --variables setting after to it)", last); !strings.Contains(stderr.String(), want) {
		t.Fatalf("stderr %q, want %q", stderr.String(), want)
	}
}
