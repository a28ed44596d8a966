package orchestrator

import (
	"context"
	"slices"
	"sync"

	"github.com/ipa-serving/ipa/optimizer"
)

// fanout turns a FanoutObserver's totals into each step's items per
// request over the last interval.
type fanout struct {
	obs FanoutObserver
	mu  sync.Mutex // guards the fields below: Step may run concurrently
	// The totals at the previous call (none before the first), and the
	// fan-out last measured per step (0: never; the step gets one item
	// per request).
	reached, rows []int64
	per           []float64
}

// apply returns stages with each step's Fanout set to what the last
// interval measured (or the last measured before it, when no request
// reached the step), and those fan-outs for the decision log (nil when
// every step got one item per request, or none was measured). stages is not
// modified. A failing observer leaves the last fan-outs in place: the plan
// is no worse than the previous one.
func (f *fanout) apply(ctx context.Context, stages []optimizer.Step) ([]optimizer.Step, []float64) {
	reached, rows, err := f.obs.Fanout(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil && len(rows) == len(f.per) && len(reached) == len(f.per) {
		if f.rows != nil {
			for i := range f.per {
				n, d := reached[i]-f.reached[i], rows[i]-f.rows[i]
				if n > 0 && d >= 0 {
					f.per[i] = max(float64(d)/float64(n), optimizer.MinFanout)
				}
			}
		}
		f.reached, f.rows = reached, rows
	}
	if !slices.ContainsFunc(f.per, func(x float64) bool { return x != 0 && x != 1 }) {
		return stages, nil
	}
	out := slices.Clone(stages)
	for i := range out {
		out[i].Fanout = f.per[i]
	}
	return out, slices.Clone(f.per)
}
