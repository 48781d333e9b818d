package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gqlbridge/gqlbridge/bench/upstream"
	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
)

const (
	s1 = "1 throughput"
	s2 = "2 latency"
	s3 = "3 scale"
	s4 = "4 storm"
	s5 = "5 fan-out"
)

const mib = 1 << 20

var scenarioNames = map[int]string{1: s1, 2: s2, 3: s3, 4: s4, 5: s5}

// rig is what scenarios 1 and 2 run against: the upstream, the bridge on
// it, and the gRPC ceiling (the same client against a server that streams
// the results straight from its handler, no bridge, no upstream).
type rig struct {
	up                    *upstream.Server
	bridge, ceiling       *bridgeProc
	client, ceilingClient bridgev1.SubscriptionServiceClient
	closers               []func()
}

func startRig(ctx context.Context, o *options, name string, bo bridgeOpts) (_ *rig, err error) {
	g := &rig{}
	defer func() {
		if err != nil {
			g.close()
		}
	}()
	if g.up, err = upstream.Start("127.0.0.1:0"); err != nil {
		return nil, err
	}
	g.closers = append(g.closers, g.up.Close)
	if g.bridge, err = startBridge(o.bridgeBin, g.up.URL(), bo); err != nil {
		return nil, err
	}
	g.bridge.name = name
	g.closers = append(g.closers, g.bridge.stop)
	ceiling, err := o.ceilingBin(ctx)
	if err != nil {
		return nil, err
	}
	if g.ceiling, err = startCeiling(ceiling); err != nil {
		return nil, err
	}
	g.closers = append(g.closers, g.ceiling.stop)
	for _, p := range []struct {
		b *bridgeProc
		c *bridgev1.SubscriptionServiceClient
	}{{g.bridge, &g.client}, {g.ceiling, &g.ceilingClient}} {
		cc, client, err := grpcClient(p.b.grpcAddr)
		if err != nil {
			return nil, err
		}
		g.closers = append(g.closers, func() { cc.Close() })
		*p.c = client
	}
	return g, nil
}

// close stops everything, last started first.
func (g *rig) close() {
	for _, f := range slices.Backward(g.closers) {
		f()
	}
}

// Scenario 1's bridged consumers and their baselines. The batched ones
// ask for batchSize results per Batch event (SubscribeRequest.max_batch).
const (
	batchSize      = 256
	cRaw           = "(a) raw gorilla reader"
	cCoder         = "raw coder/websocket reader"
	cGenqlient     = "(b) genqlient"
	cNode          = "(c) node graphql-ws"
	cGRPC          = "gRPC only (no bridge)"
	cGRPCBatched   = "gRPC only, batches of 256"
	cBridged       = "(d) bridged (gRPC)"
	cBridgedBatch  = "(d) bridged, max_batch 256"
	cDefaults      = "defaults, unbatched"
	cDefaultsBatch = "defaults, max_batch 256"
)

