// Package highs is the optimizer.Solver backed by the HiGHS MILP solver
// (github.com/lanl/highs, cgo, HiGHS linked statically through
// `pkg-config highs`). Only main imports it; tests need HiGHS and fail
// without it.
//
// # Formulation
//
// The original's model is a non-convex MIQP (IPA.md §2.5: i[s,v]·b[s,k] in
// the latency, n[s]·i[s,v] in the cost, a product of linear expressions for
// `multiply`, NonConvex=2). This one is linear (IPA.md §10 item 15):
//
//   - one binary x[s,o] per option o = (variant, cores, batch) of stage s,
//     at its precomputed cheapest feasible replica count n*[s,o] (see package
//     optimizer), so neither the throughput indicator n·H >= λ nor the cost
//     c·n involves a product of variables;
//   - Σ_o x[s,o] = 1 per stage (IPA.md §2.5 "one_model" + "single-batch");
//   - Σ_{s,o} ℓ[s,o]·x[s,o] <= SLA, ℓ = p99 latency + (k−1)/λ (IPA.md §2.5
//     "latency", with the queue term as intended, §10 item 5);
//   - Σ_{s,o} c·n*·x[s,o] <= core capacity (new);
//   - maximise α·A − Σ_{s,o} (β·c·n* + γ·k)·x[s,o] (IPA.md §2.5 objective).
//
// For sum and average, A = Σ_{s,o} w·a[s,o]·x[s,o] is linear.
//
// For multiply, A = Π_s a[s] is made exact, not approximated. Taking logs
// (Σ log a) linearises the product only when accuracy is the whole objective:
// with a cost term the objective α·exp(Σ log a) − cost stays non-linear, and
// a piecewise-linear exp would be an approximation; log also fails on the
// zero score rank normalisation gives the least accurate variant. Instead a
// chain of partial products p_s is built with the variant indicators
// u[s,v] = Σ_{o of v} x[s,o] and a disaggregated copy w[s,v] of p_{s−1}:
//
//	p_0 = Σ_v a[0,v]·u[0,v]
//	Σ_v w[s,v] = p_{s−1},  L_{s−1}·u[s,v] <= w[s,v] <= U_{s−1}·u[s,v],  p_s = Σ_v a[s,v]·w[s,v]
//
// with L_s = Π_{t<=s} min_v a[t,v] and U_s = Π_{t<=s} max_v a[t,v] bounding
// p_s, and A = p_{S−1}. Since
// exactly one u[s,v] is 1, the bounds force w[s,v] = p_{s−1} for the chosen
// variant and 0 for the others, so p_s = a[s,v]·p_{s−1} exactly: the product
// of a bounded continuous variable and a binary is linear. This is the convex
// hull of each stage's disjunction, so its LP relaxation is much tighter than
// McCormick's four inequalities per (stage, variant), which made 7 x 7
// synthetic pipelines take minutes. It needs a >= 0, which
// optimizer.Problem.Validate enforces for multiply. Size: Σ_{s>0} |V_s| + |S|
// extra columns, Σ_{s>0} (|V_s| + 1) + |S| extra rows.
//
// # Exactness and ties
//
// The latency row is divided by the budget, so that HiGHS's feasibility
// tolerance (1e-9) is relative as optimizer.Tolerance is, and its right side
// is 1 + Tolerance (plus 1e-11 for rounding), so every plan the other
// solvers accept is feasible here too. The objective is divided by its
// largest coefficient, and in multiply mode each stage's accuracies by the
// stage's best, so that accuracies of 1e-12 are as representable as 0.9
// (HiGHS drops matrix entries up to 1e-9 and lanl/highs then refuses the
// model). Gaps are set to (nearly) zero and presolve off (see run). The
// chosen picks are decoded (largest x per stage), rescored by
// optimizer.Instance.Objective and rechecked by Instance.Feasible, which
// uses optimizer.WithinBudget; should HiGHS's tolerance admit a plan over
// the budget beyond Tolerance, a no-good cut removes exactly that plan and
// the model is solved again. When a current configuration is given, a second
// solve minimises the number of changed stages with the objective held at
// the optimum, and optimizer.Instance.Better decides between the two
// answers, so ties go toward fewer changes as in the other solvers.
package highs

import (
	"errors"
	"fmt"
	"math"
	"slices"

	lanl "github.com/lanl/highs"

	"github.com/ipa-serving/ipa/optimizer"
)

// Solver solves an optimizer.Instance as a MILP with HiGHS. The zero value
// is ready to use. It is safe for concurrent use: every Solve builds its own
// HiGHS model.
type Solver struct{}

var _ optimizer.Solver = Solver{}

// Name implements optimizer.Solver.
func (Solver) Name() string { return "highs" }

