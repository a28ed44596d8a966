package optimizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/profiles"
)

// ErrInfeasible means no configuration meets the SLA at the arrival rate
// within the caps, pins and core capacity. Solve returns it wrapped, with a
// fallback Plan.
var ErrInfeasible = errors.New("no configuration meets the SLA at this arrival rate")

// Solver finds an optimal feasible set of picks for an Instance, breaking
// ties as Instance.Better does where it can, or returns ErrInfeasible.
type Solver interface {
	// Name identifies the solver in plans and logs.
	Name() string
	Solve(in *Instance) ([]Pick, error)
}

// Plan is a decision: one configuration per stage plus what the model
// predicts for it. It is plain data.
type Plan struct {
	Stages []StagePlan `json:"stages"`
	// Latency is the predicted end-to-end latency Σ_s (p99 batch latency +
	// batch fill time); in Compat mode the fill time is left out.
	Latency time.Duration `json:"-"`
	// Throughput is the pipeline's capacity min_s replicas·H, items/s, and
	// Headroom that capacity minus λ.
	Throughput float64 `json:"throughput"`
	Headroom   float64 `json:"headroom"`
	// Accuracy is the combined accuracy term A of the objective.
	Accuracy float64 `json:"accuracy"`
	// Cost is Σ_s cores·replicas.
	Cost      int     `json:"cost_cores"`
	Objective float64 `json:"objective"`
	// Changes counts stages whose variant, cores or batch differ from Current.
	Changes int `json:"changes"`
	// Fallback marks the max-throughput plan returned with ErrInfeasible.
	Fallback bool `json:"fallback,omitempty"`
	// Solver names the solver that answered; SolveTime is what the caller's
	// clock measured around compile, solve and check (0 without a clock).
	Solver    string        `json:"solver"`
	SolveTime time.Duration `json:"-"`
}

// StagePlan is the decision for one stage.
type StagePlan struct {
	Stage    string `json:"stage"`
	Variant  string `json:"variant"`
	Cores    int    `json:"cores"`
	Batch    int    `json:"batch"`
	Replicas int    `json:"replicas"`
	// Accuracy is the stage's accuracy term (rank or raw/100).
	Accuracy float64 `json:"accuracy"`
	// ProfiledLatency is the p99 batch latency; Queue the batch fill time.
	ProfiledLatency time.Duration `json:"-"`
	Queue           time.Duration `json:"-"`
	// Throughput is the stage capacity replicas·H in pipeline requests/s
	// (items/s over the step's Fanout; items/s without fan-out).
	Throughput float64 `json:"throughput"`
	// Estimated marks a batch size the profile did not measure.
	Estimated bool `json:"estimated,omitempty"`
	Changed   bool `json:"changed,omitempty"`
}

// MarshalJSON writes the plan with durations in seconds (latency_seconds,
// solve_time_seconds), the form `ipa solve --output json` prints.
func (pl Plan) MarshalJSON() ([]byte, error) {
	type plain Plan
	return json.Marshal(struct {
		plain
		Latency   float64 `json:"latency_seconds"`
		SolveTime float64 `json:"solve_time_seconds"`
	}{plain(pl), pl.Latency.Seconds(), pl.SolveTime.Seconds()})
}

// MarshalJSON writes the stage plan with durations in seconds.
func (sp StagePlan) MarshalJSON() ([]byte, error) {
	type plain StagePlan
	return json.Marshal(struct {
		plain
		ProfiledLatency float64 `json:"profiled_latency_seconds"`
		Queue           float64 `json:"queue_seconds"`
	}{plain(sp), sp.ProfiledLatency.Seconds(), sp.Queue.Seconds()})
}

// Config returns the stage configuration to apply. MaxWait is the batch fill
// time the latency model budgeted, capped at one minute.
func (sp StagePlan) Config() models.StageConfig {
	return models.StageConfig{Variant: sp.Variant, MaxBatch: sp.Batch, MaxWait: min(sp.Queue, time.Minute), Replicas: sp.Replicas, Cores: sp.Cores}
}

