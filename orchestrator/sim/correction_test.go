package sim_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/dataplane/loadgen"
	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/optimizer"
	"github.com/ipa-serving/ipa/orchestrator"
	"github.com/ipa-serving/ipa/orchestrator/predict"
	"github.com/ipa-serving/ipa/orchestrator/sim"
	"github.com/ipa-serving/ipa/orchestrator/sim/simtest"
	"github.com/ipa-serving/ipa/profiles"
)

// staleRun simulates the classify pipeline at 15 requests/s for three
// minutes, planned with a profile 2× too optimistic (every latency halved)
// while the stages take the measured times. only, if set, offers that
// variant alone, starting with one replica of it.
func staleRun(t *testing.T, only string, correct bool, log *bytes.Buffer) (*sim.Result, sim.Pipeline) {
	t.Helper()
	pipe := simtest.Classify(t, "../..")
	truth := pipe.Profiles
	pipe.Profiles = truth.Scaled(profiles.Uniform(0.5))
	if only != "" {
		for _, v := range pipe.Stages[0].Variants {
			if v.Name == only {
				pipe.Stages[0].Variants = []optimizer.Variant{v}
			}
		}
		pipe.Steps[0].Initial = models.StageConfig{Variant: only, MaxBatch: 1, Replicas: 1, Cores: 1}
	}
	load, err := loadgen.ParseSteps("180s@15")
	if err != nil {
		t.Fatal(err)
	}
	opt := sim.Options{Pipeline: pipe, TrueProfile: truth, Load: load, Seed: 7, StartupDelay: 5 * time.Second,
		Adapt: &sim.Adaptation{Config: orchestrator.Config{Interval: 10 * time.Second, History: 120, Margin: 1.1, Correct: correct},
			Problem: pipe.Problem(1, 0.05, 16, 8), Solver: optimizer.Exact{}, Predictor: predict.Reactive{}}}
	if log != nil {
		opt.Decisions = log
	}
	res, err := sim.Run(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	return res, pipe
}

// attainment is the share of the requests sent in each interval that were
// answered within the SLA, in percent, and over [from, end) intervals.
func attainment(res *sim.Result, sla, interval time.Duration, from int) (per []float64, after float64) {
	var ok, n []int
	for _, r := range res.Load.Records {
		i := int(r.Sent / interval)
		for len(n) <= i {
			ok, n = append(ok, 0), append(n, 0)
		}
		n[i]++
		if r.Kind == loadgen.Succeeded && r.Latency <= sla {
			ok[i]++
		}
	}
	okAfter, nAfter := 0, 0
	for i := range n {
		per = append(per, 100*float64(ok[i])/float64(max(n[i], 1)))
		if i >= from {
			okAfter += ok[i]
			nAfter += n[i]
		}
	}
	return per, 100 * float64(okAfter) / float64(max(nAfter, 1))
}

func fmtPercents(ps []float64) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, " %.0f", p)
	}
	return b.String()
}

// TestCorrectionRecoversTheSLAFromAStaleProfile is the test in
// virtual time: resnet50 is profiled twice as fast as it runs, and at
// 15 requests/s the stale profile says one replica holds the load (23.6/s
// profiled, 11.8/s measured). Without correction the controller keeps one
// replica and the SLA is missed for about half of the requests; with it, the
// first interval's batches show the factor 2, the plan doubles the replicas,
// and from the third interval on (the first ran before any decision, the
// second loads the new replica) every interval meets the SLA for ≥ 99 %.
func TestCorrectionRecoversTheSLAFromAStaleProfile(t *testing.T) {
	const interval = 10 * time.Second
	off, pipe := staleRun(t, "resnet50", false, nil)
	offPer, offAll := attainment(off, pipe.SLA, interval, 0)
	on, _ := staleRun(t, "resnet50", true, nil)
	onPer, onAll := attainment(on, pipe.SLA, interval, 0)
	// The first interval at which every later one meets 99 %.
	recovered := len(onPer)
	for i := len(onPer) - 1; i >= 0 && onPer[i] >= 99; i-- {
		recovered = i
	}
	_, onAfter := attainment(on, pipe.SLA, interval, recovered)
	t.Logf("SLA attainment per %s interval without correction:%s (%.1f%% overall)", interval, fmtPercents(offPer), offAll)
	t.Logf("with correction:%s (%.1f%% overall, %.2f%% from interval %d on)", fmtPercents(onPer), onAll, onAfter, recovered+1)
	for _, d := range off.Decisions {
		if d.Plan == nil || d.Plan.Stages[0].Replicas != 1 || len(d.Corrections) != 0 {
			t.Fatalf("without correction: a decision planned %+v with corrections %+v; want one replica, as the stale profile says", d.Plan, d.Corrections)
		}
	}
	if offAll > 90 {
		t.Fatalf("without correction %.1f%% of the requests met the SLA: the stale profile is not stale enough for this test", offAll)
	}
	if recovered > 2 || onAfter < 99 {
		t.Fatalf("with correction attainment reached ≥ 99%% for good only from interval %d (of %d): %s", recovered+1, len(onPer), fmtPercents(onPer))
	}
	last := on.Decisions[len(on.Decisions)-1]
	if r := last.Plan.Stages[0].Replicas; r != 2 {
		t.Fatalf("with correction the plan ends at %d replicas, want 2", r)
	}
	c := last.Corrections[0]
	if len(c.Variants) != 1 || c.Variants[0].Variant != "resnet50" || c.Variants[0].Factor < 1.9 || c.Variants[0].Factor > 2.1 || c.Evidence < 1000 {
		t.Fatalf("the last decision's correction is %+v; want resnet50 ×2 on its batches", c)
	}
}

// With the whole ladder offered, the controller starts on squeezenet: its
// batches alone show the stage twice as slow as profiled, and the variants
// that never ran take that stage-wide factor, so the plan never moves to
// the variant the stale profile favours (resnet50 ×1), which would miss the
// SLA for half of the requests as it does without correction.
func TestCorrectionScalesVariantsThatNeverRan(t *testing.T) {
	const interval = 10 * time.Second
	off, pipe := staleRun(t, "", false, nil)
	offPer, offAll := attainment(off, pipe.SLA, interval, 0)
	var log bytes.Buffer
	on, _ := staleRun(t, "", true, &log)
	onPer, onAll := attainment(on, pipe.SLA, interval, 0)
	t.Logf("without correction:%s (%.1f%%); with:%s (%.2f%%)", fmtPercents(offPer), offAll, fmtPercents(onPer), onAll)
	if offAll > 90 || onAll < 99 {
		t.Fatalf("attainment without correction %.1f%%, with %.2f%%; want > 90 %% missed and ≥ 99 %% met", offAll, onAll)
	}
	first := on.Decisions[0]
	if c := first.Corrections[0]; len(c.Variants) != 1 || c.Variants[0].Variant != "squeezenet" || c.Factor < 1.7 {
		t.Fatalf("the first decision's correction is %+v; want squeezenet's batches to set the stage-wide factor", c)
	}
	if sp := first.Plan.Stages[0]; sp.Variant == "resnet50" && sp.Replicas == 1 {
		t.Fatalf("the first corrected plan is %+v, the stale profile's", sp)
	}
	// The same seed gives the same decision log, corrections included.
	var again bytes.Buffer
	staleRun(t, "", true, &again)
	if !bytes.Equal(log.Bytes(), again.Bytes()) || !strings.Contains(log.String(), `"corrections":[{"stage":"classify","factor":`) {
		t.Fatalf("two runs differ, or the log has no corrections:\n%.600s", log.String())
	}
}
