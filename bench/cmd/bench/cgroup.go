package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// memCgroup is a memory cgroup the harness made for the bridge, so that
// the bridge sees a container-style memory limit (scenario 3). On cgroup
// v1 the limit is memory.limit_in_bytes of a new group in the memory
// hierarchy; on cgroup v2 memory.max of a new group under the root, whose
// cgroup.subtree_control must enable memory. The bridge enters it before
// it starts (see startProc), and remove deletes it once it has exited.
type memCgroup struct {
	dir   string
	v2    bool
	limit int64
}

// newMemCgroup makes /sys/fs/cgroup/memory/gqlbridge-bench-PID (v1) or
// /sys/fs/cgroup/gqlbridge-bench-PID (v2), wherever those hierarchies are
// mounted, with the given limit. The error says why neither worked.
func newMemCgroup(limit int64) (*memCgroup, error) {
	v1, v2 := cgroupMounts()
	name := fmt.Sprintf("gqlbridge-bench-%d", os.Getpid())
	var why []string
	try := func(root string, isV2 bool) (*memCgroup, error) {
		file := "memory.limit_in_bytes"
		if isV2 {
			file = "memory.max"
			ctl, err := os.ReadFile(filepath.Join(root, "cgroup.subtree_control"))
			if err != nil {
				return nil, err
			}
			if !strings.Contains(" "+strings.TrimSpace(string(ctl))+" ", " memory ") {
				return nil, fmt.Errorf("%s/cgroup.subtree_control does not enable the memory controller", root)
			}
		}
		dir := filepath.Join(root, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, file), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
			_ = os.Remove(dir)
			return nil, err
		}
		return &memCgroup{dir: dir, v2: isV2, limit: limit}, nil
	}
	if v1 != "" {
		cg, err := try(v1, false)
		if err == nil {
			return cg, nil
		}
		why = append(why, "cgroup v1: "+err.Error())
	}
	if v2 != "" {
		cg, err := try(v2, true)
		if err == nil {
			return cg, nil
		}
		why = append(why, "cgroup v2: "+err.Error())
	}
	if len(why) == 0 {
		return nil, errors.New("no cgroup v1 memory hierarchy and no cgroup v2 hierarchy is mounted")
	}
	return nil, errors.New(strings.Join(why, "; "))
}

// cgroupMounts finds where the cgroup v1 memory hierarchy and the cgroup
// v2 hierarchy are mounted ("" when they are not).
func cgroupMounts() (v1Memory, v2 string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(b) < 3 || a[3] != "/" { // only mounts of a hierarchy's root
			continue
		}
		switch {
		case b[0] == "cgroup2" && v2 == "":
			v2 = a[4]
		case b[0] == "cgroup" && v1Memory == "" && strings.Contains(","+b[2]+",", ",memory,"):
			v1Memory = a[4]
		}
	}
	return v1Memory, v2
}

func (c *memCgroup) String() string {
	kind := "v1 memory.limit_in_bytes"
	if c.v2 {
		kind = "v2 memory.max"
	}
	return fmt.Sprintf("%s (%s = %d)", c.dir, kind, c.limit)
}

// procs is the file a process joins the group through.
func (c *memCgroup) procs() string { return filepath.Join(c.dir, "cgroup.procs") }

// peak is the group's highest memory use (v1 memory.max_usage_in_bytes,
// v2 memory.peak), page cache included; 0 when unknown.
func (c *memCgroup) peak() int64 {
	file := "memory.max_usage_in_bytes"
	if c.v2 {
		file = "memory.peak"
	}
	b, _ := os.ReadFile(filepath.Join(c.dir, file))
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

// ooms counts the processes the kernel killed in the group for exceeding
// its limit (v1 memory.oom_control oom_kill, v2 memory.events oom_kill).
func (c *memCgroup) ooms() int64 {
	file := "memory.oom_control"
	if c.v2 {
		file = "memory.events"
	}
	b, _ := os.ReadFile(filepath.Join(c.dir, file))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// remove deletes the group; the processes in it must have exited.
func (c *memCgroup) remove() {
	if err := os.Remove(c.dir); err != nil {
		fmt.Fprintf(os.Stderr, "bench: removing cgroup %s: %v\n", c.dir, err)
	}
}
