package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
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
	Reuse    bool      `name:"reuse-real" help:"Modes real and fidelity: take the real runs already under --out (each run's decisions.jsonl, records.jsonl and load-report.json, for the same window and SLA) instead of running them again, and run only those that have no directory there yet (to resume, or to add a window); the simulated runs and the comparison are made anew (to calibrate the simulator against runs that took minutes)."`
}

// Run runs the matrix and writes everything.
// Validate refuses a negative --parallel while the flags are parsed.
func (c *ExperimentCmd) Validate() error {
	if c.Parallel < 0 {
		return fmt.Errorf("--parallel %d: give a positive number of runs at once (0: GOMAXPROCS)", c.Parallel)
	}
	return nil
}

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
	near := func(path string) string { // relative to the file, unless it is there from here
		if path == "" || filepath.IsAbs(path) {
			return path
		}
		if _, err := os.Stat(path); err != nil {
			return filepath.Join(filepath.Dir(c.File), path)
		}
		return path
	}
	f.Trace = near(f.Trace)
	for i := range f.Calibration {
		f.Calibration[i] = near(f.Calibration[i])
	}
	for i := range f.Pipelines {
		f.Pipelines[i].Body = near(f.Pipelines[i].Body)
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
	tty := false
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		tty = c.Progress
	}
	if f.Mode != "sim" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		models := []string{"--models.dir", c.Models.Dir}
		if c.Models.User != "" {
			models = append(models, "--models.user", c.Models.User)
		}
		// A real run shows ipa load's own bar; the runs' bar would cut it.
		env.Real = realRunner{exe: exe, models: models, progress: tty, log: log.Info}.run
		env.ReuseReal = c.Reuse
		if f.Mode == "fidelity" {
			total *= 3 // simulated, real, and the real plans replayed
		}
	}
	if tty && f.Mode == "sim" {
		bar := progressbar.NewOptions(total, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionSetWidth(30),
			progressbar.OptionShowCount(), progressbar.OptionSetElapsedTime(true), progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetDescription("runs"), progressbar.OptionClearOnFinish())
		env.Progress = func(done, _ int) { _ = bar.Set(done) }
		defer bar.Finish()
	}
	ctx := signalContext(log)
	start := time.Now()
	log.Info("running", "file", c.File, "mode", f.Mode, "runs", total, "out", out)
	runs, err := experiment.Execute(ctx, f, env, out)
	if err != nil {
		return err
	}
	var outside []string
	for _, mode := range []string{"sim", "real", "replay"} {
		var these []*experiment.Run
		for _, r := range runs {
			if r.Mode == mode {
				these = append(these, r)
			}
		}
		if len(these) == 0 {
			continue
		}
		dir := out
		if f.Mode == "fidelity" {
			dir = filepath.Join(out, mode)
			fmt.Printf("\n%s:\n", mode)
		}
		files, err := experiment.WriteAll(dir, c.Format, f, these)
		if err != nil {
			return err
		}
		if err := experiment.WriteMarkdown(os.Stdout, experiment.Rows(these)); err != nil {
			return err
		}
		for _, p := range files {
			fmt.Println("wrote", p)
		}
	}
	if f.Mode == "fidelity" {
		rows, err := experiment.Compare(runs, f.Fidelity)
		if err != nil {
			return err
		}
		fmt.Println("\nfidelity (simulated against real):")
		if err := experiment.WriteFidelityMarkdown(os.Stdout, rows); err != nil {
			return err
		}
		for _, x := range []struct {
			name  string
			write func(io.Writer, []experiment.FidelityRow) error
		}{{"fidelity.md", experiment.WriteFidelityMarkdown}, {"fidelity.csv", experiment.WriteFidelityCSV}, {"fidelity.json", experiment.WriteFidelityJSON}} {
			var b bytes.Buffer
			if err := x.write(&b, rows); err != nil {
				return err
			}
			path := filepath.Join(out, x.name)
			if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
				return err
			}
			fmt.Println("wrote", path)
		}
		for _, r := range rows {
			if r.Outside != "" {
				outside = append(outside, fmt.Sprintf("%s/%s/%s: %s", r.Pipeline, r.Window, r.System, r.Outside))
			}
		}
	}
	fmt.Printf("%d runs in %.1f s; each run's decisions.jsonl, load-report.json and records.jsonl are under %s (render one with ipa report)\n",
		len(runs), time.Since(start).Seconds(), out)
	if len(outside) > 0 {
		return fmt.Errorf("the simulation is outside the tolerances of %s in %d of the runs:\n  %s", c.File, len(outside), strings.Join(outside, "\n  "))
	}
	return nil
}
