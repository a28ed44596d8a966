package orchestrator

import (
	"context"
	"slices"

	"github.com/ipa-serving/ipa/optimizer"
)

// fanout turns a FanoutObserver's totals into each step's items per
// request over the last interval.
type fanout struct {
	obs FanoutObserver
	// The totals at the previous call (none before the first), and the
	// fan-out last measured per step (0: never; the step gets one item
	// per request).
	requests int64
	rows     []int64
	per      []float64
}

// apply returns stages with each step's Fanout set to what the last
// interval measured (or the last measured before it, when no request came),
// and those fan-outs for the decision log (nil when every step got one item
// per request, or none was measured). stages is not modified. A failing
// observer leaves the last fan-outs in place: the plan is no worse than
// the previous one.
func (f *fanout) apply(ctx context.Context, stages []optimizer.Step) ([]optimizer.Step, []float64) {
	requests, rows, err := f.obs.Fanout(ctx)
	if err == nil && len(rows) == len(f.per) {
		if f.rows != nil && requests > f.requests {
			n := float64(requests - f.requests)
			for i := range f.per {
				if d := rows[i] - f.rows[i]; d >= 0 {
					f.per[i] = max(float64(d)/n, optimizer.MinFanout)
				}
			}
		}
		f.requests, f.rows = requests, rows
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
