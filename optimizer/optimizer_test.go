package optimizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/profiles"
)

// tiny is a 2-stage pipeline: stage a has a fast, poor variant and a slow,
// good one; stage b has one variant. All at 1 core, batches 1 and 4.
func tiny() *Problem {
	pt := func(b int, lat, thr float64) profiles.Point {
		return profiles.Point{Batch: b, LatencyP50: lat, LatencyP99: lat, Throughput: thr}
	}
	prof := &profiles.Profile{Version: 1, Stages: []profiles.StageProfile{
		{Name: "a", Variants: []profiles.VariantProfile{
			{Name: "fast", Configs: []profiles.Config{{Cores: 1, Points: []profiles.Point{pt(1, 0.1, 10), pt(4, 0.2, 20)}}}},
			{Name: "good", Configs: []profiles.Config{{Cores: 1, Points: []profiles.Point{pt(1, 0.4, 2.5), pt(4, 0.8, 5)}}}},
		}},
		{Name: "b", Variants: []profiles.VariantProfile{
			{Name: "only", Configs: []profiles.Config{{Cores: 1, Points: []profiles.Point{pt(1, 0.05, 20), pt(4, 0.1, 40)}}}},
		}},
	}}
	return &Problem{
		Stages: []Step{
			{Name: "a", Variants: []Variant{{Name: "fast", Accuracy: 50}, {Name: "good", Accuracy: 80}}},
			{Name: "b", Variants: []Variant{{Name: "only", Accuracy: 90}}},
		},
		Profiles: prof, ArrivalRate: 10, SLA: time.Second, Alpha: 10, Beta: 0.1, Gamma: 1e-6,
	}
}

func solvers() []Solver { return []Solver{BruteForce{}, Exact{}} }

func TestMinReplicasIsTheLeastThatCarriesTheLoad(t *testing.T) {
	f := func(h, lambda float64, want int) {
		t.Helper()
		n := minReplicas(h, lambda)
		if n != want || n < math.MaxInt && (!Carries(float64(n)*h, lambda) || n > 1 && Carries(float64(n-1)*h, lambda)) {
			t.Fatalf("minReplicas(%v, %v) = %d, want %d", h, lambda, n, want)
		}
	}
	f(10, 0, 1)
	f(10, 10, 1)
	f(10, 10.0001, 2)
	f(0.1, 0.3, 3) // 3*0.1 = 0.30000000000000004 >= 0.3
	f(0.3, 0.9, 3) // 3*0.3 = 0.8999999999999999: short of 0.9 by rounding only (Tolerance)
	f(0.3, 0.9*(1+2*Tolerance), 4)
	f(2.5, 10, 4)
	f(1e-9, 1e9, math.MaxInt)
}

func TestQueueTermIsTheTimeToFillTheBatch(t *testing.T) {
	f := func(k int, lambda, want float64) {
		t.Helper()
		if got := queueDelay(k, lambda); got != want {
			t.Fatalf("queueDelay(%d, %v) = %v, want %v", k, lambda, got, want)
		}
	}
	f(1, 10, 0)
	f(4, 10, 0.3)
	f(8, 0, 0)
}

func TestCompatLoosensTheSLAByTheOriginalsConstant(t *testing.T) {
	// IPA.md §2.5: video, |V| = 5 per stage, |K| = 3, 2 stages: 20/λ s looser.
	p := SyntheticProblem(2, 5)
	p.Batches, p.ArrivalRate, p.SLA, p.Compat = []int{1, 2, 8}, 4, 6890*time.Millisecond, true
	if got := p.budget(); math.Abs(got-(6.89+5)) > 1e-12 {
		t.Fatalf("compat budget = %v, want 11.89", got)
	}
	p.Compat = false
	if got := p.budget(); got != 6.89 {
		t.Fatalf("budget = %v, want 6.89", got)
	}
}

func TestRankNormalisationIsIPAs(t *testing.T) {
	p := SyntheticProblem(1, 5)
	p.Normalize = true
	for i, a := range []float64{76.13, 69.75, 78.31, 73.31, 77.37} {
		p.Stages[0].Variants[i].Accuracy = a
	}
	want := []float64{0.5, 0, 1, 0.25, 0.75}
	for i, got := range p.scores(0) {
		if got != want[i] {
			t.Fatalf("scores = %v, want %v", p.scores(0), want)
		}
	}
	p.Stages[0].Variants = p.Stages[0].Variants[:1]
	if got := p.scores(0); got[0] != 1 {
		t.Fatalf("a single variant scores %v, want 1", got)
	}
}

