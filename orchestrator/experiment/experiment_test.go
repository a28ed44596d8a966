package experiment

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
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
)

const tiny = `
name: tiny
seed: 5
core_capacity: 6
pipelines:
  - name: classify
windows:
  - name: step
    steps: 40s@4,40s@30,40s@4
  - name: flat
    rate: 10
    duration: 60s
systems: [ipa, "ipa:resource", fa2-low, fa2-high, "rim:2", "static:resnet50/1/2/1", "off"]
`

func testEnv(t testing.TB) Env {
	t.Helper()
	pipe := simtest.Classify(t, "../..")
	return Env{
		Resolve: func(string, string) (sim.Pipeline, error) { return pipe, nil },
		Solvers: map[string]optimizer.Solver{"exact": optimizer.Exact{}},
		Predictor: func(string) (orchestrator.Predictor, error) {
			return predict.Default()
		},
	}
}

// TestExperimentRunsTheMatrix runs a tiny file twice, sequentially and in
// parallel: the same results, every system behaving as its baseline says,
// and every output file written.
func TestExperimentRunsTheMatrix(t *testing.T) {
	f, err := Parse(strings.NewReader(tiny))
	if err != nil {
		t.Fatal(err)
	}
	var outs [][]byte
	var runs []*Run
	for _, par := range []int{1, 4} {
		env := testEnv(t)
		env.Parallel = par
		calls := 0
		env.Progress = func(done, total int) {
			calls++
			if done != calls || total != 14 {
				t.Errorf("progress %d/%d at call %d", done, total, calls)
			}
		}
		dir := t.TempDir()
		if runs, err = Execute(context.Background(), f, env, dir); err != nil {
			t.Fatal(err)
		}
		files, err := WriteAll(dir, "svg", f, runs)
		if err != nil {
			t.Fatal(err)
		}
		if len(files) != 4 {
			t.Fatalf("files %v", files)
		}
		b, err := os.ReadFile(filepath.Join(dir, "summary.json"))
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, b)
		for _, name := range []string{"decisions.jsonl", "load-report.json", "records.jsonl"} {
			if st, err := os.Stat(filepath.Join(dir, "runs", "classify", "step", "rim_2", name)); err != nil || st.Size() == 0 {
				t.Fatalf("run file %s: %v", name, err)
			}
		}
	}
	if !bytes.Equal(outs[0], outs[1]) {
		t.Fatal("sequential and parallel runs differ")
	}
	if len(runs) != 14 {
		t.Fatalf("%d runs for 1 pipeline × 2 windows × 7 systems", len(runs))
	}
	for _, r := range runs {
		if r.Row.Requests == 0 || len(r.Sim.Decisions) == 0 {
			t.Fatalf("%s/%s: empty run", r.Window, r.System)
		}
		first := r.Sim.Decisions[0].Applied[0]
		for _, d := range r.Sim.Decisions {
			a := d.Applied[0]
			switch r.System {
			case "fa2-low", "fa2-high":
				if a.Variant != first.Variant {
					t.Fatalf("%s switched variant %s → %s", r.System, first.Variant, a.Variant)
				}
			case "rim:2":
				if a.Replicas != 2 {
					t.Fatalf("rim:2 runs %d replicas", a.Replicas)
				}
			case "static:resnet50/1/2/1", "off":
				if len(d.Changes) > 0 || a != first {
					t.Fatalf("%s changed its configuration: %+v", r.System, d.Changes)
				}
			}
		}
		switch r.System {
		case "fa2-low":
			if first.Variant != "squeezenet" {
				t.Fatalf("fa2-low pinned %s, want the lightest (squeezenet)", first.Variant)
			}
		case "fa2-high":
			if first.Variant != "resnet50" {
				t.Fatalf("fa2-high pinned %s, want the most accurate within the SLA (resnet50)", first.Variant)
			}
		case "static:resnet50/1/2/1":
			if first.Variant != "resnet50" || first.Replicas != 2 {
				t.Fatalf("static runs %+v", first)
			}
		}
	}
	var md bytes.Buffer
	if err := WriteMarkdown(&md, Rows(runs)); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", md.String())
}

