package main

import (
	"fmt"
	"runtime"
	"time"
)

// cpuFigures is scenario 1's CPU per result, by process, in µs, and the
// most results per second that CPU allows.
//
// The upstream, the consumers and the bridge share the machine's CPUs, so
// a consumer's rate is bounded by the CPU every process on its path spends
// per result: at most NumCPU seconds of CPU per second. The floor is an
// estimate of the least any bridge's path costs here: the upstream's frames
// (as the Node runs measured them), the Go gRPC client's decoding (the
// gRPC-only runs) and the gRPC-only server's sends, with nothing for
// reading the upstream's WebSocket. Each part is measured at the rate of
// its own runs, and a process's CPU per result moves with its rate, so the
// bound is an estimate, not a proof.
type cpuFigures struct {
	Upstream        float64 `json:"upstream_us"`            // this process in the Node runs: the upstream alone
	GoClient        float64 `json:"grpc_client_us"`         // this process in the gRPC-only runs: the Go client alone
	GoClientBatched float64 `json:"grpc_client_batched_us"` // the same, batches of 256
	NodeClient      float64 `json:"node_client_us"`         // the Node process, subscribe to complete
	NodePath        float64 `json:"node_path_us"`           // upstream + Node client
	CoderPath       float64 `json:"coder_path_us"`          // this process in the coder runs: upstream + reader
	Bridged         float64 `json:"bridged_us"`             // this process (upstream + client) + the bridge
	BridgedBatched  float64 `json:"bridged_batched_us"`     // the same, max_batch 256
	// UnbatchedFloor is upstream + Go client + gRPC-only server;
	// UnbatchedCeiling is NumCPU seconds over it, in results/s.
	UnbatchedFloor   float64 `json:"unbatched_floor_us"`
	UnbatchedCeiling float64 `json:"unbatched_ceiling_per_s"`
	BatchedFloor     float64 `json:"batched_floor_us"`
	BatchedCeiling   float64 `json:"batched_ceiling_per_s"`
}

// cpuBudget adds each consumer's CPU per result to r (this process's, and
// the Node process's), then the budget those figures make (cpuFigures).
// benchCPU, peerCPU and got are per consumer; serverCPU(name) is the
// serving process's CPU per result of a gRPC consumer, in µs.
func cpuBudget(r *report, consumers []string, rates map[string][]float64, benchCPU, peerCPU map[string]time.Duration, got map[string]int64, serverCPU func(string) float64) cpuFigures {
	per := func(d time.Duration, name string) float64 {
		if got[name] == 0 {
			return 0
		}
		return us(d) / float64(got[name])
	}
	for _, name := range consumers {
		r.add(s1, name, "bench process CPU per result", per(benchCPU[name], name), "µs")
		if peerCPU[name] > 0 {
			r.add(s1, name, "Node process CPU per result", per(peerCPU[name], name), "µs")
		}
	}
	f := cpuFigures{
		Upstream:        per(benchCPU[cNode], cNode),
		GoClient:        per(benchCPU[cGRPC], cGRPC),
		GoClientBatched: per(benchCPU[cGRPCBatched], cGRPCBatched),
		NodeClient:      per(peerCPU[cNode], cNode),
		CoderPath:       per(benchCPU[cCoder], cCoder),
	}
	if f.NodeClient > 0 {
		f.NodePath = f.Upstream + f.NodeClient
	}
	if b := per(benchCPU[cBridged], cBridged); b > 0 {
		f.Bridged = b + serverCPU(cBridged)
	}
	if b := per(benchCPU[cBridgedBatch], cBridgedBatch); b > 0 {
		f.BridgedBatched = b + serverCPU(cBridgedBatch)
	}
	cpus := float64(runtime.NumCPU())
	// A part not measured (a consumer left out by -consumers, a server
	// whose CPU could not be read) leaves the floor out rather than low.
	if s := serverCPU(cGRPC); f.Upstream > 0 && f.GoClient > 0 && s > 0 {
		f.UnbatchedFloor = f.Upstream + f.GoClient + s
		f.UnbatchedCeiling = cpus * 1e6 / f.UnbatchedFloor
	}
	if s := serverCPU(cGRPCBatched); f.Upstream > 0 && f.GoClientBatched > 0 && s > 0 {
		f.BatchedFloor = f.Upstream + f.GoClientBatched + s
		f.BatchedCeiling = cpus * 1e6 / f.BatchedFloor
	}

	const budget = "CPU per result, by process"
	for _, row := range []struct {
		figure string
		value  float64
	}{
		{"upstream (in the Node runs)", f.Upstream},
		{"Go gRPC client, unbatched", f.GoClient},
		{"Go gRPC client, batches", f.GoClientBatched},
		{"Node path: upstream + client", f.NodePath},
		{"coder path: upstream + reader", f.CoderPath},
		{"bridged: every process", f.Bridged},
		{"bridged batched: every process", f.BridgedBatched},
	} {
		if row.value > 0 {
			r.add(s1, budget, row.figure, row.value, "µs")
		}
	}
	node, coder := median(rates[cNode]), median(rates[cCoder])
	if f.UnbatchedFloor > 0 {
		r.add(s1, budget, "floor, unbatched", f.UnbatchedFloor, "µs")
		r.addRatio(s1, budget, "floor, unbatched: most /s", f.UnbatchedCeiling, "events/s", node, "Node")
	}
	if f.BatchedFloor > 0 {
		r.add(s1, budget, "floor, batched", f.BatchedFloor, "µs")
		r.addRatio(s1, budget, "floor, batched: most /s", f.BatchedCeiling, "events/s", coder, "coder")
	}
	return f
}

// floorNote is what a goal line adds about the ceiling the floor sets:
// nothing when there is none.
func floorNote(ceiling, base float64) string {
	if ceiling == 0 || base == 0 {
		return ""
	}
	return fmt.Sprintf("; the CPU floor allows at most %.2fx", ceiling/base)
}
