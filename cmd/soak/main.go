// Command soak runs gqlbridge under a mixed, changing load for a fixed time,
// in one process, and reports whether the process stays flat: memory,
// goroutines and open file descriptors sampled every few seconds, with a
// verdict comparing the last quarter of the run with the second.
//
//	go run ./cmd/soak -duration 10m     (make soak DURATION=10m)
//
// In the one process it starts:
//
//   - the gqlgen demo upstream (internal/demoupstream) with a token that
//     expires every -token-ttl, so credential rotation and refresh run all the
//     time, restarted on the same address every -restart-every;
//   - a TokenService (graphqlbridge.v1) that hands out that token with its
//     expiry;
//   - the bridge on loopback TCP, built from a configuration file by
//     package wiring as the binary builds it (cmd/soak/config.go), with
//     three upstreams on that server: "shared" deduplicates identical
//     subscriptions, "direct" does not, and both take their token from the
//     TokenService; "refresh" has a fixed token whose expiry it does not
//     know;
//   - gRPC callers: -long long-lived subscriptions (half of them sharing a
//     few upstream operations), -slow slow readers (drop_oldest), and -churn
//     subscribe/cancel cycles per second.
//
// It exits non-zero when an invariant breaks: a subscription that did not
// resume within -resume-within after an upstream restart, a long-lived
// subscription that ended, a stream that ended with an unexpected status, a
// result sequence that went backwards, a churn cycle that hung, goroutines
// or file descriptors growing between the second and last quarters, or
// goroutines left behind after shutdown. A panic anywhere ends the process
// with Go's exit status 2.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"
)

type options struct {
	duration     time.Duration
	sampleEvery  time.Duration
	restartEvery time.Duration
	resumeWithin time.Duration
	tokenTTL     time.Duration
	long         int
	slow         int
	churn        float64
	logLevel     string
	heapProfile  string
}

func main() {
	var o options
	fs := flag.NewFlagSet("soak", flag.ExitOnError)
	fs.DurationVar(&o.duration, "duration", 10*time.Minute, "how long to run the load")
	fs.DurationVar(&o.sampleEvery, "sample-every", 5*time.Second, "sampling interval")
	fs.DurationVar(&o.restartEvery, "restart-every", time.Minute, "restart the upstream this often (0: never)")
	fs.DurationVar(&o.resumeWithin, "resume-within", 10*time.Second, "every subscription must resume this soon after the upstream is back")
	fs.DurationVar(&o.tokenTTL, "token-ttl", 20*time.Second, "lifetime of the upstream token (rotation runs before it ends)")
	fs.IntVar(&o.long, "long", 500, "long-lived subscriptions (half deduplicated)")
	fs.IntVar(&o.slow, "slow", 20, "slow readers (drop_oldest)")
	fs.Float64Var(&o.churn, "churn", 50, "subscribe/cancel cycles per second")
	fs.StringVar(&o.logLevel, "log-level", "warn", "bridge log level to stderr: debug, info, warn, error")
	fs.StringVar(&o.heapProfile, "heap-profile", "", "write a heap profile here at the end of the run, while the long-lived subscriptions still run (go tool pprof)")
	_ = fs.Parse(os.Args[1:])
	if o.heapProfile != "" {
		// Sample every 16 KiB allocated rather than 512 KiB, so that the
		// profile accounts for the live heap in detail.
		runtime.MemProfileRate = 16 << 10
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, o, os.Stdout, os.Stderr))
}

func run(ctx context.Context, o options, stdout, stderr io.Writer) int {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintln(stderr, "soak: -log-level:", err)
		return 2
	}
	if o.duration <= 0 || o.sampleEvery <= 0 || o.long < 0 || o.slow < 0 || o.churn < 0 {
		fmt.Fprintln(stderr, "soak: -duration and -sample-every must be positive, counts not negative")
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	s, err := start(o, log, stdout)
	if err != nil {
		fmt.Fprintln(stderr, "soak:", err)
		return 1
	}
	s.runLoad(ctx)
	s.shutdown()
	s.report()
	if len(s.violations) > 0 {
		fmt.Fprintf(stdout, "\nFAIL: %d invariant(s) broken\n", len(s.violations))
		for _, v := range s.violations {
			fmt.Fprintln(stdout, "  -", v)
		}
		return 1
	}
	fmt.Fprintln(stdout, "\nPASS: every invariant held")
	return 0
}

// writeHeapProfile writes the live heap after a collection to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
