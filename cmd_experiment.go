package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/ipa-serving/ipa/dataplane/loadgen"
	"github.com/ipa-serving/ipa/optimizer"
	"github.com/ipa-serving/ipa/optimizer/highs"
	"github.com/ipa-serving/ipa/orchestrator"
	"github.com/ipa-serving/ipa/orchestrator/experiment"
	"github.com/ipa-serving/ipa/orchestrator/sim"
)

// ExperimentCmd runs an experiment file: pipelines × load windows ×
// systems, and writes per-run results, the summary table and the figures.
type ExperimentCmd struct {
	File     string    `arg:"" type:"existingfile" help:"Experiment file (YAML; see experiments/paper.yaml)."`
	Models   RepoFlags `embed:"" prefix:"models."`
	Out      string    `placeholder:"DIR" help:"Directory for the results (default: experiments/results/NAME, NAME from the file)."`
	Parallel int       `help:"Runs at once (0: GOMAXPROCS)."`
	Format   string    `default:"svg" enum:"svg,png" help:"Format of the figures: ${enum}."`
	Progress bool      `default:"true" negatable:"" help:"Show a progress bar on a terminal."`
}

// Run runs the matrix and writes everything.
func (c *ExperimentCmd) Run(g *Globals) error {
	log := g.Logger().With("role", "experiment")
	fh, err := os.Open(c.File)
	if err != nil {
		return err
	}
	f, err := experiment.Parse(fh)
	fh.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", c.File, err)
	}
	if f.Trace != "" && !filepath.IsAbs(f.Trace) {
		if _, err := os.Stat(f.Trace); err != nil { // relative to the file, unless it is there from here
			f.Trace = filepath.Join(filepath.Dir(c.File), f.Trace)
		}
	}
	out := c.Out
	if out == "" {
		name := f.Name
		if name == "" {
			name = "experiment"
		}
		out = filepath.Join("experiments", "results", name)
	}
	total := len(f.Pipelines) * len(f.Windows) * len(f.Systems)
	env := experiment.Env{
		Resolve: func(name, profile string) (sim.Pipeline, error) {
			return simPipeline(PipelineFlags{Pipeline: name}, c.Models, profile)
		},
		Solvers: map[string]optimizer.Solver{"exact": optimizer.Exact{}, "highs": highs.Solver{}},
		Predictor: func(name string) (orchestrator.Predictor, error) {
			return ControllerFlags{Predictor: name}.predictor()
		},
		Trace:    loadgen.TwitterTrace,
		Parallel: c.Parallel,
	}
	if fi, err := os.Stderr.Stat(); c.Progress && err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		bar := progressbar.NewOptions(total, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionSetWidth(30),
			progressbar.OptionShowCount(), progressbar.OptionSetElapsedTime(true), progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetDescription("runs"), progressbar.OptionClearOnFinish())
		env.Progress = func(done, _ int) { _ = bar.Set(done) }
		defer bar.Finish()
	}
	start := time.Now()
	log.Info("running", "file", c.File, "mode", f.Mode, "runs", total, "out", out)
	runs, err := experiment.Execute(context.Background(), f, env, out)
	if err != nil {
		return err
	}
	files, err := experiment.WriteAll(out, c.Format, f, runs)
	if err != nil {
		return err
	}
	if err := experiment.WriteMarkdown(os.Stdout, experiment.Rows(runs)); err != nil {
		return err
	}
	for _, p := range files {
		fmt.Println("wrote", p)
	}
	fmt.Printf("%d runs in %.1f s; each run's decisions.jsonl, load-report.json and records.jsonl are under %s (render one with ipa report)\n",
		len(runs), time.Since(start).Seconds(), filepath.Join(out, "runs"))
	return nil
}