// scenario1: one subscription, 1 KiB results, as fast as the upstream can
// send them; every consumer reads the same count; median of o.runs. The
// bridge is read without batches and with max_batch 256, each against every
// baseline, with the bridge's CPU per result.
//
// The upstream does not wait for the bridge's caller (a slow subscriber
// never holds up the upstream reader), so for these runs the bridge's queue
// is sized to hold a whole run: nothing is dropped, every consumer receives
// the same results, and "delivered per second" is what the caller really
// got. A second bridge with the shipped defaults (no queue settings) then
// takes bursts of o.burst results, batched and not, and the figure is what
// it dropped.
func scenario1(ctx context.Context, o *options, r *report) error {
	rig, err := startRig(ctx, o, "scenario1", bridgeOpts{opsPerConn: 1000, queueSize: int(o.events), dedup: true, pprof: o.profile != ""})
	if err != nil {
		return err
	}
	defer rig.close()
	up, b, client, gb, gclient := rig.up, rig.bridge, rig.client, rig.ceiling, rig.ceilingClient

	v := upstream.Vars{Mode: "burst", Count: o.events}
	warm := upstream.Vars{Mode: "burst", Count: 20_000}
	for _, mb := range []uint32{0, batchSize} {
		if _, err := bridgedConsume(ctx, client, warm, mb, nil); err != nil {
			return fmt.Errorf("bridged warm-up: %w", err)
		}
		if _, err := bridgedConsume(ctx, gclient, warm, mb, nil); err != nil {
			return fmt.Errorf("gRPC ceiling warm-up: %w", err)
		}
	}
	if _, err := rawConsume(ctx, up.URL(), warm, nil); err != nil {
		return fmt.Errorf("raw warm-up: %w", err)
	}

	type consumer struct {
		name string
		run  func() (result, error)
	}
	// Per consumer: the CPU of the serving process (bridge or gRPC-only
	// server), of this process (the upstream and the Go consumers) and of
	// a consumer's own process (Node), and the results it got.
	cpu, benchCPU, peerCPU := map[string]time.Duration{}, map[string]time.Duration{}, map[string]time.Duration{}
	got := map[string]int64{}
	dropped := map[string]int64{}
	batches := map[string]int64{}
	grpcRun := func(name string, p *bridgeProc, c bridgev1.SubscriptionServiceClient, mb uint32) consumer {
		return consumer{name, func() (result, error) {
			c0 := cpuTime(p.pid())
			res, err := bridgedConsume(ctx, c, v, mb, nil)
			cpu[name] += cpuTime(p.pid()) - c0
			dropped[name] += res.dropped
			batches[name] += res.batches
			return res, err
		}}
	}
	consumers := []consumer{
		{"upstream→TCP (no framing)", func() (result, error) { return tcpCeiling(ctx, up.URL(), v) }},
		{cRaw, func() (result, error) { return rawConsume(ctx, up.URL(), v, nil) }},
		{cCoder, func() (result, error) { return coderConsume(ctx, up.URL(), v) }},
		{cGenqlient, func() (result, error) { return genqlientConsume(ctx, up.URL(), v) }},
		{cNode, func() (result, error) { return nodeConsume(ctx, o.nodeDir, up.URL(), v) }},
		grpcRun(cGRPC, gb, gclient, 0),
		grpcRun(cGRPCBatched, gb, gclient, batchSize),
		grpcRun(cBridged, b, client, 0),
		grpcRun(cBridgedBatch, b, client, batchSize),
	}
	if o.consumers != "" {
		consumers = slices.DeleteFunc(consumers, func(c consumer) bool {
			return !slices.ContainsFunc(strings.Split(o.consumers, ","), func(w string) bool { return strings.Contains(c.name, w) })
		})
	}
	rates := map[string][]float64{}
	details := map[string]any{}
	for run := 0; run < o.runs; run++ {
		for _, c := range consumers {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// Collect the previous consumer's garbage first, so that its
			// collection is not counted in this consumer's CPU.
			runtime.GC()
			c0 := selfCPU()
			res, err := c.run()
			benchCPU[c.name] += selfCPU() - c0
			peerCPU[c.name] += res.peerCPU
			got[c.name] += res.count
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			if res.count+res.dropped != o.events {
				log.Printf("%s: received %d of %d results", c.name, res.count, o.events)
			}
			rates[c.name] = append(rates[c.name], res.rate())
			log.Printf("  %-28s run %d: %8d results in %7.3fs = %9.0f/s (dropped %d)", c.name, run+1, res.count, res.dur.Seconds(), res.rate(), res.dropped)
		}
	}
	build := upstream.BuildRate(2_000_000)
	raw := median(rates[cRaw])
	r.add(s1, "upstream (no network)", "frames built", build, "events/s")
	for _, c := range consumers {
		r.addRatio(s1, c.name, "events/s (median of "+strconv.Itoa(o.runs)+")", median(rates[c.name]), "events/s", raw, "raw")
		details[c.name] = rates[c.name]
	}
	perResult := func(name string) float64 {
		if got[name] == 0 {
			return 0
		}
		return us(cpu[name]) / float64(got[name])
	}
	for _, g := range []struct{ name, ceiling string }{{cGRPC, ""}, {cGRPCBatched, cGRPC}} {
		if got[g.name] > 0 {
			r.addRatio(s1, g.name, "server CPU per result", perResult(g.name), "µs", perResult(g.ceiling), g.ceiling)
		}
	}
	for _, bc := range []struct{ name, ceiling string }{{cBridged, cGRPC}, {cBridgedBatch, cGRPCBatched}} {
		rate := median(rates[bc.name])
		if rate == 0 {
			continue
		}
		for _, ref := range []struct{ name, figure, short string }{
			{cRaw, "raw gorilla reader", "raw"}, {cCoder, "raw coder/websocket", "coder"}, {cGenqlient, "genqlient", "genqlient"},
			{cNode, "Node graphql-ws", "Node"}, {cGRPC, "gRPC only", "gRPC only"}, {cGRPCBatched, "gRPC only, batches", "gRPC batches"},
		} {
			base := median(rates[ref.name])
			if base == 0 {
				continue
			}
			r.addRatio(s1, bc.name, "events/s vs "+ref.figure, rate, "events/s", base, ref.short)
		}
		r.add(s1, bc.name, "dropped by the bridge (all runs)", float64(dropped[bc.name]), "events")
		r.addRatio(s1, bc.name, "bridge CPU per result", perResult(bc.name), "µs", perResult(bc.ceiling), bc.ceiling)
		if batches[bc.name] > 0 {
			r.add(s1, bc.name, "results per batch (mean)", float64(got[bc.name])/float64(batches[bc.name]), "events")
		}
	}
	// The gRPC-only ceilings against the same two baselines: what any
	// bridge here could reach at most, run by run.
	for _, ref := range []struct{ name, figure, short string }{{cNode, "Node graphql-ws", "Node"}, {cCoder, "raw coder/websocket", "coder"}} {
		base := median(rates[ref.name])
		for _, g := range []string{cGRPC, cGRPCBatched} {
			if rate := median(rates[g]); rate > 0 && base > 0 {
				r.addRatio(s1, g, "events/s vs "+ref.figure, rate, "events/s", base, ref.short)
			}
		}
	}
	names := make([]string, len(consumers))
	for i, c := range consumers {
		names[i] = c.name
	}
	budget := cpuBudget(r, names, rates, benchCPU, peerCPU, got, perResult)
	details["events_per_run"] = o.events
	details["upstream_build_rate"] = build
	details["cpu_us_per_result"] = map[string]float64{cGRPC: perResult(cGRPC), cGRPCBatched: perResult(cGRPCBatched), cBridged: perResult(cBridged), cBridgedBatch: perResult(cBridgedBatch)}
	details["cpu_budget"] = budget
	r.Details[s1] = details

	// Goals need the consumers they compare (-consumers may leave some out).
	gq, node, coder := median(rates[cGenqlient]), median(rates[cNode]), median(rates[cCoder])
	if rate := median(rates[cBridgedBatch]); rate > 0 {
		if node > 0 {
			r.goal("1: batched ≥ 1.5× Node graphql-ws", "≥ 1.50x", fmt.Sprintf("%.2fx (%s vs %s events/s%s%s)", rate/node, num(rate), num(node), roundsNote(rates[cBridgedBatch], rates[cNode]), floorNote(budget.BatchedCeiling, node)), rate >= 1.5*node)
		}
		if coder > 0 {
			r.goal("1: batched ≥ 0.8× raw coder/websocket", "≥ 0.80x", fmt.Sprintf("%.2fx (%s vs %s events/s%s%s)", rate/coder, num(rate), num(coder), roundsNote(rates[cBridgedBatch], rates[cCoder]), floorNote(budget.BatchedCeiling, coder)), rate >= 0.8*coder)
		}
		r.goal("1: batched, no result dropped", "0", strconv.FormatInt(dropped[cBridgedBatch], 10), dropped[cBridgedBatch] == 0)
	}
	if rate := median(rates[cBridged]); rate > 0 {
		if raw > 0 {
			r.goal("1: bridged ≥ 0.5× raw direct", "≥ 0.50x", fmt.Sprintf("%.2fx (%s vs %s events/s)", rate/raw, num(rate), num(raw)), rate >= 0.5*raw)
		}
		if gq > 0 {
			r.goal("1: bridged ahead of genqlient", "> 1.00x", fmt.Sprintf("%.2fx (%s events/s)", rate/gq, num(gq)), rate > gq)
		}
		if node > 0 {
			r.goal("1: unbatched ≥ 1.0× Node graphql-ws", "≥ 1.00x", fmt.Sprintf("%.2fx (%s vs %s events/s%s%s)", rate/node, num(rate), num(node), roundsNote(rates[cBridged], rates[cNode]), floorNote(budget.UnbatchedCeiling, node)), rate >= node)
		}
		r.goal("1: unbatched, no result dropped", "0", strconv.FormatInt(dropped[cBridged], 10), dropped[cBridged] == 0)
	}
	if o.profile != "" {
		if err := profileThroughput(ctx, o, b, client, v, 0, "throughput", r); err != nil {
			return err
		}
		if err := profileThroughput(ctx, o, b, client, v, batchSize, "throughput-batched", r); err != nil {
			return err
		}
	}
	if o.burst > 0 {
		return burstAtDefaults(ctx, o, r, up)
	}
	return nil
}

