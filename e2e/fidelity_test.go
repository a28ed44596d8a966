package e2e

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipa-serving/ipa/orchestrator/experiment"
)

// fidelityShort is the CI's real-against-simulated check: one short step
// window of the classify pipeline (four of its variants: classifyFour, at
// PIPELINE), served by ipa local with the controller and simulated with
// the same loop, seed and arrivals. Before the real run a probe measures
// each variant alone on this machine (160 requests at batch 1), and the
// simulated twin runs at the speeds the probes measured: the shipped
// profile is of another machine (on one twice as fast, the simulation
// without the probes predicted a p99 ×3.9 the real one's). Its tolerances
// are the short run's own (a 100-second run has ~1,000 requests, so its
// p99 is the 10th-slowest answer, and the first interval's start differs
// by the time ipa local takes to load); the 20-minute runs under
// experiments/results/ are held to the targets.
//
// margin: 1.5 plans for half as much load again as predicted. With the
// default 1.1 the step's 14 req/s put a plan at the edge of its capacity,
// where a few percent of engine speed between the probes and the run
// decided whether a queue built: 1 of 3 quiet runs replayed the real plans
// at +111 % (0.428 against 0.203 s) with the plans agreeing on 30 % of the
// intervals. With 1.5, three quiet runs: +5, -27, -28 %, plans agreeing on
// 100 %, still 3-4 plan changes per run.
const fidelityShort = `
name: fidelity-short
mode: fidelity
seed: 3
arrivals: poisson
interval: 5s
history: 60
predictor: reactive
margin: 1.5          # headroom: see above
core_capacity: 2
probe: {rate: 16, duration: 10s}
pipelines:
  - name: PIPELINE
    profile: builtin:classify
    body: docs/sample-page.png
windows:
  - name: step
    steps: 30s@4,40s@14,30s@4
systems: [ipa]
fidelity:
  p99: 0.5             # relative
  violations_pp: 3     # percentage points
  cost: 0.25           # relative
`

// TestSimulatorPredictsARealRun runs `ipa experiment` in mode fidelity as a
// user would and checks that it wrote both sides and found the simulation
// within the tolerances (exit 0); on failure it prints the comparison.
func TestSimulatorPredictsARealRun(t *testing.T) {
	if testing.Short() {
		t.Skip("two minutes of real load")
	}
	dir := t.TempDir()
	spec := writeClassifyFour(t, dir)
	file := filepath.Join(dir, "fidelity.yaml")
	if err := os.WriteFile(file, []byte(strings.Replace(fidelityShort, "PIPELINE", spec, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	cmd := exec.Command(ipaBin, "experiment", file, "--out", out, "--models.dir", modelsDir(t), "--no-progress")
	b, err := cmd.CombinedOutput()
	t.Logf("ipa experiment:\n%s", b)
	for _, mode := range []string{"sim", "real", "replay"} {
		for _, f := range []string{experiment.DecisionsFile, experiment.RecordsFile, experiment.LoadReportFile} {
			if _, err := os.Stat(filepath.Join(out, mode, "runs", "classify", "step", "ipa", f)); err != nil {
				t.Errorf("%s run: %v", mode, err)
			}
		}
	}
	// The real run keeps ipa local's /metrics, which a calibration reads:
	// the router's glue times and the stage's engine times, as histograms.
	if m, err := os.ReadFile(filepath.Join(out, "real", "runs", "classify", "step", "ipa", experiment.MetricsFile)); err != nil {
		t.Errorf("real run: %v", err)
	} else {
		for _, want := range []string{`ipa_router_glue_seconds_bucket{pipeline="classify",vmrange=`, `ipa_stage_batch_engine_seconds_bucket{stage="classify",variant=`} {
			if !strings.Contains(string(m), want) {
				t.Errorf("the real run's %s has no %s…", experiment.MetricsFile, want)
			}
		}
	}
	// Each offered variant was probed, and its probe kept its /metrics.
	for _, v := range []string{"squeezenet", "shufflenet", "inception-v2", "resnet50"} {
		if _, err := os.Stat(filepath.Join(out, "real", "runs", "classify", "step", "ipa", experiment.ProbeDir, "classify-"+v, experiment.MetricsFile)); err != nil {
			t.Errorf("probe of %s: %v", v, err)
		}
	}
	js, jerr := os.ReadFile(filepath.Join(out, "fidelity.json"))
	if jerr != nil {
		t.Fatalf("no comparison: %v (ipa experiment: %v)", jerr, err)
	}
	var rows []experiment.FidelityRow
	if err := json.Unmarshal(js, &rows); err != nil || len(rows) != 1 {
		t.Fatalf("fidelity.json: %v, %d rows", err, len(rows))
	}
	r := rows[0]
	if r.SimRequests != r.RealRequests {
		t.Errorf("the same seed offered %d requests simulated and %d real", r.SimRequests, r.RealRequests)
	}
	if err != nil || r.Outside != "" {
		t.Fatalf("the simulation is outside its tolerances (%v): %s", err, r.Outside)
	}
	// The real run's plans, replayed on the simulated stages, within the
	// same p99 tolerance: the serving model apart from the plans.
	parsed, perr := experiment.Parse(strings.NewReader(strings.Replace(fidelityShort, "PIPELINE", spec, 1)))
	if perr != nil {
		t.Fatal(perr)
	}
	if tolP99 := parsed.Fidelity.P99; !r.Replayed || !(math.Abs(r.ReplayP99Err) <= tolP99) {
		t.Errorf("the real plans replayed: %v, p99 %.3f s against %.3f (%+.0f %%, want within ±%.0f %%)",
			r.Replayed, r.ReplayP99, r.RealP99, 100*r.ReplayP99Err, 100*tolP99)
	}
	if !strings.Contains(string(b), "fidelity (simulated against real)") {
		t.Errorf("no comparison table printed")
	}
}
