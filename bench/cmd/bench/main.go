// Command bench runs the scenarios of docs/design.md §13 side by side on this
// machine and prints a table of absolute figures and ratios; the same
// figures go to a JSON file.
//
//	go run ./cmd/bench -bridge ../.tmp/bridge -out results.json
//	go run ./cmd/bench -scenarios 1,2 -events 100000
//	go run ./cmd/bench -scenarios 3 -subs 20000
//	go run ./cmd/bench -scenarios 1,3,5 -profile profiles   # pprof of the bridge under 1, 3 and 5
//
// Scenario 3 runs the bridge in a memory cgroup it makes (as root) with a
// 2 GiB limit (-cgroup-limit), without GOMEMLIMIT, and removes it after.
//
// Everything runs on 127.0.0.1: the benchmark upstream in this process, the
// bridge as a subprocess (built from ./cmd/bridge, configured by a generated
// YAML file) so its CPU and memory are measured on their own, the gRPC-only
// baseline (./cmd/grpcceiling) and the Node client as subprocesses.
// Profiles come from the same bridge binary, through the opt-in pprof
// endpoint of its admin server (server.pprof). Goals are reported PASS/FAIL; the command fails
// only when a scenario could not run at all.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	bridgeBin string
	nodeDir   string
	out       string
	scenarios []int
	profile   string
	quiet     time.Duration
	bridgeEnv []string
	tmp       string // scratch directory, removed at exit
	ceiling   string // cmd/grpcceiling, built on first use

	// Scenario 1.
	events    int64
	runs      int
	consumers string // only the consumers whose names contain one of these (comma separated)
	burst     int64  // results per burst at the shipped defaults; 0 skips it
	burstQ    int    // queue.size for the burst bridge; 0: the shipped defaults
	// Scenario 2.
	latRate    float64
	latSeconds float64
	// Scenario 3.
	subs        int
	opsPerConn  int
	grpcConns   int
	period      time.Duration
	window      time.Duration
	gcWait      time.Duration
	memLimit    string
	cgroupLimit int64
	s3NoLimit   bool
	// Scenario 4.
	stormSubs       int
	stormOpsPerConn int
	stormDown       time.Duration
	// Scenario 5.
	fanSubs    int
	fanRate    float64
	fanSeconds float64
}

