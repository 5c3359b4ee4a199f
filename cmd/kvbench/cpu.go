package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// The machine is shared, so every run says where the CPU went during its
// measured window: to the members under test, to kvbench's clients, and to
// everything else on the machine (noise). Linux only; elsewhere the fields
// are left out.

// clockTicks is USER_HZ, the unit of /proc CPU times (100 on Linux).
const clockTicks = 100

type cpuSample struct {
	at          time.Time
	total, busy uint64         // machine-wide jiffies
	self        uint64         // kvbench's own CPU ticks
	procs       map[int]uint64 // pid -> CPU ticks
}

func sampleCPU(pids []int) (cpuSample, error) {
	s := cpuSample{at: time.Now(), procs: map[int]uint64{}}
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	if s.total, s.busy, err = parseStatCPU(line); err != nil {
		return s, err
	}
	if s.self, err = procTicks("self"); err != nil {
		return s, err
	}
	for _, pid := range pids {
		if t, err := procTicks(strconv.Itoa(pid)); err == nil {
			s.procs[pid] = t
		}
	}
	return s, nil
}

// parseStatCPU reads the machine's "cpu ..." line of /proc/stat: all
// jiffies, and those spent running something here (not idle, waiting for
// I/O, or stolen by the hypervisor).
func parseStatCPU(line string) (total, busy uint64, err error) {
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("unexpected /proc/stat line %q", line)
	}
	var idle uint64
	for i, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, err
		}
		if i >= 8 { // guest time is already counted in user time
			break
		}
		total += v
		if i == 3 || i == 4 || i == 7 { // idle, iowait, steal (taken by the host)
			idle += v
		}
	}
	return total, total - idle, nil
}

// procTicks is a process's user+system CPU time from /proc/<pid>/stat.
func procTicks(pid string) (uint64, error) {
	data, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	return parseProcStat(string(data))
}

func parseProcStat(stat string) (uint64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected stat %q", stat)
	}
	f := strings.Fields(stat[i+1:])
	// After the command come state (field 3) ... utime (14) and stime (15).
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected stat %q", stat)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected stat %q", stat)
	}
	return u + s, nil
}

// cpuUse is cores used on average between two samples.
type cpuUse struct {
	machine, sut, client float64
}

func cpuBetween(a, b cpuSample) cpuUse {
	secs := b.at.Sub(a.at).Seconds()
	if secs <= 0 || b.total <= a.total {
		return cpuUse{}
	}
	u := cpuUse{
		machine: float64(b.busy-a.busy) / float64(b.total-a.total) * float64(runtime.NumCPU()),
		client:  float64(b.self-a.self) / clockTicks / secs,
	}
	for pid, t := range b.procs {
		if t0, ok := a.procs[pid]; ok && t >= t0 {
			u.sut += float64(t-t0) / clockTicks / secs
		}
	}
	return u
}

// fields renders the use for the summary line: cores used by the members
// kvbench started, by its clients, and by everything else.
func (u cpuUse) fields(haveSUT bool) string {
	sut := "-"
	other := u.machine - u.client
	if haveSUT {
		sut = strconv.FormatFloat(u.sut, 'f', 2, 64)
		other -= u.sut
	}
	return fmt.Sprintf("cpu_sut=%s cpu_client=%.2f cpu_other=%.2f", sut, u.client, max(other, 0))
}
