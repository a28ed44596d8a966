package loadgen

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Load is an offered load, slot by slot: Count(i) is the number of requests
// slot i carries (the mean number, for a Poisson process), and ok is false
// once the load has ended. A slot is one second unless Arrivals scales time.
// Implementations must be pure functions of i.
type Load interface {
	Count(i int) (n float64, ok bool)
}

// Constant is an unbounded load of the same number of requests per slot;
// bound it with Runner's Duration or Total.
type Constant float64

// Count implements Load.
func (c Constant) Count(int) (float64, bool) { return float64(c), true }

// Counts is a finite load: Counts[i] requests in slot i.
type Counts []float64

// Count implements Load.
func (c Counts) Count(i int) (float64, bool) {
	if i < 0 || i >= len(c) {
		return 0, false
	}
	return c[i], true
}

// Total returns the number of requests in the load.
func (c Counts) Total() float64 {
	var s float64
	for _, v := range c {
		s += v
	}
	return s
}

// TraceWindow turns per-second trace counts into a load the way IPA's
// loader did (twitter/loader.py, IPA.md §5.1): each count is divided by the
// damping factor and truncated, int(x/d). d = 8 is what the paper's
// experiments used.
func TraceWindow(trace []int, damping float64) (Counts, error) {
	if !(damping > 0) || math.IsInf(damping, 0) {
		return nil, fmt.Errorf("damping factor %v must be a positive number (the paper used 8)", damping)
	}
	out := make(Counts, len(trace))
	for i, v := range trace {
		out[i] = math.Floor(float64(v) / damping)
	}
	return out, nil
}

// ParseSteps parses a step pattern, comma-separated DURATION@RATE steps
// such as "10s@5,20s@40,10s@5": 5 requests/s for 10 s, then 40/s for 20 s,
// then 5/s for 10 s. Durations must be whole seconds, rates non-negative.
func ParseSteps(s string) (Counts, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("empty step pattern; write DURATION@RATE steps, e.g. 10s@5,20s@40,10s@5")
	}
	var out Counts
	for i, step := range strings.Split(s, ",") {
		step = strings.TrimSpace(step)
		ds, rs, ok := strings.Cut(step, "@")
		if !ok {
			return nil, fmt.Errorf("step %d %q: write DURATION@RATE, e.g. 10s@5", i+1, step)
		}
		d, err := time.ParseDuration(strings.TrimSpace(ds))
		if err != nil {
			return nil, fmt.Errorf("step %d %q: bad duration: %v", i+1, step, err)
		}
		if d <= 0 || d%time.Second != 0 {
			return nil, fmt.Errorf("step %d %q: duration must be a positive whole number of seconds", i+1, step)
		}
		r, err := strconv.ParseFloat(strings.TrimSpace(rs), 64)
		if err != nil || r < 0 || math.IsInf(r, 0) || math.IsNaN(r) {
			return nil, fmt.Errorf("step %d %q: rate %q must be a non-negative number of requests per second", i+1, step, rs)
		}
		if len(out)+int(d/time.Second) > 1<<24 {
			return nil, fmt.Errorf("step pattern lasts more than %d seconds", 1<<24)
		}
		for range int(d / time.Second) {
			out = append(out, r)
		}
	}
	return out, nil
}