func TestExperimentFileErrors(t *testing.T) {
	for _, c := range []struct{ file, want string }{
		{"core_capacity: 4\npipelines: [{name: a}]\nwindows: [{name: w, rate: 1}]\nsystems: [ipa]", "needs a duration"},
		{"pipelines: [{name: a}]\nwindows: [{name: w, steps: 1s@1}]\nsystems: [ipa]", "core_capacity"},
		{"core_capacity: 4\npipelines: [{name: a}]\nwindows: [{name: w, steps: 1s@1}]\nsystems: [nope]", "unknown system"},
		{"core_capacity: 4\npipelines: [{name: a}]\nwindows: [{name: w, steps: 1s@1}]\nsystems: [ipa]\nbogus: 1", "bogus"},
		{"core_capacity: 4\npipelines: [{name: a}]\nwindows: [{name: w, steps: 1s@1, rate: 2, duration: 1s}]\nsystems: [ipa]", "exactly one"},
		{"core_capacity: 4\nmode: fidelity\nfidelity: {plan_agreement: 2}\npipelines: [{name: a}]\nwindows: [{name: w, steps: 1s@1}]\nsystems: [ipa]", "plan_agreement"},
		{"core_capacity: 4\nmode: real\npipelines: [{name: a}]\nwindows: [{name: w, steps: 1s@1}]\nsystems: [ipa]", ""},
	} {
		f, err := Parse(strings.NewReader(c.file))
		if c.want == "" {
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Execute(context.Background(), f, Env{}, ""); err == nil || !strings.Contains(err.Error(), "not available") {
				t.Fatalf("mode real: %v", err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%q: got %v, want %q", c.file, err, c.want)
		}
	}
}

// BenchmarkPaperGrid runs experiments/paper.yaml (5 systems × 4 windows of
// the trace, classify) with every core, reading the trace included and
// writing nothing. Target: ≤ 60 s on 2 cores.
func BenchmarkPaperGrid(b *testing.B) {
	fh, err := os.Open("../../experiments/paper.yaml")
	if err != nil {
		b.Fatal(err)
	}
	f, err := Parse(fh)
	fh.Close()
	if err != nil {
		b.Fatal(err)
	}
	// testEnv resolves every pipeline to classify: keep the file's classify
	// (its others, as ocr's fan-out, name steps classify has not).
	f.Pipelines = slices.DeleteFunc(f.Pipelines, func(p PipelineRef) bool { return p.Name != "classify" })
	if len(f.Pipelines) != 1 {
		b.Fatalf("experiments/paper.yaml has no classify pipeline")
	}
	env := testEnv(b)
	env.Trace = loadgen.TwitterTrace // the built-in trace, a name (it always skipped when it was stat'ed as a path)
	for b.Loop() {
		if _, err := Execute(context.Background(), f, env, ""); err != nil {
			b.Fatal(err)
		}
	}
}

// TestFidelityPlumbing runs mode fidelity with a "machine" that is the
// simulator itself, driven only by what RealRun carries and read back from
// the files it writes: every run must then agree exactly with its
// simulation. A setting RealRun dropped (a system's initial configuration,
// its baseline, weights, seed, arrivals) would show as a difference. A
// machine twice as slow must be reported outside the tolerances.
func TestFidelityPlumbing(t *testing.T) {
	f, err := Parse(strings.NewReader(strings.Replace(tiny, "name: classify", "name: classify\n    body: page.png", 1) + "mode: fidelity\n"))
	if err != nil {
		t.Fatal(err)
	}
	startup, _ := f.startup()
	for _, slow := range []float64{1, 2} {
		env := testEnv(t)
		calls := 0
		fake := simulatedReal(env, startup, slow)
		env.Real = func(ctx context.Context, r RealRun) error {
			calls++
			return fake(ctx, r)
		}
		dir := t.TempDir()
		runs, err := Execute(context.Background(), f, env, dir)
		if err != nil {
			t.Fatal(err)
		}
		if calls != 14 || len(runs) != 42 { // simulated, real, replayed
			t.Fatalf("%d real runs, %d runs", calls, len(runs))
		}
		// Each simulated twin starts when its real run's load began, so its
		// router counts the same wall-clock seconds.
		for _, r := range runs {
			if !r.Start.Equal(realStart) {
				t.Errorf("%s/%s/%s (%s) began at %v, want the real run's %v", r.Pipeline, r.Window, r.System, r.Mode, r.Start, realStart)
			}
		}
		rows, err := Compare(runs, f.Fidelity)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if slow == 1 && (math.Abs(r.P99Err) > 1e-4 || // records keep microseconds
				r.ViolationsPP != 0 || r.CostErr != 0 || r.PlanAgreement != 1 || r.Outside != "" ||
				r.SimRequests != r.RealRequests) {
				t.Errorf("the same run differs from its simulation: %+v", r)
			}
			if slow == 2 && (r.P99Err > -0.49 || !strings.Contains(r.Outside, "p99")) {
				t.Errorf("a machine twice as slow is not reported: %+v", r)
			}
			// The real run's own plans, replayed: the simulated run itself
			// when the real run is one, half as slow as a machine twice as
			// slow.
			if !r.Replayed || slow == 1 && (math.Abs(r.ReplayP99Err) > 1e-4 || r.ReplayViolationsPP != 0) ||
				slow == 2 && r.ReplayP99Err > -0.49 {
				t.Errorf("slow %g: the real plans replayed: %+v", slow, r)
			}
		}
		// --reuse-real: the real runs read back, none run again, the same
		// comparison; a file whose windows differ cannot reuse them.
		realRun := env.Real
		env.Real, env.ReuseReal = nil, true
		again, err := Execute(context.Background(), f, env, dir)
		if err != nil {
			t.Fatal(err)
		}
		if rows2, err := Compare(again, f.Fidelity); err != nil || !reflect.DeepEqual(rows, rows2) {
			t.Errorf("reusing the real runs: %v\n%+v\nwant\n%+v", err, rows2, rows)
		}
		f2 := *f
		f2.Windows = slices.Clone(f.Windows)
		f2.Windows[1].Rate *= 3 // flat
		_, err = Execute(context.Background(), &f2, env, dir)
		if err == nil || !strings.Contains(err.Error(), "cannot reuse the real run") {
			t.Errorf("reusing real runs of another window: %v, want cannot reuse", err)
		}
		// --reuse-real with a real runner at hand runs what has no
		// directory yet (a resumed file), and only that.
		if err := os.RemoveAll(filepath.Join(dir, "real", "runs", "classify", "flat", "off")); err != nil {
			t.Fatal(err)
		}
		env.Real, calls = realRun, 0
		resumed, err := Execute(context.Background(), f, env, dir)
		if err != nil || calls != 1 {
			t.Fatalf("resuming with one real run missing: %d real runs, %v; want 1", calls, err)
		}
		if rows2, err := Compare(resumed, f.Fidelity); err != nil || !reflect.DeepEqual(rows, rows2) {
			t.Errorf("resumed: %v\n%+v\nwant\n%+v", err, rows2, rows)
		}
	}
}

// simulatedReal is a real runner that simulates each run on env's
// pipeline, its latencies times slow, and writes it as a real run would.
// realStart is when simulatedReal's loads begin: 0.4 s into a second, as a
// real load begins anywhere in one.
var realStart = sim.Epoch.Add(400 * time.Millisecond)

func simulatedReal(env Env, startup startup, slow float64) func(context.Context, RealRun) error {
	return func(ctx context.Context, r RealRun) error {
		pipe, _ := env.Resolve(r.Pipeline, r.Profile)
		pipe.Steps = append([]sim.Step(nil), pipe.Steps...)
		for i, s := range r.Initial {
			if s.Step != pipe.Steps[i].Name {
				return fmt.Errorf("step %d is %q, want %q", i, s.Step, pipe.Steps[i].Name)
			}
			pipe.Steps[i].Initial = s.Config
		}
		if r.Model != pipe.Name || r.Body != "page.png" || r.SLA != pipe.SLA {
			return fmt.Errorf("run %+v", r)
		}
		problem := pipe.Problem(r.Alpha, r.Beta, r.ScalingCap, r.CoreCapacity)
		problem.Baseline = r.Baseline
		pred, err := env.Predictor(r.Predictor)
		if err != nil {
			return err
		}
		proc, err := loadgen.ParseProcess(r.Arrivals)
		if err != nil {
			return err
		}
		var log bytes.Buffer
		res, err := sim.Run(ctx, startup.options(sim.Options{Pipeline: pipe, Load: r.Load, Process: proc, Seed: r.Seed,
			Adapt: &sim.Adaptation{Config: r.Loop, Problem: problem, Solver: env.Solvers[r.Solver], Predictor: pred,
				Off: r.Baseline == optimizer.Fixed},
			Decisions: &log, Start: realStart}))
		if err != nil {
			return err
		}
		for i := range res.Load.Records {
			res.Load.Records[i].Latency = time.Duration(float64(res.Load.Records[i].Latency) * slow)
		}
		return writeRun(r.Dir, res, log.Bytes())
	}
}

// TestProbesCalibrateEachSimulatedTwin: with a probe, mode fidelity runs
// the real side first, each run after a light run of every variant it may
// serve (ipa: each offered one; fa2-low: its pinned one, longer, so that
// its glue is measured in glueRequests), and each simulated twin takes
// its engines from its own probes: a machine three
// times slower in its probes is three times slower in its simulation. A
// real run reused without its probes is an error naming what to do.
func TestProbesCalibrateEachSimulatedTwin(t *testing.T) {
	const file = `
name: probed
mode: fidelity
seed: 3
core_capacity: 6
pipelines:
  - name: classify
    body: page.png
windows:
  - name: flat
    rate: 4
    duration: 60s
systems: [ipa, fa2-low]
probe: {rate: 2, duration: 80s}
`
	f, err := Parse(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	startup, _ := f.startup()
	env := testEnv(t)
	pipe, _ := env.Resolve("classify", "")
	var offered []string
	for _, v := range pipe.Stages[0].Variants {
		offered = append(offered, v.Name)
	}
	fake := simulatedReal(env, startup, 1)
	var calls []string
	const slow = 3
	env.Real = func(ctx context.Context, r RealRun) error {
		calls = append(calls, r.Name)
		if !strings.Contains(r.Name, " probe ") {
			if r.Probe {
				return fmt.Errorf("run %s marked a probe", r.Name)
			}
			return fake(ctx, r)
		}
		// ipa's probes send 80 s × 2/s × each offered variant (over
		// glueRequests together); fa2-low's one probe lasts until it sent
		// glueRequests.
		seconds := 80
		if strings.Contains(r.Name, "fa2-low") {
			seconds = glueRequests / 2
		}
		c := r.Initial[0].Config
		if !r.Probe || r.Baseline != optimizer.Fixed || len(r.Load) != seconds || r.Load[0] != 2 || c.MaxBatch != 1 || c.Replicas != 1 ||
			filepath.Base(r.Dir) != "classify-"+c.Variant || filepath.Base(filepath.Dir(r.Dir)) != ProbeDir {
			return fmt.Errorf("probe %+v", r)
		}
		pt, err := pipe.Profiles.Lookup("classify", c.Variant, c.Cores, 1)
		if err != nil {
			return err
		}
		lo := slow * pt.LatencyP50
		return os.WriteFile(filepath.Join(r.Dir, MetricsFile), fmt.Appendf(nil,
			"ipa_stage_batch_engine_seconds_bucket{stage=\"classify\",variant=%q,cores=\"%d\",rows=\"1\",vmrange=\"%.6e...%.6e\"} 150\n",
			c.Variant, c.Cores, lo, lo*1.001), 0o644)
	}
	dir := t.TempDir()
	runs, err := Execute(context.Background(), f, env, dir)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, v := range offered {
		want = append(want, "classify/flat/ipa probe classify/"+v)
	}
	want = append(want, "classify/flat/ipa")
	fa2, _, _ := configure(pipe, System{Kind: "fa2-low"}, nil)
	want = append(want, "classify/flat/fa2-low probe classify/"+fa2.Steps[0].Initial.Variant, "classify/flat/fa2-low")
	if !slices.Equal(calls, want) {
		t.Fatalf("real runs\n%q\nwant\n%q", calls, want)
	}
	rows, err := Compare(runs, f.Fidelity)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		// The real side ran at the profile's speed, the twin at its probes'.
		if r.P99Err < slow-1.5 {
			t.Errorf("%s/%s: sim p99 ×%.2f of the real one, want about ×%d (its probes)", r.Window, r.System, 1+r.P99Err, slow)
		}
	}
	// The simulated controller corrects its profile as ipa local's does
	// (on by default), by what its slower stages measure.
	ds, _, _, _, err := ReadRun(filepath.Join(dir, "sim", "runs", "classify", "flat", "ipa"))
	if err != nil || len(ds) == 0 {
		t.Fatalf("the simulated run's decisions: %v, %d", err, len(ds))
	}
	if last := ds[len(ds)-1]; len(last.Corrections) != 1 || last.Corrections[0].Factor < 2 {
		t.Errorf("the simulated controller's last corrections %+v; want the stage ~%d× slower than its profile", last.Corrections, slow)
	}
	env.Real, env.ReuseReal = nil, true
	if again, err := Execute(context.Background(), f, env, dir); err != nil {
		t.Fatal(err)
	} else if rows2, err := Compare(again, f.Fidelity); err != nil || !reflect.DeepEqual(rows, rows2) {
		t.Errorf("reusing the probed runs: %v\n%+v\nwant\n%+v", err, rows2, rows)
	}
	os.Remove(filepath.Join(dir, "real", "runs", "classify", "flat", "fa2-low", ProbeDir, "classify-"+fa2.Steps[0].Initial.Variant, MetricsFile))
	if _, err := Execute(context.Background(), f, env, dir); err == nil || !strings.Contains(err.Error(), "has no probe of classify/") {
		t.Errorf("a reused run without its probe: %v", err)
	}
	for _, bad := range [][2]string{{"mode: fidelity", "mode: sim"}, {"duration: 80s", "duration: 30s"}, {"rate: 2,", "rate: 0,"}, {", duration: 80s", ""}} {
		if _, err := Parse(strings.NewReader(strings.Replace(file, bad[0], bad[1], 1))); err == nil || !strings.Contains(err.Error(), "probe") {
			t.Errorf("%q for %q: %v, want an error about the probe", bad[1], bad[0], err)
		}
	}
}

// simulate parses file, lets edit change it (may be nil), and runs it in
// the simulator with testEnv.
func simulate(t *testing.T, file string, edit func(*File)) []*Run {
	t.Helper()
	f, err := Parse(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(f)
	}
	runs, err := Execute(context.Background(), f, testEnv(t), "")
	if err != nil {
		t.Fatal(err)
	}
	return runs
}

// TestRunnerStartsReplicasAsTheProfileSays: with startup_delay local, a
// simulated run loads new replicas for the load_seconds of the profile, as
// ipa simulate does (not the 5.2 s fallback, which the profiles' lazy loading
// made 2–10 times too long); with a duration, for that long.
func TestRunnerStartsReplicasAsTheProfileSays(t *testing.T) {
	const file = `
name: startup
seed: 3
core_capacity: 8
pipelines:
  - name: classify
windows:
  - name: step
    steps: 30s@4,90s@300
systems: [fa2-low]
`
	latencies := func(startup string) []time.Duration {
		t.Helper()
		runs := simulate(t, file+"startup_delay: "+startup+"\n", nil)
		var out []time.Duration
		for _, r := range runs[0].Sim.Load.Records {
			out = append(out, r.Latency)
		}
		return out
	}
	local, fallback, slow := latencies("local"), latencies(sim.LocalStartupDelay.String()), latencies("30s")
	if slices.Equal(local, fallback) {
		t.Error("startup_delay local ran like the 5.2 s fallback: the profile's load_seconds were not used")
	}
	if slices.Equal(fallback, slow) {
		t.Fatal("a 5.2 s and a 30 s start-up gave the same run: the window starts no replica, so it tests nothing")
	}
}

// A pipeline's fanout reaches the simulated steps (and so the controller,
// which measures it); a step the pipeline lacks is an error.
func TestExperimentFanout(t *testing.T) {
	const file = `
name: fan
core_capacity: 8
pipelines:
  - name: classify
    fanout: {classify: 3}
windows:
  - name: flat
    rate: 5
    duration: 30s
systems: [ipa]
`
	ds := simulate(t, file, nil)[0].Decisions
	if last := ds[len(ds)-1]; len(last.Fanout) != 1 || last.Fanout[0] != 3 {
		t.Errorf("the last decision planned for fanout %v, want [3]", last.Fanout)
	}
	f, _ := Parse(strings.NewReader(strings.Replace(file, "{classify: 3}", "{lines: 3}", 1)))
	if _, err := Execute(context.Background(), f, testEnv(t), ""); err == nil || !strings.Contains(err.Error(), `no step "lines"`) {
		t.Errorf("fanout of a step the pipeline lacks: %v", err)
	}
}

// A calibration (a real run's decision log) makes the simulated stages run
// as slow as its controller's corrections say, per variant: twice the
// profile's times for the variant it measured so, the step's factor for
// the others; the simulated controller still plans with the profile.
func TestCalibrationScalesTheSimulatedStages(t *testing.T) {
	const file = `
name: cal
core_capacity: 8
pipelines:
  - name: classify
windows:
  - name: flat
    rate: 4
    duration: 60s
systems: ["static:resnet50/1/2/1"]
`
	p50 := func(calibration ...string) float64 {
		t.Helper()
		runs := simulate(t, file, func(f *File) { f.Calibration = calibration })
		return runs[0].Sim.Load.Report().Latency.P50
	}
	dir := t.TempDir()
	log := filepath.Join(dir, DecisionsFile)
	line := `{"time":"2026-01-01T00:00:10Z","glue_seconds":0.02,"corrections":[{"stage":"classify","factor":1.5,"evidence_batches":100,"variants":[{"variant":"resnet50","factor":2,"evidence_batches":100}]}]}`
	if err := os.WriteFile(log, []byte(line+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base, slow := p50(), p50(dir) // a run's directory, or its log
	// resnet50 twice as slow, plus the 20 ms of glue it measured.
	if r := (slow - 0.02) / base; r < 1.8 || r > 2.2 {
		t.Errorf("p50 %.3f s calibrated at ×2 for resnet50 with 20 ms of glue, %.3f s as profiled: ratio %.2f, want about 2", slow, base, r)
	}
	// A second log with less evidence for resnet50 does not move it, in
	// either order; its glue times join the median.
	weak := filepath.Join(t.TempDir(), "weak.jsonl")
	lines := `{"time":"2026-01-01T00:00:10Z","glue_seconds":0.02}` + "\n" +
		`{"time":"2026-01-01T00:00:20Z","glue_seconds":0.02,"corrections":[{"stage":"classify","factor":1,"evidence_batches":10,"variants":[{"variant":"resnet50","factor":1,"evidence_batches":10}]}]}` + "\n"
	if err := os.WriteFile(weak, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	if a, b := p50(log, weak), p50(weak, log); a != slow || b != slow {
		t.Errorf("p50 with a weaker second log: %.4f and %.4f s (both orders), want %.4f as with the first alone", a, b, slow)
	}
	if err := os.WriteFile(log, []byte(`{"time":"2026-01-01T00:00:10Z"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, _ := Parse(strings.NewReader(file))
	f.Calibration = Paths{log}
	if _, err := Execute(context.Background(), f, testEnv(t), ""); err == nil || !strings.Contains(err.Error(), "no profile correction") {
		t.Errorf("a calibration without corrections or glue: %v", err)
	}
	// In the file: one log, or a list.
	for yml, want := range map[string]Paths{"calibration: a.jsonl": {"a.jsonl"}, "calibration: [a.jsonl, b]": {"a.jsonl", "b"}, `calibration: ""`: nil} {
		f, err := Parse(strings.NewReader(file + yml + "\n"))
		if err != nil || !slices.Equal(f.Calibration, want) {
			t.Errorf("%s: %q, %v; want %q", yml, f.Calibration, err, want)
		}
	}
	if _, err := Parse(strings.NewReader(file + "calibration: {a: 1}\n")); err == nil {
		t.Error("calibration: {a: 1} parsed")
	}
}

// Plans agree on variant, batch, replicas and cores; a max wait that
// differs (the spec's initial 2 ms kept by one side, 0 planned by the
// other, at batch 1) is the same plan.
func TestPlanAgreementComparesWhatRuns(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	run := func(cfgs ...models.StageConfig) *Run {
		r := &Run{Start: t0}
		for i, c := range cfgs {
			r.Decisions = append(r.Decisions, orchestrator.Decision{Time: t0.Add(time.Duration(i+1) * 10 * time.Second), Applied: []models.StageConfig{c}})
		}
		return r
	}
	sq := models.StageConfig{Variant: "squeezenet", MaxBatch: 1, MaxWait: 2 * time.Millisecond, Replicas: 1, Cores: 1}
	sq0 := sq
	sq0.MaxWait = 0
	two := sq0
	two.Replicas = 2
	if a := agreement(run(sq, sq), run(sq0, sq0)); a != 1 {
		t.Errorf("plans differing only in max wait agree %.2f, want 1", a)
	}
	if a := agreement(run(sq, sq), run(sq0, two)); a != 0.5 {
		t.Errorf("plans differing in replicas half the time agree %.2f, want 0.5", a)
	}
}

// With interference the simulator slows the glue itself beside other work,
// so a calibration's glue is what the logs' line meets at no load; the
// median where the line is not to be trusted.
func TestGlueAloneIsWhereTheLogsLineMeetsNoLoad(t *testing.T) {
	line := func(a, b float64, rps ...float64) []glueSample {
		var g []glueSample
		for _, r := range rps {
			g = append(g, glueSample{r, a + b*r})
		}
		return g
	}
	for _, c := range []struct {
		name string
		g    []glueSample
		want float64
	}{
		{"a line through the loads", line(0.010, 0.0001, 2, 4, 10, 20, 30), 0.010},
		{"loads that hardly vary: the median", line(0.010, 0.0001, 5, 6, 7), 0.0106},
		{"a falling line: the median", line(0.020, -0.0001, 2, 10, 30), 0.019},
		{"a line meeting no load below half the median: the median", line(0.001, 0.001, 2, 20, 40), 0.021},
	} {
		if got := glueAlone(c.g); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	if _, err := Parse(strings.NewReader("name: x\ncore_capacity: 2\ninterference: -1\npipelines: [{name: classify}]\nwindows: [{name: w, rate: 1, duration: 1s}]\nsystems: [ipa]\n")); err == nil || !strings.Contains(err.Error(), "interference") {
		t.Errorf("interference -1: %v", err)
	}
}

// A metrics snapshot in the calibration (named on its own, or a run
// directory's metrics.txt) gives the glue its spread: the median's times
// the histogram's p99 ÷ p50.
func TestCalibrationTakesTheGluesSpreadFromItsHistogram(t *testing.T) {
	const snapshot = `# HELP ipa_router_glue_seconds Time of a pipeline request's glue.
# TYPE ipa_router_glue_seconds untyped
ipa_router_glue_seconds_bucket{pipeline="classify",vmrange="8.799e-03...1.000e-02"} 50
ipa_router_glue_seconds_bucket{pipeline="classify",vmrange="1.000e-02...1.136e-02"} 48
ipa_router_glue_seconds_bucket{pipeline="classify",vmrange="2.783e-02...3.162e-02"} 2
ipa_router_glue_seconds_bucket{pipeline="other",vmrange="1.000e+00...1.136e+00"} 1000
ipa_router_glue_seconds_sum{pipeline="classify"} 1.1
ipa_router_glue_seconds_count{pipeline="classify"} 100
`
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	snap := write("classify-low.metrics.txt", snapshot)
	log := write("run.jsonl", `{"time":"2026-01-01T00:00:10Z","observed_rps":5,"glue_seconds":0.01}`+"\n")
	pipe := simtest.Classify(t, "../..")
	m, err := calibrated(&File{Calibration: Paths{log, snap}}, pipe)
	if err != nil {
		t.Fatal(err)
	}
	// p50: the 50th of 100 samples ends the first bucket (1.000e-02); p99:
	// the 99th is half-way (geometrically) through the last.
	p99 := 2.783e-02 * math.Sqrt(3.162e-02/2.783e-02)
	if want := time.Duration(0.01 * p99 / 1.000e-02 * float64(time.Second)); m.glue != 10*time.Millisecond || (m.glueP99-want).Abs() > time.Microsecond {
		t.Errorf("glue %v, p99 %v; want 10ms and %v", m.glue, m.glueP99, want)
	}
	// A run's directory: its metrics.txt joins, as the snapshot did.
	run := filepath.Join(dir, "run")
	os.Mkdir(run, 0o755)
	os.WriteFile(filepath.Join(run, DecisionsFile), []byte(`{"time":"2026-01-01T00:00:10Z","observed_rps":5,"glue_seconds":0.01}`+"\n"), 0o644)
	os.WriteFile(filepath.Join(run, MetricsFile), []byte(snapshot), 0o644)
	if m2, err := calibrated(&File{Calibration: Paths{run}}, pipe); err != nil || m2.glueP99 != m.glueP99 {
		t.Errorf("from a run's directory: p99 %v, %v; want %v", m2.glueP99, err, m.glueP99)
	}
	// Without a histogram the glue does not vary.
	if m3, err := calibrated(&File{Calibration: Paths{log}}, pipe); err != nil || m3.glueP99 != 0 {
		t.Errorf("without a histogram: p99 %v, %v; want 0", m3.glueP99, err)
	}
	for name, body := range map[string]string{
		"none.metrics.txt":      "ipa_router_glue_seconds_count{pipeline=\"classify\"} 0\n",
		"malformed.metrics.txt": `ipa_router_glue_seconds_bucket{pipeline="classify",vmrange="1e-2"} 3` + "\n",
		"negative.metrics.txt":  `ipa_router_glue_seconds_bucket{pipeline="classify",vmrange="2e-2...1e-2"} 3` + "\n",
	} {
		if _, err := calibrated(&File{Calibration: Paths{log, write(name, body)}}, pipe); err == nil {
			t.Errorf("%s: calibrated", name)
		}
	}
}

// A snapshot's engine histograms set the variants they measured: a point
// with enough batches takes the median and p99 measured in serving, the
// variant's other points its speed, whatever the logs' corrections say;
// a series of too few batches, or of another pipeline, changes nothing.
func TestCalibrationTakesTheEnginesFromTheirHistograms(t *testing.T) {
	pipe := simtest.Classify(t, "../..")
	var b strings.Builder
	bucket := func(variant string, rows int, lo, hi string, n int) {
		fmt.Fprintf(&b, "ipa_stage_batch_engine_seconds_bucket{stage=\"classify\",variant=%q,cores=\"1\",rows=\"%d\",vmrange=\"%s...%s\"} %d\n", variant, rows, lo, hi, n)
	}
	// 100 batches: the median (the 50th) is 5/6 through the first bucket,
	// the p99 (the 99th) at the end of the second.
	bucket("squeezenet", 1, "8.799e-03", "1.000e-02", 60)
	bucket("squeezenet", 1, "1.000e-02", "1.136e-02", 39)
	bucket("squeezenet", 1, "2.783e-02", "3.162e-02", 1)
	bucket("resnet50", 1, "1.000e+00", "1.136e+00", 99) // too few: the log's factor stays
	fmt.Fprintf(&b, "ipa_stage_batch_engine_seconds_bucket{stage=\"other\",variant=\"squeezenet\",cores=\"1\",rows=\"1\",vmrange=\"1.000e+00...1.136e+00\"} 500\n")
	dir := t.TempDir()
	snap := filepath.Join(dir, "light.metrics.txt")
	log := filepath.Join(dir, "run.jsonl")
	os.WriteFile(snap, []byte(b.String()), 0o644)
	os.WriteFile(log, []byte(`{"time":"2026-01-01T00:00:10Z","corrections":[{"stage":"classify","factor":1,"evidence_batches":1000,"variants":[{"variant":"squeezenet","factor":3,"evidence_batches":1000},{"variant":"resnet50","factor":2,"evidence_batches":1000}]}]}`+"\n"), 0o644)
	m, err := calibrated(&File{Calibration: Paths{log, snap}}, pipe)
	if err != nil {
		t.Fatal(err)
	}
	p50, p99 := 8.799e-03*math.Pow(1.000e-02/8.799e-03, 50.0/60), 1.136e-02
	got, err := m.truth.Lookup("classify", "squeezenet", 1, 1)
	if err != nil || math.Abs(got.LatencyP50-p50) > 1e-9 || math.Abs(got.LatencyP99-p99) > 1e-9 {
		t.Errorf("squeezenet batch 1: %+v, %v; want p50 %v, p99 %v from the histogram", got, err, p50, p99)
	}
	prof, _ := pipe.Profiles.Lookup("classify", "squeezenet", 1, 1)
	for _, batch := range []int{2, 4} {
		want, err1 := pipe.Profiles.Lookup("classify", "squeezenet", 1, batch)
		got, err2 := m.truth.Lookup("classify", "squeezenet", 1, batch)
		if err1 == nil && err2 == nil && math.Abs(got.LatencyP50/want.LatencyP50-p50/prof.LatencyP50) > 1e-6 {
			t.Errorf("squeezenet batch %d: ×%.3f of the profile, want the measured speed ×%.3f", batch, got.LatencyP50/want.LatencyP50, p50/prof.LatencyP50)
		}
	}
	r, _ := pipe.Profiles.Lookup("classify", "resnet50", 1, 1)
	if got, _ := m.truth.Lookup("classify", "resnet50", 1, 1); math.Abs(got.LatencyP50-2*r.LatencyP50) > 1e-9 {
		t.Errorf("resnet50 (99 batches only): p50 %v, want the log's ×2 of %v", got.LatencyP50, r.LatencyP50)
	}
}

// TestProbesSetTheGlue: the probes' glue histograms, together, give the
// simulated router its glue (their median, varying to their p99) over the
// calibration's, once they hold minEngineSamples requests; fewer leave the
// calibration's glue.
func TestProbesSetTheGlue(t *testing.T) {
	pipe, _ := testEnv(t).Resolve("classify", "")
	dir := t.TempDir()
	probe := func(name string, lines ...string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	glue := func(lo, hi string, n int) string {
		return fmt.Sprintf(`ipa_router_glue_seconds_bucket{pipeline="classify",vmrange="%s...%s"} %d`, lo, hi, n)
	}
	a := probe("a.metrics.txt", glue("4.642e-03", "5.000e-03", 60), glue("1.000e-02", "1.136e-02", 5),
		`ipa_router_glue_seconds_bucket{pipeline="other",vmrange="1.000e+00...1.136e+00"} 500`)
	b := probe("b.metrics.txt", glue("4.642e-03", "5.000e-03", 50))
	m, err := calibrated(&File{}, pipe, a, b)
	if err != nil {
		t.Fatal(err)
	}
	if m.glue < 4642*time.Microsecond || m.glue > 5*time.Millisecond || m.glueP99 < 10*time.Millisecond || m.glueP99 > 11360*time.Microsecond {
		t.Errorf("glue %s, p99 %s; want in 4.6–5 ms, p99 in 10–11.4 ms (the probes' together)", m.glue, m.glueP99)
	}
	if m, err := calibrated(&File{}, pipe, a); err != nil || m.glue != 0 || m.glueP99 != 0 {
		t.Errorf("one probe of %d requests set the glue to %s (p99 %s), %v; want the calibration's (none)", 65, m.glue, m.glueP99, err)
	}
}

// TestReplayStartsFromWhatRanWhenTheLoadBegan: a real run whose controller
// changed the configuration before the load began is replayed from that
// configuration, not from the system's initial one.
func TestReplayStartsFromWhatRanWhenTheLoadBegan(t *testing.T) {
	f, err := Parse(strings.NewReader(`
name: early
seed: 5
core_capacity: 6
mode: fidelity
pipelines:
  - name: classify
    body: page.png
windows:
  - name: flat
    rate: 10
    duration: 40s
systems: ["static:resnet50/1/2/1"]
`))
	if err != nil {
		t.Fatal(err)
	}
	startup, _ := f.startup()
	env := testEnv(t)
	fake := simulatedReal(env, startup, 1)
	early := models.StageConfig{Variant: "squeezenet", MaxBatch: 1, Replicas: 1, Cores: 1}
	env.Real = func(ctx context.Context, r RealRun) error {
		if err := fake(ctx, r); err != nil {
			return err
		}
		path := filepath.Join(r.Dir, DecisionsFile)
		ds, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		d, _ := json.Marshal(orchestrator.Decision{Time: sim.Epoch.Add(-5 * time.Second), Applied: []models.StageConfig{early}})
		return os.WriteFile(path, append(append(d, '\n'), ds...), 0o644)
	}
	runs, err := Execute(context.Background(), f, env, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var real, replay *Run
	for _, r := range runs {
		switch r.Mode {
		case "real":
			real = r
		case "replay":
			replay = r
		}
	}
	if real == nil || replay == nil || len(replay.Decisions) < 2 {
		t.Fatalf("runs %v", runs)
	}
	if !slices.Equal(real.Initial, []models.StageConfig{early}) || real.Decisions[0].Time.Before(real.Start) {
		t.Errorf("real run: initial %v, first decision at %v (load at %v)", real.Initial, real.Decisions[0].Time, real.Start)
	}
	first, second := replay.Decisions[0], replay.Decisions[1]
	if !first.Time.Equal(replay.Start) || first.Applied[0] != early || second.Applied[0].Variant != "resnet50" {
		t.Errorf("replay: %v at %v, then %v; want %v from the start, then resnet50", first.Applied, first.Time.Sub(replay.Start), second.Applied, early)
	}
}

// TestProbesSetTheHop: a real probe (testdata: squeezenet at 4 req/s for
// 40 s in the steady-low/fa2-low run of experiments/fidelity-grid.yaml)
// measured 14.48 ms per request at its client, of which the router's glue
// took 8.34 ms, the stage's queue 0.02 ms and its engine 4.74 ms: the hop
// is the 1.38 ms left, and the machine calibrated from that probe carries
// it. A step with more items than requests is taken whole as the router
// timed it; a probe of too few requests, or a snapshot without its load
// report, gives no hop.
func TestProbesSetTheHop(t *testing.T) {
	pipe, _ := testEnv(t).Resolve("classify", "")
	// hopOf reads the snapshot at path, as calibrated does, and its hop.
	hopOf := func(path string) (time.Duration, bool, error) {
		snap := newSnapshot()
		if err := snap.read(path, pipe); err != nil {
			return 0, false, err
		}
		return probeHop(path, snap, pipe)
	}
	real := filepath.Join("testdata", "probe-classify-squeezenet", MetricsFile)
	hop, ok, err := hopOf(real)
	if err != nil || !ok || hop < 1370*time.Microsecond || hop > 1390*time.Microsecond {
		t.Errorf("hop of the real probe: %v, %v, %v; want 1.37–1.39 ms", hop, ok, err)
	}
	m, err := calibrated(&File{}, pipe, real)
	if err != nil || m.hop != hop {
		t.Errorf("calibrated from the probe: hop %v, %v; want %v", m.hop, err, hop)
	}

	write := func(dir, report string, lines ...string) string {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if report != "" {
			if err := os.WriteFile(filepath.Join(dir, LoadReportFile), []byte(report), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		p := filepath.Join(dir, MetricsFile)
		if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	report := func(n int, mean float64) string {
		return fmt.Sprintf(`{"succeeded": %d, "latency_seconds": {"mean": %g}}`, n, mean)
	}
	snap := []string{
		`ipa_router_glue_seconds_bucket{pipeline="classify",vmrange="4.642e-03...5.000e-03"} 200`,
		`ipa_router_glue_seconds_sum{pipeline="classify"} 1`, // 5 ms
		`ipa_router_glue_seconds_count{pipeline="classify"} 200`,
		`ipa_router_stage_duration_seconds_sum{pipeline="classify",stage="classify"} 4`, // 20 ms
		`ipa_router_stage_duration_seconds_count{pipeline="classify",stage="classify"} 200`,
		`ipa_stage_batch_engine_seconds_sum{stage="classify",variant="squeezenet",cores="1",rows="1"} 1`, // 100 × 10 ms
		`ipa_stage_batch_engine_seconds_count{stage="classify",variant="squeezenet",cores="1",rows="1"} 100`,
		`ipa_stage_batch_engine_seconds_sum{stage="classify",variant="squeezenet",cores="1",rows="2"} 1.5`, // 50 × 30 ms, 2 rows each
		`ipa_stage_batch_engine_seconds_count{stage="classify",variant="squeezenet",cores="1",rows="2"} 50`,
		`ipa_stage_queue_wait_seconds_sum{stage="classify"} 0.4`, // 2 ms
	}
	dir := t.TempDir()
	// Rows wait 10 ms (100 rows) or 30 ms (100 rows): 20 ms; 30 − 5 − 2 − 20 = 3 ms.
	one := write(filepath.Join(dir, "one"), report(200, 0.030), append(snap, `ipa_stage_queue_wait_seconds_count{stage="classify"} 200`)...)
	if hop, ok, err := hopOf(one); err != nil || !ok || hop < 2999*time.Microsecond || hop > 3001*time.Microsecond {
		t.Errorf("one item a request: hop %v, %v, %v; want 3 ms", hop, ok, err)
	}
	// 400 waits for 200 requests: the step is the router's 20 ms, 30 − 5 − 20 = 5 ms.
	fan := write(filepath.Join(dir, "fan"), report(200, 0.030), append(snap, `ipa_stage_queue_wait_seconds_count{stage="classify"} 400`)...)
	if hop, ok, err := hopOf(fan); err != nil || !ok || hop < 4999*time.Microsecond || hop > 5001*time.Microsecond {
		t.Errorf("a fan-out: hop %v, %v, %v; want 5 ms", hop, ok, err)
	}
	few := write(filepath.Join(dir, "few"), report(minEngineSamples-1, 0.030), snap...)
	alone := write(filepath.Join(dir, "alone"), "", snap...)
	for name, p := range map[string]string{"too few requests": few, "no load report": alone} {
		if hop, ok, err := hopOf(p); err != nil || ok || hop != 0 {
			t.Errorf("%s: hop %v, %v, %v; want none", name, hop, ok, err)
		}
	}
	bad := write(filepath.Join(dir, "bad"), "{", snap...)
	if _, _, err := hopOf(bad); err == nil {
		t.Errorf("a malformed load report gave no error")
	}
}