// burstAtDefaults runs a bridge with the shipped defaults (no queue
// settings in its file) on up and reads bursts of o.burst results from it
// as fast as a Go gRPC client can, without batches and with max_batch 256:
// what a single subscriber loses when the upstream outruns it.
func burstAtDefaults(ctx context.Context, o *options, r *report, up *upstream.Server) error {
	b, err := startBridge(o.bridgeBin, up.URL(), bridgeOpts{opsPerConn: 1000, dedup: true, queueSize: o.burstQ})
	if err != nil {
		return err
	}
	b.name = "scenario1-defaults"
	if o.burstQ > 0 {
		note := fmt.Sprintf("scenario 1: the bursts ran with queue.size %d (-burst-queue), not the shipped defaults", o.burstQ)
		log.Print(note)
		r.Notes = append(r.Notes, note)
	}
	defer b.stop()
	cc, client, err := grpcClient(b.grpcAddr)
	if err != nil {
		return err
	}
	defer cc.Close()
	v := upstream.Vars{Mode: "burst", Count: o.burst}
	if _, err := bridgedConsume(ctx, client, upstream.Vars{Mode: "burst", Count: 1000}, 0, nil); err != nil {
		return fmt.Errorf("defaults warm-up: %w", err)
	}
	details := map[string]any{"burst": o.burst}
	for _, mb := range []uint32{0, batchSize} {
		name := cDefaults
		if mb > 0 {
			name = cDefaultsBatch
		}
		var got, lost, worst int64
		var rates []float64
		var cpu time.Duration
		d0 := b.metrics(ctx, "gqlbridge_events_dropped_total")["gqlbridge_events_dropped_total"]
		for run := 0; run < o.runs; run++ {
			c0 := cpuTime(b.pid())
			res, err := bridgedConsume(ctx, client, v, mb, nil)
			cpu += cpuTime(b.pid()) - c0
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			got += res.count
			lost += res.dropped
			worst = max(worst, res.dropped)
			rates = append(rates, res.rate())
			log.Printf("  %-28s run %d: %8d results in %7.3fs = %9.0f/s, dropped %d (%.1f%%)", name, run+1, res.count, res.dur.Seconds(), res.rate(), res.dropped, 100*float64(res.dropped)/float64(o.burst))
		}
		metricDropped := b.metrics(ctx, "gqlbridge_events_dropped_total")["gqlbridge_events_dropped_total"] - d0
		consumer := name
		total := float64(got + lost)
		r.add(s1, consumer, fmt.Sprintf("burst of %s: dropped (all %d runs)", num(float64(o.burst)), o.runs), float64(lost), "events")
		r.add(s1, consumer, "dropped fraction", 100*float64(lost)/max(total, 1), "%")
		r.add(s1, consumer, "dropped, worst run", float64(worst), "events")
		r.add(s1, consumer, "received/s (median)", median(rates), "events/s")
		r.add(s1, consumer, "bridge CPU per result received", us(cpu)/max(float64(got), 1), "µs")
		details[name] = map[string]any{"received": got, "dropped": lost, "dropped_metric": metricDropped, "rates": rates}
		if metricDropped != float64(lost) {
			log.Printf("  %s: the client counted %d dropped, gqlbridge_events_dropped_total grew by %.0f", consumer, lost, metricDropped)
		}
		if mb > 0 {
			r.goal(fmt.Sprintf("1: defaults, burst of %s, batched", num(float64(o.burst))), "0 dropped",
				fmt.Sprintf("%d dropped of %d (%.2f%%)", lost, int64(total), 100*float64(lost)/max(total, 1)), lost == 0)
		}
	}
	r.Details[s1+" defaults"] = details
	return nil
}

