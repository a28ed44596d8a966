package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestSimulateCLIRendersWithReport runs what a user runs: ipa simulate on
// a step load, twice (the same bytes), then ipa report on its output.
func TestSimulateCLIRendersWithReport(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir()}
	for _, dir := range dirs {
		if err := runCLI(t, "simulate", "--pipeline", "classify", "--models.dir", t.TempDir(), "--controller.profile", classifyProfile,
			"--pattern", "step", "--steps", "60s@5,60s@40,60s@5", "--seed", "3", "--controller.core-capacity", "4",
			"--glue-cost", "2ms", "--out", dir); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"decisions.jsonl", "load-report.json", "records.jsonl"} {
		a, err := os.ReadFile(filepath.Join(dirs[0], f))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dirs[1], f))
		if err != nil {
			t.Fatal(err)
		}
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Fatalf("%s: %d and %d bytes, not identical", f, len(a), len(b))
		}
	}
	d := dirs[0]
	out := filepath.Join(d, "report")
	if err := runCLI(t, "report", "--decisions", filepath.Join(d, "decisions.jsonl"), "--records", filepath.Join(d, "records.jsonl"),
		"--load-report", filepath.Join(d, "load-report.json"), "--out", out); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"load.svg", "replicas.svg", "accuracy.svg", "cost.svg", "latency.svg", "violations.svg"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Fatalf("ipa report did not render %s: %v", f, err)
		}
	}
}
