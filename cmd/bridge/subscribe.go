package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gqlbridge/gqlbridge/client"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

// subscribe is a small client built on package client: each result goes to
// stdout as one JSON line (each result of a batch as its own line),
// lifecycle changes, resubscribes and the final status to stderr, and the
// exit code is the gRPC status code (0 when the upstream completed the
// subscription).
func subscribe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("subscribe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:50051", "the bridge's gRPC address, or several separated by commas (streams are balanced over them with round robin)")
	resubscribe := fs.Bool("resubscribe", false, "subscribe again after a retryable end (a draining replica, a broken connection, a full replica; docs/status.md) instead of exiting with its code")
	upstream := fs.String("upstream", "", "configured upstream name; required")
	vars := fs.String("variables", "", "variables as a JSON object")
	opName := fs.String("operation-name", "", "operation to run when the document has several")
	maxBatch := fs.Uint("max-batch", 0, "ask for results in batches of up to `N` (SubscribeRequest.max_batch); each result is still printed as its own line")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: bridge subscribe --upstream NAME [flags] QUERY\n\nPrints each result as one JSON line on stdout; lifecycle on stderr.\nWith --resubscribe, subscribes again after a retryable end.\nExit code: the gRPC status code (0 = completed).\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *upstream == "" || fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	if *maxBatch > math.MaxUint32 {
		fmt.Fprintf(stderr, "bridge: --max-batch %d is too large\n", *maxBatch)
		return 2
	}
	req := &bridgev1.SubscribeRequest{Upstream: *upstream, Query: fs.Arg(0), OperationName: *opName, MaxBatch: uint32(*maxBatch)}
	if *vars != "" {
		var m map[string]any
		if err := json.Unmarshal([]byte(*vars), &m); err != nil {
			fmt.Fprintf(stderr, "bridge: --variables must be a JSON object: %v\n", err)
			return 2
		}
		st, err := structpb.NewStruct(m)
		if err != nil {
			fmt.Fprintf(stderr, "bridge: --variables: %v\n", err)
			return 2
		}
		req.Variables = st
	}
	var target string
	dial := append(client.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if addrs := strings.Split(*addr, ","); len(addrs) > 1 {
		var resolve grpc.DialOption
		target, resolve = client.StaticAddresses(addrs...)
		dial = append(dial, resolve)
	} else {
		target = *addr
	}
	conn, err := grpc.NewClient(target, dial...)
	if err != nil {
		fmt.Fprintln(stderr, "bridge:", err)
		return 1
	}
	defer conn.Close()
	var opts []client.Option
	if !*resubscribe {
		opts = append(opts, client.WithoutResubscribe())
	}
	err = client.New(conn, opts...).Subscribe(ctx, req, client.Handler{
		OnResult: func(r client.Result) {
			stdout.Write(r.Data)
			io.WriteString(stdout, "\n")
		},
		OnLifecycle: func(l *bridgev1.Lifecycle) { printLifecycle(l, stderr) },
		OnRetry: func(r client.Retrying) {
			line := "resubscribing: " + r.Status.Code().String()
			if r.ErrorInfo != nil {
				line += " " + r.ErrorInfo.GetReason()
			}
			if r.RetryInfo != nil {
				line += fmt.Sprintf(" retry_delay=%v", r.RetryInfo.GetRetryDelay().AsDuration())
			}
			fmt.Fprintf(stderr, "%s in %v (attempt %d)\n", line, r.Delay.Round(time.Millisecond), r.Attempt)
		},
		OnResubscribed: func(r client.Resubscribed) {
			fmt.Fprintf(stderr, "resubscribed after %v (%d attempts)\n", r.Down.Round(time.Millisecond), r.Attempts)
		},
	})
	if err == nil {
		fmt.Fprintln(stderr, "completed")
		return 0
	}
	st := status.Convert(err)
	fmt.Fprintf(stderr, "bridge: %s: %s\n", st.Code(), st.Message())
	for _, d := range st.Details() {
		if b, jerr := json.Marshal(d); jerr == nil {
			fmt.Fprintf(stderr, "  detail: %s\n", b)
		}
	}
	return int(st.Code())
}

// printLifecycle writes a lifecycle change as one line.
func printLifecycle(l *bridgev1.Lifecycle, stderr io.Writer) {
	line := strings.ToLower(strings.TrimPrefix(l.State.String(), "STATE_"))
	if l.CloseCode != 0 || l.CloseReason != "" {
		line += fmt.Sprintf(" close_code=%d reason=%q", l.CloseCode, l.CloseReason)
	}
	if l.Attempt != 0 {
		line += fmt.Sprintf(" attempt=%d", l.Attempt)
	}
	fmt.Fprintln(stderr, "lifecycle:", line)
}
