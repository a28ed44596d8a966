package optimizer

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/ipa-serving/ipa/profiles"
)

// Instance is a compiled Problem: the per-stage decision space with every
// parameter the solvers need, in seconds and cores. Solvers read it and must
// not modify it.
type Instance struct {
	Problem *Problem
	// Mode is the accuracy combination; Alpha, Beta, Gamma the weights.
	Mode               AccuracyMode
	Alpha, Beta, Gamma float64
	// Lambda is the arrival rate, requests/s.
	Lambda float64
	// Budget is the right side of the latency constraint, seconds.
	Budget float64
	// Capacity bounds the total cores; 0 means unbounded.
	Capacity int
	Stages   []StageSpace
}

// StageSpace is the decision space of one stage.
type StageSpace struct {
	Name string
	// Configs are the allowed (variant, cores, batch) triples, in the order
	// variant (as offered), cores, batch.
	Configs []Config
	// MinReplicas and MaxReplicas bound the replica count (equal when the
	// Switch or Fixed baseline pins it).
	MinReplicas, MaxReplicas int
	// Options are the configs that can carry λ within the replica bounds,
	// each with its cheapest feasible replica count.
	Options []Option
}

// Config is one (variant, cores, batch) of a stage with its parameters.
type Config struct {
	Variant string
	// VariantIndex is the variant's index in Problem.Stages[s].Variants.
	VariantIndex int
	Cores, Batch int
	// Accuracy is the stage accuracy term (rank or raw/100).
	Accuracy float64
	// ProfiledLatency is the p99 batch latency, Queue the batch fill time
	// (k−1)/(λ·Fanout) (0 in Compat mode), Latency their sum: the config's share of
	// the latency constraint, all in seconds.
	ProfiledLatency, Queue, Latency float64
	// Throughput is one replica's saturation throughput in pipeline
	// requests/s: the profile's items/s over the step's Fanout (equal
	// without fan-out), so that every stage compares with λ.
	Throughput float64
	// Estimated is set when the profile point was interpolated.
	Estimated bool
	// Changed is set when the variant, cores or batch differs from Current.
	Changed bool
}

// Option is a config at its cheapest feasible replica count.
type Option struct {
	Config   int // index into StageSpace.Configs
	Replicas int
	// TotalCores is Cores·Replicas, the option's cost and capacity use.
	TotalCores int
}

// Pick is a solver's answer for one stage: a config and its replica count.
type Pick struct {
	Config   int `json:"config"`
	Replicas int `json:"replicas"`
}

// ErrTooLarge is returned by a solver that refuses an instance beyond its size limit.
var ErrTooLarge = errors.New("instance too large for this solver")

// pin is a stage's current variant, cores, batch and replicas.
type pin struct {
	v       string
	c, k, n int
}

// Compile validates p and builds its Instance.
func Compile(p *Problem) (*Instance, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	in := &Instance{
		Problem: p, Mode: p.mode(), Alpha: p.Alpha, Beta: p.Beta, Gamma: p.Gamma,
		Lambda: p.ArrivalRate, Budget: p.budget(), Capacity: p.CoreCapacity,
		Stages: make([]StageSpace, len(p.Stages)),
	}
	batches := p.batchSet()
	for s := range p.Stages {
		st := &p.Stages[s]
		sp := &in.Stages[s]
		sp.Name = st.Name
		sp.MinReplicas, sp.MaxReplicas = 1, p.scalingCap()
		var cur *pin
		if p.Current != nil {
			c := p.Current[s]
			cur = &pin{c.Variant, c.Cores, c.MaxBatch, c.Replicas}
		}
		if p.Baseline == Switch || p.Baseline == Fixed {
			sp.MinReplicas, sp.MaxReplicas = cur.n, cur.n
		}
		scores := p.scores(s)
		fan := st.fanout()
		for vi, v := range st.Variants {
			if (p.Baseline == Scale || p.Baseline == Fixed) && v.Name != cur.v {
				continue
			}
			vp := p.Profiles.Variant(st.profileName(), v.Name)
			cores := v.Cores
			if len(cores) == 0 {
				cores = vp.Cores()
			}
			for _, c := range cores {
				if (p.Baseline == Scale || p.Baseline == Fixed) && cur.c > 0 && c != cur.c {
					continue
				}
				cp := vp.Config(c)
				ks := batches
				if p.Baseline == Fixed {
					ks = []int{max(cur.k, 1)}
				}
				for _, k := range ks {
					var pt profiles.Point
					var err error
					if p.Compat {
						var ok bool
						if pt, ok = cp.Measured(k); !ok {
							continue // IPA's dummy 1000 s latency: never feasible (IPA.md §2.1 item 4)
						}
					} else if pt, err = cp.Lookup(k); err != nil {
						continue
					}
					lat := pt.LatencyP99
					if !p.Compat {
						lat = rowsLatency(cp, k, lat, fan)
					}
					cfg := Config{
						Variant: v.Name, VariantIndex: vi, Cores: c, Batch: k,
						Accuracy: scores[vi], ProfiledLatency: lat,
						Throughput: pt.Throughput / fan, Estimated: pt.Estimated,
					}
					if !p.Compat {
						cfg.Queue = queueDelay(k, p.ArrivalRate*fan)
					}
					cfg.Latency = cfg.ProfiledLatency + cfg.Queue
					cfg.Changed = cur != nil && (v.Name != cur.v || c != cur.c || k != cur.k)
					sp.Configs = append(sp.Configs, cfg)
				}
			}
		}
		for i, cfg := range sp.Configs {
			n := max(minReplicas(cfg.Throughput, p.ArrivalRate), sp.MinReplicas)
			if n > sp.MaxReplicas {
				continue
			}
			sp.Options = append(sp.Options, Option{Config: i, Replicas: n, TotalCores: cfg.Cores * n})
		}
	}
	if m := in.maxMagnitude(); math.IsInf(m, 0) || math.IsNaN(m) {
		return nil, errors.New("the objective overflows float64 (alpha times the product of the accuracies, or the cost terms, are beyond 1.8e308): use smaller weights or accuracies")
	}
	return in, nil
}

