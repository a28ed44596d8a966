package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/optimizer"
	"github.com/ipa-serving/ipa/optimizer/highs"
	"github.com/ipa-serving/ipa/profiles"
)

// SolveCmd solves the integer program once and prints the plan.
type SolveCmd struct {
	Problem      string        `placeholder:"FILE" help:"The whole problem as one JSON document of at most 64 MiB (optimizer.Problem: stages, profiles inline, arrival_rate, sla_seconds, alpha, beta, gamma all required, …); the flags below are then ignored."`
	Models       RepoFlags     `embed:"" prefix:"models."`
	Pipeline     PipelineFlags `embed:""`
	Profile      string        `placeholder:"FILE" help:"Profile file written by 'ipa profile' (required without --problem)."`
	Rate         *float64      `help:"Arrival rate λ in requests per second (required without --problem; 0 for no load)."`
	SLA          time.Duration `help:"End-to-end SLA, positive (default, or 0: the pipeline's)."`
	DeriveSLA    float64       `name:"derive-sla" help:"Derive the SLA from the profile as the paper did, with this positive factor (e.g. 5); overrides --sla."`
	Alpha        float64       `default:"1" help:"Weight of accuracy."`
	Beta         float64       `default:"0.05" help:"Weight of cost (cores)."`
	Gamma        float64       `default:"1e-6" help:"Weight of the sum of batch sizes (tie-break toward small batches)."`
	Accuracy     string        `default:"sum" enum:"sum,average,multiply" help:"How stage accuracies combine: ${enum}."`
	Normalize    bool          `help:"Use accuracy ranks within each stage instead of raw values."`
	BatchCap     int           `help:"Largest batch size considered (0: no cap)."`
	ScalingCap   int           `help:"Most replicas per stage (0: 100)."`
	CoreCapacity int           `help:"Most cores in total (0: unbounded)."`
	Baseline     string        `default:"" enum:",scale,switch,fixed" help:"Restrict to a baseline of the paper (needs the pipeline's initial configuration as current)."`
	Compat       bool          `help:"Reproduce the original IPA latency model (for comparison with published runs)."`
	Fanout       []string      `placeholder:"STEP=ITEMS" help:"Items (batch rows) one request brings to STEP (repeat per step; default 1), e.g. --fanout rec=20 for pages of 20 text lines: the step must carry rate × ITEMS."`
	Solver       string        `default:"highs" enum:"highs,exact,brute" help:"Solver: ${enum}."`
	Output       string        `default:"table" enum:"table,json" help:"Output: ${enum}."`
}

// Run builds the problem, solves it and prints the plan. An infeasible
// problem prints the max-throughput fallback plan and exits non-zero; so
// does every other error, with a one-line message.
func (c *SolveCmd) Run(*Globals) error { return c.run(os.Stdout) }

func (c *SolveCmd) run(out io.Writer) error {
	p, err := c.problem()
	if err != nil {
		return err
	}
	var s optimizer.Solver = highs.Solver{}
	switch c.Solver {
	case "exact":
		s = optimizer.Exact{}
	case "brute":
		s = optimizer.BruteForce{}
	}
	plan, solveErr := optimizer.Solve(p, s, time.Now)
	if solveErr != nil && !errors.Is(solveErr, optimizer.ErrInfeasible) {
		return solveErr
	}
	if len(plan.Stages) == 0 && solveErr != nil {
		return solveErr // no plan at all, not even a fallback: only the reason
	}
	if c.Output == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(plan); err != nil {
			return err
		}
	} else {
		w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "STAGE\tVARIANT\tBATCH\tREPLICAS\tCORES\tP99 BATCH\tFILL\tCAPACITY/s\tCHANGED")
		for _, st := range plan.Stages {
			est := ""
			if st.Estimated {
				est = " (estimated)"
			}
			fmt.Fprintf(w, "%s\t%s\t%d%s\t%d\t%d\t%s\t%s\t%.1f\t%v\n", st.Stage, st.Variant, st.Batch, est, st.Replicas, st.Cores,
				st.ProfiledLatency.Round(time.Microsecond), st.Queue.Round(time.Microsecond), st.Throughput, st.Changed)
		}
		w.Flush()
		fmt.Fprintf(out, "\nλ %.4g/s, SLA %s: predicted latency %s, capacity %.1f/s (headroom %.1f/s), accuracy %.4f, cost %d cores, objective %.6g\n",
			p.ArrivalRate, p.SLA, plan.Latency.Round(time.Microsecond), plan.Throughput, plan.Headroom, plan.Accuracy, plan.Cost, plan.Objective)
		fmt.Fprintf(out, "solver %s in %s\n", plan.Solver, plan.SolveTime.Round(time.Microsecond))
		if plan.Fallback {
			fmt.Fprintln(out, "INFEASIBLE: this is the max-throughput fallback plan, which does not meet the SLA at this load")
		}
	}
	return solveErr
}

