package dataplane

import (
	"testing"
	"testing/fstest"
)

func file(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }

const meminfo = "MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\n"

// readHost takes the machine's CPUs and MemAvailable unless a cgroup on
// the way from the process's own to the root is tighter.
func TestHostReadsTheTightestCgroupLimits(t *testing.T) {
	f := func(name string, numCPU int, files fstest.MapFS, wantCPUs float64, wantAvail int64) {
		t.Helper()
		files["proc/meminfo"] = file(meminfo)
		h := readHost(files, numCPU)
		if h.CPUs != wantCPUs {
			t.Errorf("%s: CPUs %g, want %g", name, h.CPUs, wantCPUs)
		}
		if n, err := h.Available(); err != nil || n != wantAvail {
			t.Errorf("%s: Available = %d, %v; want %d", name, n, err, wantAvail)
		}
	}
	f("no limits", 8, fstest.MapFS{
		"proc/self/cgroup":                        file("0::/user.slice\n"),
		"sys/fs/cgroup/user.slice/cpu.max":        file("max 100000\n"),
		"sys/fs/cgroup/user.slice/memory.max":     file("max\n"),
		"sys/fs/cgroup/user.slice/memory.current": file("5000000\n"),
	}, 8, 20000000<<10)
	// A pod's limits are on its parent: the tightest on the way up applies.
	f("v2 pod", 8, fstest.MapFS{
		"proc/self/cgroup":                               file("0::/kubepods/pod1/ctr\n"),
		"sys/fs/cgroup/kubepods/pod1/ctr/cpu.max":        file("max 100000\n"),
		"sys/fs/cgroup/kubepods/pod1/cpu.max":            file("150000 100000\n"),
		"sys/fs/cgroup/kubepods/cpu.max":                 file("400000 100000\n"),
		"sys/fs/cgroup/kubepods/pod1/ctr/memory.max":     file("max\n"),
		"sys/fs/cgroup/kubepods/pod1/ctr/memory.current": file("100\n"),
		"sys/fs/cgroup/kubepods/pod1/memory.max":         file("2147483648\n"),
		"sys/fs/cgroup/kubepods/pod1/memory.current":     file("1073741824\n"),
	}, 1.5, 1<<30)
	// v1, controllers co-mounted; the root's "no limit" is ignored.
	f("v1 job", 4, fstest.MapFS{
		"proc/self/cgroup": file("4:memory:/job\n3:cpu,cpuacct:/job\n0::/\n"),
		"sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_quota_us":  file("200000\n"),
		"sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_period_us": file("100000\n"),
		"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us":      file("-1\n"),
		"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us":     file("100000\n"),
		"sys/fs/cgroup/memory/job/memory.limit_in_bytes":  file("3000000000\n"),
		"sys/fs/cgroup/memory/job/memory.usage_in_bytes":  file("1000000000\n"),
		"sys/fs/cgroup/memory/memory.limit_in_bytes":      file("9223372036854771712\n"),
		"sys/fs/cgroup/memory/memory.usage_in_bytes":      file("5000000000\n"),
	}, 2, 2000000000)
	// A quota above the CPUs does not raise them.
	f("quota above the CPUs", 2, fstest.MapFS{
		"proc/self/cgroup":      file("0::/\n"),
		"sys/fs/cgroup/cpu.max": file("800000 100000\n"),
	}, 2, 20000000<<10)
}

func TestHostWithoutMeminfoCannotSayItsMemory(t *testing.T) {
	h := readHost(fstest.MapFS{}, 2)
	if h.CPUs != 2 {
		t.Errorf("CPUs %g", h.CPUs)
	}
	if _, err := h.Available(); err == nil {
		t.Error("Available without /proc/meminfo: no error")
	}
}

// This machine's own reading is sane.
func TestReadHostOnThisMachine(t *testing.T) {
	h := ReadHost()
	n, err := h.Available()
	if h.CPUs < 0.01 || err != nil || n <= 0 {
		t.Fatalf("ReadHost: %+v, available %d, %v", h, n, err)
	}
	t.Logf("%s, %d MB available", h.Source, n>>20)
}

func TestParseCPUMaxAndMemAvailable(t *testing.T) {
	cpu := func(s string, want float64, ok bool) {
		t.Helper()
		if got, gotOK := parseCPUMax(s); got != want || gotOK != ok {
			t.Errorf("parseCPUMax(%q) = %g, %v; want %g, %v", s, got, gotOK, want, ok)
		}
	}
	cpu("150000 100000\n", 1.5, true)
	cpu("max 100000", 0, false)
	cpu("0 100000", 0, false)
	cpu("100000 0", 0, false)
	cpu("100000", 0, false)
	cpu("x 100000", 0, false)
	mem := func(s string, want int64, ok bool) {
		t.Helper()
		if got, gotOK := parseMemAvailable(s); got != want || gotOK != ok {
			t.Errorf("parseMemAvailable(%q) = %d, %v; want %d, %v", s, got, gotOK, want, ok)
		}
	}
	mem(meminfo, 20000000<<10, true)
	mem("MemTotal: 1 kB\n", 0, false)
	mem("MemAvailable: 12\n", 0, false)
	mem("MemAvailable: -1 kB\n", 0, false)
	mem("MemAvailable: 99999999999999999999 kB\n", 0, false)
}

func FuzzHostFiles(f *testing.F) {
	f.Add("0::/a/b\n", "150000 100000", meminfo, "2147483648")
	f.Add("4:memory:/job\n3:cpu,cpuacct:/job\n", "max 100000", "MemAvailable: 1 kB", "max")
	f.Add("x", "", "", "")
	f.Fuzz(func(t *testing.T, cgroup, cpuMax, mi, memMax string) {
		if len(cgroup)+len(cpuMax)+len(mi)+len(memMax) > 1<<14 {
			return
		}
		root := fstest.MapFS{"proc/self/cgroup": file(cgroup), "proc/meminfo": file(mi)}
		for ctrl, p := range parseProcCgroup(cgroup) {
			if len(p) == 0 || p[0] != '/' {
				t.Fatalf("controller %q: path %q", ctrl, p)
			}
		}
		root["sys/fs/cgroup/a/b/cpu.max"] = file(cpuMax)
		root["sys/fs/cgroup/a/b/memory.max"] = file(memMax)
		root["sys/fs/cgroup/a/b/memory.current"] = file("0")
		h := readHost(root, 4)
		if !(h.CPUs > 0 && h.CPUs <= 4) {
			t.Fatalf("CPUs %g", h.CPUs)
		}
		if n, err := h.Available(); err == nil && n < 0 {
			t.Fatalf("available %d", n)
		}
	})
}
