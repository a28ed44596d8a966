package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/optimizer"
	"github.com/ipa-serving/ipa/orchestrator"
	"github.com/ipa-serving/ipa/orchestrator/experiment"
	"github.com/ipa-serving/ipa/orchestrator/sim"
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

// A real run of ipa experiment starts ipa local with the loop its simulated
// twin runs (experiment.RealRun.Loop), the profile correction included:
// the command line, parsed as ipa parses it, gives back the same loop.
func TestExperimentRealRunHasItsTwinsLoop(t *testing.T) {
	for _, correct := range []bool{true, false} {
		file := fmt.Sprintf("mode: real\ncore_capacity: 2\ninterval: 7s\nhistory: 90\nmargin: 1.3\nswitch_cost: 0.02\npredictor: reactive\ncorrect: %v\n"+
			"pipelines: [{name: classify, body: docs/sample-page.png}]\nwindows: [{name: w, rate: 3, duration: 10s}]\nsystems: [ipa]\n", correct)
		f, err := experiment.Parse(strings.NewReader(file))
		if err != nil {
			t.Fatal(err)
		}
		var got experiment.RealRun
		env := experiment.Env{
			Resolve: func(name, profile string) (sim.Pipeline, error) {
				return simPipeline(PipelineFlags{Pipeline: name}, RepoFlags{Dir: t.TempDir()}, profile)
			},
			Solvers: map[string]optimizer.Solver{"exact": optimizer.Exact{}},
			Predictor: func(name string) (orchestrator.Predictor, error) {
				return ControllerFlags{Predictor: name}.predictor()
			},
			Real: func(_ context.Context, r experiment.RealRun) error {
				got = r
				return errors.New("stop here")
			},
		}
		if _, err := experiment.Execute(context.Background(), f, env, t.TempDir()); err == nil || !strings.Contains(err.Error(), "stop here") {
			t.Fatalf("the real run was not asked for: %v", err)
		}
		if got.Loop.Correct != correct || got.Loop.Interval != 7*time.Second || got.Loop.Margin != 1.3 {
			t.Errorf("correct: %v: the real run's loop is %+v", correct, got.Loop)
		}
		var cli CLI
		if _, err := parseCLI(t, &cli, realRunner{}.localArgs(got, "127.0.0.1:1")...); err != nil {
			t.Fatal(err)
		}
		if cli.Local.Control.Loop != got.Loop {
			t.Errorf("correct: %v: ipa local runs the loop %+v; its twin %+v", correct, cli.Local.Control.Loop, got.Loop)
		}
		// A probe's stage loads nothing beside the variant it measures.
		for _, probe := range []bool{false, true} {
			got.Probe = probe
			var cli CLI
			if _, err := parseCLI(t, &cli, realRunner{}.localArgs(got, "127.0.0.1:1")...); err != nil {
				t.Fatal(err)
			}
			if want := map[bool]string{false: "all", true: "active"}[probe]; cli.Local.Preload != want {
				t.Errorf("probe %v: ipa local --stage.preload %s, want %s", probe, cli.Local.Preload, want)
			}
		}
	}
}
