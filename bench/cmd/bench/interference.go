package main

import (
	"log"
	"os"
	"strconv"
	"strings"
	"time"
)

// The machine is shared: other work skews every figure. These measure how
// much CPU went to processes other than the benchmark and its children.

// machineBusy returns the busy CPU time of the whole machine.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, s := range f[1:] {
		v, _ := strconv.ParseInt(s, 10, 64)
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest time is counted in user already
			break
		}
		busy += v
	}
	return time.Duration(busy) * time.Second / clockTick
}

// ownCPU returns the CPU time of this process and its waited-for children.
func ownCPU() time.Duration {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return 0
	}
	var t int64
	for _, k := range []int{11, 12, 13, 14} { // utime stime cutime cstime
		v, _ := strconv.ParseInt(f[k], 10, 64)
		t += v
	}
	return time.Duration(t) * time.Second / clockTick
}

// otherLoad samples for d and returns the share of the machine (0-1) used
// by other processes meanwhile.
func otherLoad(d time.Duration) float64 {
	m0, o0, t0 := machineBusy(), ownCPU(), time.Now()
	time.Sleep(d)
	m1, o1 := machineBusy(), ownCPU()
	wall := time.Since(t0) * time.Duration(ncpu())
	return max(0, float64((m1-m0)-(o1-o0))) / float64(wall)
}

func ncpu() int {
	n := 0
	b, _ := os.ReadFile("/proc/stat")
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "cpu") && len(line) > 3 && line[3] >= '0' && line[3] <= '9' {
			n++
		}
	}
	return max(n, 1)
}

// waitQuiet waits up to max for a second in which other processes used
// less than a quarter of the machine.
func waitQuiet(limit time.Duration) float64 {
	deadline := time.Now().Add(limit)
	for {
		l := otherLoad(time.Second)
		if l < 0.25 || time.Now().After(deadline) {
			if l >= 0.25 {
				log.Printf("machine still busy with other work (%.0f%% of it); going ahead", 100*l)
			}
			return l
		}
		log.Printf("waiting for a quieter machine: other processes use %.0f%% of it", 100*l)
	}
}
