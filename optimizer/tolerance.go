package optimizer

import "math"

// Tolerance is the relative slack of every comparison the optimizer makes
// between a latency sum and the latency budget, and between a stage's
// capacity (replicas × per-replica throughput) and the load λ:
//
//	latency met:  Σ_s ℓ_s <= budget·(1 + Tolerance)     (WithinBudget)
//	load carried: n·H     >= λ·(1 − Tolerance)          (Carries)
//
// Without it, decimal inputs fail at their exact boundary: 0.1 s + 0.2 s is
// 0.30000000000000004 in binary floating point, over an SLA of 0.3 s, and
// 3 × 0.3/s is 0.8999999999999999/s, short of λ = 0.9/s, so a fourth replica
// would be bought for nothing. 1e-9 is far above the rounding of such sums
// (at most about 2⁻⁵³ ≈ 1.1e-16 relative per term, 1.1e-12 for 10,000
// stages) and far below anything that matters: on a 1 s SLA it is 1 ns,
// the resolution of time.Duration in which SLAs and plan latencies are
// given, and on a load of 1/s it is one request in 30 years. It is also the
// tolerance optimizer/highs holds HiGHS to on its normalised latency row.
//
// BruteForce, Exact, optimizer/highs, Instance.Feasible and the independent
// Check all compare through WithinBudget and Carries (and minReplicas, which
// is Carries' least n), so they agree on every boundary case.
const Tolerance = 1e-9

// WithinBudget reports whether a latency sum meets the latency budget, both
// in seconds, within Tolerance.
func WithinBudget(latency, budget float64) bool {
	return latency <= budget*(1+Tolerance)
}

// Carries reports whether a capacity of items/s carries the load λ, within
// Tolerance.
func Carries(capacity, lambda float64) bool {
	return capacity >= lambda*(1-Tolerance)
}

// TieTolerance is the relative margin within which two objectives are equal
// (Instance.Better), so that the tie goes to the plan with fewer changes: a
// difference of less than 1e-9 of the magnitude of the objective's terms,
// α·|A| + β·cost + γ·Σ batch. Relative to that magnitude, not to 1, so that
// the ranking does not depend on units (accuracies of 1e-12 rank as 0.9 do)
// and rounding residue of cancelling terms is a tie; 1e-9, not less, because
// that is as far as HiGHS resolves an objective (its gap and feasibility
// tolerances), so all three solvers agree on what is a tie.
const TieTolerance = 1e-9

// minReplicas returns the least n >= 1 with Carries(n·h, λ), in floating
// point exactly as Carries tests it, or math.MaxInt when no int suffices.
func minReplicas(h, lambda float64) int {
	return leastReplicas(h, lambda*(1-Tolerance))
}

// leastReplicas returns the least n >= 1 with n·h >= t exactly, or
// math.MaxInt when no int suffices.
func leastReplicas(h, t float64) int {
	if t <= h {
		return 1
	}
	x := math.Ceil(t / h)
	if x > 1<<40 {
		return math.MaxInt
	}
	n := int(x)
	for n > 1 && float64(n-1)*h >= t {
		n--
	}
	for float64(n)*h < t {
		n++
	}
	return n
}

// pruneLimit is the latency above which a sum of per-stage latencies, added
// in any order, cannot belong to a plan WithinBudget accepts: the budget
// with Tolerance, plus 1e-11 relative for the rounding of sums added in a
// different order (about 10,000 stages' worth). Solvers prune with it and
// leave the final word to WithinBudget.
func pruneLimit(budget float64) float64 { return budget * (1 + Tolerance) * (1 + 1e-11) }
