package optimizer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/profiles"
)

// SyntheticProfile returns a profile of stages x variants with the shape of
// real CPU profiles: per variant a base batch-1 latency growing with the
// variant index, latency affine in the batch with a small quadratic term,
// p99 above p50, sub-linear speed-up in cores, and throughput b/p50·cores^0.2.
// Stages are named s0, s1, …, variants v0, v1, …. It is deterministic in its
// arguments, for benchmarks and tests.
func SyntheticProfile(stages, variants int, cores, batches []int) *profiles.Profile {
	p := &profiles.Profile{Version: profiles.Version, Measured: profiles.Meta{Tool: "optimizer.SyntheticProfile"}}
	for s := range stages {
		sp := profiles.StageProfile{Name: fmt.Sprintf("s%d", s)}
		for v := range variants {
			vp := profiles.VariantProfile{Name: fmt.Sprintf("v%d", v)}
			base := 0.02 * (1 + float64(v)) * (1 + 0.1*float64(s))
			for _, c := range cores {
				cfg := profiles.Config{Cores: c}
				for _, b := range batches {
					x := float64(b)
					p50 := base * (0.4 + 0.6*x + 0.002*x*x) / math.Pow(float64(c), 0.7)
					cfg.Points = append(cfg.Points, profiles.Point{
						Batch: b, LatencyP50: p50, LatencyP99: 1.3 * p50,
						Throughput: x / p50 * math.Pow(float64(c), 0.2),
					})
				}
				vp.Configs = append(vp.Configs, cfg)
			}
			sp.Variants = append(sp.Variants, vp)
		}
		p.Stages = append(p.Stages, sp)
	}
	return p
}

// SyntheticProblem is a pipeline of stages x variants over SyntheticProfile
// with cores {1, 2, 4, 8}, batches {1, 2, 4, 8, 16}, replicas <= 100, as the
// paper's scalability experiment did with cloned stages (IPA.md §7, Gurobi
// scalability): accuracy rising with the variant index, λ = 20/s, an SLA of
// 0.3 s per stage, α = 2, β = 0.05, γ = 1e-6, multiply accuracy.
func SyntheticProblem(stages, variants int) *Problem {
	p := &Problem{
		Profiles:    SyntheticProfile(stages, variants, []int{1, 2, 4, 8}, []int{1, 2, 4, 8, 16}),
		ArrivalRate: 20, SLA: time.Duration(stages) * 300 * time.Millisecond,
		Alpha: 2, Beta: 0.05, Gamma: 1e-6, Accuracy: Multiply, ScalingCap: 100,
	}
	for s := range stages {
		st := Step{Name: fmt.Sprintf("s%d", s)}
		for v := range variants {
			st.Variants = append(st.Variants, Variant{Name: fmt.Sprintf("v%d", v), Accuracy: 60 + 30*float64(v+1)/float64(variants)})
		}
		p.Stages = append(p.Stages, st)
	}
	return p
}

// RandomProblem draws a small random problem for property tests: 1–4
// stages, 1–6 variants, random measured batch sets and core counts, every
// accuracy mode with and without normalisation, every baseline, compat,
// capacity caps, and SLAs around the feasibility edge. Its raw decision
// space (what BruteForce enumerates) stays below maxRaw plans.
func RandomProblem(r *rand.Rand, maxRaw float64) *Problem {
	return draw(r, maxRaw, randomProblem)
}

// draw returns the first problem of gen that compiles with a raw decision
// space of at most maxRaw plans.
func draw(r *rand.Rand, maxRaw float64, gen func(*rand.Rand) *Problem) *Problem {
	for {
		p := gen(r)
		if in, err := Compile(p); err == nil && in.rawPlans() <= maxRaw {
			return p
		}
	}
}

