package main

import (
	"errors"
	"math"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// TestDecideMemoryLimit covers every way the soft memory limit is decided:
// GOMEMLIMIT in the environment wins over server.memory_limit and the
// container; off leaves the limit alone; a size sets it; auto takes 90 %
// of the container's limit, and nothing when there is none or it cannot
// be read.
func TestDecideMemoryLimit(t *testing.T) {
	t.Parallel()
	const gib = 1 << 30
	limit := func(n uint64, err error) func() (uint64, error) {
		return func() (uint64, error) { return n, err }
	}
	asked := func() (uint64, error) {
		t.Error("the container's limit was read although the decision did not need it")
		return 0, nil
	}
	for _, tc := range []struct {
		name      string
		setting   string
		bytes     int64
		env       string
		container func() (uint64, error)
		want      memoryLimit
	}{
		{"env wins over auto", "auto", 0, "1500MiB", asked, memoryLimit{bytes: 1500 << 20, source: "GOMEMLIMIT"}},
		{"env wins over a size", "1GiB", gib, "1500MiB", asked,
			memoryLimit{bytes: 1500 << 20, source: "GOMEMLIMIT", note: "server.memory_limit 1GiB ignored: GOMEMLIMIT is set"}},
		{"env off wins too", "auto", 0, "off", asked, memoryLimit{bytes: math.MaxInt64, source: "GOMEMLIMIT"}},
		{"off", "off", 0, "", asked, memoryLimit{source: "server.memory_limit", note: "off"}},
		{"size", "1800MiB", 1800 << 20, "", asked, memoryLimit{set: true, bytes: 1800 << 20, source: "server.memory_limit"}},
		{"auto, 2 GiB container: 90 %", "auto", 0, "", limit(2*gib, nil),
			memoryLimit{set: true, bytes: 1932735283, source: "cgroup", container: 2 * gib}},
		{"auto is the default", "", 0, "", limit(gib, nil),
			memoryLimit{set: true, bytes: 966367641, source: "cgroup", container: gib}},
		{"auto, no limit", "auto", 0, "", limit(0, memlimit.ErrNoLimit), memoryLimit{source: "none", note: "the container has no memory limit"}},
		{"auto, no cgroup", "auto", 0, "", limit(0, memlimit.ErrNoCgroup), memoryLimit{source: "none", note: "not in a cgroup with a memory controller"}},
		{"auto, not Linux", "auto", 0, "", limit(0, memlimit.ErrCgroupsNotSupported), memoryLimit{source: "none", note: "not in a cgroup with a memory controller"}},
		{"auto, unreadable", "auto", 0, "", limit(0, errors.New("permission denied")),
			memoryLimit{source: "none", note: "reading the container's memory limit: permission denied", failed: true}},
		{"auto, a limit too large to be one", "auto", 0, "", limit(math.MaxUint64, nil), memoryLimit{source: "none", note: "the container has no memory limit"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			current := int64(math.MaxInt64)
			switch tc.env {
			case "1500MiB":
				current = 1500 << 20
			}
			if got := decideMemoryLimit(tc.setting, tc.bytes, tc.env, current, tc.container); got != tc.want {
				t.Errorf("decideMemoryLimit = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestServeSetsMemoryLimit runs serve with each setting and checks the
// runtime's soft limit while it serves, and the one line it logs. Not
// parallel: the limit belongs to the whole test process.
func TestServeSetsMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	realContainer := containerMemory
	t.Cleanup(func() { containerMemory = realContainer })
	containerMemory = func() (uint64, error) { return 2 << 30, nil } // a 2 GiB container
	const base = "server:\n  grpc_address: ADDR\n  admin_address: \"off\"\n  drain_grace: 100ms\n"
	const up = "upstreams:\n  x:\n    url: ws://127.0.0.1:1/graphql\n"
	for _, tc := range []struct {
		name, setting, env string
		want               int64
		line               string
	}{
		{"auto", "", "", 1932735283, `msg="memory limit" source=cgroup limit=1.8GiB limit_bytes=1932735283 container_limit=2GiB container_limit_bytes=2147483648`},
		{"size", "  memory_limit: 3GiB\n", "", 3 << 30, `msg="memory limit" source=server.memory_limit limit=3GiB limit_bytes=3221225472`},
		{"off", "  memory_limit: off\n", "", prev, `msg="memory limit" source=server.memory_limit limit=off note=off`},
		// The runtime read GOMEMLIMIT at start (before the test set it), so
		// the limit stays what it was: the bridge leaves it alone.
		{"env", "  memory_limit: 3GiB\n", "1GiB", prev, `msg="memory limit" source=GOMEMLIMIT limit=` + formatBytes(prev)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetMemoryLimit(prev)
			t.Setenv("GOMEMLIMIT", tc.env)
			s := startServe(t, base+tc.setting+up)
			if got := debug.SetMemoryLimit(-1); got != tc.want {
				t.Errorf("soft memory limit while serving = %d, want %d", got, tc.want)
			}
			s.stop()
			var lines []string
			for _, l := range strings.Split(s.logs.String(), "\n") {
				if strings.Contains(l, `msg="memory limit"`) {
					lines = append(lines, l)
				}
			}
			if len(lines) != 1 || !strings.Contains(lines[0], tc.line) {
				t.Errorf("memory limit log lines %q, want one containing %q", lines, tc.line)
			}
		})
	}
}
