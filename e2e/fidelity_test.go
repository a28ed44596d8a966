package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipa-serving/ipa/orchestrator/experiment"
)

// fidelityShort is the CI's real-against-simulated check: one short step
// window of the classify pipeline, served by ipa local with the controller
// and simulated with the same loop, seed and arrivals. Its tolerances are
// the short run's own (a 100-second run has ~1,000 requests, so its p99 is
// the 10th-slowest answer, and the first interval's start differs by the
// time ipa local takes to load); the 20-minute runs under docs/fidelity/ are
// held to the targets.
const fidelityShort = `
name: fidelity-short
mode: fidelity
seed: 3
arrivals: poisson
interval: 5s
history: 60
predictor: reactive
core_capacity: 2
pipelines:
  - name: classify
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
	file := filepath.Join(dir, "fidelity.yaml")
	if err := os.WriteFile(file, []byte(fidelityShort), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	cmd := exec.Command(ipaBin, "experiment", file, "--out", out, "--models.dir", modelsDir(t), "--no-progress")
	b, err := cmd.CombinedOutput()
	t.Logf("ipa experiment:\n%s", b)
	for _, mode := range []string{"sim", "real"} {
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
	if !strings.Contains(string(b), "fidelity (simulated against real)") {
		t.Errorf("no comparison table printed")
	}
}