func TestPicksTheAccurateVariantWhenTheSLAAllows(t *testing.T) {
	for _, s := range solvers() {
		p := tiny()
		pl, err := Solve(p, s, nil)
		if err != nil {
			t.Fatalf("%s: %v", s.Name(), err)
		}
		// good at batch 4 needs 2 replicas (2 x 5 >= 10): latency 0.8 + 0.3 + 0.05 = 1.15 > 1 s;
		// good at batch 1 needs 4 replicas: 0.4 + 0.05 = 0.45 s, objective 10*1.7 - 0.5 - 2e-6.
		a := pl.Stages[0]
		if a.Variant != "good" || a.Batch != 1 || a.Replicas != 4 || pl.Cost != 5 || pl.Solver != s.Name() {
			t.Fatalf("%s: plan %+v", s.Name(), pl)
		}
		if want := 10*1.7 - 0.1*5 - 2e-6; math.Abs(pl.Objective-want) > 1e-12 {
			t.Fatalf("%s: objective %v, want %v", s.Name(), pl.Objective, want)
		}
		if pl.Latency != 450*time.Millisecond || math.Abs(pl.Headroom) > 1e-12 {
			t.Fatalf("%s: latency %s headroom %v", s.Name(), pl.Latency, pl.Headroom)
		}
	}
}

func TestBaselinesPinWhatThePaperPinned(t *testing.T) {
	cur := []models.StageConfig{{Variant: "fast", Cores: 1, MaxBatch: 4, Replicas: 3}, {Variant: "only", Cores: 1, MaxBatch: 1, Replicas: 1}}
	f := func(b Baseline, want string) {
		t.Helper()
		for _, s := range solvers() {
			p := tiny()
			p.Current, p.Baseline = cur, b
			pl, err := Solve(p, s, nil)
			if err != nil {
				t.Fatalf("%s %q: %v", s.Name(), b, err)
			}
			got := ""
			for _, sp := range pl.Stages {
				got += sp.Variant + "/" + string(rune('0'+sp.Batch)) + "/" + string(rune('0'+sp.Replicas)) + " "
			}
			if got != want {
				t.Fatalf("%s baseline %q: %s, want %s", s.Name(), b, got, want)
			}
		}
	}
	f(Full, "good/1/4 only/1/1 ")
	f(Scale, "fast/1/1 only/1/1 ")  // variant pinned: batch 1 is cheapest
	f(Switch, "fast/1/3 only/1/1 ") // 3 replicas pinned on stage a: good needs 4 at batch 1 (or 2 at batch 4, too slow)
	f(Fixed, "fast/4/3 only/1/1 ")  // evaluates Current
}

func TestTiesGoToFewerChanges(t *testing.T) {
	// Two identical variants: the one currently running must win.
	p := tiny()
	p.Stages[0].Variants[1].Accuracy = 50
	p.Profiles.Stages[0].Variants[1] = p.Profiles.Stages[0].Variants[0]
	p.Profiles.Stages[0].Variants[1].Name = "good"
	for _, cur := range []string{"fast", "good"} {
		p.Current = []models.StageConfig{{Variant: cur, Cores: 1, MaxBatch: 1, Replicas: 1}, {Variant: "only", Cores: 1, MaxBatch: 1, Replicas: 1}}
		for _, s := range solvers() {
			pl, err := Solve(p, s, nil)
			if err != nil {
				t.Fatal(err)
			}
			if pl.Stages[0].Variant != cur || pl.Changes != 0 {
				t.Fatalf("%s: current %s, plan %+v", s.Name(), cur, pl.Stages[0])
			}
		}
	}
}

func TestInfeasibleReturnsTheMaxThroughputFallback(t *testing.T) {
	for _, s := range solvers() {
		p := tiny()
		p.SLA = 10 * time.Millisecond
		p.ScalingCap = 3
		pl, err := Solve(p, s, nil)
		if !errors.Is(err, ErrInfeasible) || !strings.Contains(err.Error(), "raise the SLA") {
			t.Fatalf("%s: err = %v, want ErrInfeasible", s.Name(), err)
		}
		// Max throughput: stage a fast@4 gives 3 x 20 = 60/s, stage b only@4 2 x 40 >= 60 at 2 replicas.
		if !pl.Fallback || pl.Throughput != 60 || pl.Stages[0].Variant != "fast" || pl.Stages[0].Batch != 4 || pl.Stages[1].Replicas != 2 {
			t.Fatalf("%s: fallback %+v", s.Name(), pl)
		}
		// With a core capacity of 3 the bottleneck is shared: 2 + 1 cores, fast@4 x 2 = 40/s.
		p.CoreCapacity = 3
		pl, err = Solve(p, s, nil)
		if !errors.Is(err, ErrInfeasible) || pl.Throughput != 40 || pl.Cost != 3 {
			t.Fatalf("%s: capped fallback %+v, %v", s.Name(), pl, err)
		}
		p.CoreCapacity = 1
		if _, err := Solve(p, s, nil); err == nil || !strings.Contains(err.Error(), "cannot hold") {
			t.Fatalf("%s: capacity 1: %v", s.Name(), err)
		}
	}
}