// model is the MILP of one instance with the column bookkeeping to decode it.
type model struct {
	m lanl.Model
	// col[s][i] is the column of Stages[s].Options[i].
	col [][]int
	// obj holds the objective's coefficients (by column) for the second,
	// tie-breaking solve; changed the change indicator of option columns.
	obj     []float64
	changed []float64
}

func (b *model) addCol(cost, lo, hi float64, t lanl.VariableType) int {
	b.m.ColCosts = append(b.m.ColCosts, cost)
	b.m.ColLower = append(b.m.ColLower, lo)
	b.m.ColUpper = append(b.m.ColUpper, hi)
	b.m.VarTypes = append(b.m.VarTypes, t)
	return len(b.m.ColCosts) - 1
}

// addRow adds lo <= Σ coef[i]·x[cols[i]] <= hi. A row without a nonzero is
// left out (lanl/highs sizes its row-wise matrix from the nonzeros, so an
// empty last row makes HiGHS reject the model); callers only build empty
// rows that hold trivially, such as the tie-break row when α = β = γ = 0.
func (b *model) addRow(lo float64, cols []int, coef []float64, hi float64) int {
	if !slices.ContainsFunc(coef, func(c float64) bool { return c != 0 }) {
		return -1
	}
	r := len(b.m.RowLower)
	b.m.RowLower = append(b.m.RowLower, lo)
	b.m.RowUpper = append(b.m.RowUpper, hi)
	for i, c := range cols {
		if coef[i] != 0 {
			b.m.ConstMatrix = append(b.m.ConstMatrix, lanl.Nonzero{Row: r, Col: c, Val: coef[i]})
		}
	}
	return r
}

func build(in *optimizer.Instance) *model {
	b := &model{}
	b.m.Maximize = true
	inf := math.Inf(1)
	S := len(in.Stages)
	w := in.Alpha
	if in.Mode == optimizer.Average {
		w = in.Alpha / float64(S)
	}
	mul := in.Mode == optimizer.Multiply
	var lat, cores []float64
	var all []int
	for s := range in.Stages {
		sp := &in.Stages[s]
		cols := make([]int, len(sp.Options))
		ones := make([]float64, len(sp.Options))
		for i, o := range sp.Options {
			c := &sp.Configs[o.Config]
			cost := -in.Beta*float64(o.TotalCores) - in.Gamma*float64(c.Batch)
			if !mul {
				cost += w * c.Accuracy
			}
			cols[i] = b.addCol(cost, 0, 1, lanl.IntegerType)
			ones[i] = 1
			lat = append(lat, c.Latency/in.Budget)
			cores = append(cores, float64(o.TotalCores))
			all = append(all, cols[i])
			if c.Changed {
				b.changed = append(b.changed, 1)
			} else {
				b.changed = append(b.changed, 0)
			}
		}
		b.col = append(b.col, cols)
		b.addRow(1, cols, ones, 1) // one option per stage
	}
	// The latency row is divided by the budget, so that HiGHS's absolute
	// feasibility tolerance is relative to it as optimizer.Tolerance is; its
	// right side is 1 + Tolerance and a rounding margin, so that every plan
	// optimizer.WithinBudget accepts is feasible here. Plans HiGHS accepts
	// beyond that are cut off one by one in Solve.
	b.addRow(-inf, all, lat, (1+optimizer.Tolerance)*(1+1e-11))
	if in.Capacity > 0 {
		b.addRow(-inf, all, cores, float64(in.Capacity))
	}
	if mul {
		b.product(in)
	}
	b.scaleObjective()
	b.obj = append([]float64(nil), b.m.ColCosts...)
	return b
}

// scaleObjective divides the objective by its largest coefficient, so that
// HiGHS's gap tolerances are relative to the objective's scale whatever the
// units of accuracy and cost (accuracies of 1e-12 are then as well resolved
// as 0.9), and zeroes the coefficients below 1e-12 of it: rounding residue
// such as w·a − β·c·n = −5.6e-17, below the 1e-12 of the objective's
// magnitude within which Instance.Better calls objectives equal anyway.
func (b *model) scaleObjective() {
	scale := 0.0
	for _, c := range b.m.ColCosts {
		scale = max(scale, math.Abs(c))
	}
	if scale == 0 {
		return
	}
	for i, c := range b.m.ColCosts {
		if c /= scale; math.Abs(c) < 1e-12 {
			c = 0
		}
		b.m.ColCosts[i] = c
	}
}

// small is HiGHS's small_matrix_value: HiGHS drops matrix entries no larger
// with a warning, on which lanl/highs refuses the model (it cannot be set
// before the model is passed).
const small = 1e-9

