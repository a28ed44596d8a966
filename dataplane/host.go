package dataplane

import (
	"bufio"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	goruntime "runtime"
	"strconv"
	"strings"
)

// Host is what the limits of a process derive from: the cores it may use
// and the memory available to it now.
type Host struct {
	// CPUs is the number of cores the process may use: runtime.NumCPU, or
	// the CPU quota of its cgroup when that is lower (fractional quotas are
	// kept: 1.5 cores is 1.5).
	CPUs float64
	// Available returns the bytes of memory the process may still take:
	// /proc/meminfo's MemAvailable, or the room under its cgroup's memory
	// limit when that is lower. Nil means no memory ceiling.
	Available func() (int64, error)
	// Source says where CPUs and Available come from, for messages.
	Source string
}

// ReadHost reads this machine's cores and memory from /proc and the
// process's cgroup (v1 or v2, mounted at /sys/fs/cgroup).
func ReadHost() Host { return readHost(os.DirFS("/"), goruntime.NumCPU()) }

// readHost is ReadHost on the filesystem root (paths without the leading
// "/") with numCPU logical CPUs.
func readHost(root fs.FS, numCPU int) Host {
	groups := cgroupDirs(root)
	h := Host{CPUs: float64(numCPU), Source: fmt.Sprintf("%d CPUs", numCPU)}
	if q, ok := cpuQuota(root, groups); ok && q < h.CPUs {
		h.CPUs, h.Source = q, fmt.Sprintf("cgroup CPU quota %g of %d CPUs", q, numCPU)
	}
	h.Available = func() (int64, error) { return availableMemory(root, groups) }
	return h
}

// cgroup is one hierarchy the process belongs to: the directories that may
// hold its controller files, from the process's own cgroup up to the
// hierarchy's root. A limit anywhere on the way applies, so readers take
// the smallest.
type cgroup struct {
	v2   bool
	dirs []string
}

// cgroupDirs returns the cgroup directories of this process, by
// controller ("" for the unified v2 hierarchy, "cpu" and "memory" for v1).
func cgroupDirs(root fs.FS) map[string]cgroup {
	b, err := fs.ReadFile(root, "proc/self/cgroup")
	if err != nil {
		return nil
	}
	out := map[string]cgroup{}
	for ctrl, p := range parseProcCgroup(string(b)) {
		var mounts []string
		if ctrl == "" {
			mounts = []string{"sys/fs/cgroup", "sys/fs/cgroup/unified"}
		} else {
			// v1 mounts a controller under its name or under the
			// comma-joined list it is co-mounted with ("cpu,cpuacct").
			for _, c := range strings.Split(ctrl, ",") {
				mounts = append(mounts, "sys/fs/cgroup/"+c)
			}
			mounts = append(mounts, "sys/fs/cgroup/"+ctrl)
		}
		var dirs []string
		for _, m := range mounts {
			// Inside a cgroup namespace (a container) the path is "/" and
			// the mount is the process's own group.
			for d := path.Join(m, p); ; d = path.Dir(d) {
				dirs = append(dirs, d)
				if d == m || !strings.HasPrefix(d, m+"/") {
					break
				}
			}
		}
		for _, c := range strings.Split(ctrl, ",") {
			out[c] = cgroup{v2: ctrl == "", dirs: dirs}
		}
	}
	return out
}

// parseProcCgroup parses /proc/self/cgroup ("ID:CONTROLLERS:PATH" lines)
// into path by controller list; the v2 line has an empty list.
func parseProcCgroup(s string) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 || !strings.HasPrefix(parts[2], "/") || strings.Contains(parts[2], "..") {
			continue
		}
		ctrl := strings.TrimPrefix(parts[1], "name=")
		out[ctrl] = parts[2]
	}
	return out
}

// cpuQuota returns the smallest CPU quota on the process's cgroups, in
// cores, and whether there is one.
func cpuQuota(root fs.FS, groups map[string]cgroup) (float64, bool) {
	best, found := math.Inf(1), false
	if g, ok := groups[""]; ok {
		for _, d := range g.dirs {
			if b, err := fs.ReadFile(root, d+"/cpu.max"); err == nil {
				if q, ok := parseCPUMax(string(b)); ok && q < best {
					best, found = q, true
				}
			}
		}
	}
	if g, ok := groups["cpu"]; ok {
		for _, d := range g.dirs {
			quota, err1 := readInt(root, d+"/cpu.cfs_quota_us")
			period, err2 := readInt(root, d+"/cpu.cfs_period_us")
			if err1 == nil && err2 == nil && quota > 0 && period > 0 {
				if q := float64(quota) / float64(period); q < best {
					best, found = q, true
				}
			}
		}
	}
	return best, found
}

// parseCPUMax parses cgroup v2's cpu.max, "QUOTA PERIOD" or "max PERIOD",
// into cores; false when unlimited or malformed.
func parseCPUMax(s string) (float64, bool) {
	f := strings.Fields(s)
	if len(f) != 2 || f[0] == "max" {
		return 0, false
	}
	quota, err1 := strconv.ParseInt(f[0], 10, 64)
	period, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil || quota <= 0 || period <= 0 {
		return 0, false
	}
	return float64(quota) / float64(period), true
}

// noLimit is what cgroup v1 reports for "no memory limit" (the largest
// page-aligned int64) and above: anything this large is no limit.
const noLimit = 1 << 62

// availableMemory returns MemAvailable, or the room left under the
// process's cgroup memory limits when smaller. Page cache counts as used
// in a cgroup's usage, so the room is a lower bound.
func availableMemory(root fs.FS, groups map[string]cgroup) (int64, error) {
	b, err := fs.ReadFile(root, "proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("cannot read the available memory: %w", err)
	}
	avail, ok := parseMemAvailable(string(b))
	if !ok {
		return 0, fmt.Errorf("cannot read the available memory: /proc/meminfo has no MemAvailable line")
	}
	room := func(limitFile, usageFile string, dirs []string) {
		for _, d := range dirs {
			limit, err1 := readInt(root, d+"/"+limitFile)
			usage, err2 := readInt(root, d+"/"+usageFile)
			if err1 == nil && err2 == nil && limit > 0 && limit < noLimit {
				avail = min(avail, max(limit-usage, 0))
			}
		}
	}
	if g, ok := groups[""]; ok {
		room("memory.max", "memory.current", g.dirs)
	}
	if g, ok := groups["memory"]; ok && !g.v2 {
		room("memory.limit_in_bytes", "memory.usage_in_bytes", g.dirs)
	}
	return avail, nil
}

// parseMemAvailable returns the MemAvailable line of /proc/meminfo in bytes.
func parseMemAvailable(s string) (int64, bool) {
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, false
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 || kb > noLimit>>10 {
			return 0, false
		}
		return kb << 10, true
	}
	return 0, false
}

// readInt reads a cgroup file holding one integer; "max" reads as noLimit.
func readInt(root fs.FS, name string) (int64, error) {
	b, err := fs.ReadFile(root, name)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return noLimit, nil
	}
	return strconv.ParseInt(s, 10, 64)
}
