package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// sample is one reading of the process and the bridge.
type sample struct {
	at         time.Duration
	rss        float64 // MiB, VmRSS of this process (upstream, bridge and callers alike)
	heap       float64 // MiB, Go heap live at the last collection (garbage not counted)
	goroutines float64
	fds        float64
	subs       float64 // open Subscribe streams, as the bridge counts them
	ops        float64 // upstream operations, after deduplication
	events     int64   // results received by callers, cumulative
	reconnects int64   // cumulative, from the bridge's metrics
	dropped    int64   // cumulative, from the bridge's metrics
	// restart is set when an upstream restart was under way since the
	// previous sample: such samples show the transition, not the steady
	// state, and are left out of the quarter means.
	restart bool
}

// sampleLoop samples every sampleEvery until ctx ends.
func (s *soak) sampleLoop(ctx context.Context) {
	t := time.NewTicker(s.o.sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.takeSample()
		s.checkStalls()
	}
}

func (s *soak) takeSample() {
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(live)
	restarts := s.restarts.Load()
	smp := sample{
		at:         time.Since(s.begin),
		rss:        float64(readRSS()) / (1 << 20),
		heap:       float64(live[0].Value.Uint64()) / (1 << 20),
		goroutines: float64(runtime.NumGoroutine()),
		fds:        float64(countFDs()),
		events:     s.events.Load(),
		reconnects: int64(s.metricSum("gqlbridge_reconnects_total")),
		dropped:    int64(s.metricSum("gqlbridge_events_dropped_total")),
	}
	for _, u := range s.svc.Bridge.Snapshot().Upstreams {
		smp.subs += float64(u.Subscriptions)
		smp.ops += float64(u.Operations)
	}
	s.mu.Lock()
	prev := sample{}
	if n := len(s.samples); n > 0 {
		prev = s.samples[n-1]
	}
	smp.restart = s.restarting.Load() || restarts != s.lastRestarts
	s.lastRestarts = restarts
	s.samples = append(s.samples, smp)
	s.mu.Unlock()
	rate := float64(smp.events-prev.events) / (smp.at - prev.at).Seconds()
	mark := " "
	if smp.restart {
		mark = "R"
	}
	fmt.Fprintf(s.out, "[%7s]%s rss=%6.1fMiB heap=%6.1fMiB goroutines=%5.0f fds=%4.0f subs=%4.0f ops=%4.0f events=%9d (%6.0f/s) reconnects=%4d rotations=%4d refreshes=%3d restarts=%2d dropped=%7d slow=%6d churn=%6d\n",
		smp.at.Round(time.Second), mark, smp.rss, smp.heap, smp.goroutines, smp.fds, smp.subs, smp.ops, smp.events, rate,
		smp.reconnects, s.rotations.Load(), s.refreshes.Load(), s.restarts.Load(), smp.dropped, s.slowEvents.Load(), s.churnDone.Load())
}