// Solve compiles p, runs s, and checks the answer. On ErrInfeasible it
// returns the fallback plan (Fallback set) together with the wrapped error.
// now, if not nil, is read twice to stamp Plan.SolveTime; nothing else in
// the optimizer reads a clock.
func Solve(p *Problem, s Solver, now func() time.Time) (Plan, error) {
	var t0 time.Time
	if now != nil {
		t0 = now()
	}
	stamp := func(pl Plan) Plan {
		pl.Solver = s.Name()
		if now != nil {
			pl.SolveTime = now().Sub(t0)
		}
		return pl
	}
	in, err := Compile(p)
	if err != nil {
		return Plan{}, fmt.Errorf("invalid problem: %w", err)
	}
	picks, err := s.Solve(in)
	if errors.Is(err, ErrInfeasible) {
		fb, ferr := in.Fallback()
		if ferr != nil {
			return Plan{}, fmt.Errorf("%w, and %v", err, ferr)
		}
		pl := in.Plan(fb)
		pl.Fallback = true
		if cerr := Check(p, pl); cerr != nil {
			return Plan{}, fmt.Errorf("BUG: fallback plan fails the check: %w", cerr)
		}
		return stamp(pl), fmt.Errorf("%w (SLA %s, λ %.4g/s); raise the SLA, the scaling cap or the core capacity, or shed load; applying the max-throughput fallback", err, p.SLA, p.ArrivalRate)
	}
	if err != nil {
		return Plan{}, fmt.Errorf("solver %s: %w", s.Name(), err)
	}
	if err := in.Feasible(picks); err != nil {
		return Plan{}, fmt.Errorf("BUG: solver %s returned an infeasible plan: %w", s.Name(), err)
	}
	pl := in.Plan(picks)
	if err := Check(p, pl); err != nil {
		return Plan{}, fmt.Errorf("BUG: solver %s: plan fails the independent check: %w", s.Name(), err)
	}
	return stamp(pl), nil
}

func seconds(x float64) time.Duration { return time.Duration(math.Round(x * 1e9)) }

// Plan builds the plan of picks, with its predictions.
func (in *Instance) Plan(picks []Pick) Plan {
	pl := Plan{Accuracy: in.accuracy(picks), Objective: in.Objective(picks), Changes: in.Changes(picks), Throughput: math.Inf(1)}
	lat := 0.0
	for s, pk := range picks {
		c := &in.Stages[s].Configs[pk.Config]
		thr := float64(pk.Replicas) * c.Throughput
		pl.Stages = append(pl.Stages, StagePlan{
			Stage: in.Stages[s].Name, Variant: c.Variant, Cores: c.Cores, Batch: c.Batch, Replicas: pk.Replicas,
			Accuracy: c.Accuracy, ProfiledLatency: seconds(c.ProfiledLatency), Queue: seconds(c.Queue),
			Throughput: thr, Estimated: c.Estimated, Changed: c.Changed,
		})
		lat += c.Latency
		pl.Cost += c.Cores * pk.Replicas
		pl.Throughput = min(pl.Throughput, thr)
	}
	pl.Latency = seconds(lat)
	pl.Headroom = pl.Throughput - in.Lambda
	return pl
}