func main() {
	var o options
	var scen string
	flag.StringVar(&o.bridgeBin, "bridge", "../.tmp/bridge", "the bridge binary (go build -o ../.tmp/bridge ./cmd/bridge)")
	flag.StringVar(&o.nodeDir, "node", "node", "directory of the Node client (client.mjs and node_modules)")
	flag.StringVar(&o.out, "out", "results.json", "write the results here as JSON (empty: do not)")
	flag.StringVar(&scen, "scenarios", "1,2,3,4,5", "scenarios to run, comma separated")
	flag.StringVar(&o.profile, "profile", "", "directory: profile the bridge (CPU, allocations, heap) under scenarios 1, 3 and 5 and write the profiles there")
	flag.DurationVar(&o.quiet, "quiet-wait", 20*time.Second, "before each scenario, wait up to this long for other processes to leave the CPUs alone")
	flag.Int64Var(&o.events, "events", 300_000, "scenario 1: results per run")
	flag.IntVar(&o.runs, "runs", 5, "scenario 1: runs per consumer (the median is reported)")
	flag.Int64Var(&o.burst, "burst", 200_000, "scenario 1: results per burst read from a bridge with the shipped defaults (no queue settings), batched and not; 0 skips it")
	flag.IntVar(&o.burstQ, "burst-queue", 0, "scenario 1: queue.size of the bridge that takes the bursts (0: no queue settings, the shipped defaults); for choosing the default")
	flag.StringVar(&o.consumers, "consumers", "", "scenario 1: run only the consumers whose names contain one of these words, comma separated (e.g. bridged,gRPC); default all")
	flag.Float64Var(&o.latRate, "latency-rate", 1000, "scenario 2: results per second")
	flag.Float64Var(&o.latSeconds, "latency-seconds", 5, "scenario 2: seconds per consumer")
	flag.IntVar(&o.subs, "subs", 100_000, "scenario 3: concurrent subscriptions")
	flag.IntVar(&o.opsPerConn, "ops-per-conn", 10_000, "scenario 3: max_operations_per_connection")
	flag.IntVar(&o.grpcConns, "grpc-conns", 100, "scenarios 3-5: gRPC client connections the streams spread over")
	flag.DurationVar(&o.period, "period", 5*time.Second, "scenario 3: each subscription gets one result per period")
	flag.DurationVar(&o.window, "window", 10*time.Second, "scenario 3: steady-state measurement window")
	flag.DurationVar(&o.gcWait, "gc-wait", 10*time.Minute, "scenario 3: how long to wait for a whole GC cycle after the window (the peak RSS is read after it); with results reused a cycle can take minutes")
	flag.Int64Var(&o.cgroupLimit, "cgroup-limit", 2<<30, "scenario 3: the memory limit, in bytes, of the cgroup the bridge runs in")
	flag.StringVar(&o.memLimit, "memlimit", "1800MiB", "scenario 3: the GOMEMLIMIT the bridge runs with when no memory cgroup can be made")
	flag.BoolVar(&o.s3NoLimit, "s3-nolimit", false, "scenario 3: also run the bridge without any soft memory limit (memory_limit: off), outside the cgroup")
	flag.IntVar(&o.stormSubs, "storm-subs", 10_000, "scenario 4: live subscriptions")
	flag.IntVar(&o.stormOpsPerConn, "storm-ops-per-conn", 1000, "scenario 4: max_operations_per_connection")
	flag.DurationVar(&o.stormDown, "storm-down", 2*time.Second, "scenario 4: how long the upstream stays down")
	flag.IntVar(&o.fanSubs, "fanout-subs", 10_000, "scenario 5: subscribers of the one operation")
	flag.Float64Var(&o.fanRate, "fanout-rate", 10, "scenario 5: upstream results per second")
	flag.Float64Var(&o.fanSeconds, "fanout-seconds", 10, "scenario 5: seconds of results")
	flag.Func("bridge-env", "KEY=VALUE added to the bridge's environment (repeatable), e.g. GOMEMLIMIT=1400MiB", func(v string) error {
		if !strings.Contains(v, "=") {
			return fmt.Errorf("want KEY=VALUE")
		}
		o.bridgeEnv = append(o.bridgeEnv, v)
		return nil
	})
	flag.Parse()
	bridgeEnv = o.bridgeEnv
	for _, f := range strings.Split(scen, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 5 {
			log.Fatalf("-scenarios: %q is not a scenario (1-5)", f)
		}
		o.scenarios = append(o.scenarios, n)
	}
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	log.SetPrefix("bench ")

	abs, err := filepath.Abs(o.bridgeBin)
	if err != nil {
		log.Fatal(err)
	}
	o.bridgeBin = abs
	if o.nodeDir, err = filepath.Abs(o.nodeDir); err != nil {
		log.Fatal(err)
	}
	if o.profile != "" {
		if o.profile, err = filepath.Abs(o.profile); err != nil {
			log.Fatal(err)
		}
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			log.Fatal(err)
		}
	}
	if _, err := os.Stat(o.bridgeBin); err != nil {
		log.Fatalf("bridge binary: %v (build it with: go build -o .tmp/bridge ./cmd/bridge)", err)
	}

	if o.tmp, err = os.MkdirTemp("", "gqlbridge-bench-bin-"); err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(o.tmp)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r := &report{Machine: machine(), Started: time.Now().UTC().Format(time.RFC3339), Args: os.Args[1:],
		Details: map[string]any{}}
	start := time.Now()
	failed := false
	for _, n := range o.scenarios {
		if ctx.Err() != nil {
			break
		}
		waitQuiet(o.quiet)
		log.Printf("scenario %d", n)
		m0, own0, t0 := machineBusy(), ownCPU(), time.Now()
		var err error
		switch n {
		case 1:
			err = scenario1(ctx, &o, r)
		case 2:
			err = scenario2(ctx, &o, r)
		case 3:
			err = scenario3(ctx, &o, r)
		case 4:
			err = scenario4(ctx, &o, r)
		case 5:
			err = scenario5(ctx, &o, r)
		}
		other := max(0, float64((machineBusy()-m0)-(ownCPU()-own0))) / float64(time.Since(t0)*time.Duration(ncpu()))
		r.add(scenarioNames[n], "machine", "CPU used by other processes", 100*other, "% of all")
		if err != nil {
			failed = true
			log.Printf("scenario %d: %v", n, err)
			r.Errors = append(r.Errors, fmt.Sprintf("scenario %d: %v", n, err))
		}
	}
	r.Seconds = time.Since(start).Seconds()
	r.Machine.LoadAvgEnd = loadavg()
	r.print(os.Stdout)
	if o.out != "" {
		b, _ := json.MarshalIndent(r, "", "  ")
		if err := os.WriteFile(o.out, append(b, '\n'), 0o644); err != nil {
			log.Fatal(err)
		}
		fmt.Printf("\nresults written to %s\n", o.out)
	}
	if failed {
		os.RemoveAll(o.tmp)
		os.Exit(1)
	}
}

// ceilingBin builds cmd/grpcceiling once and returns its path.
func (o *options) ceilingBin(ctx context.Context) (string, error) {
	if o.ceiling == "" {
		bin := filepath.Join(o.tmp, "grpcceiling")
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/grpcceiling")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return "", fmt.Errorf("build cmd/grpcceiling: %w", err)
		}
		o.ceiling = bin
	}
	return o.ceiling, nil
}

// Machine describes where the figures were measured.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	MemTotal  string `json:"mem_total"`
	GoVersion string `json:"go_version"`
	Node      string `json:"node_version"`
	Kernel    string `json:"kernel"`
	// LoadAvg is /proc/loadavg when the run started and ended: other work
	// on the machine skews every figure.
	LoadAvgStart string `json:"loadavg_start"`
	LoadAvgEnd   string `json:"loadavg_end"`
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadAvgStart: loadavg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "MemTotal:") {
				m.MemTotal = strings.TrimSpace(strings.TrimPrefix(line, "MemTotal:"))
			}
		}
	}
	if out, err := exec.Command("node", "--version").Output(); err == nil {
		m.Node = strings.TrimSpace(string(out))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}
