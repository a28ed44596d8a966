package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/ipa-serving/ipa/dataplane/loadgen"
	"github.com/ipa-serving/ipa/orchestrator/experiment"
	"github.com/ipa-serving/ipa/orchestrator/sim"
	"github.com/ipa-serving/ipa/profiles"
	"github.com/ipa-serving/ipa/runtime/repobuild"
)

// SimulateCmd runs a pipeline under a load in virtual time, adapted by the
// real controller, and writes what ipa local's decision log and ipa load
// would have written.
type SimulateCmd struct {
	Models   RepoFlags     `embed:"" prefix:"models."`
	Pipeline PipelineFlags `embed:""`
	LoadPattern

	SLA         time.Duration `name:"sla" help:"Deadline of each request from its arrival (default: the pipeline's SLA)."`
	MaxInflight int           `name:"max-inflight" default:"1024" help:"The load generator's --max-inflight."`
	MaxQueue    int           `name:"batch.max-queue" default:"1024" help:"Most rows queued per stage before requests are rejected with 429."`

	Adapt   bool            `name:"controller" default:"true" negatable:"" help:"Adapt with the controller (--no-controller: keep the initial configuration; the loop only logs it)."`
	Replay  string          `name:"replay" placeholder:"RUN_DIR" help:"Serve a recorded run's plans in place of the controller: the configurations its decisions.jsonl applied, each at its decision's time since the run's load began (load-report.json), through the same start-up and switch delays. RUN_DIR is a run of ipa local with --controller.decision-log and ipa load --report --records into one directory, or one of ipa experiment's runs; give the run's own load flags and seed. Its latencies against the run's are the simulator's apart from the plans."`
	Control ControllerFlags `embed:"" prefix:"controller."`
	Started time.Time       `name:"started" placeholder:"TIME" help:"Wall time the load begins at (RFC 3339 with fractions, as a real run's load-report.json has it in started). The router counts arrivals per second of the wall clock, so the start's fraction of a second decides which arrivals share a second in what the predictor sees, and with a bursty load the plans. Default: a fixed epoch; with --replay, the run's own start."`

	Glue      time.Duration `name:"glue-cost" default:"0s" help:"The router's time per request before its first stage (image decode and resize; ipa local measures it); the controller reserves cores for it."`
	GlueP99   time.Duration `name:"glue-p99" default:"0s" help:"The glue's 99th percentile: each request's glue is then drawn from a log-normal fitted to --glue-cost (the median) and this (ipa local's ipa_router_glue_seconds shows both). 0: always --glue-cost."`
	Hop       time.Duration `name:"hop-cost" default:"0s" help:"Added to every answer's latency at the client: the time a request spends between processes (uploads, the tensors' trips to the stages, answers), on no modelled core. ipa experiment measures it from its probes: a light load's client latency less the router's glue and the stages' queue and engine times."`
	Startup   string        `name:"startup-delay" default:"local" help:"Time new replicas take to load: local (the profile's load_seconds of the variant a new replica runs; 5.2 s where it has none, measured by ipa local), kubernetes (12 s more: pod start-up SLO 5 s + startup- and readiness-probe periods) or a duration (always)."`
	Machine   int           `name:"machine-cores" default:"0" help:"The machine's cores, shared by the replicas' batches and the router's glue (processor sharing: beyond as many busy threads as cores, each runs slower; the controller sees the glue time as measured). 0: not modelled, every batch and glue takes its own time."`
	Interfere float64       `name:"interference" default:"0" help:"With --machine-cores: how much longer every job takes while the router's glue runs beside another (0.3: 30 % longer; measure it with go test -run XXX -bench GlueBesideAnEngine -benchtime 6x ./dataplane/glue)."`
	Switch    time.Duration `name:"switch-delay" default:"0s" help:"Time a variant switch takes (ipa local: one atomic store, 0)."`
	Fanout    []string      `placeholder:"STEP=ITEMS" help:"Batch rows one request brings to STEP (repeat per step; default 1), e.g. --fanout rec=4 for pages of four text lines; the controller measures it as in ipa local."`

	Slowdown    float64 `name:"slowdown" default:"1" help:"The stages take this many times the profile's times (a machine slower than it was profiled on); the controller plans with the profile and corrects it unless --controller.no-correct."`
	TrueProfile string  `name:"true-profile" placeholder:"FILE" help:"Draw the stages' service times from this profile rather than the one the controller plans with (--slowdown scales it)."`

	Progress bool `default:"true" negatable:"" help:"Show a progress bar (virtual seconds) on a terminal."`

	Out        string `default:"sim" help:"Directory for decisions.jsonl (unless --controller.decision-log names another file; the simulator writes it anew), load-report.json and records.jsonl (render with ipa report)."`
	PlotDir    string `name:"plot-dir" placeholder:"DIR" help:"Also render ipa load's plots here."`
	PlotFormat string `name:"plot-format" default:"svg" enum:"svg,png" help:"Format of the plots: ${enum}."`
}