// Fallback returns the picks that maximise the pipeline throughput
// min_s replicas·H within the replica bounds and the core capacity, ignoring
// the SLA; per stage the fewest cores for that throughput, then the lowest
// latency, then no change. It fails only when the capacity cannot hold even
// the smallest configuration.
func (in *Instance) Fallback() ([]Pick, error) {
	for _, sp := range in.Stages {
		if len(sp.Configs) == 0 {
			return nil, fmt.Errorf("stage %q has no profiled configuration in this mode", sp.Name)
		}
	}
	// need returns the picks reaching throughput t with the fewest cores, and their total.
	need := func(t float64) ([]Pick, int, bool) {
		picks := make([]Pick, len(in.Stages))
		total := 0
		for s, sp := range in.Stages {
			best, bestCores := -1, 0
			for i, c := range sp.Configs {
				n := max(sp.MinReplicas, leastReplicas(c.Throughput, t))
				if n > sp.MaxReplicas {
					continue
				}
				k := c.Cores * n
				if best >= 0 {
					b := &sp.Configs[best]
					switch {
					case k > bestCores, k == bestCores && c.Latency > b.Latency,
						k == bestCores && c.Latency == b.Latency && (c.Changed || !b.Changed):
						continue
					}
				}
				best, bestCores = i, k
				picks[s] = Pick{Config: i, Replicas: n}
			}
			if best < 0 {
				return nil, 0, false
			}
			total += bestCores
		}
		return picks, total, in.Capacity == 0 || total <= in.Capacity
	}
	tmax := math.Inf(1)
	for _, sp := range in.Stages {
		m := 0.0
		for _, c := range sp.Configs {
			m = max(m, float64(sp.MaxReplicas)*c.Throughput)
		}
		tmax = min(tmax, m)
	}
	ok := func(t float64) bool { _, _, ok := need(t); return ok }
	// need is monotone in t: bisect down to adjacent floats. The picks for
	// the last feasible t are those of the true optimum T*, since no replica
	// count gives a throughput strictly between them.
	t := tmax
	if !ok(t) {
		lo, hi := 0.0, tmax
		for lo < hi {
			mid := lo + (hi-lo)/2
			if mid == lo || mid == hi {
				break
			}
			if ok(mid) {
				lo = mid
			} else {
				hi = mid
			}
		}
		t = lo
	}
	if !ok(t) {
		return nil, fmt.Errorf("the core capacity %d cannot hold even the smallest configuration of every stage", in.Capacity)
	}
	picks, _, _ := need(t)
	return picks, nil
}