func TestSolveStampsTheCallersClock(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	calls := 0
	now := func() time.Time { calls++; return t0.Add(time.Duration(calls) * time.Millisecond) }
	pl, err := Solve(tiny(), Exact{}, now)
	if err != nil || pl.SolveTime != time.Millisecond || calls != 2 {
		t.Fatalf("SolveTime %s after %d calls, %v", pl.SolveTime, calls, err)
	}
}

func TestCheckCatchesAWrongPlan(t *testing.T) {
	p := tiny()
	pl, err := Solve(p, Exact{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := func(mutate func(*Plan), want string) {
		t.Helper()
		q := pl
		q.Stages = append([]StagePlan(nil), pl.Stages...)
		mutate(&q)
		if err := Check(p, q); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Check = %v, want %q", err, want)
		}
	}
	f(func(q *Plan) { q.Stages[0].Replicas = 3 }, "cannot carry")
	f(func(q *Plan) { q.Stages[0].Variant = "nope" }, "not offered")
	f(func(q *Plan) {
		q.Stages[0].Batch, q.Stages[0].ProfiledLatency, q.Stages[0].Replicas = 4, 800*time.Millisecond, 2
	}, "exceeds the SLA")
	f(func(q *Plan) { q.Stages[0].Batch = 3 }, "not a candidate batch size")
	f(func(q *Plan) { q.Stages[0].ProfiledLatency += time.Millisecond }, "reported latency")
	f(func(q *Plan) { q.Stages[0].Replicas = 200 }, "outside [1, 100]")
	f(func(q *Plan) { q.Objective += 1e-6 }, "objective")
	f(func(q *Plan) { q.Cost++ }, "cost")
	f(func(q *Plan) { q.Stages = q.Stages[:1] }, "plan has 1 stages")
}

func TestValidateSaysWhatToChange(t *testing.T) {
	f := func(mutate func(*Problem), want string) {
		t.Helper()
		p := tiny()
		mutate(p)
		if _, err := Solve(p, Exact{}, nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("err = %v, want %q", err, want)
		}
	}
	f(func(p *Problem) { p.SLA = 0 }, "sla 0s must be positive")
	f(func(p *Problem) { p.Beta = -1 }, "must be finite and in [0, 1e+12]")
	f(func(p *Problem) { p.Alpha = 1e300 }, "must be finite and in [0, 1e+12]")
	f(func(p *Problem) { p.ScalingCap = 1 << 21 }, "scaling_cap 2097152")
	f(func(p *Problem) { p.CoreCapacity = 1 << 40 }, "must be at most")
	f(func(p *Problem) { p.BatchCap = 1 << 17 }, "must be at most")
	f(func(p *Problem) { p.Batches = []int{0} }, "batch size 0 must be in [1, 65536]")
	f(func(p *Problem) { p.Stages[0].Variants[0].Accuracy = 1e7 }, "accuracy 1e+07 must be in")
	f(func(p *Problem) { p.Stages[0].Variants[0].Cores = []int{-1} }, "cores -1 not profiled")
	f(func(p *Problem) {
		p.Current = []models.StageConfig{{Variant: "fast", Cores: 1, MaxBatch: 1, Replicas: 1 << 62}, {Variant: "only", Cores: 1, MaxBatch: 1, Replicas: 1}}
		p.Baseline = Switch
	}, "current replicas 4611686018427387904 must be in [1, 1048576]")
	f(func(p *Problem) {
		p.Current = []models.StageConfig{{Variant: "fast", Cores: 1 << 40, MaxBatch: 1, Replicas: 1}, {Variant: "only", Cores: 1, MaxBatch: 1, Replicas: 1}}
	}, "current cores 1099511627776 must be in [0, 1024]")
	f(func(p *Problem) {
		p.Current = []models.StageConfig{{Variant: "fast", Cores: 1, MaxBatch: -1, Replicas: 1}, {Variant: "only", Cores: 1, MaxBatch: 1, Replicas: 1}}
	}, "current max_batch -1 must be in [0, 65536]")
	f(func(p *Problem) {
		p.Accuracy = Multiply
		for len(p.Stages) < 100 {
			p.Stages = append(p.Stages, Step{Name: fmt.Sprint("b", len(p.Stages)), Profile: "b", Variants: []Variant{{Name: "only", Accuracy: 1e6}}})
		}
	}, "the objective overflows")
	f(func(p *Problem) { p.Accuracy = "max" }, "use sum, average or multiply")
	f(func(p *Problem) { p.Baseline = Scale }, "set current")
	f(func(p *Problem) { p.Stages[0].Variants[0].Name = "missing" }, "not in the profile")
	f(func(p *Problem) { p.Accuracy = Multiply; p.Stages[1].Variants[0].Accuracy = -41.28 }, "100−WER")
	f(func(p *Problem) { p.Stages[0].Variants[0].Cores = []int{2} }, "cores 2 not profiled")
	f(func(p *Problem) { p.Current = []models.StageConfig{{}} }, "1 stage configs for 2 stages")
}

func TestEstimatedBatchSizesAreMarked(t *testing.T) {
	p := tiny()
	p.Batches, p.SLA, p.Beta = []int{2}, 2*time.Second, 0
	pl, err := Solve(p, Exact{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !pl.Stages[0].Estimated || pl.Stages[0].Batch != 2 {
		t.Fatalf("plan %+v", pl.Stages[0])
	}
	p.Compat = true // measured batch sizes only: nothing left
	if _, err := Solve(p, Exact{}, nil); !errors.Is(err, ErrInfeasible) && (err == nil || !strings.Contains(err.Error(), "no profiled configuration")) {
		t.Fatalf("compat with unmeasured batches: %v", err)
	}
}

// TestExactAgreesWithBruteForce is the dumb-twin property test (STYLE §3.8
// bullet 32): on random small problems the exact solver's objective equals
// the brute-force enumerator's, both plans pass Check, and both agree on
// feasibility. optimizer/highs runs the same test with HiGHS as a third.
func TestExactAgreesWithBruteForce(t *testing.T) {
	n := 1000
	if testing.Short() {
		n = 200
	}
	r := rand.New(rand.NewPCG(1, 2))
	infeasible := exactAgreesWithBruteForce(t, n, func() *Problem { return RandomProblem(r, 1e5) })
	if infeasible < n/20 || infeasible > n*2/3 {
		t.Errorf("%d of %d instances infeasible: the generator does not probe the feasibility edge", infeasible, n)
	}
}

// TestExactAgreesWithBruteForceOnBoundaries is the same on BoundaryProblem:
// latency sums and capacities on the SLA and λ up to rounding (Tolerance),
// and accuracies below 1e-9.
func TestExactAgreesWithBruteForceOnBoundaries(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 2026))
	exactAgreesWithBruteForce(t, 3000, func() *Problem { return BoundaryProblem(r, 1e5) })
}

// exactAgreesWithBruteForce solves n problems of gen with both solvers,
// fails unless they agree, and returns how many were infeasible.
func exactAgreesWithBruteForce(t *testing.T, n int, gen func() *Problem) int {
	t.Helper()
	infeasible := 0
	for i := range n {
		p := gen()
		want, errB := Solve(p, BruteForce{}, nil)
		got, errE := Solve(p, Exact{}, nil)
		if errors.Is(errB, ErrInfeasible) != errors.Is(errE, ErrInfeasible) {
			t.Fatalf("instance %d: brute %v, exact %v", i, errB, errE)
		}
		if errB != nil && !errors.Is(errB, ErrInfeasible) {
			if errE == nil || errB.Error() != errE.Error() {
				t.Fatalf("instance %d: brute %v, exact %v", i, errB, errE)
			}
			continue
		}
		if errB != nil {
			infeasible++
		}
		if math.Abs(want.Objective-got.Objective) > 1e-9*max(1, math.Abs(want.Objective)) || want.Changes != got.Changes && !want.Fallback {
			t.Fatalf("instance %d: brute %v (%d changes), exact %v (%d changes)\nbrute %+v\nexact %+v", i, want.Objective, want.Changes, got.Objective, got.Changes, want, got)
		}
	}
	t.Logf("%d instances, %d infeasible", n, infeasible)
	return infeasible
}

// TestTinyAccuraciesRankAsLargeOnes: scaling every accuracy by 1e-12 does
// not change the plan (ties are relative to the objective's magnitude).
func TestTinyAccuraciesRankAsLargeOnes(t *testing.T) {
	for _, s := range solvers() {
		p := SyntheticProblem(2, 3)
		p.Beta, p.Gamma, p.ScalingCap = 0, 0, 20
		want, err := Solve(p, s, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := range p.Stages {
			for j := range p.Stages[i].Variants {
				p.Stages[i].Variants[j].Accuracy *= 1e-12
			}
		}
		got, err := Solve(p, s, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want.Stages {
			if got.Stages[i].Variant != want.Stages[i].Variant {
				t.Fatalf("%s: stage %d: %s with accuracies x 1e-12, %s without", s.Name(), i, got.Stages[i].Variant, want.Stages[i].Variant)
			}
		}
	}
}

func TestProblemDocumentsRoundTrip(t *testing.T) {
	p := tiny()
	p.Current = []models.StageConfig{{Variant: "fast", Cores: 1, MaxBatch: 1, Replicas: 1}, {Variant: "only", Cores: 1, MaxBatch: 1, Replicas: 1}}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var q Problem
	if err := json.Unmarshal(b, &q); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p, &q) {
		t.Fatalf("round trip changed the problem:\n%+v\n%+v", p, &q)
	}
	if err := json.Unmarshal([]byte(`{"sla_seconds":1,"slo":2}`), &q); err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Fatalf("unknown field: %v", err)
	}
	pl, err := Solve(p, Exact{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(pl)
	if !strings.Contains(string(out), `"latency_seconds":0.45`) || !strings.Contains(string(out), `"profiled_latency_seconds":0.4`) {
		t.Fatalf("plan JSON: %s", out)
	}
}

// A step that receives several items per request (the lines of a page)
// needs the replicas for λ·fanout items/s, and its batches fill that much
// faster; a fan-out below one (most photos have no face) needs fewer. Every
// solver agrees, and Check holds the plan to the same arithmetic.
func TestFanoutScalesTheStepsLoad(t *testing.T) {
	for _, s := range solvers() {
		p := tiny()
		p.Alpha, p.ArrivalRate = 0, 4 // cheapest plan: a at fast, b at only
		base, err := Solve(p, s, nil)
		if err != nil {
			t.Fatal(err)
		}
		p.Stages[1].Fanout = 20 // 80 items/s at b
		pl, err := Solve(p, s, nil)
		if err != nil {
			t.Fatalf("%s: %v", s.Name(), err)
		}
		b, b0 := pl.Stages[1], base.Stages[1]
		if b0.Batch != 1 || b0.Replicas != 1 || b.Batch != 4 || b.Replicas != 2 {
			t.Errorf("%s: step b at 4 requests/s: %+v; with 20 items per request: %+v, want 2 replicas at batch 4 (40 items/s each)", s.Name(), b0, b)
		}
		// A request's 20 rows run together: beyond the profiled batch 4,
		// five batches of 4 at its p99 (0.1 s).
		if b.ProfiledLatency != 500*time.Millisecond {
			t.Errorf("%s: step b's latency %s for 20 rows a request at batch 4, want 500ms", s.Name(), b.ProfiledLatency)
		}
		if want := 3 * time.Second / 80; (b.Queue - want).Abs() > time.Microsecond {
			t.Errorf("%s: queue %s at batch 4, want the fill time at 80 items/s, %s", s.Name(), b.Queue, want)
		}
		if pl.Stages[0] != base.Stages[0] {
			t.Errorf("%s: step a changed with b's fan-out: %+v → %+v", s.Name(), base.Stages[0], pl.Stages[0])
		}
		if math.Abs(b.Throughput-4) > 1e-9 { // requests/s: 2 × 40 items/s over 20 items per request
			t.Errorf("%s: step b's throughput %.6g requests/s, want 4", s.Name(), b.Throughput)
		}
		p.Stages[1].Fanout = 0.1 // a stage that rarely gets an item
		p.ArrivalRate = 150      // 15 items/s at b: one replica; a needs 8 at batch 4
		pl, err = Solve(p, s, nil)
		if err != nil {
			t.Fatalf("%s: %v", s.Name(), err)
		}
		if pl.Stages[1].Replicas != 1 {
			t.Errorf("%s: 15 items/s at b: %+v, want one replica", s.Name(), pl.Stages[1])
		}
		// Check applies the fan-out: a plan sized for λ alone fails it.
		p.Stages[1].Fanout, p.ArrivalRate = 20, 4
		bad := base
		bad.Stages = append([]StagePlan(nil), base.Stages...)
		if err := Check(p, bad); err == nil || !strings.Contains(err.Error(), "fanout") {
			t.Errorf("%s: a plan with one replica of b for 80 items/s passed the check: %v", s.Name(), err)
		}
	}
	p := tiny()
	for _, f := range []float64{-1, math.NaN(), math.Inf(1), 1e-4, 2e6} {
		p.Stages[1].Fanout = f
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "fanout") {
			t.Errorf("fanout %v: %v, want refused", f, err)
		}
	}
}