// setFanouts sets the steps' fan-outs from --fanout flags.
func setFanouts(pipe *sim.Pipeline, flags []string) error {
	steps := make([]string, len(pipe.Steps))
	for i, s := range pipe.Steps {
		steps[i] = s.Name
	}
	fan, err := parseFanouts(flags, pipe.Name, steps)
	if err != nil {
		return err
	}
	pipe.Steps = slices.Clone(pipe.Steps)
	for i := range pipe.Steps {
		pipe.Steps[i].Fanout = fan[i]
	}
	return nil
}

// simPipeline resolves a pipeline for the simulator: the spec, the profile,
// and each step's variants with their accuracies from the model repository,
// or from the repository's catalog where it was not built.
func simPipeline(pf PipelineFlags, repoFlags RepoFlags, profile string) (sim.Pipeline, error) {
	if profile == "" {
		if _, ok := profiles.Measured(pf.Pipeline); !ok {
			return sim.Pipeline{}, fmt.Errorf("pipeline %q: give a profile (--controller.profile FILE, from `ipa profile --pipeline %s --quick`); none ships for it (shipped: %v)", pf.Pipeline, pf.Pipeline, profiles.MeasuredNames())
		}
		profile = builtinProfile + pf.Pipeline
	}
	prof, err := loadProfile(profile)
	if err != nil {
		return sim.Pipeline{}, err
	}
	repo, err := repoFlags.Open()
	if err != nil {
		repo = repobuild.CatalogRepository()
	}
	spec, err := pf.Load(repo)
	if err != nil {
		return sim.Pipeline{}, err
	}
	stages, err := pipelineStages(spec, repo, prof, profile)
	if err != nil {
		return sim.Pipeline{}, err
	}
	p := sim.Pipeline{Name: spec.Name, SLA: spec.SLA, Stages: stages, Profiles: prof}
	for _, s := range spec.Stages {
		p.Steps = append(p.Steps, sim.Step{Name: s.Name, Profile: s.Model, Initial: s.Initial})
	}
	return p, nil
}

// Run simulates, prints ipa load's report and writes the files.
func (c *SimulateCmd) Run(g *Globals) error {
	log := g.Logger().With("role", "simulate")
	pipe, err := simPipeline(c.Pipeline, c.Models, c.Control.Profile)
	if err != nil {
		return err
	}
	if err := setFanouts(&pipe, c.Fanout); err != nil {
		return err
	}
	truth, err := c.trueProfile(pipe.Profiles)
	if err != nil {
		return err
	}
	load, slot, err := c.load()
	if err != nil {
		return err
	}
	proc, err := loadgen.ParseProcess(c.Arrivals)
	if err != nil {
		return err
	}
	startup, overhead, fromProfile, err := sim.ParseStartup(c.Startup)
	if err != nil {
		return fmt.Errorf("--startup-delay: %w", err)
	}
	opt := sim.Options{Pipeline: pipe, SLA: c.SLA, Load: load, Process: proc, Slot: slot, Duration: c.Duration, Total: c.Total, Seed: c.Seed,
		GlueCost: c.Glue, GlueP99: c.GlueP99, HopCost: c.Hop, Cores: c.Machine, Interference: c.Interfere, StartupDelay: startup, SwitchDelay: c.Switch, MaxQueue: c.MaxQueue, MaxInflight: c.MaxInflight, TrueProfile: truth,
		StartupFromProfile: fromProfile, StartupOverhead: overhead, Start: c.Started}
	if opt.Adapt, err = c.Control.adaptation(pipe, c.Adapt); err != nil {
		return err
	}
	if c.Replay != "" {
		ds, _, start, _, err := experiment.ReadRun(c.Replay)
		if err != nil {
			return fmt.Errorf("--replay: %w", err)
		}
		replay := sim.ReplayOf(ds, start)
		if len(replay) == 0 {
			return fmt.Errorf("--replay: %s logs no applied configuration", filepath.Join(c.Replay, experiment.DecisionsFile))
		}
		opt.Adapt = &sim.Adaptation{Config: opt.Adapt.Config, Replay: replay}
		if opt.Start.IsZero() {
			opt.Start = start
		}
	}
	if err := opt.Validate(); err != nil { // before any file is created
		return err
	}
	if err := os.MkdirAll(c.Out, 0o755); err != nil {
		return err
	}
	logPath := cmp.Or(c.Control.DecisionLog, filepath.Join(c.Out, "decisions.jsonl"))
	decisions, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer decisions.Close()
	opt.Decisions = decisions
	stop := c.progress(&opt)
	res, err := sim.Run(context.Background(), opt)
	stop()
	if err != nil {
		return err
	}
	if err := decisions.Close(); err != nil {
		return err
	}
	rep := res.Load.Report()
	if err := rep.WriteText(os.Stdout); err != nil {
		return err
	}
	if err := writeSimFiles(c.Out, res, &rep); err != nil {
		return err
	}
	if c.PlotDir != "" {
		if _, err := loadgen.WritePlots(c.PlotDir, c.PlotFormat, res.Load); err != nil {
			return err
		}
	}
	log.Info("simulated", "requests", len(res.Load.Records), "decisions", len(res.Decisions), "events", res.Events,
		"virtual_seconds", res.Load.Elapsed.Seconds(), "wall_seconds", res.Wall.Seconds())
	fmt.Printf("render: ipa report --decisions %[2]s --records %[1]s/records.jsonl --load-report %[1]s/load-report.json --out %[1]s/report\n", c.Out, logPath)
	return nil
}

