package experiment

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/ipa-serving/ipa/dataplane/loadgen"
	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/optimizer"
	"github.com/ipa-serving/ipa/orchestrator"
	"github.com/ipa-serving/ipa/orchestrator/report"
	"github.com/ipa-serving/ipa/orchestrator/sim"
)

// RealRun is one run on this machine, as Env.Real carries it out: serve
// Pipeline with ipa local, starting each step as Initial says, the
// controller planning with Profile under Baseline, weights and caps (its
// decision log into Dir/decisions.jsonl); offer Load with ipa load (Arrivals,
// Seed, SLA, Body; its report and records into Dir/load-report.json and
// Dir/records.jsonl); stop ipa local.
type RealRun struct {
	Name     string // pipeline/window/system, for messages
	Pipeline string // built-in name or spec path
	Model    string // the pipeline's name: its V2 model
	Profile  string // "": the pipeline's shipped profile
	// Body is the file every request sends (the pipeline's input).
	Body string
	SLA  time.Duration
	// Initial is each step's starting configuration, in step order.
	Initial                  []StepConfig
	Baseline                 optimizer.Baseline
	Alpha, Beta              float64
	ScalingCap, CoreCapacity int
	Loop                     orchestrator.Config
	Predictor, Solver        string
	Load                     loadgen.Counts
	Arrivals                 string
	Seed                     uint64
	Dir                      string
	// Probe marks a probe (File.Probe): its stage loads only the variant it
	// runs (ipa local --stage.preload active), so that no other variant
	// loads beside what it measures.
	Probe bool
}

// StepConfig is one step's configuration.
type StepConfig struct {
	Step   string
	Config models.StageConfig
}

// Files of a run's directory, real or simulated.
const (
	DecisionsFile  = "decisions.jsonl"
	LoadReportFile = "load-report.json"
	RecordsFile    = "records.jsonl"
	// MetricsFile is ipa local's /metrics when a real run's load ended.
	MetricsFile = "metrics.txt"
)