// metricSum adds up every series of a counter or gauge of the bridge.
func (s *soak) metricSum(name string) float64 {
	mfs, err := s.reg.Gather()
	if err != nil {
		return math.NaN()
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// readRSS returns VmRSS of this process in bytes (0 where /proc is absent).
func readRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			f := strings.Fields(rest) // "123456 kB"
			if len(f) >= 1 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// countFDs counts the open file descriptors of this process.
func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return len(ents) - 1 // the directory being read is one of them
}

// series describes one sampled quantity and how much it may grow between
// the second and last quarters of the run and still count as flat.
type series struct {
	name    string
	unit    string
	get     func(sample) float64
	slack   func(q2 float64) float64
	enforce bool // growth breaks an invariant (otherwise it is reported)
}

var allSeries = []series{
	{name: "rss", unit: "MiB", get: func(s sample) float64 { return s.rss }, slack: func(q2 float64) float64 { return 0.10 * q2 }},
	{name: "heap", unit: "MiB", get: func(s sample) float64 { return s.heap }, slack: func(q2 float64) float64 { return 0.10 * q2 }},
	{name: "goroutines", get: func(s sample) float64 { return s.goroutines }, enforce: true,
		slack: func(q2 float64) float64 { return max(100, 0.05*q2) }},
	{name: "fds", get: func(s sample) float64 { return s.fds }, enforce: true, slack: func(float64) float64 { return 20 }},
	{name: "subs", get: func(s sample) float64 { return s.subs }, slack: func(q2 float64) float64 { return max(50, 0.10*q2) }},
	{name: "ops", get: func(s sample) float64 { return s.ops }, slack: func(q2 float64) float64 { return max(50, 0.10*q2) }},
}

// report prints the summary of the run and records growth as a violation
// where the series says so.
func (s *soak) report() {
	s.mu.Lock()
	smps := append([]sample(nil), s.samples...)
	s.mu.Unlock()
	fmt.Fprintf(s.out, "\nsoak report: %s, %d samples every %s (R: an upstream restart since the previous sample; left out of the quarter means)\n",
		time.Since(s.begin).Round(time.Second), len(smps), s.o.sampleEvery)
	if len(smps) == 0 {
		return
	}
	fmt.Fprintf(s.out, "%-11s %9s %9s %9s %9s %9s %9s  %s\n", "series", "first", "last", "min", "max", "mean Q2", "mean Q4", "verdict")
	n := len(smps)
	for _, sr := range allSeries {
		first, last := sr.get(smps[0]), sr.get(smps[n-1])
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, x := range smps {
			lo, hi = min(lo, sr.get(x)), max(hi, sr.get(x))
		}
		verdict, q2, q4 := "n/a (fewer than 8 samples)", math.NaN(), math.NaN()
		if n >= 8 {
			q2, q4 = steadyMean(smps[n/4:n/2], sr.get), steadyMean(smps[3*n/4:], sr.get)
			if q4-q2 <= sr.slack(q2) {
				verdict = "flat"
			} else {
				verdict = fmt.Sprintf("GROWING (+%.1f over the allowed %.1f)", q4-q2, sr.slack(q2))
				if sr.enforce {
					s.violate("%s grew from a mean of %.1f (second quarter) to %.1f (last quarter)", sr.name, q2, q4)
				}
			}
		}
		name := sr.name
		if sr.unit != "" {
			name += " " + sr.unit
		}
		fmt.Fprintf(s.out, "%-11s %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f  %s\n", name, first, last, lo, hi, q2, q4, verdict)
	}
	end := smps[n-1]
	fmt.Fprintf(s.out, "\ntotals: events=%d (%.0f/s) reconnects=%d restarts=%d rotations=%d refreshes=%d dropped(slow readers)=%d gaps(fast readers)=%d churn cycles=%d (skipped %d)\n",
		end.events, float64(end.events)/end.at.Seconds(), end.reconnects, s.restarts.Load(), s.rotations.Load(), s.refreshes.Load(),
		end.dropped, s.gaps.Load(), s.churnDone.Load(), s.churnSkip.Load())
	if s.restarts.Load() > 0 {
		fmt.Fprintf(s.out, "slowest resume after an upstream restart: %s\n", time.Duration(s.resumeMaxN.Load()).Round(time.Millisecond))
	}
	fmt.Fprintf(s.out, "stream outcomes by caller and code: %s\n", strings.Join(s.sortedOutcomes(), " "))
}

// steadyMean is the mean over the samples not marked as restarts (over all
// of them when every one is).
func steadyMean(smps []sample, get func(sample) float64) float64 {
	sum, n := 0.0, 0
	for _, x := range smps {
		if !x.restart {
			sum += get(x)
			n++
		}
	}
	if n == 0 {
		for _, x := range smps {
			sum += get(x)
		}
		n = len(smps)
	}
	if n == 0 {
		return math.NaN()
	}
	return sum / float64(n)
}