// Check verifies plan against p from first principles: it recomputes every
// stage's parameters from the profile, without the Instance, and checks the
// decision space, pins, caps, throughput, latency and capacity constraints,
// and the plan's reported predictions. A Fallback plan is exempt from the SLA
// and throughput constraints only.
func Check(p *Problem, plan Plan) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if len(plan.Stages) != len(p.Stages) {
		return fmt.Errorf("plan has %d stages, the pipeline %d", len(plan.Stages), len(p.Stages))
	}
	capR := p.ScalingCap
	if capR == 0 {
		capR = DefaultScalingCap
	}
	allowedBatch := map[int]bool{}
	for _, b := range p.batchSet() {
		allowedBatch[b] = true
	}
	lat, acc, cost, batches, changes := 0.0, 0.0, 0, 0, 0
	if p.mode() == Multiply {
		acc = 1
	}
	for s, sp := range plan.Stages {
		st := p.Stages[s]
		at := fmt.Sprintf("stage %d %q", s, st.Name)
		if sp.Stage != st.Name {
			return fmt.Errorf("%s: plan names it %q", at, sp.Stage)
		}
		vi := slices.IndexFunc(st.Variants, func(v Variant) bool { return v.Name == sp.Variant })
		if vi < 0 {
			return fmt.Errorf("%s: variant %q is not offered", at, sp.Variant)
		}
		v := st.Variants[vi]
		if len(v.Cores) > 0 && !slices.Contains(v.Cores, sp.Cores) {
			return fmt.Errorf("%s: cores %d not allowed for %q (allowed %v)", at, sp.Cores, v.Name, v.Cores)
		}
		var cur models.StageConfig
		if p.Current != nil {
			cur = p.Current[s]
		}
		pinV := p.Baseline == Scale || p.Baseline == Fixed
		pinN := p.Baseline == Switch || p.Baseline == Fixed
		switch {
		case pinV && (sp.Variant != cur.Variant || cur.Cores > 0 && sp.Cores != cur.Cores):
			return fmt.Errorf("%s: baseline %s pins %q at %d cores, plan has %q at %d", at, p.Baseline, cur.Variant, cur.Cores, sp.Variant, sp.Cores)
		case pinN && sp.Replicas != cur.Replicas:
			return fmt.Errorf("%s: baseline %s pins %d replicas, plan has %d", at, p.Baseline, cur.Replicas, sp.Replicas)
		case p.Baseline == Fixed && sp.Batch != max(cur.MaxBatch, 1):
			return fmt.Errorf("%s: baseline fixed pins batch %d, plan has %d", at, cur.MaxBatch, sp.Batch)
		case p.Baseline != Fixed && !allowedBatch[sp.Batch]:
			return fmt.Errorf("%s: batch %d is not a candidate batch size", at, sp.Batch)
		case !pinN && (sp.Replicas < 1 || sp.Replicas > capR):
			return fmt.Errorf("%s: %d replicas outside [1, %d]", at, sp.Replicas, capR)
		}
		var pt profiles.Point
		var err error
		if p.Compat {
			if c := p.Profiles.Variant(st.profileName(), sp.Variant).Config(sp.Cores); c == nil {
				err = profiles.ErrNotProfiled
			} else if m, ok := c.Measured(sp.Batch); ok {
				pt = m
			} else {
				err = fmt.Errorf("batch %d not measured (compat)", sp.Batch)
			}
		} else {
			pt, err = p.Profiles.Lookup(st.profileName(), sp.Variant, sp.Cores, sp.Batch)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", at, err)
		}
		fan := st.fanout()
		if !plan.Fallback && !Carries(float64(sp.Replicas)*pt.Throughput, p.ArrivalRate*fan) {
			return fmt.Errorf("%s: %d x %.6g items/s cannot carry λ·fanout = %.6g × %.6g/s", at, sp.Replicas, pt.Throughput, p.ArrivalRate, fan)
		}
		q := 0.0
		if !p.Compat && p.ArrivalRate > 0 {
			q = float64(sp.Batch-1) / (p.ArrivalRate * fan)
		}
		want := pt.LatencyP99
		if !p.Compat {
			want = rowsLatency(p.Profiles.Variant(st.profileName(), sp.Variant).Config(sp.Cores), sp.Batch, want, fan)
		}
		if d := math.Abs(sp.ProfiledLatency.Seconds() - want); d > 1e-9 {
			return fmt.Errorf("%s: reported latency %s, profile says %vs", at, sp.ProfiledLatency, want)
		}
		lat += want + q
		// Accuracy from first principles: raw/100, or the count of variants
		// strictly less accurate over (n−1).
		a := v.Accuracy / 100
		if p.Normalize {
			a = 1
			if n := len(st.Variants); n > 1 {
				r := 0
				for _, o := range st.Variants {
					if o.Accuracy < v.Accuracy {
						r++
					}
				}
				a = float64(r) / float64(n-1)
			}
		}
		if p.mode() == Multiply {
			acc *= a
		} else {
			acc += a
		}
		cost += sp.Cores * sp.Replicas
		batches += sp.Batch
		if p.Current != nil && (sp.Variant != cur.Variant || sp.Cores != cur.Cores || sp.Batch != cur.MaxBatch) {
			changes++
		}
	}
	if p.mode() == Average {
		acc /= float64(len(p.Stages))
	}
	sla := p.SLA.Seconds()
	if p.Compat && p.ArrivalRate > 0 {
		for _, st := range p.Stages {
			sla += float64(len(st.Variants)*(len(p.batchSet())-1)) / p.ArrivalRate
		}
	}
	if !plan.Fallback && !WithinBudget(lat, sla) {
		return fmt.Errorf("predicted latency %.12gs exceeds the SLA budget %.12gs", lat, sla)
	}
	if p.CoreCapacity > 0 && cost > p.CoreCapacity {
		return fmt.Errorf("%d cores exceed the capacity %d", cost, p.CoreCapacity)
	}
	obj := p.Alpha*acc - p.Beta*float64(cost) - p.Gamma*float64(batches)
	near := func(x, y float64) bool { return math.Abs(x-y) <= 1e-9*max(1, math.Abs(x), math.Abs(y)) }
	switch {
	case math.Abs(plan.Latency.Seconds()-lat) > 1e-9*float64(len(p.Stages)+1):
		return fmt.Errorf("reported latency %s, recomputed %.9gs", plan.Latency, lat)
	case plan.Cost != cost:
		return fmt.Errorf("reported cost %d, recomputed %d", plan.Cost, cost)
	case !near(plan.Accuracy, acc):
		return fmt.Errorf("reported accuracy %v, recomputed %v", plan.Accuracy, acc)
	case !near(plan.Objective, obj):
		return fmt.Errorf("reported objective %v, recomputed %v", plan.Objective, obj)
	case plan.Changes != changes:
		return fmt.Errorf("reported %d changes, recomputed %d", plan.Changes, changes)
	}
	return nil
}