// Objective returns α·A − β·Σ cores·replicas − γ·Σ batch for picks (IPA.md
// §2.5 objective, cost in cores). Every solver's answer is scored by this one
// function, so equal plans score bit-identically.
func (in *Instance) Objective(picks []Pick) float64 {
	cost, batches := in.totals(picks)
	return in.Alpha*in.accuracy(picks) - in.Beta*float64(cost) - in.Gamma*float64(batches)
}

// magnitude returns α·|A| + β·Σ cores·replicas + γ·Σ batch, the scale of
// the terms whose difference Objective is, and so of its rounding error.
func (in *Instance) magnitude(picks []Pick) float64 {
	cost, batches := in.totals(picks)
	return in.Alpha*math.Abs(in.accuracy(picks)) + in.Beta*float64(cost) + in.Gamma*float64(batches)
}

// maxMagnitude bounds magnitude over every plan of in's options.
func (in *Instance) maxMagnitude() float64 {
	acc, pen := 0.0, 0.0
	if in.Mode == Multiply {
		acc = 1
	}
	for _, sp := range in.Stages {
		ma, mp := 0.0, 0.0
		for _, o := range sp.Options {
			c := &sp.Configs[o.Config]
			ma, mp = max(ma, math.Abs(c.Accuracy)), max(mp, in.Beta*float64(o.TotalCores)+in.Gamma*float64(c.Batch))
		}
		if in.Mode == Multiply {
			acc *= ma
		} else {
			acc += ma
		}
		pen += mp
	}
	if in.Mode == Average {
		acc /= float64(len(in.Stages))
	}
	return in.Alpha*acc + pen
}

// totals returns Σ cores·replicas and Σ batch of picks.
func (in *Instance) totals(picks []Pick) (cost, batches int) {
	for s, pk := range picks {
		c := &in.Stages[s].Configs[pk.Config]
		cost += c.Cores * pk.Replicas
		batches += c.Batch
	}
	return cost, batches
}

func (in *Instance) accuracy(picks []Pick) float64 {
	if in.Mode == Multiply {
		a := 1.0
		for s, pk := range picks {
			a *= in.Stages[s].Configs[pk.Config].Accuracy
		}
		return a
	}
	a := 0.0
	for s, pk := range picks {
		a += in.Stages[s].Configs[pk.Config].Accuracy
	}
	if in.Mode == Average {
		a /= float64(len(picks))
	}
	return a
}

// Changes counts the stages whose variant, cores or batch differ from Current.
func (in *Instance) Changes(picks []Pick) int {
	n := 0
	for s, pk := range picks {
		if in.Stages[s].Configs[pk.Config].Changed {
			n++
		}
	}
	return n
}

// Feasible reports whether picks meet every constraint of the instance:
// replica bounds and throughput per stage, latency and capacity overall.
func (in *Instance) Feasible(picks []Pick) error {
	if len(picks) != len(in.Stages) {
		return fmt.Errorf("%d picks for %d stages", len(picks), len(in.Stages))
	}
	lat, cores := 0.0, 0
	for s, pk := range picks {
		sp := &in.Stages[s]
		if pk.Config < 0 || pk.Config >= len(sp.Configs) {
			return fmt.Errorf("stage %q: config %d out of range", sp.Name, pk.Config)
		}
		c := &sp.Configs[pk.Config]
		if pk.Replicas < sp.MinReplicas || pk.Replicas > sp.MaxReplicas {
			return fmt.Errorf("stage %q: %d replicas outside [%d, %d]", sp.Name, pk.Replicas, sp.MinReplicas, sp.MaxReplicas)
		}
		if !Carries(float64(pk.Replicas)*c.Throughput, in.Lambda) {
			return fmt.Errorf("stage %q: %d replicas x %.6g/s < λ = %.6g/s", sp.Name, pk.Replicas, c.Throughput, in.Lambda)
		}
		lat += c.Latency
		cores += c.Cores * pk.Replicas
	}
	if !WithinBudget(lat, in.Budget) {
		return fmt.Errorf("latency %.12gs exceeds the budget %.12gs", lat, in.Budget)
	}
	if in.Capacity > 0 && cores > in.Capacity {
		return fmt.Errorf("%d cores exceed the capacity %d", cores, in.Capacity)
	}
	return nil
}