// scenario2: a steady 1,000 results/s for a few seconds, read directly,
// from the gRPC-only server, and through the bridge without and with
// batches (one after the other); added latency per quantile. A batch holds
// what is queued when the stream is ready to send and never waits for
// more, so at this rate batches hold one result and must add nothing.
func scenario2(ctx context.Context, o *options, r *report) error {
	rig, err := startRig(ctx, o, "scenario2", bridgeOpts{opsPerConn: 1000, dedup: true})
	if err != nil {
		return err
	}
	defer rig.close()
	up, client, gclient := rig.up, rig.client, rig.ceilingClient
	warm := upstream.Vars{Mode: "rate", Rate: o.latRate, Count: int64(o.latRate / 2)}
	for _, mb := range []uint32{0, batchSize} {
		if _, err := bridgedConsume(ctx, client, warm, mb, nil); err != nil {
			return err
		}
	}
	if _, err := bridgedConsume(ctx, gclient, warm, 0, nil); err != nil {
		return err
	}
	if _, err := rawConsume(ctx, up.URL(), warm, nil); err != nil {
		return err
	}
	v := upstream.Vars{Mode: "rate", Rate: o.latRate, Count: int64(o.latRate * o.latSeconds)}
	var direct, grpcOnly []time.Duration
	if _, err := rawConsume(ctx, up.URL(), v, &direct); err != nil {
		return fmt.Errorf("direct: %w", err)
	}
	if _, err := bridgedConsume(ctx, gclient, v, 0, &grpcOnly); err != nil {
		return fmt.Errorf("gRPC only: %w", err)
	}
	bridged := map[uint32]*[]time.Duration{0: {}, batchSize: {}}
	batches := map[uint32]int64{}
	for _, mb := range []uint32{0, batchSize} {
		res, err := bridgedConsume(ctx, client, v, mb, bridged[mb])
		if err != nil {
			return fmt.Errorf("bridged (max_batch %d): %w", mb, err)
		}
		batches[mb] = res.batches
	}
	slices.Sort(direct)
	slices.Sort(grpcOnly)
	qs := []struct {
		name string
		q    float64
	}{{"p50", 0.50}, {"p99", 0.99}, {"p999", 0.999}}
	details := map[string]any{"rate": o.latRate, "results": v.Count, "direct_n": len(direct)}
	for _, q := range qs {
		r.add(s2, "(a) raw direct", q.name+" send→receive", us(quantile(direct, q.q)), "µs")
	}
	for _, q := range qs {
		r.add(s2, cGRPC, q.name+" send→receive", us(quantile(grpcOnly, q.q)), "µs")
	}
	for _, mb := range []uint32{0, batchSize} {
		lat := *bridged[mb]
		slices.Sort(lat)
		name, added := cBridged, "added by the bridge"
		if mb > 0 {
			name, added = cBridgedBatch, "added, max_batch 256"
		}
		for _, q := range qs {
			r.add(s2, name, q.name+" send→receive", us(quantile(lat, q.q)), "µs")
		}
		r.add(s2, name, "max send→receive", us(lat[len(lat)-1]), "µs")
		if mb > 0 && batches[mb] > 0 {
			r.add(s2, name, "results per batch (mean)", float64(len(lat))/float64(batches[mb]), "events")
		}
		var p99 float64
		for _, q := range qs {
			a := us(quantile(lat, q.q) - quantile(direct, q.q))
			r.add(s2, added, q.name, a, "µs")
			details[fmt.Sprintf("added_%s_us_max_batch_%d", q.name, mb)] = a
			if q.name == "p99" {
				p99 = a
			}
		}
		details[fmt.Sprintf("bridged_n_max_batch_%d", mb)] = len(lat)
		what := "unbatched"
		if mb > 0 {
			what = "max_batch 256"
		}
		r.goal("2: p99 added latency at 1,000/s, "+what, "< 1000 µs", fmt.Sprintf("%.0f µs", p99), p99 < 1000)
	}
	for _, q := range qs {
		r.add(s2, "added by gRPC alone", q.name+" (gRPC only minus direct)", us(quantile(grpcOnly, q.q)-quantile(direct, q.q)), "µs")
	}
	r.Details[s2] = details
	return nil
}