func randomProblem(r *rand.Rand) *Problem {
	S := 1 + r.IntN(4)
	pick := func(from []int) []int {
		var out []int
		for _, x := range from {
			if r.IntN(2) == 0 {
				out = append(out, x)
			}
		}
		if len(out) == 0 {
			out = append(out, from[r.IntN(len(from))])
		}
		return out
	}
	p := &Problem{
		Profiles:     &profiles.Profile{Version: profiles.Version},
		ArrivalRate:  []float64{0, 0.5, 3, 10, 25}[r.IntN(5)] * (0.5 + r.Float64()),
		Alpha:        []float64{0, 0.5, 1, 2, 10}[r.IntN(5)],
		Beta:         []float64{0, 0.05, 0.5, 1}[r.IntN(4)],
		Gamma:        []float64{0, 1e-6, 0.01}[r.IntN(3)],
		Accuracy:     []AccuracyMode{Sum, Average, Multiply, ""}[r.IntN(4)],
		Normalize:    r.IntN(2) == 0,
		ScalingCap:   1 + r.IntN(8),
		Compat:       r.IntN(5) == 0,
		Baseline:     []Baseline{Full, Full, Full, Scale, Switch, Fixed}[r.IntN(6)],
		CoreCapacity: 0,
	}
	if r.IntN(3) == 0 {
		p.Batches = pick([]int{1, 2, 3, 4, 6, 8})
	}
	if r.IntN(3) == 0 {
		p.BatchCap = []int{1, 2, 4}[r.IntN(3)]
	}
	minLat, maxLat := 0.0, 0.0
	for s := range S {
		name := fmt.Sprintf("s%d", s)
		V := 1 + r.IntN(6)
		st := Step{Name: name}
		sp := profiles.StageProfile{Name: name}
		lo, hi := math.Inf(1), 0.0
		for v := range V {
			vn := fmt.Sprintf("v%d", v)
			st.Variants = append(st.Variants, Variant{Name: vn, Accuracy: float64(40 + r.IntN(50))})
			vp := profiles.VariantProfile{Name: vn}
			base := 0.005 + 0.1*r.Float64()
			for _, c := range pick([]int{1, 2, 4}) {
				cfg := profiles.Config{Cores: c}
				for _, b := range pick([]int{1, 2, 4, 8}) {
					x := float64(b)
					p50 := base * (0.5 + 0.5*x + 0.01*x*x*r.Float64()) / math.Pow(float64(c), 0.6)
					p99 := p50 * (1 + 0.5*r.Float64())
					cfg.Points = append(cfg.Points, profiles.Point{Batch: b, LatencyP50: p50, LatencyP99: p99, Throughput: x / p50 * (0.8 + 0.4*r.Float64())})
					lo, hi = min(lo, p99), max(hi, p99)
				}
				vp.Configs = append(vp.Configs, cfg)
			}
			if r.IntN(4) == 0 && len(vp.Cores()) > 1 {
				st.Variants[v].Cores = []int{vp.Cores()[0]}
			}
			sp.Variants = append(sp.Variants, vp)
		}
		p.Stages = append(p.Stages, st)
		p.Profiles.Stages = append(p.Profiles.Stages, sp)
		minLat, maxLat = minLat+lo, maxLat+hi
	}
	p.SLA = time.Duration((minLat + (maxLat-minLat)*r.Float64()*1.2 + 0.3*r.Float64()*r.Float64()) * 1e9)
	if p.Baseline != Full || r.IntN(2) == 0 {
		for s := range S {
			st := p.Stages[s]
			v := st.Variants[r.IntN(len(st.Variants))]
			vp := p.Profiles.Variant(st.Name, v.Name)
			cores := v.Cores
			if len(cores) == 0 {
				cores = vp.Cores()
			}
			c := cores[r.IntN(len(cores))]
			bs := vp.Config(c).Batches()
			p.Current = append(p.Current, models.StageConfig{Variant: v.Name, Cores: c, MaxBatch: bs[r.IntN(len(bs))], Replicas: 1 + r.IntN(p.ScalingCap)})
		}
	}
	if r.IntN(3) == 0 {
		p.CoreCapacity = S + r.IntN(6*S)
	}
	return p
}

// BenchCase is one problem of the decision-time benchmark grid.
type BenchCase struct {
	Name    string
	Problem *Problem
	// RawPlans is the size of the raw decision space BruteForce enumerates.
	RawPlans float64
}

// BenchCases is the benchmark grid of issue 4: SyntheticProblem for stages
// 1…10 × variants 1…10 (cores {1,2,4,8}, batches {1,2,4,8,16}, replicas <=
// 100), in multiply and sum modes, named "<mode>/sSSxvVV".
func BenchCases() []BenchCase {
	var out []BenchCase
	for _, mode := range []AccuracyMode{Multiply, Sum} {
		for st := 1; st <= 10; st++ {
			for v := 1; v <= 10; v++ {
				p := SyntheticProblem(st, v)
				p.Accuracy = mode
				in, err := Compile(p)
				if err != nil {
					panic("BUG: synthetic problem does not compile: " + err.Error())
				}
				out = append(out, BenchCase{Name: fmt.Sprintf("%s/s%02dxv%02d", mode, st, v), Problem: p, RawPlans: in.rawPlans()})
			}
		}
	}
	return out
}