func (c *SolveCmd) problem() (*optimizer.Problem, error) {
	if c.Problem != "" {
		f, err := os.Open(c.Problem)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		p, err := optimizer.ReadProblem(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Problem, err)
		}
		return p, nil
	}
	if c.Profile == "" {
		return nil, fmt.Errorf("give --profile FILE (from 'ipa profile') or --problem FILE")
	}
	if c.Rate == nil {
		return nil, fmt.Errorf("give --rate (the arrival rate λ in requests per second; 0 for no load)")
	}
	prof, err := loadProfile(c.Profile)
	if err != nil {
		return nil, err
	}
	repo, spec, err := c.Pipeline.Open(c.Models)
	if err != nil {
		return nil, err
	}
	p := &optimizer.Problem{Profiles: prof, ArrivalRate: *c.Rate, SLA: spec.SLA, Alpha: c.Alpha, Beta: c.Beta, Gamma: c.Gamma,
		Accuracy: optimizer.AccuracyMode(c.Accuracy), Normalize: c.Normalize, BatchCap: c.BatchCap, ScalingCap: c.ScalingCap,
		CoreCapacity: c.CoreCapacity, Baseline: optimizer.Baseline(c.Baseline), Compat: c.Compat}
	if p.Stages, err = pipelineStages(spec, repo, prof, c.Profile); err != nil {
		return nil, err
	}
	for _, s := range spec.Stages {
		p.Current = append(p.Current, s.Initial)
	}
	fan, err := parseFanouts(c.Fanout, spec.Name, spec.StepNames())
	if err != nil {
		return nil, err
	}
	for i := range p.Stages {
		p.Stages[i].Fanout = fan[i] // Validate bounds it
	}
	switch {
	case c.SLA < 0:
		return nil, fmt.Errorf("--sla %s: give a positive duration (or leave it out for the pipeline's, %s)", c.SLA, spec.SLA)
	case c.DeriveSLA < 0 || math.IsNaN(c.DeriveSLA) || math.IsInf(c.DeriveSLA, 0):
		return nil, fmt.Errorf("--derive-sla %g: give a positive factor, e.g. 5 (or leave it out)", c.DeriveSLA)
	}
	if c.SLA > 0 {
		p.SLA = c.SLA
	}
	if c.DeriveSLA > 0 {
		if p.SLA, err = optimizer.DeriveSLA(prof, p.Stages, c.DeriveSLA); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func loadProfile(path string) (*profiles.Profile, error) {
	if name, ok := strings.CutPrefix(path, builtinProfile); ok {
		b, ok := profiles.Measured(name)
		if !ok {
			return nil, fmt.Errorf("no shipped profile for pipeline %q (have %v)", name, profiles.MeasuredNames())
		}
		prof, err := profiles.Load(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return prof, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	prof, err := profiles.Load(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return prof, nil
}

// builtinProfile prefixes the name of a shipped profile ("builtin:ocr") where
// a profile file is expected.
const builtinProfile = "builtin:"

// pipelineStages offers, for each step of spec, the variants of its
// repository stage that the profile measured, with their accuracy.
func pipelineStages(spec *models.Pipeline, repo *models.Repository, prof *profiles.Profile, profPath string) ([]optimizer.Step, error) {
	var stages []optimizer.Step
	for _, s := range spec.Stages {
		meta, err := s.RepoStage(repo)
		if err != nil {
			return nil, err
		}
		st := optimizer.StagesFromModels(meta)[0]
		st.Name, st.Profile = s.Name, meta.Name
		var offered []optimizer.Variant
		for _, v := range st.Variants {
			if prof.Variant(meta.Name, v.Name) != nil {
				offered = append(offered, v)
			}
		}
		if len(offered) == 0 {
			return nil, fmt.Errorf("profile %s has no variant of stage %q; run `ipa profile --stage %s`", profPath, meta.Name, meta.Name)
		}
		st.Variants = offered
		stages = append(stages, st)
	}
	return stages, nil
}

// parseFanouts reads --fanout STEP=ITEMS flags into one value per step (0:
// not given, one item per request).
func parseFanouts(flags []string, pipeline string, steps []string) ([]float64, error) {
	out := make([]float64, len(steps))
	for _, f := range flags {
		name, v, ok := strings.Cut(f, "=")
		items, err := strconv.ParseFloat(v, 64)
		i := slices.Index(steps, name)
		switch {
		case !ok || err != nil:
			return nil, fmt.Errorf("--fanout %q: want STEP=ITEMS, e.g. rec=20", f)
		case i < 0:
			return nil, fmt.Errorf("--fanout %q: pipeline %q has no step %q (steps: %v)", f, pipeline, name, steps)
		}
		out[i] = items
	}
	return out, nil
}