// scenario3: many concurrent subscriptions through one bridge process,
// run as a container would run it: in a memory cgroup with a 2 GiB limit
// and no GOMEMLIMIT in its environment, so the soft memory limit is the one
// the bridge sets itself from the cgroup (server.memory_limit: auto). When
// no cgroup can be made (not root, no writable hierarchy) the output says
// so and the bridge runs with GOMEMLIMIT=o.memLimit instead. With
// -s3-nolimit it also runs without any soft limit (memory_limit: off),
// outside the cgroup, as Go's defaults would. RSS is measured at its peak
// over a whole GC cycle: the GC lets the heap grow to its goal, live heap
// plus (live heap plus goroutine stacks) × GOGC/100, before it collects, so
// a reading taken mid-cycle flatters the bridge.
func scenario3(ctx context.Context, o *options, r *report) error {
	cg, err := newMemCgroup(o.cgroupLimit)
	if err != nil {
		note := fmt.Sprintf("scenario 3: no memory cgroup could be made (%v); the bridge runs with GOMEMLIMIT=%s instead", err, o.memLimit)
		log.Print(note)
		r.Notes = append(r.Notes, note)
		if err := scaleRun(ctx, o, r, scaleOpts{label: "bridge (GOMEMLIMIT=" + o.memLimit + ")", env: []string{"GOMEMLIMIT=" + o.memLimit}}); err != nil {
			return err
		}
	} else {
		log.Printf("  memory cgroup %s", cg)
		err := scaleRun(ctx, o, r, scaleOpts{label: fmt.Sprintf("bridge (cgroup %s)", sizeName(o.cgroupLimit)), cgroup: cg})
		cg.remove()
		if err != nil {
			return err
		}
	}
	if o.s3NoLimit {
		return scaleRun(ctx, o, r, scaleOpts{label: "bridge (no soft limit)", memoryLimit: "off", env: []string{"GOMEMLIMIT=off"}})
	}
	return nil
}

// sizeName writes a byte count as 2GiB, 1800MiB.
func sizeName(n int64) string {
	switch {
	case n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "GiB"
	case n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	}
	return strconv.FormatInt(n, 10) + "B"
}

// Scenario 3's figures in BENCHMARKS.md before this harness ran the bridge
// in a cgroup (the run of 2026-11-23, Go defaults), to compare against.
const (
	refSubscribeRate    = 6288  // subscriptions/s
	refCPUPerSubscribe  = 153.5 // µs
	refScenario3Figures = "2026-11-23"
)

// scaleOpts is one run of scenario 3.
type scaleOpts struct {
	label       string
	env         []string
	memoryLimit string     // server.memory_limit
	cgroup      *memCgroup // run the bridge in it, without GOMEMLIMIT
}