// Better reports whether plan a (objective oa) should be preferred to b:
// a higher objective, beyond TieTolerance of the larger of the two plans'
// term magnitudes α·|A| + β·cost + γ·Σ batch; then fewer changes; then the
// lexicographically smaller picks. Solvers use it to break ties the same way.
func (in *Instance) Better(a []Pick, oa float64, b []Pick, ob float64) bool {
	if tol := TieTolerance * max(in.magnitude(a), in.magnitude(b)); math.Abs(oa-ob) > tol {
		return oa > ob
	}
	if ca, cb := in.Changes(a), in.Changes(b); ca != cb {
		return ca < cb
	}
	return slices.CompareFunc(a, b, func(x, y Pick) int {
		if x.Config != y.Config {
			return x.Config - y.Config
		}
		return x.Replicas - y.Replicas
	}) < 0
}

// Pruned returns a copy of in whose stages keep only the options no other
// option of the same stage dominates. Option o' dominates o when it has no
// more latency, no more changes, no more cores (with a capacity), and no less
// objective contribution: w·a − β·c·n − γ·k for sum and average; accuracy
// no less and penalty β·c·n + γ·k no more for multiply (whose objective is
// increasing in each factor, as all are >= 0). Replacing o by o' in any plan
// keeps it feasible and does not lower its objective or raise its changes,
// so the optimum survives. Among equal options the first is kept. Options
// that exceed the latency budget or the capacity even with every other stage
// at its least are dropped first; no feasible plan uses them.
func (in *Instance) Pruned() *Instance {
	out := *in
	out.Stages = make([]StageSpace, len(in.Stages))
	w := in.Alpha
	if in.Mode == Average {
		w = in.Alpha / float64(len(in.Stages))
	}
	mul := in.Mode == Multiply
	useChg := in.Problem != nil && in.Problem.Current != nil
	type key struct {
		lat, val, pen float64
		cores, chg    int
	}
	// Least latency and cores of each stage, to drop options that cannot be
	// part of any feasible plan even with the fastest, smallest other stages.
	minLat, minCores := make([]float64, len(in.Stages)), make([]int, len(in.Stages))
	sumLat, sumCores := 0.0, 0
	for s, sp := range in.Stages {
		minLat[s], minCores[s] = math.Inf(1), math.MaxInt32
		for _, o := range sp.Options {
			minLat[s], minCores[s] = min(minLat[s], sp.Configs[o.Config].Latency), min(minCores[s], o.TotalCores)
		}
		sumLat, sumCores = sumLat+minLat[s], sumCores+minCores[s]
	}
	limit := pruneLimit(in.Budget)
	for s, sp := range in.Stages {
		keys := make([]key, len(sp.Options))
		alive := make([]bool, len(sp.Options))
		for i, o := range sp.Options {
			alive[i] = sumLat-minLat[s]+sp.Configs[o.Config].Latency <= limit &&
				(in.Capacity == 0 || sumCores-minCores[s]+o.TotalCores <= in.Capacity)
			c := &sp.Configs[o.Config]
			k := key{lat: c.Latency, pen: in.Beta*float64(o.TotalCores) + in.Gamma*float64(c.Batch)}
			if in.Capacity > 0 {
				k.cores = o.TotalCores
			}
			if useChg && c.Changed {
				k.chg = 1
			}
			if mul {
				k.val = c.Accuracy
			} else {
				k.val, k.pen = w*c.Accuracy-k.pen, 0
			}
			keys[i] = k
		}
		dominates := func(a, b key) bool {
			return a.lat <= b.lat && a.val >= b.val && a.pen <= b.pen && a.cores <= b.cores && a.chg <= b.chg
		}
		out.Stages[s] = sp
		out.Stages[s].Options = nil
		for i, o := range sp.Options {
			keep := alive[i]
			for j := range sp.Options {
				if !keep {
					break
				}
				if j != i && alive[j] && dominates(keys[j], keys[i]) && (j < i || !dominates(keys[i], keys[j])) {
					keep = false
					break
				}
			}
			if keep {
				out.Stages[s].Options = append(out.Stages[s].Options, o)
			}
		}
	}
	return &out
}

// rowsLatency is the p99 latency at a step of batch size k (p99k, from the
// profile) for requests that bring fan rows each: a request's rows are
// computed together, so when they are more than k its batch is as large as
// they are (the profile's p99 there, or, beyond the largest size profiled,
// that size's p99 once per batch of it they fill).
func rowsLatency(cp *profiles.Config, k int, p99k, fan float64) float64 {
	rows := int(math.Ceil(fan))
	if rows <= k || cp == nil || len(cp.Points) == 0 {
		return p99k
	}
	if pt, err := cp.Lookup(rows); err == nil {
		return max(pt.LatencyP99, p99k)
	}
	hi := cp.Points[len(cp.Points)-1]
	return max(hi.LatencyP99*math.Ceil(float64(rows)/float64(hi.Batch)), p99k)
}