// runReal carries one job out on this machine through real and reads back
// what it wrote.
func runReal(ctx context.Context, f *File, pipe sim.Pipeline, ref PipelineRef, j job,
	env Env, out string) (*Run, error) {
	window := f.Windows[j.window].Name
	name := fmt.Sprintf("%s/%s/%s", pipe.Name, window, j.system.Name)
	if ref.Body == "" {
		return nil, fmt.Errorf("%s: mode %s needs the pipeline's input: set body (a file every request sends) under pipelines", name, f.Mode)
	}
	pipe, baseline, err := configure(pipe, j.system, j.load)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	dir := filepath.Join(out, "runs", pipe.Name, window, fileName(j.system.Name))
	start := time.Now()
	reuse := env.ReuseReal
	if reuse && env.Real != nil {
		_, err := os.Stat(dir)
		reuse = !errors.Is(err, fs.ErrNotExist) // a run never made here runs now
	}
	if reuse {
		ds, reqs, loadStart, sla, err := ReadRun(dir)
		if err == nil {
			err = sameRun(reqs, sla, pipe.SLA, j.load)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: cannot reuse the real run in %s: %w", name, dir, err)
		}
		return realResult(f, pipe, j, window, dir, ds, reqs, loadStart, sla, start)
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if f.Probe != nil {
		if err := runProbes(ctx, f, pipe, ref, baseline, env, name, dir); err != nil {
			return nil, err
		}
	}
	rr := newRealRun(f, pipe, ref, name, dir, j.load)
	rr.Baseline, rr.Alpha, rr.Beta = baseline, j.system.Alpha, j.system.Beta
	if err := env.Real(ctx, rr); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	ds, reqs, loadStart, sla, err := ReadRun(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return realResult(f, pipe, j, window, dir, ds, reqs, loadStart, sla, start)
}

// newRealRun returns the run of load on pipe (configured for its system)
// into dir, with the file's loop, its controller off (baseline fixed).
func newRealRun(f *File, pipe sim.Pipeline, ref PipelineRef, name, dir string, load loadgen.Counts) RealRun {
	rr := RealRun{Name: name, Pipeline: ref.Name, Model: pipe.Name, Profile: ref.Profile, Body: ref.Body, SLA: pipe.SLA,
		Baseline: optimizer.Fixed, ScalingCap: f.ScalingCap, CoreCapacity: f.CoreCapacity,
		Loop:      f.loop(),
		Predictor: f.Predictor, Solver: f.Solver, Load: load, Arrivals: f.Arrivals, Seed: f.Seed, Dir: dir}
	for _, s := range pipe.Steps {
		rr.Initial = append(rr.Initial, StepConfig{Step: s.Name, Config: s.Initial})
	}
	return rr
}

// ProbeDir is the directory, in a real run's, of its probes (File.Probe):
// one directory per step and variant, STEP-VARIANT (probeDir).
const ProbeDir = "probe"

// probeDir is the directory of the probe of step's variant in the real run
// in dir.
func probeDir(dir, step, variant string) string {
	return filepath.Join(dir, ProbeDir, step+"-"+variant)
}

// probeVariants returns, per step of pipe (configured for a system of
// baseline b), the variants a run may serve: every offered one where the
// controller may switch them (ipa, rim), else the one it starts with.
func probeVariants(pipe sim.Pipeline, b optimizer.Baseline) [][]string {
	out := make([][]string, len(pipe.Steps))
	for i, s := range pipe.Steps {
		if b == optimizer.Full || b == optimizer.Switch {
			for _, v := range pipe.Stages[i].Variants {
				out[i] = append(out[i], v.Name)
			}
			continue
		}
		out[i] = []string{s.Initial.Variant}
	}
	return out
}

// runProbes runs f.Probe, one real run per step and variant a run of pipe
// (configured for its system, of baseline b) may serve, into dir/probe/:
// the variant alone at batch 1 on one replica of its fewest cores, the
// other steps as the run starts them, the controller off; each for
// f.Probe.loadFor(the number of probes).
func runProbes(ctx context.Context, f *File, pipe sim.Pipeline, ref PipelineRef, b optimizer.Baseline, env Env, name, dir string) error {
	n := 0
	for _, vs := range probeVariants(pipe, b) {
		n += len(vs)
	}
	load := f.Probe.loadFor(n)
	for i, vs := range probeVariants(pipe, b) {
		step := pipe.Steps[i]
		for _, v := range vs {
			cores := 1
			if vp := pipe.Profiles.Variant(cmp.Or(step.Profile, step.Name), v); vp != nil && len(vp.Cores()) > 0 {
				cores = vp.Cores()[0]
			}
			pd := probeDir(dir, step.Name, v)
			if err := os.MkdirAll(pd, 0o755); err != nil {
				return err
			}
			rr := newRealRun(f, pipe, ref, fmt.Sprintf("%s probe %s/%s", name, step.Name, v), pd, load)
			rr.Initial[i].Config = models.StageConfig{Variant: v, MaxBatch: 1, Replicas: 1, Cores: cores}
			rr.Probe = true
			if err := env.Real(ctx, rr); err != nil {
				return fmt.Errorf("%s: probe of %s/%s: %w", name, step.Name, v, err)
			}
		}
	}
	return nil
}

// probeSnapshots returns the metrics snapshots of the probes of the real
// run in dir, one per step and variant a run of pipe (configured, of
// baseline b) may serve; an error names a probe missing.
func probeSnapshots(pipe sim.Pipeline, b optimizer.Baseline, dir string) ([]string, error) {
	var out []string
	for i, vs := range probeVariants(pipe, b) {
		for _, v := range vs {
			p := filepath.Join(probeDir(dir, pipe.Steps[i].Name, v), MetricsFile)
			if _, err := os.Stat(p); err != nil {
				return nil, fmt.Errorf("the real run in %s has no probe of %s/%s (%w): was it run without probe? Run it again, or remove probe from the file", dir, pipe.Steps[i].Name, v, err)
			}
			out = append(out, p)
		}
	}
	return out, nil
}

// sameRun checks that a real run read back is one of the load: the same SLA,
// and about as many requests as the window holds (a Poisson count within
// 10 % of its mean, or 20 requests for small ones).
func sameRun(reqs []report.Request, sla, want time.Duration, load loadgen.Counts) error {
	if sla != want {
		return fmt.Errorf("its SLA is %s, the pipeline's %s", sla, want)
	}
	var mean float64
	for _, n := range load {
		mean += n
	}
	if d := float64(len(reqs)) - mean; d > max(0.1*mean, 20) || d < -max(0.1*mean, 20) {
		return fmt.Errorf("it sent %d requests, the window about %.0f: another window or damping", len(reqs), mean)
	}
	return nil
}

// realResult summarises a real run read back from dir.
func realResult(f *File, pipe sim.Pipeline, j job, window, dir string, ds []orchestrator.Decision, reqs []report.Request,
	loadStart time.Time, sla time.Duration, start time.Time) (*Run, error) {
	name := fmt.Sprintf("%s/%s/%s", pipe.Name, window, j.system.Name)
	// The controller starts with ipa local, before the load: its
	// decisions before the load's first second (and after its end) are
	// not part of the run the simulator replays.
	end := loadStart.Add(time.Duration(len(j.load))*time.Second + f.Interval/2)
	var initial []models.StageConfig // what ran when the load began, if the controller changed it before
	for _, d := range ds {
		if d.Time.Before(loadStart) && len(d.Applied) > 0 {
			initial = d.Applied
		}
	}
	ds = slices.DeleteFunc(ds, func(d orchestrator.Decision) bool { return d.Time.Before(loadStart) || d.Time.After(end) })
	if len(ds) == 0 {
		return nil, fmt.Errorf("%s: the controller logged no decision during the load (see %s)", name, dir)
	}
	r := &Run{Pipeline: pipe.Name, Window: window, System: j.system.Name, Mode: "real", Decisions: ds, Start: loadStart, Initial: initial}
	r.summarize(pipe, reqs, loadStart, sla, time.Since(start))
	return r, nil
}

// ReadRun reads a run's directory: the decision log, the records and, from
// the load report, the load's start and SLA.
func ReadRun(dir string) (ds []orchestrator.Decision, reqs []report.Request, start time.Time, sla time.Duration, err error) {
	read := func(name string, f func(*os.File) error) error {
		fh, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		defer fh.Close()
		if err := f(fh); err != nil {
			return fmt.Errorf("%s: %w", fh.Name(), err)
		}
		return nil
	}
	err = errors.Join(
		read(DecisionsFile, func(fh *os.File) (err error) { ds, err = report.ReadDecisions(fh); return }),
		read(RecordsFile, func(fh *os.File) (err error) { reqs, err = report.ReadRequests(fh); return }),
		read(LoadReportFile, func(fh *os.File) error {
			var lr struct {
				Started    time.Time `json:"started"`
				SLASeconds float64   `json:"sla_seconds"`
			}
			if err := json.NewDecoder(fh).Decode(&lr); err != nil {
				return err
			}
			start, sla = lr.Started, time.Duration(lr.SLASeconds*float64(time.Second))
			return nil
		}))
	return ds, reqs, start, sla, err
}
