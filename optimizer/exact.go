package optimizer

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
)

// Exact is the combinatorial solver: a dynamic program over stages that
// keeps, after each stage, only the partial plans no other partial plan
// dominates. It is exact for every accuracy mode:
//
//   - sum and average: the objective is a sum of per-stage terms
//     α·w·a − β·c·n − γ·k (w = 1 or 1/|S|), so a partial plan is dominated
//     by one with no more latency, cores and changes and no less value;
//   - multiply: the objective α·Π a − Σ (β·c·n + γ·k) is increasing in the
//     partial product P (every remaining factor is >= 0 and α >= 0) and
//     decreasing in the partial penalty, so domination needs P no smaller
//     and penalty no larger, besides latency, cores and changes.
//
// Partial plans whose latency plus the least latency of the remaining
// stages exceeds the budget (likewise for cores) are dropped at once. Final
// plans are rescored with Instance.Objective and ranked by Instance.Better.
//
// The Pareto fronts can grow exponentially with the number of stages (in
// multiply mode 100 stages of 2 variants took 10 s, 2,000 stages ran for
// minutes at 2 GB), so the search is metered: every partial plan formed
// costs partialSteps steps (its memory) and every domination test one, and
// past MaxSteps Solve gives up with ErrTooLarge, pointing to HiGHS.
type Exact struct {
	// MaxSteps bounds the search; 0 means DefaultExactSteps.
	MaxSteps float64
}

// DefaultExactSteps is Exact's default search bound: at most about 3·10^6
// partial plans (150 MB) and about a second of domination tests. The
// paper's shapes (10 stages x 10 variants) take under 3·10^6 steps.
const DefaultExactSteps = 1e8

// partialSteps is what forming one partial plan costs in steps.
const partialSteps = 32

// meter counts the exact search's steps against its limit.
type meter struct{ steps, limit float64 }

// spend adds n steps at stage s of S and fails past the limit.
func (m *meter) spend(n float64, s, S int) error {
	if m.steps += n; m.steps > m.limit {
		return fmt.Errorf("%w: the exact search passed %.3g steps at stage %d of %d (partial plans x %d + domination tests); use the HiGHS solver (--solver highs)",
			ErrTooLarge, m.limit, s+1, S, partialSteps)
	}
	return nil
}

var _ Solver = Exact{}

// Name implements Solver.
func (Exact) Name() string { return "exact" }

type partial struct {
	lat    float64
	cores  int
	chg    int
	val    float64 // sum modes: α·Σ w·a − penalty; multiply: Π a
	pen    float64 // multiply only: Σ β·c·n + γ·k
	parent int32   // index in the previous layer
	opt    int32   // option index in this stage
}

// Solve implements Solver. A first pass keeps only the beamWidth most
// promising partial plans per stage to find a good feasible plan quickly;
// its objective then prunes, in the exact pass, every partial plan whose
// optimistic bound falls below it (beyond twice TieTolerance of the largest
// magnitude of any plan, so ties survive for the change count).
func (e Exact) Solve(in *Instance) ([]Pick, error) {
	m := &meter{limit: e.MaxSteps}
	if m.limit == 0 {
		m.limit = DefaultExactSteps
	}
	in = in.Pruned()
	size := 1.0
	for _, sp := range in.Stages {
		size *= float64(len(sp.Options))
	}
	if size <= 1e4 { // small enough for the plain program: skip the beam
		return dp(in, 0, math.Inf(-1), m)
	}
	inc, err := dp(in, beamWidth, math.Inf(-1), m)
	if errors.Is(err, ErrInfeasible) {
		// The beam dropped every feasible completion, or there is none.
		return dp(in, 0, math.Inf(-1), m)
	}
	if err != nil {
		return nil, err
	}
	incObj := in.Objective(inc)
	best, err := dp(in, 0, incObj-2*TieTolerance*max(math.Abs(incObj), in.maxMagnitude()), m)
	if errors.Is(err, ErrInfeasible) {
		return inc, nil
	}
	if err != nil {
		return nil, err
	}
	if in.Better(inc, incObj, best, in.Objective(best)) {
		return inc, nil
	}
	return best, nil
}

const beamWidth = 64

