package experiment

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ipa-serving/ipa/orchestrator/sim/simtest"
	"github.com/ipa-serving/ipa/profiles"
)

// FuzzParse: any bytes give a File or an error, never a panic; a file that
// parses has its defaults filled in.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"../../experiments/paper.yaml", "../../experiments/fidelity.yaml", "../../experiments/fidelity-probed.yaml"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Add(tiny)
	f.Add("calibration: [a, b]\ncore_capacity: 2\n")
	f.Add("calibration: {a: 1}\n")
	f.Add("! #0\n")
	f.Fuzz(func(t *testing.T, s string) {
		file, err := Parse(strings.NewReader(s))
		if err != nil {
			return
		}
		if file.Mode == "" || file.Arrivals == "" || file.Predictor == "" || file.Solver == "" || file.SwitchCost == nil {
			t.Fatalf("parsed without defaults: %+v", file)
		}
	})
}

// FuzzSnapshot: any metrics snapshot gives histograms or an error, never a
// panic; what it reads has no negative count, and its quantiles are ordered.
func FuzzSnapshot(f *testing.F) {
	b, err := os.ReadFile("../../experiments/calibration/classify-squeezenet-light.metrics.txt")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(b))
	f.Add(`ipa_router_glue_seconds_bucket{pipeline="classify",vmrange="1.000e-02...1.136e-02"} 3` + "\n")
	f.Add(`ipa_stage_batch_engine_seconds_bucket{stage="classify",variant="v",cores="1",rows="1",vmrange="0...1e-9"} 1` + "\n")
	f.Add(`ipa_router_glue_seconds_bucket{pipeline="classify",vmrange="1e-2...1e-3"} 3` + "\n")
	pipe := simtest.Classify(f, "../..")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, s string) {
		path := filepath.Join(dir, "fuzz.metrics.txt")
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		snap := newSnapshot()
		if err := snap.read(path, pipe); err != nil {
			return
		}
		for _, h := range append([]histogram{snap.glue}, slices.Collect(maps.Values(snap.engines))...) {
			for k, n := range h {
				if n < 0 || k[0] < 0 || k[1] <= k[0] {
					t.Fatalf("bucket %v count %v", k, n)
				}
			}
			if p50, p99, _, ok := h.quantiles(); ok && !(p50 <= p99) {
				t.Fatalf("p50 %v > p99 %v", p50, p99)
			}
		}
		snap.engineSpeeds(pipe.Profiles)
		snap.setEngineTimes(pipe.Profiles.Scaled(profiles.Uniform(1)))
	})
}
