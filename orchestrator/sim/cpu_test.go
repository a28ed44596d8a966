package sim

import (
	"testing"
	"time"
)

// TestCPUSharesTheCores checks processor sharing and interference against
// times worked out by hand.
func TestCPUSharesTheCores(t *testing.T) {
	const ms = time.Millisecond
	type start struct {
		at, work time.Duration
		threads  int
		memory   bool
	}
	for _, c := range []struct {
		name         string
		cores        int
		interference float64
		jobs         []start
		want         []time.Duration // what each took
	}{
		{"two on one core take twice as long", 1, 0, []start{{0, 10 * ms, 1, false}, {0, 10 * ms, 1, false}}, []time.Duration{20 * ms, 20 * ms}},
		{"two on two cores take their time", 2, 0, []start{{0, 10 * ms, 1, false}, {0, 10 * ms, 1, false}}, []time.Duration{10 * ms, 10 * ms}},
		// A runs alone for 5 ms, then both at half speed: A's last 5 ms
		// take 10 (done at 15), then B's last 5 alone (done at 20).
		{"staggered on one core", 1, 0, []start{{0, 10 * ms, 1, false}, {5 * ms, 10 * ms, 1, false}}, []time.Duration{15 * ms, 15 * ms}},
		// A two-core batch and a glue on two cores: three threads, each at
		// 2/3, both at 1/1.25 of that beside each other, so the glue takes
		// 10 × 1.5 × 1.25 = 18.75 ms; the batch, 10 ms done by then, ends
		// its 90 alone.
		{"a glue beside a two-core batch", 2, 0.25, []start{{0, 100 * ms, 2, false}, {0, 10 * ms, 1, true}}, []time.Duration{108750 * time.Microsecond, 18750 * time.Microsecond}},
		// On a core each, both slow while both run: the glue takes
		// 10 × 1.25 ms, the engine 10 of its 100 ms × 1.25, the rest alone.
		{"a glue beside an engine", 2, 0.25, []start{{0, 100 * ms, 1, false}, {0, 10 * ms, 1, true}}, []time.Duration{102500 * time.Microsecond, 12500 * time.Microsecond}},
		// Engines beside engines do not interfere.
		{"two engines", 2, 0.25, []start{{0, 100 * ms, 1, false}, {0, 10 * ms, 1, false}}, []time.Duration{100 * ms, 10 * ms}},
		{"a glue alone", 2, 0.25, []start{{0, 10 * ms, 1, true}}, []time.Duration{10 * ms}},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := &loop{}
			cp := &cpu{l: l, cores: float64(c.cores), interference: c.interference}
			took := make([]time.Duration, len(c.jobs))
			for i, j := range c.jobs {
				l.at(j.at, func() {
					cp.run(j.work, j.threads, j.memory, func(d time.Duration) { took[i] = d })
				})
			}
			l.run(func() bool { return false })
			for i, want := range c.want {
				if d := took[i] - want; d < -time.Microsecond || d > time.Microsecond {
					t.Errorf("job %d took %v, want %v", i, took[i], want)
				}
			}
			if len(cp.jobs) != 0 || cp.threads != 0 || cp.memory != 0 {
				t.Errorf("left running: %d jobs, %v threads, %d memory-bound", len(cp.jobs), cp.threads, cp.memory)
			}
		})
	}
}