// dp runs the Pareto dynamic program. With beam > 0 it keeps only the beam
// partial plans with the best bounds per stage (a heuristic); with floor
// finite it drops partial plans whose bound is below floor. It returns the
// best complete plan by Instance.Better, ErrInfeasible when there is none,
// or m's error.
func dp(in *Instance, beam int, floor float64, m *meter) ([]Pick, error) {
	S := len(in.Stages)
	mul := in.Mode == Multiply
	w := in.Alpha
	if in.Mode == Average {
		w = in.Alpha / float64(S)
	}
	useCores := in.Capacity > 0
	useChg := in.Problem != nil && in.Problem.Current != nil
	// Least latency and cores of stages s.. (for the budget tests), and
	// optimistic objective parts: the best value (sum modes), or the largest
	// accuracy product and least penalty (multiply) of stages s...
	restLat := make([]float64, S+1)
	restCores := make([]int, S+1)
	restVal := make([]float64, S+1)
	restProd := make([]float64, S+1)
	restPen := make([]float64, S+1)
	restProd[S] = 1
	for s := S - 1; s >= 0; s-- {
		ml, mc, mv, ma, mp := math.Inf(1), math.MaxInt32, math.Inf(-1), 0.0, math.Inf(1)
		for _, o := range in.Stages[s].Options {
			c := &in.Stages[s].Configs[o.Config]
			pen := in.Beta*float64(o.TotalCores) + in.Gamma*float64(c.Batch)
			ml, mc = min(ml, c.Latency), min(mc, o.TotalCores)
			mv, ma, mp = max(mv, w*c.Accuracy-pen), max(ma, c.Accuracy), min(mp, pen)
		}
		restLat[s], restCores[s] = restLat[s+1]+ml, restCores[s+1]+mc
		restVal[s], restProd[s], restPen[s] = restVal[s+1]+mv, restProd[s+1]*ma, restPen[s+1]+mp
	}
	if math.IsInf(restLat[0], 1) {
		return nil, ErrInfeasible
	}
	bound := func(q *partial, s int) float64 { // optimistic objective after stage s−1
		if mul {
			return in.Alpha*q.val*restProd[s] - q.pen - restPen[s]
		}
		return q.val + restVal[s]
	}
	limit := pruneLimit(in.Budget)
	start := partial{parent: -1, opt: -1}
	if mul {
		start.val = 1
	}
	layers := [][]partial{{start}}
	for s := 0; s < S; s++ {
		sp := &in.Stages[s]
		prev := layers[s]
		if err := m.spend(partialSteps*float64(len(prev))*float64(len(sp.Options)), s, S); err != nil {
			return nil, err
		}
		var next []partial
		for pi, ps := range prev {
			for oi, o := range sp.Options {
				c := &sp.Configs[o.Config]
				q := partial{lat: ps.lat + c.Latency, cores: ps.cores + o.TotalCores, chg: ps.chg, parent: int32(pi), opt: int32(oi)}
				if q.lat+restLat[s+1] > limit || useCores && q.cores+restCores[s+1] > in.Capacity {
					continue
				}
				if c.Changed {
					q.chg++
				}
				pen := in.Beta*float64(o.TotalCores) + in.Gamma*float64(c.Batch)
				if mul {
					q.val, q.pen = ps.val*c.Accuracy, ps.pen+pen
				} else {
					q.val = ps.val + w*c.Accuracy - pen
				}
				if bound(&q, s+1) < floor {
					continue
				}
				next = append(next, q)
			}
		}
		next, tests := pareto(next, mul, useCores, useChg)
		if err := m.spend(float64(tests), s, S); err != nil {
			return nil, err
		}
		if beam > 0 && len(next) > beam {
			slices.SortStableFunc(next, func(a, b partial) int { return cmp.Compare(bound(&b, s+1), bound(&a, s+1)) })
			next = next[:beam]
		}
		if len(next) == 0 {
			return nil, ErrInfeasible
		}
		layers = append(layers, next)
	}
	var best, cur []Pick
	var bestObj float64
	for i := range layers[S] {
		cur = append(cur[:0], make([]Pick, S)...)
		j := int32(i)
		for s := S; s > 0; s-- {
			ps := layers[s][j]
			o := in.Stages[s-1].Options[ps.opt]
			cur[s-1] = Pick{Config: o.Config, Replicas: o.Replicas}
			j = ps.parent
		}
		if in.Feasible(cur) != nil {
			continue // within the pruning slack only
		}
		obj := in.Objective(cur)
		if best == nil || in.Better(cur, obj, best, bestObj) {
			best, bestObj = slices.Clone(cur), obj
		}
	}
	if best == nil {
		return nil, ErrInfeasible
	}
	return best, nil
}

// pareto returns the partial plans of ps that no other one dominates. It
// sorts them so that a dominating plan always precedes the plans it
// dominates, then keeps a plan only if no kept plan dominates it. It also
// returns the number of domination tests it made.
func pareto(ps []partial, mul, useCores, useChg bool) ([]partial, int) {
	slices.SortStableFunc(ps, func(a, b partial) int {
		return cmp.Or(cmp.Compare(a.lat, b.lat), cmp.Compare(a.cores, b.cores), cmp.Compare(a.chg, b.chg),
			cmp.Compare(b.val, a.val), cmp.Compare(a.pen, b.pen))
	})
	kept := ps[:0:0]
	tests := 0
	for _, q := range ps {
		dominated := false
		for i := len(kept) - 1; i >= 0; i-- {
			tests++
			k := &kept[i]
			if k.lat <= q.lat && k.val >= q.val && (!mul || k.pen <= q.pen) &&
				(!useCores || k.cores <= q.cores) && (!useChg || k.chg <= q.chg) {
				dominated = true
				break
			}
		}
		if !dominated {
			kept = append(kept, q)
		}
	}
	return kept, tests
}