// BoundaryProblem draws a small random problem whose constraints are tight
// in decimal arithmetic, for property tests of Tolerance: latencies are
// whole milliseconds, throughputs and λ short decimals (3 × 0.3/s against
// 0.9/s), batch fill times (k−1)/λ whole milliseconds, and the SLA is the
// exact latency of a random plan (sometimes 1 ms or a few ns off), so that many plans
// sit on the latency or load boundary up to floating-point rounding. About
// one problem in six is in multiply mode with accuracies below 1e-9. Its
// raw decision space stays below maxRaw plans.
func BoundaryProblem(r *rand.Rand, maxRaw float64) *Problem {
	return draw(r, maxRaw, boundaryProblem)
}

func boundaryProblem(r *rand.Rand) *Problem {
	oneOf := func(xs ...float64) float64 { return xs[r.IntN(len(xs))] }
	// λ with batch 1 only, or λ whose 1/λ is a whole number of milliseconds
	// with batches up to 5.
	batches := []int{1}
	lambda := oneOf(0.3, 0.6, 0.9, 1.2, 2.1, 0.7, 0)
	if r.IntN(2) == 0 {
		lambda = oneOf(0.5, 1, 2, 2.5, 4, 5)
		batches = [][]int{{1, 2}, {1, 3}, {1, 2, 5}, {2, 3}}[r.IntN(4)]
	}
	tiny := r.IntN(6) == 0
	p := &Problem{
		Profiles:    &profiles.Profile{Version: profiles.Version},
		ArrivalRate: lambda,
		Alpha:       oneOf(0.5, 1, 2, 10),
		Beta:        oneOf(0, 0.05, 0.1, 0.3),
		Gamma:       oneOf(0, 1e-6, 0.01),
		Accuracy:    []AccuracyMode{Sum, Average, Multiply}[r.IntN(3)],
		Normalize:   r.IntN(4) == 0,
		ScalingCap:  3 + r.IntN(8),
	}
	if tiny {
		p.Accuracy, p.Normalize, p.Beta, p.Gamma = Multiply, false, oneOf(0, 1e-3), oneOf(0, 1e-12)
	}
	S := 1 + r.IntN(3)
	var ms [][]int // ms[s][config] latency in ms, in Compile's config order
	for s := range S {
		name := fmt.Sprintf("s%d", s)
		st, sp := Step{Name: name}, profiles.StageProfile{Name: name}
		var lat []int
		for v := range 1 + r.IntN(3) {
			vn := fmt.Sprintf("v%d", v)
			acc := float64(40 + r.IntN(50))
			if tiny {
				acc = oneOf(1, 3, 7, 0.5) * oneOf(1e-10, 1e-11, 1e-12, 1e-9)
			}
			st.Variants = append(st.Variants, Variant{Name: vn, Accuracy: acc})
			vp := profiles.VariantProfile{Name: vn}
			for _, c := range []int{1, 2}[:1+r.IntN(2)] {
				cfg := profiles.Config{Cores: c}
				for _, b := range batches {
					l := 100 * (1 + r.IntN(5)) * b / c // ms
					thr := oneOf(0.1, 0.3, 0.7, 0.9, 1.1, 0.5, 2.5) * float64(b*c)
					cfg.Points = append(cfg.Points, profiles.Point{Batch: b, LatencyP50: float64(l) / 1000, LatencyP99: float64(l) / 1000, Throughput: thr})
					q := 0
					if lambda > 0 {
						q = int(math.Round(float64(b-1) * 1000 / lambda))
					}
					lat = append(lat, l+q)
				}
				vp.Configs = append(vp.Configs, cfg)
			}
			sp.Variants = append(sp.Variants, vp)
		}
		ms = append(ms, lat)
		p.Stages = append(p.Stages, st)
		p.Profiles.Stages = append(p.Profiles.Stages, sp)
	}
	sla := 0
	for _, lat := range ms {
		sla += lat[r.IntN(len(lat))]
	}
	sla += []int{0, 0, 0, -1, 1}[r.IntN(5)]
	// A few nanoseconds under a plan's latency: beyond Tolerance or not,
	// depending on the SLA, and within HiGHS's absolute 1e-9 feasibility
	// tolerance on an unscaled row.
	p.SLA = time.Duration(max(sla, 1))*time.Millisecond - []time.Duration{0, 0, 1, 2, 5}[r.IntN(5)]
	if r.IntN(3) == 0 {
		for s := range S {
			v := p.Stages[s].Variants[r.IntN(len(p.Stages[s].Variants))].Name
			p.Current = append(p.Current, models.StageConfig{Variant: v, Cores: 1, MaxBatch: batches[0], Replicas: 1 + r.IntN(3)})
		}
	}
	if r.IntN(4) == 0 {
		p.CoreCapacity = 2*S + r.IntN(6*S)
	}
	return p
}
