package orchestrator

import (
	"cmp"
	"context"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/optimizer"
	"github.com/ipa-serving/ipa/profiles"
)

// twoVariants is a profile of stage s with variants a and b at 1 and 2
// cores, batches 1, 2, 4, 8, where a batch of k takes k·base seconds at one
// core (half at two) with p50 = p99, so the expected mean is the p50.
func twoVariants() *profiles.Profile {
	p := &profiles.Profile{Version: profiles.Version, Stages: []profiles.StageProfile{{Name: "s"}}}
	for v, base := range map[string]float64{"a": 0.01, "b": 0.004} {
		vp := profiles.VariantProfile{Name: v}
		for _, c := range []int{1, 2} {
			cfg := profiles.Config{Cores: c}
			for _, k := range []int{1, 2, 4, 8} {
				l := base * float64(k) / float64(c)
				cfg.Points = append(cfg.Points, profiles.Point{Batch: k, LatencyP50: l, LatencyP99: l, Throughput: float64(k) / l})
			}
			vp.Configs = append(vp.Configs, cfg)
		}
		p.Stages[0].Variants = append(p.Stages[0].Variants, vp)
	}
	if err := p.Validate(); err != nil {
		panic(err)
	}
	return p
}

// slow is n batches of rows on (variant, cores) that took f times the
// profile's time.
func slow(p *profiles.Profile, variant string, cores, rows int, n, f float64) BatchStats {
	pt, err := p.Lookup("s", variant, cores, rows)
	if err != nil {
		panic(err)
	}
	return BatchStats{Stage: "s", Variant: variant, Cores: cores, Rows: rows, Count: n, Seconds: n * pt.LatencyP50 * f}
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func within(got, want, tol float64) bool { return math.Abs(got-want) <= tol*want }

func TestCorrectorTakesTheFirstEvidenceWholeAndPlansWithIt(t *testing.T) {
	p := twoVariants()
	c := NewCorrector(p, CorrectionConfig{})
	if f := c.Factor(t0, "s", "a", 1, 4); f != 1 {
		t.Fatalf("without evidence the factor is %g, want 1", f)
	}
	seen := c.Observe(t0, []BatchStats{slow(p, "a", 1, 4, 200, 2)})
	if seen["s"] != 200 {
		t.Fatalf("seen %v, want 200 batches of stage s", seen)
	}
	if f := c.Factor(t0, "s", "a", 1, 4); !within(f, 2, 0.005) {
		t.Fatalf("200 batches at 2× the profile: factor %g, want 2", f)
	}
	got, err := c.Profile(t0).Lookup("s", "a", 1, 4)
	want, _ := p.Lookup("s", "a", 1, 4)
	if err != nil || !within(got.LatencyP50, 2*want.LatencyP50, 0.005) || !within(got.Throughput, want.Throughput/2, 0.005) {
		t.Fatalf("corrected point %+v, profiled %+v", got, want)
	}
	if again, _ := p.Lookup("s", "a", 1, 4); again != want {
		t.Fatal("the corrector changed the profile it corrects")
	}
}

func TestCorrectorIsBounded(t *testing.T) {
	p := twoVariants()
	for _, tc := range []struct {
		cfg      CorrectionConfig
		f, want  float64
		variants []string
	}{
		{CorrectionConfig{}, 10, DefaultCorrectMax, nil},
		{CorrectionConfig{}, 0.1, DefaultCorrectMin, nil},
		{CorrectionConfig{Min: 0.8, Max: 1.5}, 3, 1.5, nil},
		{CorrectionConfig{Min: 0.8, Max: 1.5}, 0.2, 0.8, nil},
	} {
		c := NewCorrector(p, tc.cfg)
		for i := range 5 { // repeated evidence does not push past the bound
			c.Observe(t0.Add(time.Duration(i)*10*time.Second), []BatchStats{slow(p, "a", 1, 2, 1000, tc.f)})
		}
		at := t0.Add(40 * time.Second)
		for _, v := range []string{"a", "b"} {
			lo, hi := cmp.Or(tc.cfg.Min, DefaultCorrectMin), cmp.Or(tc.cfg.Max, DefaultCorrectMax)
			if f := c.Factor(at, "s", v, 2, 8); !within(f, tc.want, 0.01) || f > hi || f < lo {
				t.Errorf("bounds %+v, evidence %g×: variant %s factor %g, want %g", tc.cfg, tc.f, v, f, tc.want)
			}
		}
	}
}

func TestCorrectorSmoothsAndWaitsForEnoughBatches(t *testing.T) {
	p := twoVariants()
	c := NewCorrector(p, CorrectionConfig{HalfLife: 5 * time.Minute})
	c.Observe(t0, []BatchStats{slow(p, "a", 1, 1, 500, 2)})
	t1 := t0.Add(10 * time.Second)
	c.Observe(t1, []BatchStats{slow(p, "a", 1, 1, 500, 1)})
	// The second measurement weighs 1 − 0.5·2^(−10/300) against the first.
	alpha := 1 - (1-correctSmoothing)*math.Exp2(-10.0/300)
	want := math.Exp2(1 - alpha)
	if f := c.Factor(t1, "s", "a", 1, 1); !within(f, want, 0.01) {
		t.Fatalf("2× then 1×: factor %g, want %g (smoothed)", f, want)
	}
	// Fewer than correctMinBatches batches are not a measurement yet, even a
	// wild one; they count once enough have come.
	t2 := t1.Add(10 * time.Second)
	c.Observe(t2, []BatchStats{slow(p, "a", 1, 1, 3, 4)})
	if f := c.Factor(t2, "s", "a", 1, 1); !within(f, want, 0.01) {
		t.Fatalf("3 batches at 4× moved the factor from %g to %g", want, f)
	}
	t3 := t2.Add(10 * time.Second)
	c.Observe(t3, []BatchStats{slow(p, "a", 1, 1, 3, 4)})
	if f := c.Factor(t3, "s", "a", 1, 1); f < want*1.2 {
		t.Fatalf("6 batches at 4× over two intervals left the factor at %g (was %g)", f, want)
	}
}

func TestCorrectorDecaysBackToTheProfile(t *testing.T) {
	p := twoVariants()
	const half = 2 * time.Minute
	c := NewCorrector(p, CorrectionConfig{HalfLife: half})
	c.Observe(t0, []BatchStats{slow(p, "a", 1, 4, 10000, 2)})
	for _, tc := range []struct {
		after time.Duration
		want  float64
	}{{0, 2}, {half, math.Sqrt2}, {2 * half, math.Pow(2, 0.25)}, {20 * half, 1}} {
		at := t0.Add(tc.after)
		for _, pt := range []struct {
			v        string
			cores, k int
		}{{"a", 1, 4}, {"a", 2, 1}, {"b", 1, 8}} {
			if f := c.Factor(at, "s", pt.v, pt.cores, pt.k); !within(f, tc.want, 0.005) {
				t.Errorf("%s after the evidence: %s at %d cores batch %d has factor %g, want %g", tc.after, pt.v, pt.cores, pt.k, f, tc.want)
			}
		}
	}
	// New evidence after a long silence is taken whole, not averaged with
	// the forgotten one.
	late := t0.Add(20 * half)
	c.Observe(late, []BatchStats{slow(p, "a", 1, 4, 10000, 3)})
	if f := c.Factor(late, "s", "a", 1, 4); !within(f, 3, 0.01) {
		t.Fatalf("3× after 20 half-lives of silence: factor %g, want 3", f)
	}
}

func TestCorrectorScalesUnmeasuredConfigurations(t *testing.T) {
	p := twoVariants()
	c := NewCorrector(p, CorrectionConfig{})
	c.Observe(t0, []BatchStats{slow(p, "a", 1, 4, 1000, 2)})
	// Other batch sizes and cores of a, and b (never ran), take a's factor.
	for _, pt := range []struct {
		v        string
		cores, k int
	}{{"a", 1, 1}, {"a", 2, 8}, {"b", 1, 1}, {"b", 2, 4}} {
		if f := c.Factor(t0, "s", pt.v, pt.cores, pt.k); !within(f, 2, 0.01) {
			t.Errorf("%s at %d cores batch %d: factor %g, want a's 2", pt.v, pt.cores, pt.k, f)
		}
	}
	// A batch size between measured ones is compared with the profile's
	// estimate there; then b runs as profiled: b is back near 1 while a
	// keeps its own, and the stage-wide factor lies between.
	t1 := t0.Add(10 * time.Second)
	c.Observe(t1, []BatchStats{slow(p, "b", 1, 3, 1000, 1)})
	fa, na := c.VariantFactor(t1, "s", "a")
	fb, nb := c.VariantFactor(t1, "s", "b")
	if !within(fa, 2, 0.01) || !within(fb, 1, 0.01) || na != 1000 || nb != 1000 {
		t.Fatalf("a ×%g (%g batches), b ×%g (%g batches); want a ×2, b ×1", fa, na, fb, nb)
	}
	sum := c.Summary(t1, "step", "s")
	if sum.Stage != "step" || sum.Factor <= 1.1 || sum.Factor >= 1.9 || sum.Evidence != 2000 || len(sum.Variants) != 2 || sum.Variants[0].Variant != "a" {
		t.Fatalf("summary %+v", sum)
	}
	if f := c.Factor(t1, "s", "b", 2, 8); !within(f, 1, 0.01) {
		t.Fatalf("b at 2 cores batch 8: factor %g, want b's 1", f)
	}
}

func TestCorrectorIgnoresWhatTheProfileCannotAnswer(t *testing.T) {
	p := twoVariants()
	c := NewCorrector(p, CorrectionConfig{})
	seen := c.Observe(t0, []BatchStats{
		{Stage: "s", Variant: "a", Cores: 3, Rows: 1, Count: 100, Seconds: 100},  // cores not profiled
		{Stage: "s", Variant: "a", Cores: 1, Rows: 64, Count: 100, Seconds: 100}, // batch beyond the profile
		{Stage: "s", Variant: "zz", Cores: 1, Rows: 1, Count: 100, Seconds: 100},
		{Stage: "other", Variant: "a", Cores: 1, Rows: 1, Count: 100, Seconds: 100},
		{Stage: "s", Variant: "a", Cores: 1, Rows: 1, Count: 100, Seconds: 0},
		{Stage: "s", Variant: "a", Cores: 1, Rows: 1, Count: -5, Seconds: 1},
		{Stage: "s", Variant: "a", Cores: 1, Rows: 1, Count: math.NaN(), Seconds: 1},
		{Stage: "s", Variant: "a", Cores: 1, Rows: 1, Count: math.Inf(1), Seconds: math.Inf(1)},
	})
	if len(seen) != 0 {
		t.Fatalf("seen %v", seen)
	}
	if f := c.Factor(t0, "s", "a", 1, 1); f != 1 {
		t.Fatalf("factor %g after unusable evidence", f)
	}
}

// The profile's p50 and p99 describe a log-normal; what the stages report
// is a mean, which is above the median by exp(σ²/2).
func TestCorrectorComparesMeansWithTheProfilesMean(t *testing.T) {
	p := &profiles.Profile{Version: 1, Stages: []profiles.StageProfile{{Name: "s", Variants: []profiles.VariantProfile{{Name: "a",
		Configs: []profiles.Config{{Cores: 1, Points: []profiles.Point{{Batch: 1, LatencyP50: 0.1, LatencyP99: 0.3, Throughput: 10}}}}}}}}}
	sigma := math.Log(3) / z99
	mean := 0.1 * math.Exp(sigma*sigma/2)
	c := NewCorrector(p, CorrectionConfig{})
	c.Observe(t0, []BatchStats{{Stage: "s", Variant: "a", Cores: 1, Rows: 1, Count: 1000, Seconds: 1000 * mean}})
	if f := c.Factor(t0, "s", "a", 1, 1); !within(f, 1, 1e-9) {
		t.Fatalf("a mean as profiled: factor %g, want 1", f)
	}
}

func TestBatchDeltasReportsIncreasesAndRestarts(t *testing.T) {
	s := func(rows int, n, sec float64) BatchStats {
		return BatchStats{Stage: "s", Variant: "a", Cores: 1, Rows: rows, Count: n, Seconds: sec}
	}
	d := NewBatchDeltas([]BatchStats{s(1, 10, 1)})
	if got := d.Deltas([]BatchStats{s(1, 10, 1)}); len(got) != 0 {
		t.Fatalf("no change: %+v", got)
	}
	got := d.Deltas([]BatchStats{s(1, 15, 1.5), s(2, 3, 0.6)})
	if len(got) != 2 || got[0] != s(1, 5, 0.5) || got[1] != s(2, 3, 0.6) {
		t.Fatalf("increases: %+v", got)
	}
	// A restarted stage counts from zero again.
	if got := d.Deltas([]BatchStats{s(1, 4, 0.4), s(2, 3, 0.6)}); len(got) != 1 || got[0] != s(1, 4, 0.4) {
		t.Fatalf("after a restart: %+v", got)
	}
}

// batchFeed is a BatchObserver the test fills.
type batchFeed struct {
	next []BatchStats
	err  error
}

func (b *batchFeed) Batches(context.Context) ([]BatchStats, error) {
	out := b.next
	b.next = nil
	return out, b.err
}

// The loop plans with the corrected profile: resnet50 measured at twice its
// profiled time cannot carry a load its profile says one replica holds, and
// the decision log and metrics say why.
func TestControllerPlansWithTheCorrectedProfile(t *testing.T) {
	prob := measuredProblem(t)
	prob.Stages[0].Variants = prob.Stages[0].Variants[3:] // resnet50 alone
	prob.Batches = []int{1}
	pt, err := prob.Profiles.Lookup("classify", "resnet50", 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	rate := 0.8 * pt.Throughput / 1.1 // one replica by the profile
	obs := &fakeObserver{rate: rate}
	feed := &batchFeed{}
	start := models.StageConfig{Variant: "resnet50", MaxBatch: 1, Replicas: 1, Cores: 1}
	act := &fakeActuator{cfg: []models.StageConfig{start}}
	cfg := Config{Interval: time.Second, History: 30, Margin: 1.1, Correct: true}
	c, err := New(cfg, prob, Options{Observer: obs, Batches: feed, Predictor: PredictorFunc(func(h []float64) float64 { return h[len(h)-1] }),
		Actuator: act, Solver: optimizer.Exact{}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d := c.Step(context.Background())
	if len(d.Changes) != 0 || d.Plan.Stages[0].Replicas != 1 || len(d.Corrections) != 1 || d.Corrections[0].Factor != 1 {
		t.Fatalf("no evidence yet: %+v", d)
	}
	feed.next = []BatchStats{{Stage: "classify", Variant: "resnet50", Cores: 1, Rows: 1, Count: 50, Seconds: 50 * 2 * pt.LatencyP50}}
	d = c.Step(context.Background())
	if d.Plan.Stages[0].Replicas != 2 || act.cfg[0].Replicas != 2 {
		t.Fatalf("resnet50 measured at 2× its profile at %.1f/s: plan %+v", rate, d.Plan.Stages[0])
	}
	sc := d.Corrections[0]
	if sc.Stage != "classify" || sc.New != 50 || !within(sc.Factor, 2, 0.1) || len(sc.Variants) != 1 || !within(sc.Variants[0].Factor, 2, 0.01) {
		t.Fatalf("corrections %+v", d.Corrections)
	}
	var b strings.Builder
	c.m.set.WritePrometheus(&b)
	gauge := func(name string) float64 {
		for line := range strings.Lines(b.String()) {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				if err == nil {
					return f
				}
			}
		}
		t.Fatalf("no %s in\n%s", name, b.String())
		return 0
	}
	if f := gauge(`ipa_controller_profile_correction{stage="classify",variant="resnet50"}`); !within(f, 2, 0.01) {
		t.Fatalf("correction gauge %g, want 2", f)
	}
	if n := gauge(`ipa_controller_profile_evidence_batches{stage="classify",variant="resnet50"}`); n != 50 {
		t.Fatalf("evidence gauge %g, want 50", n)
	}
	// Measurements that cannot be read leave the correction as it was.
	feed.err = context.DeadlineExceeded
	d = c.Step(context.Background())
	if !strings.Contains(d.CorrectionError, "deadline") || d.Error != "" || d.Plan.Stages[0].Replicas != 2 {
		t.Fatalf("unreadable measurements: %+v", d)
	}
}

func TestConfigValidatesTheCorrection(t *testing.T) {
	ok := Config{Interval: time.Second, History: 1, Margin: 1, Correct: true}
	if err := ok.Validate(); err != nil {
		t.Fatalf("zero correction settings (defaults): %v", err)
	}
	for _, bad := range []Config{
		{CorrectHalfLife: -time.Second}, {CorrectMin: 2}, {CorrectMin: -1}, {CorrectMax: 0.5}, {CorrectMax: 1000}, {CorrectMax: math.NaN()},
	} {
		bad.Interval, bad.History, bad.Margin = time.Second, 1, 1
		if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "--controller.correct") {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}