func scaleRun(ctx context.Context, o *options, r *report, so scaleOpts) error {
	up, err := upstream.Start("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer up.Close()
	profile := o.profile != "" && so.memoryLimit == "" // profiles of the first run
	b, err := startBridge(o.bridgeBin, up.URL(), bridgeOpts{opsPerConn: o.opsPerConn, dedup: true, pprof: profile,
		env: so.env, memoryLimit: so.memoryLimit, cgroup: so.cgroup})
	if err != nil {
		return err
	}
	b.name = "scenario3"
	bridge := so.label
	if so.memoryLimit == "off" {
		b.name += "-nolimit"
	}
	defer b.stop()
	if so.cgroup != nil {
		line := b.loggedMemoryLimit()
		log.Printf("  the bridge logged: memory limit %s", line)
		r.Notes = append(r.Notes, fmt.Sprintf("scenario 3, %s in %s: the bridge logged \"memory limit %s\"", bridge, so.cgroup, line))
		if v, ok := logField(line, "limit_bytes"); ok {
			r.add(s3, bridge, "soft memory limit it logged", v/mib, "MiB")
		}
		if v, ok := logField(line, "container_limit_bytes"); ok {
			r.addRatio(s3, bridge, "container limit it detected", v/mib, "MiB", float64(so.cgroup.limit)/mib, "cgroup")
		}
	}
	time.Sleep(300 * time.Millisecond)
	rss0, _ := memory(b.pid())
	cpu0 := cpuTime(b.pid())

	sw, err := newSwarm(ctx, b.grpcAddr, o.grpcConns, o.subs)
	if err != nil {
		return err
	}
	defer sw.close()
	period := int(o.period / time.Millisecond)
	profDone := make(chan error, 1)
	if profile { // where the bridge's CPU goes while subscriptions open
		go func() { profDone <- saveProfile(ctx, b, o.profile, "profile?seconds=20", "cpu-subscribe", "") }()
	} else {
		profDone <- nil
	}
	t0 := time.Now()
	got, openErr := sw.open(o.subs, 5000, 6*time.Minute, func(i int) *bridgev1.SubscribeRequest {
		return request(upstream.Vars{Mode: "periodic", PeriodMS: period, Key: "s3-" + strconv.Itoa(i)})
	})
	openDur := time.Since(t0)
	openCPU := cpuTime(b.pid()) - cpu0
	if openErr != nil {
		log.Printf("scale: %v", openErr)
	}
	log.Printf("  %d subscriptions open in %.1fs", got, openDur.Seconds())
	allEvents := sw.waitFor(3*o.period+30*time.Second, func() bool { return sw.withEvent.Load() >= got })
	log.Printf("  %d subscriptions received a result (all: %t)", sw.withEvent.Load(), allEvents)

	// Steady state.
	c1, e1, t1 := cpuTime(b.pid()), sw.events.Load(), time.Now()
	select {
	case <-time.After(o.window):
	case <-ctx.Done():
		return ctx.Err()
	}
	c2, e2, t2 := cpuTime(b.pid()), sw.events.Load(), time.Now()
	rss, _ := memory(b.pid())
	// Run on until the GC has completed two more cycles: the heap has then
	// grown from one collection to the next at least once, and VmHWM holds
	// the peak of a whole cycle.
	gcs := func() float64 { return b.metrics(ctx, "go_gc_duration_seconds_count")["go_gc_duration_seconds_count"] }
	gc0, cycleStart := gcs(), time.Now()
	fullCycle := false
	for time.Since(cycleStart) < o.gcWait && ctx.Err() == nil {
		if gcs() >= gc0+2 {
			fullCycle = true
			break
		}
		time.Sleep(time.Second)
	}
	_, hwm := memory(b.pid())
	alive := true
	select {
	case <-b.exited:
		alive = false
		msg := fmt.Sprintf("scenario 3, %s: the bridge exited during the run", bridge)
		if so.cgroup != nil {
			msg += fmt.Sprintf(" (OOM kills in its cgroup: %d)", so.cgroup.ooms())
		}
		log.Print(msg)
		r.Notes = append(r.Notes, msg)
	default:
	}
	m := b.metrics(ctx, "go_gc_gomemlimit_bytes", "go_goroutines", "go_memstats_next_gc_bytes", "go_gc_duration_seconds_count", "gqlbridge_subscribers", "gqlbridge_upstream_operations", "gqlbridge_reconnects_total",
		"go_memstats_stack_inuse_bytes", "go_memstats_heap_inuse_bytes", "go_memstats_heap_alloc_bytes", "go_memstats_heap_objects")
	conns := b.labelled(ctx, "gqlbridge_upstream_connections")
	readyConns := conns[`{state="ready",upstream="x"}`]
	selfRSS, _ := memory(os.Getpid())
	ust := up.Stats()
	// Every stream must still be healthy: none ended.
	ended := sw.ended.Load()
	withEvent := sw.withEvent.Load()

	n := float64(got)
	target := float64(o.subs)
	r.addRatio(s3, bridge, "subscriptions open", n, "subs", target, "target")
	r.addRatio(s3, bridge, "subscriptions with ≥1 result", float64(withEvent), "subs", target, "target")
	r.add(s3, bridge, "streams ended early", float64(ended), "subs")
	r.add(s3, bridge, "time to open all", openDur.Seconds(), "s")
	r.addRatio(s3, bridge, "subscribe rate", n/openDur.Seconds(), "subs/s", refSubscribeRate, refScenario3Figures)
	r.addRatio(s3, bridge, "CPU per subscribe", us(openCPU)/max(n, 1), "µs", refCPUPerSubscribe, refScenario3Figures)
	r.add(s3, bridge, "RSS after the window (VmRSS)", float64(rss)/mib, "MiB")
	r.add(s3, bridge, "RSS peak, whole GC cycle (VmHWM)", float64(hwm)/mib, "MiB")
	r.add(s3, bridge, "RSS peak per subscription", float64(hwm-rss0)/max(n, 1)/1024, "KiB")
	if so.cgroup != nil {
		r.add(s3, bridge, "cgroup peak usage (with cache)", float64(so.cgroup.peak())/mib, "MiB")
		r.add(s3, bridge, "OOM kills in the cgroup", float64(so.cgroup.ooms()), "")
	}
	if v, ok := m["go_gc_gomemlimit_bytes"]; ok && v < 1<<62 {
		r.add(s3, bridge, "Go soft memory limit (metric)", v/mib, "MiB")
	}
	r.add(s3, bridge, "GC heap goal (next_gc)", m["go_memstats_next_gc_bytes"]/mib, "MiB")
	r.add(s3, bridge, "wait for a whole GC cycle", time.Since(cycleStart).Seconds(), "s")
	r.add(s3, bridge, "goroutine stacks in use", m["go_memstats_stack_inuse_bytes"]/mib, "MiB")
	r.add(s3, bridge, "heap in use", m["go_memstats_heap_inuse_bytes"]/mib, "MiB")
	r.add(s3, bridge, "heap live objects per subscription", m["go_memstats_heap_objects"]/max(n, 1), "objects")
	r.add(s3, bridge, "goroutines", m["go_goroutines"], "")
	r.add(s3, bridge, "goroutines per subscription", m["go_goroutines"]/max(n, 1), "")
	r.add(s3, bridge, "OS threads", float64(threads(b.pid())), "")
	r.add(s3, bridge, "upstream connections (bridge)", readyConns, "conns")
	r.add(s3, "upstream", "connections (server side)", float64(ust.Conns), "conns")
	r.add(s3, "upstream", "operations subscribed", float64(ust.Subscribes), "ops")
	r.add(s3, bridge, "upstream reconnects", m["gqlbridge_reconnects_total"], "reconnects")
	evRate := float64(e2-e1) / t2.Sub(t1).Seconds()
	r.add(s3, bridge, "results delivered (steady)", evRate, "events/s")
	r.add(s3, bridge, "CPU (steady)", 100*(c2-c1).Seconds()/t2.Sub(t1).Seconds(), "% of 1 core")
	if e2 > e1 {
		r.add(s3, bridge, "CPU per result (steady)", us(c2-c1)/float64(e2-e1), "µs")
	}
	r.add(s3, "bench client", "RSS (gRPC client + upstream)", float64(selfRSS)/mib, "MiB")
	details := map[string]any{"env": so.env, "memory_limit": so.memoryLimit, "cgroup": fmt.Sprint(so.cgroup), "full_gc_cycle": fullCycle, "target": o.subs, "opened": got, "ops_per_conn": o.opsPerConn, "grpc_client_conns": o.grpcConns,
		"period_ms": period, "rss_idle_bytes": rss0, "rss_bytes": rss, "hwm_bytes": hwm, "metrics": m, "connections": conns}
	if openErr != nil {
		details["open_error"] = openErr.Error()
	}
	if err := <-profDone; err != nil {
		return err
	}
	if profile {
		if err := saveProfile(ctx, b, o.profile, "heap", "heap-100k", "inuse_space"); err != nil {
			return err
		}
		if err := saveProfile(ctx, b, o.profile, "goroutine", "goroutine-100k", ""); err != nil {
			return err
		}
	}
	r.Details[s3+" "+bridge] = details
	measured := fmt.Sprintf("%d open, %d with results", got, withEvent)
	if openErr != nil {
		measured += " (" + openErr.Error() + ")"
	}
	r.goal(fmt.Sprintf("3: %d subscriptions, every one receiving, %s", o.subs, bridge), "all", measured,
		got == int64(o.subs) && withEvent == got && ended == 0)
	cycle := "over a whole GC cycle"
	if !fullCycle {
		cycle = fmt.Sprintf("no whole GC cycle within %s", o.gcWait)
	}
	r.goal("3: peak RSS, "+bridge, "< 2048 MiB", fmt.Sprintf("%.0f MiB (%s)", float64(hwm)/mib, cycle), alive && hwm < 2<<30 && got == int64(o.subs) && fullCycle)
	return nil
}

// scenario4: the upstream dies under live subscriptions and comes back on
// the same port.
func scenario4(ctx context.Context, o *options, r *report) error {
	up, err := upstream.Start("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer up.Close()
	b, err := startBridge(o.bridgeBin, up.URL(), bridgeOpts{opsPerConn: o.stormOpsPerConn, dedup: true})
	if err != nil {
		return err
	}
	b.name = "scenario4"
	defer b.stop()
	n := o.stormSubs
	sw, err := newSwarm(ctx, b.grpcAddr, min(o.grpcConns, 20), n)
	if err != nil {
		return err
	}
	defer sw.close()
	got, err := sw.open(n, 5000, 2*time.Minute, func(i int) *bridgev1.SubscribeRequest {
		return request(upstream.Vars{Mode: "periodic", PeriodMS: 1000, Key: "s4-" + strconv.Itoa(i)})
	})
	if err != nil {
		return err
	}
	if !sw.waitFor(30*time.Second, func() bool { return sw.withEvent.Load() >= got }) {
		return fmt.Errorf("only %d of %d subscriptions received a result before the storm", sw.withEvent.Load(), got)
	}
	before := up.Stats()
	up.ResetStats()
	sw.marked.Store(true)
	log.Printf("  killing the upstream under %d subscriptions on %d connections", got, before.Conns)
	up.Kill()
	select {
	case <-time.After(o.stormDown):
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := up.Restart(); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	tUp := time.Now()
	allResub := sw.waitFor(60*time.Second, func() bool { return sw.resubscribed.Load() >= got })
	tAll := time.Since(tUp)
	allFlow := sw.waitFor(30*time.Second, func() bool { return sw.afterResub.Load() >= got })
	time.Sleep(2 * time.Second) // let duplicates show
	after := up.Stats()

	var resubTimes []time.Duration
	var dupN, gapN, seqGaps, lost, multi int64
	for i := range sw.stats[:got] {
		st := &sw.stats[i]
		dupN += st.dupN.Load()
		gapN += st.gapN.Load()
		seqGaps += st.seqGaps.Load()
		if st.resubs.Load() > 1 {
			multi++
		}
		if at := st.resubAt.Load(); at != 0 {
			resubTimes = append(resubTimes, time.Duration(at-tUp.UnixNano()))
		}
		if st.resubs.Load() == 0 || st.afterResub.Load() == 0 || st.ended.Load() {
			lost++
		}
	}
	slices.Sort(resubTimes)
	allIn := time.Duration(0)
	if len(resubTimes) > 0 {
		allIn = resubTimes[len(resubTimes)-1]
	}
	if !allResub {
		allIn = tAll
	}
	r.add(s4, "bridge", "live subscriptions", float64(got), "subs")
	r.add(s4, "bridge", "upstream connections before", float64(before.Conns), "conns")
	r.add(s4, "bridge", "upstream down for", o.stormDown.Seconds(), "s")
	r.add(s4, "client", "streams told STATE_RECONNECTING", float64(sw.reconnecting.Load()), "subs")
	r.add(s4, "client", "STATE_RECONNECTING messages", float64(sw.reconnEvents.Load()), "events")
	r.add(s4, "client", "STATE_RESUBSCRIBED heard", float64(sw.resubscribed.Load()), "subs")
	r.add(s4, "client", "all resubscribed after return", allIn.Seconds(), "s")
	r.add(s4, "client", "p50 resubscribed after return", quantile(resubTimes, 0.5).Seconds(), "s")
	r.add(s4, "client", "p99 resubscribed after return", quantile(resubTimes, 0.99).Seconds(), "s")
	r.add(s4, "upstream", "dials (upgrades) after return", float64(after.Upgrades), "dials")
	r.add(s4, "upstream", "operations resubscribed", float64(after.Subscribes), "ops")
	r.add(s4, "upstream", "keys with duplicate operations", float64(after.DupKeys), "keys")
	r.add(s4, "client", "subscriptions lost", float64(lost), "subs")
	r.add(s4, "client", "duplicate results delivered", float64(dupN), "events")
	r.add(s4, "client", "results missed during outage", float64(gapN), "events")
	r.add(s4, "client", "streams resubscribed twice", float64(multi), "subs")
	r.add(s4, "client", "results dropped by the bridge", float64(seqGaps), "events")
	r.Details[s4] = map[string]any{"subs": got, "ops_per_conn": o.stormOpsPerConn, "down_s": o.stormDown.Seconds(),
		"all_resubscribed": allResub, "all_flowing": allFlow, "failed_streams": sw.failed.Load(), "first_error": fmt.Sprint(sw.err())}
	r.goal("4: all resubscribed within 5 s of return", "< 5 s", fmt.Sprintf("%.2f s (%d of %d)", allIn.Seconds(), sw.resubscribed.Load(), got),
		allResub && allIn < 5*time.Second)
	r.goal("4: no subscription lost or duplicated", "0 / 0", fmt.Sprintf("%d lost, %d duplicate results, %d duplicate ops", lost, dupN, after.DupKeys),
		lost == 0 && dupN == 0 && after.DupKeys == 0)
	r.goal("4: dials bounded by connections", fmt.Sprintf("≤ %d", before.Conns), strconv.FormatInt(after.Upgrades, 10), after.Upgrades <= int64(before.Conns))
	return nil
}

// scenario5: one deduplicated upstream operation fanned out to many
// subscribers at a steady rate.
func scenario5(ctx context.Context, o *options, r *report) error {
	up, err := upstream.Start("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer up.Close()
	b, err := startBridge(o.bridgeBin, up.URL(), bridgeOpts{opsPerConn: 1000, dedup: true, pprof: o.profile != ""})
	if err != nil {
		return err
	}
	b.name = "scenario5"
	defer b.stop()
	n := o.fanSubs
	sw, err := newSwarm(ctx, b.grpcAddr, min(o.grpcConns, 20), n)
	if err != nil {
		return err
	}
	defer sw.close()
	count := int64(o.fanRate * o.fanSeconds)
	v := upstream.Vars{Mode: "rate", Rate: o.fanRate, Count: count, Gate: "fanout"}
	req := request(v)
	got, err := sw.open(n, 5000, 2*time.Minute, func(int) *bridgev1.SubscribeRequest { return req })
	if err != nil {
		return err
	}
	ops := up.Stats().Subscribes
	profDone := make(chan error, 1)
	if o.profile != "" {
		secs := max(1, int(o.fanSeconds))
		go func() {
			profDone <- saveProfile(ctx, b, o.profile, "profile?seconds="+strconv.Itoa(secs), "cpu-fanout", "")
		}()
		time.Sleep(100 * time.Millisecond)
	} else {
		profDone <- nil
	}
	c0, t0 := cpuTime(b.pid()), time.Now()
	up.Release("fanout")
	done := sw.waitFor(time.Duration(o.fanSeconds*3*float64(time.Second))+60*time.Second, func() bool { return sw.ended.Load() >= got })
	dur := time.Since(t0)
	cpu := cpuTime(b.pid()) - c0
	delivered := sw.events.Load()
	if err := <-profDone; err != nil {
		return err
	}
	if o.profile != "" {
		if err := saveProfile(ctx, b, o.profile, "allocs", "allocs-fanout", "alloc_space"); err != nil {
			return err
		}
	}
	var seqGaps, short int64
	for i := range sw.stats[:got] {
		st := &sw.stats[i]
		seqGaps += st.seqGaps.Load()
		if last := st.lastSeq.Load(); int64(last) < count {
			short += count - int64(last)
		}
	}
	expected := int64(got) * count
	rate := float64(delivered) / dur.Seconds()
	perEvent := us(cpu) / max(float64(delivered), 1)
	r.add(s5, "bridge", "subscribers", float64(got), "subs")
	r.add(s5, "upstream", "operations", float64(ops), "ops")
	r.add(s5, "upstream", "results sent", float64(count), "events")
	r.add(s5, "upstream", "rate", o.fanRate, "events/s")
	r.add(s5, "bridge", "results delivered", float64(delivered), "events")
	r.add(s5, "bridge", "delivered per second", rate, "events/s")
	r.add(s5, "bridge", "dropped (sequence gaps)", float64(seqGaps+short), "events")
	r.add(s5, "bridge", "CPU", 100*cpu.Seconds()/dur.Seconds(), "% of 1 core")
	rss, hwm := memory(b.pid())
	r.add(s5, "bridge", "RSS after the run", float64(rss)/mib, "MiB")
	r.add(s5, "bridge", "RSS peak (VmHWM)", float64(hwm)/mib, "MiB")
	r.add(s5, "bridge", "RSS peak per subscriber", float64(hwm)/float64(max(got, 1))/1024, "KiB")
	ref, ok := r.find(s1, "(d) bridged (gRPC)", "bridge CPU per result")
	if ok {
		r.addRatio(s5, "bridge", "CPU per delivered result", perEvent, "µs", ref, "scenario 1")
	} else {
		r.add(s5, "bridge", "CPU per delivered result", perEvent, "µs")
	}
	r.Details[s5] = map[string]any{"subs": got, "count": count, "rate": o.fanRate, "delivered": delivered, "expected": expected,
		"seconds": dur.Seconds(), "cpu_s": cpu.Seconds(), "all_ended": done, "failed_streams": sw.failed.Load(), "first_error": fmt.Sprint(sw.err())}
	r.goal("5: fan-out reported against scenario 1", "1 op, all delivered",
		fmt.Sprintf("%d op(s), %d of %d delivered, %.2f µs CPU/result", ops, delivered, expected, perEvent),
		ops == 1 && delivered == expected && sw.failed.Load() == 0)
	return nil
}
