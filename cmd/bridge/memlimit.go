package main

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"

	"github.com/KimMachineGun/automemlimit/memlimit"

	"github.com/gqlbridge/gqlbridge/config"
)

// containerMemory returns the memory limit of the container the process
// runs in: cgroup v2 memory.max, or cgroup v1 memory.limit_in_bytes and
// hierarchical_memory_limit, found through /proc/self/cgroup and
// /proc/self/mountinfo. memlimit.ErrNoLimit means there is none. A
// variable so tests can stand in for the cgroup.
var containerMemory = memlimit.FromCgroup

// autoMemoryRatio is the share of the container's limit that
// server.memory_limit auto sets as the soft limit: the rest is headroom for
// what the Go runtime does not count (the binary, thread stacks, memory
// the kernel has not taken back yet).
const autoMemoryRatio = 0.9

// memoryLimit is what the bridge decided about the Go runtime's soft memory
// limit, and why.
type memoryLimit struct {
	set       bool   // call debug.SetMemoryLimit(bytes)
	bytes     int64  // the limit set, or GOMEMLIMIT's as the runtime read it
	source    string // GOMEMLIMIT, cgroup, server.memory_limit or none
	container uint64 // the container's limit, for source cgroup
	note      string // why there is none, or what was ignored
	failed    bool   // reading the container's limit failed: worth a warning
}

// decideMemoryLimit decides the soft memory limit from server.memory_limit
// (setting: auto, off or a size of bytes), the GOMEMLIMIT environment
// variable (env, as the runtime read it: current is the runtime's limit
// now) and the container's limit (container).
func decideMemoryLimit(setting string, bytes int64, env string, current int64, container func() (uint64, error)) memoryLimit {
	if env != "" {
		d := memoryLimit{bytes: current, source: "GOMEMLIMIT"}
		if setting != "auto" && setting != "" {
			d.note = "server.memory_limit " + setting + " ignored: GOMEMLIMIT is set"
		}
		return d
	}
	switch setting {
	case "off":
		return memoryLimit{source: "server.memory_limit", note: "off"}
	case "auto", "":
	default:
		return memoryLimit{set: true, bytes: bytes, source: "server.memory_limit"}
	}
	limit, err := container()
	switch {
	case errors.Is(err, memlimit.ErrNoLimit):
		return memoryLimit{source: "none", note: "the container has no memory limit"}
	case errors.Is(err, memlimit.ErrNoCgroup), errors.Is(err, memlimit.ErrCgroupsNotSupported):
		return memoryLimit{source: "none", note: "not in a cgroup with a memory controller"}
	case err != nil:
		return memoryLimit{source: "none", note: "reading the container's memory limit: " + err.Error(), failed: true}
	}
	soft := float64(limit) * autoMemoryRatio
	if soft >= math.MaxInt64 {
		return memoryLimit{source: "none", note: "the container has no memory limit"}
	}
	return memoryLimit{set: true, bytes: int64(soft), source: "cgroup", container: limit}
}

// applyMemoryLimit sets the Go runtime's soft memory limit as
// server.memory_limit and the environment say, and logs one line saying
// where it came from and what it is.
func applyMemoryLimit(log *slog.Logger, s *config.Server, getenv func(string) string) {
	d := decideMemoryLimit(s.MemoryLimit, s.MemoryLimitBytes, getenv("GOMEMLIMIT"), debug.SetMemoryLimit(-1), containerMemory)
	if d.set {
		debug.SetMemoryLimit(d.bytes)
	}
	attrs := []any{"source", d.source}
	switch {
	case d.set || d.source == "GOMEMLIMIT":
		attrs = append(attrs, "limit", formatBytes(d.bytes), "limit_bytes", d.bytes)
	default:
		attrs = append(attrs, "limit", "off")
	}
	if d.container != 0 {
		attrs = append(attrs, "container_limit", formatBytes(int64(d.container)), "container_limit_bytes", d.container)
	}
	if d.note != "" {
		attrs = append(attrs, "note", d.note)
	}
	if d.failed {
		log.Warn("memory limit", attrs...)
		return
	}
	log.Info("memory limit", attrs...)
}

// formatBytes writes n for people, in the largest binary unit, with one
// decimal unless it is whole: 1.8GiB, 2GiB, 512MiB (limit_bytes beside it
// is exact).
func formatBytes(n int64) string {
	if n == math.MaxInt64 {
		return "off"
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	v, u := float64(n), 0
	for v >= 1024 && u < len(units)-1 {
		v, u = v/1024, u+1
	}
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f%s", v, units[u])
	}
	return fmt.Sprintf("%.1f%s", v, units[u])
}
