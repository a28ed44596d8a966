package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExperimentCLIRendersWithReport runs a tiny experiment file the way a
// user does, then renders one of its runs with ipa report.
func TestExperimentCLIRendersWithReport(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tiny.yaml")
	if err := os.WriteFile(file, []byte(`name: tiny
core_capacity: 4
pipelines: [{name: classify, profile: `+classifyProfile+`}]
windows: [{name: step, steps: "30s@5,30s@40"}]
systems: [ipa, fa2-low, "rim:2", off]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if err := runCLI(t, "experiment", file, "--out", out, "--no-progress", "--models.dir", t.TempDir()); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(out, "summary.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, sys := range []string{"| ipa |", "| fa2-low |", "| rim:2 |", "| off |"} {
		if !strings.Contains(string(md), sys) {
			t.Fatalf("summary.md lacks %s:\n%s", sys, md)
		}
	}
	for _, f := range []string{"summary.csv", "summary.json", "figure-classify.svg"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Fatalf("%s: %v", f, err)
		}
	}
	run := filepath.Join(out, "runs", "classify", "step", "ipa")
	if err := runCLI(t, "report", "--decisions", filepath.Join(run, "decisions.jsonl"), "--records", filepath.Join(run, "records.jsonl"),
		"--load-report", filepath.Join(run, "load-report.json"), "--out", filepath.Join(dir, "report")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "report", "violations.svg")); err != nil {
		t.Fatal(err)
	}
	if err := runCLI(t, "experiment", file, "--out", out, "--no-progress", "--models.dir", t.TempDir(), "--parallel", "1"); err != nil {
		t.Fatal(err)
	}
	again, err := os.ReadFile(filepath.Join(out, "summary.md"))
	if err != nil || string(again) != string(md) {
		t.Fatalf("a second run wrote another summary (%v)", err)
	}
}