// product adds the disaggregated chain of partial accuracy products
// described in the package documentation, with α on the last one.
//
// Each stage's accuracies are divided by the stage's largest, and α by the
// product of those, so that the chain's coefficients lie in [0, 1] however
// small the accuracies are (HiGHS drops entries up to 1e-9); a variant at
// most 1e-9 as accurate as its stage's best counts as 0 here, which moves
// the objective by at most 1e-9 of its accuracy term. When some stage's
// accuracies are all 0, the product is identically 0 and left out.
func (b *model) product(in *optimizer.Instance) {
	S := len(in.Stages)
	scale, total := make([]float64, S), 1.0
	for s, sp := range in.Stages {
		for _, o := range sp.Options {
			scale[s] = max(scale[s], sp.Configs[o.Config].Accuracy)
		}
		total *= scale[s]
	}
	if total == 0 || in.Alpha == 0 {
		return
	}
	prev, U, L := -1, 1.0, 1.0 // column of p_{s−1} and its bounds
	for s := range in.Stages {
		sp := &in.Stages[s]
		// Group the stage's option columns by variant.
		byV := map[int][]int{}
		acc := map[int]float64{}
		var order []int
		maxA, minA := 0.0, math.Inf(1)
		for i, o := range sp.Options {
			c := &sp.Configs[o.Config]
			if _, ok := byV[c.VariantIndex]; !ok {
				order = append(order, c.VariantIndex)
			}
			byV[c.VariantIndex] = append(byV[c.VariantIndex], b.col[s][i])
			acc[c.VariantIndex] = c.Accuracy / scale[s]
			if acc[c.VariantIndex] <= small {
				acc[c.VariantIndex] = 0 // less than 1e-9 of the stage's best: see product
			}
			maxA, minA = max(maxA, acc[c.VariantIndex]), min(minA, acc[c.VariantIndex])
		}
		cost := 0.0
		if s == S-1 {
			cost = in.Alpha * total
		}
		p := b.addCol(cost, L*minA, U*maxA, lanl.ContinuousType)
		def, defCoef := []int{p}, []float64{1} // p_s − Σ_v a_v·w_v = 0
		split, splitCoef := []int{prev}, []float64{-1}
		for _, v := range order {
			a := acc[v]
			if s == 0 {
				// p_0 = Σ_v a_v·u_v: w_v is u_v itself (p_{−1} = 1).
				for _, c := range byV[v] {
					def, defCoef = append(def, c), append(defCoef, -a)
				}
				continue
			}
			w := b.addCol(0, 0, U, lanl.ContinuousType)
			def, defCoef = append(def, w), append(defCoef, -a)
			split, splitCoef = append(split, w), append(splitCoef, 1)
			// w_v − U·u_v <= 0 and w_v − L·u_v >= 0
			cols, coef := []int{w}, []float64{1}
			for _, c := range byV[v] {
				cols, coef = append(cols, c), append(coef, -U)
			}
			b.addRow(math.Inf(-1), cols, coef, 0)
			if L > small { // only tightens the relaxation
				lc := []float64{1}
				for range byV[v] {
					lc = append(lc, -L)
				}
				b.addRow(0, cols, lc, math.Inf(1))
			}
		}
		if s > 0 {
			b.addRow(0, split, splitCoef, 0) // Σ_v w_v = p_{s−1}
		}
		b.addRow(0, def, defCoef, 0)
		prev, U, L = p, U*maxA, L*minA
	}
}

// answer is one solve's decoded picks, the option columns they set,
// HiGHS's objective value for them, and the magnitude of that objective's
// terms, Σ_j |cost_j·x_j|.
type answer struct {
	picks    []optimizer.Pick
	cols     []int
	obj, mag float64
}

// run solves the model and decodes one pick per stage, or reports infeasibility.
func (b *model) run(in *optimizer.Instance) (answer, error) {
	raw, err := b.m.ToRawModel()
	if err != nil {
		return answer{}, fmt.Errorf("cannot build the HiGHS model: %w", err)
	}
	for _, o := range hiGHSOptions {
		if err := raw.SetFloat64Option(o.name, o.v); err != nil {
			return answer{}, fmt.Errorf("cannot set HiGHS option %s: %w", o.name, err)
		}
	}
	if err := raw.SetBoolOption("output_flag", false); err != nil {
		return answer{}, err
	}
	// HiGHS 1.10's MIP presolve answered a plan 0.4 worse than the optimum
	// as "Optimal" on a 3-stage multiply instance (BoundaryProblem seed
	// (9, 2026) #2367, TestHiGHSRegressions); presolve=off solves it, at
	// about the same speed on these small models. HiGHS has a history of
	// such presolve defects (ERGO-Code/HiGHS#1725, #2173, #3073).
	if err := raw.SetStringOption("presolve", "off"); err != nil {
		return answer{}, err
	}

	sol, err := raw.Solve()
	if err != nil {
		return answer{}, fmt.Errorf("HiGHS: %w", err)
	}
	switch sol.Status {
	case lanl.Optimal:
	case lanl.Infeasible:
		return answer{}, optimizer.ErrInfeasible
	default:
		return answer{}, fmt.Errorf("HiGHS ended with status %s", sol.Status)
	}
	a := answer{picks: make([]optimizer.Pick, len(in.Stages)), obj: sol.Objective}
	for j, c := range b.m.ColCosts {
		a.mag += math.Abs(c * sol.ColumnPrimal[j])
	}
	for s, cols := range b.col {
		best := -1
		for i, c := range cols {
			if best < 0 || sol.ColumnPrimal[c] > sol.ColumnPrimal[cols[best]] {
				best = i
			}
		}
		o := in.Stages[s].Options[best]
		a.picks[s] = optimizer.Pick{Config: o.Config, Replicas: o.Replicas}
		a.cols = append(a.cols, cols[best])
	}
	return a, nil
}