// progress shows a bar of virtual seconds on a terminal while opt runs,
// until the returned function is called.
func (c *SimulateCmd) progress(opt *sim.Options) (stop func()) {
	fi, err := os.Stderr.Stat()
	if !c.Progress || err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return func() {}
	}
	var bar *progressbar.ProgressBar
	opt.Progress = func(now, end time.Duration) {
		if bar == nil {
			bar = progressbar.NewOptions64(int64(end.Seconds()), progressbar.OptionSetWriter(os.Stderr), progressbar.OptionSetWidth(30),
				progressbar.OptionShowCount(), progressbar.OptionSetElapsedTime(true), progressbar.OptionSetPredictTime(true),
				progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionSetDescription("virtual seconds"), progressbar.OptionClearOnFinish())
		}
		_ = bar.Set64(int64(now.Seconds()))
	}
	return func() {
		if bar != nil {
			_ = bar.Finish()
		}
	}
}

// trueProfile is what the simulated stages take: --true-profile (or the
// planning profile) scaled by --slowdown; nil when that is the planning
// profile itself.
func (c *SimulateCmd) trueProfile(planning *profiles.Profile) (*profiles.Profile, error) {
	if !(c.Slowdown > 0 && c.Slowdown <= 100) {
		return nil, fmt.Errorf("--slowdown %g must be in (0, 100]", c.Slowdown)
	}
	var truth *profiles.Profile
	if c.TrueProfile != "" {
		p, err := loadProfile(c.TrueProfile)
		if err != nil {
			return nil, fmt.Errorf("--true-profile: %w", err)
		}
		truth = p
	}
	if c.Slowdown != 1 {
		truth = cmp.Or(truth, planning).Scaled(profiles.Uniform(c.Slowdown))
	}
	return truth, nil
}

// writeSimFiles writes ipa load's --report and --records of a simulated run
// into dir.
func writeSimFiles(dir string, res *sim.Result, rep *loadgen.Report) error {
	if err := writeFile(filepath.Join(dir, "load-report.json"), func(w io.Writer) error { return rep.WriteJSON(w) }); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, "records.jsonl"), func(w io.Writer) error {
		return loadgen.WriteRecords(w, res.Load.Records, loadgen.JSONLines)
	})
}

// adaptation is the simulated controller the flags ask for; with adapt
// false it is off: it only logs the running configuration every interval,
// so that the run still has a decision log.
func (f ControllerFlags) adaptation(pipe sim.Pipeline, adapt bool) (*sim.Adaptation, error) {
	pred, err := f.predictor()
	if err != nil {
		return nil, err
	}
	a := &sim.Adaptation{Config: f.Loop, Problem: f.problem(pipe.Stages, pipe.Profiles, pipe.SLA), Solver: f.solver(), Predictor: pred}
	a.Off = !adapt
	return a, nil
}
