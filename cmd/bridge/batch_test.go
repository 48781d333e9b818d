package main

import (
	"bytes"
	"context"
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