// maxCuts bounds the plans Solve cuts off for being over the latency budget
// within HiGHS's feasibility tolerance but not within optimizer.Tolerance.
// Such plans sit within 1e-9 of the budget; there are rarely more than a few.
const maxCuts = 100

// verified runs the model until HiGHS's answer meets every constraint as
// optimizer.Instance.Feasible (and so Check) judges it. HiGHS accepts a row
// within its absolute feasibility tolerance, so it may answer a plan whose
// latency is over the budget by more than optimizer.Tolerance; such a plan
// is cut off exactly, by the row Σ_s x[s, o_s] <= |S| − 1 that excludes that
// one combination and no other, and the model solved again. Tightening the
// budget instead would also cut off feasible plans just under it, and a
// tightening smaller than HiGHS's tolerance changes nothing.
func (b *model) verified(in *optimizer.Instance) (answer, error) {
	for cuts := 0; ; cuts++ {
		a, err := b.run(in)
		if err != nil {
			return answer{}, err
		}
		ferr := in.Feasible(a.picks)
		if ferr == nil {
			return a, nil
		}
		if cuts == maxCuts {
			return answer{}, fmt.Errorf("HiGHS answered %d plans that fail the constraints within its tolerance (last: %v); use --solver exact", cuts+1, ferr)
		}
		ones := make([]float64, len(a.cols))
		for i := range ones {
			ones[i] = 1
		}
		b.addRow(math.Inf(-1), a.cols, ones, float64(len(a.cols)-1))
	}
}

// Solve implements optimizer.Solver.
func (Solver) Solve(in *optimizer.Instance) ([]optimizer.Pick, error) {
	in = in.Pruned()
	for _, sp := range in.Stages {
		if len(sp.Options) == 0 {
			// Also keeps lanl/highs from indexing an empty solution vector.
			return nil, optimizer.ErrInfeasible
		}
	}
	b := build(in)
	first, err := b.verified(in)
	if err != nil {
		return nil, err
	}
	picks := first.picks
	if in.Problem == nil || in.Problem.Current == nil || in.Changes(picks) == 0 {
		return picks, nil
	}
	// Second solve: fewest changes with the (scaled) objective held at its
	// optimum, within twice optimizer.TieTolerance of its magnitude: a band
	// wider than Instance.Better's ties, which decides below. Coefficients up
	// to HiGHS's small_matrix_value are left out of the row and its bound
	// lowered by what they can add (every column is in [0, 1]).
	lo := first.obj - 2*optimizer.TieTolerance*max(first.mag, math.Abs(first.obj))
	var cols []int
	var coef []float64
	for j, c := range b.obj {
		if math.Abs(c) <= small {
			lo -= math.Abs(c)
			continue
		}
		cols, coef = append(cols, j), append(coef, c)
	}
	b.addRow(lo, cols, coef, math.Inf(1))
	b.m.Maximize = false
	b.m.ColCosts = make([]float64, len(b.obj))
	copy(b.m.ColCosts, b.changed) // option columns come first
	tie, err := b.verified(in)
	if errors.Is(err, optimizer.ErrInfeasible) {
		return picks, nil // the tolerance band was empty in floating point: keep the first answer
	}
	if err != nil {
		return nil, err
	}
	if in.Better(tie.picks, in.Objective(tie.picks), picks, in.Objective(picks)) {
		return tie.picks, nil
	}
	return picks, nil
}

// hiGHSOptions make HiGHS prove optimality to far below the 1e-9 at which
// the solvers must agree, with feasibility tolerances to match.
var hiGHSOptions = []struct {
	name string
	v    float64
}{{"mip_rel_gap", 1e-12}, {"mip_abs_gap", 1e-13}, {"mip_feasibility_tolerance", 1e-9}, {"primal_feasibility_tolerance", 1e-9}}
