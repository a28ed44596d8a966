package optimizer

import (
	"fmt"
	"slices"
)

// BruteForce is the reference solver: it enumerates the raw decision space,
// every (variant, cores, batch) config times every replica count in the
// stage's bounds, and scores each complete plan. It uses none of the
// structure the other solvers exploit (not even that the cheapest replica
// count is optimal); the per-stage throughput constraint is tested as soon as
// a stage is chosen, which only skips plans that would fail it anyway.
type BruteForce struct {
	// MaxPlans bounds the raw space it agrees to enumerate; 0 means 10^7.
	MaxPlans float64
}

var _ Solver = BruteForce{}

// Name implements Solver.
func (BruteForce) Name() string { return "brute-force" }

// Solve implements Solver.
func (b BruteForce) Solve(in *Instance) ([]Pick, error) {
	limit := b.MaxPlans
	if limit == 0 {
		limit = 1e7
	}
	if size := in.rawPlans(); size > limit {
		return nil, fmt.Errorf("%w: %.3g raw plans > %.3g; use --solver exact or highs", ErrTooLarge, size, limit)
	}
	S := len(in.Stages)
	cur := make([]Pick, S)
	var best []Pick
	var bestObj float64
	var walk func(s int, lat float64, cores int)
	walk = func(s int, lat float64, cores int) {
		if s == S {
			if !WithinBudget(lat, in.Budget) || in.Capacity > 0 && cores > in.Capacity {
				return
			}
			obj := in.Objective(cur)
			if best == nil || in.Better(cur, obj, best, bestObj) {
				best, bestObj = slices.Clone(cur), obj
			}
			return
		}
		sp := &in.Stages[s]
		for i := range sp.Configs {
			c := &sp.Configs[i]
			for n := sp.MinReplicas; n <= sp.MaxReplicas; n++ {
				if !Carries(float64(n)*c.Throughput, in.Lambda) {
					continue
				}
				cur[s] = Pick{Config: i, Replicas: n}
				walk(s+1, lat+c.Latency, cores+c.Cores*n)
			}
		}
	}
	walk(0, 0, 0)
	if best == nil {
		return nil, ErrInfeasible
	}
	return best, nil
}

// rawPlans is the size of the raw decision space BruteForce enumerates:
// Π_s configs × replica counts.
func (in *Instance) rawPlans() float64 {
	size := 1.0
	for _, sp := range in.Stages {
		size *= float64(len(sp.Configs) * (sp.MaxReplicas - sp.MinReplicas + 1))
	}
	return size
}
