package experiment

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ipa-serving/ipa/dataplane/loadgen"
	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/optimizer"
	"github.com/ipa-serving/ipa/orchestrator"
	"github.com/ipa-serving/ipa/orchestrator/report"
	"github.com/ipa-serving/ipa/orchestrator/sim"
	"github.com/ipa-serving/ipa/profiles"
)

// Env is what main injects.
type Env struct {
	// Resolve returns a pipeline (built-in name or spec path) with its
	// profile (empty: the default one).
	Resolve func(name, profile string) (sim.Pipeline, error)
	// Solvers by name (exact, highs, …).
	Solvers map[string]optimizer.Solver
	// Predictor returns a load predictor by name (lstm, reactive, …).
	Predictor func(name string) (orchestrator.Predictor, error)
	// Trace is the trace file when the experiment file names none.
	Trace string
	// Parallel bounds the runs at once (0: GOMAXPROCS).
	Parallel int
	// Progress, when set, is called after each run with the runs done and
	// the total.
	Progress func(done, total int)
	// Real runs one run of mode real (or fidelity) on this machine: ipa
	// local serving the pipeline as the run says, ipa load offering the
	// load, both writing into the run's directory (see RealRun).
	Real func(ctx context.Context, r RealRun) error
	// ReuseReal takes the real runs already in the output directory, when
	// a run's directory holds its decision log, records and load report
	// for the same window and SLA, instead of running them again (mode
	// fidelity: the simulated side runs anew, to calibrate the simulator
	// against runs that took 20 minutes each); with Real set, a run that
	// has no directory there yet runs (a resumed or extended file).
	ReuseReal bool
}

// Run is the result of one pipeline × window × system.
type Run struct {
	Pipeline, Window, System string
	// Mode is sim or real.
	Mode string
	// Sim is the simulation's result (mode sim).
	Sim *sim.Result `json:"-"`
	// Decisions is the controller's log, simulated or real, during the
	// load; Start is when the load's first second began.
	Decisions []orchestrator.Decision `json:"-"`
	Start     time.Time               `json:"-"`
	// Initial is, for a real run whose controller changed the
	// configuration before the load began, what ran when it began (nil:
	// the system's initial configuration).
	Initial   []models.StageConfig `json:"-"`
	Row       Row                  `json:"-"`
	Intervals []report.Interval
	// PAS and Cost per interval, as the run's configuration had them.
	PAS, Cost []float64 `json:"-"`
}

// Row is one line of the summary table.
type Row struct {
	Pipeline string `json:"pipeline"`
	Window   string `json:"window"`
	System   string `json:"system"`
	Requests int    `json:"requests"`
	// PAS is the mean over intervals of 100 × Π stage accuracy / 100 of
	// the configuration that ran, steps without any accuracy left out (the
	// JSys revision's Pipeline Accuracy Score, IPA.md §7).
	PAS float64 `json:"pas"`
	// Cost is the mean over intervals of Σ cores × replicas.
	Cost float64 `json:"cost_cores"`
	// Violations = Dropped + Late (the paper's SLA violations, plus the
	// answers past the SLA the paper's metric ignores).
	Dropped       int     `json:"dropped"`
	Late          int     `json:"late"`
	Violations    int     `json:"violations"`
	ViolationsPct float64 `json:"violations_pct"`
	// P99 is the 99th percentile latency of the answered requests, seconds.
	P99     float64 `json:"p99_seconds"`
	Changes int     `json:"changes"`
	// WallSeconds is what the simulation took (not written, so that the
	// files depend only on the experiment).
	WallSeconds float64 `json:"-"`
}

// job is one run to do.
type job struct {
	pipe   int
	window int
	system System
	load   loadgen.Counts
}

// Execute runs every pipeline × window × system of f and writes each run's
// decision log, report and records under out/runs/PIPELINE/WINDOW/SYSTEM/.
// Runs are independent and deterministic; the results come back in file
// order whatever the parallelism.
func Execute(ctx context.Context, f *File, env Env, out string) ([]*Run, error) {
	switch f.Mode {
	case "real":
		return execute(ctx, f, env, out, "real", "", nil)
	case "fidelity":
		var sims, reals []*Run
		var err error
		probes := ""
		if f.Probe != nil {
			// The simulated runs take their engines from the real runs'
			// probes: the real side first.
			probes = filepath.Join(out, "real")
		}
		// The real side first: each simulated twin starts when its real
		// run's load began (sim.Options.Start), so that the router counts
		// its arrivals in the same wall-clock seconds.
		if reals, err = execute(ctx, f, env, filepath.Join(out, "real"), "real", "", nil); err != nil {
			return nil, err
		}
		if sims, err = execute(ctx, f, env, filepath.Join(out, "sim"), "sim", probes, reals); err != nil {
			return nil, err
		}
		// Each real run's plans, replayed on its simulated twin's machine:
		// the simulator's latency apart from the two controllers' plans.
		replays, err := execute(ctx, f, env, filepath.Join(out, "replay"), "replay", probes, reals)
		if err != nil {
			return nil, err
		}
		return slices.Concat(sims, reals, replays), nil
	}
	return execute(ctx, f, env, out, "sim", "", nil)
}

// execute runs the matrix in one mode. Real runs go one at a time: each
// has the machine to itself. probes, in modes sim and replay, is the
// output directory of the real runs whose probes calibrate each simulated
// twin (File.Probe). Mode replay simulates each of reals with its
// recorded plans (sim.Adaptation.Replay) in place of the controller; mode
// sim starts each run that has a twin in reals when the twin's load began.
func execute(ctx context.Context, f *File, env Env, out, mode, probes string, reals []*Run) ([]*Run, error) {
	if mode == "real" && env.Real == nil && !env.ReuseReal {
		return nil, errors.New("mode real is not available here")
	}
	solver, ok := env.Solvers[f.Solver]
	if !ok {
		return nil, fmt.Errorf("solver %q: not available (have %v)", f.Solver, keys(env.Solvers))
	}
	if _, err := env.Predictor(f.Predictor); err != nil {
		return nil, err
	}
	startup, err := f.startup()
	if err != nil {
		return nil, err
	}
	proc, _ := loadgen.ParseProcess(f.Arrivals)
	loads, err := f.loads(env.Trace)
	if err != nil {
		return nil, err
	}
	pipes := make([]sim.Pipeline, len(f.Pipelines))
	for i, p := range f.Pipelines {
		if pipes[i], err = env.Resolve(p.Name, p.Profile); err != nil {
			return nil, fmt.Errorf("pipeline %q: %w", p.Name, err)
		}
		if pipes[i], err = withFanout(pipes[i], p.Fanout); err != nil {
			return nil, fmt.Errorf("pipeline %q: %w", p.Name, err)
		}
	}
	// The machine the simulated runs of each pipeline run on, read once.
	machines := make([]machine, len(pipes))
	if mode != "real" {
		for i := range pipes {
			if machines[i], err = calibrated(f, pipes[i]); err != nil {
				return nil, err
			}
			if f.GlueCost > 0 {
				machines[i].glue, machines[i].glueP99 = f.GlueCost, 0
			}
		}
	}
	var jobs []job
	for pi := range pipes {
		for wi := range f.Windows {
			for _, s := range f.Systems {
				sys, _ := ParseSystem(s)
				jobs = append(jobs, job{pipe: pi, window: wi, system: sys, load: loads[wi]})
			}
		}
	}
	runs := make([]*Run, len(jobs))
	errs := make([]error, len(jobs))
	par := env.Parallel
	if par <= 0 {
		par = runtime.GOMAXPROCS(0)
	}
	if mode == "real" {
		par = 1
	}
	var (
		mu   sync.Mutex
		done int
		wg   sync.WaitGroup
		next = make(chan int)
	)
	for range min(par, len(jobs)) {
		wg.Go(func() {
			for i := range next {
				j := jobs[i]
				if mode == "real" {
					runs[i], errs[i] = runReal(ctx, f, pipes[j.pipe], f.Pipelines[j.pipe], j, env, out)
				} else if m, err := jobMachine(f, pipes[j.pipe], machines[j.pipe], j, probes); err != nil {
					errs[i] = err
				} else if mode == "replay" {
					runs[i], errs[i] = replayOne(ctx, f, pipes[j.pipe], m, j, reals, proc, startup, out)
				} else {
					runs[i], errs[i] = runOne(ctx, f, pipes[j.pipe], m, j, solver, env.Predictor, proc, startup, out, twin(f, pipes[j.pipe], j, reals))
				}
				mu.Lock()
				done++
				if env.Progress != nil {
					env.Progress(done, len(jobs))
				}
				mu.Unlock()
			}
		})
	}
	for i := range jobs {
		if ctx.Err() != nil {
			errs[i] = ctx.Err()
			continue
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return runs, nil
}

// loads reads the trace once, over the span of every window's segments,
// and builds each window's load.
func (f *File) loads(defaultTrace string) ([]loadgen.Counts, error) {
	lo, hi := math.MaxInt, -1
	for _, w := range f.Windows {
		for _, seg := range w.Trace {
			lo, hi = min(lo, seg[0]), max(hi, seg[1])
		}
	}
	var trace []int
	if hi >= 0 {
		path := cmp.Or(f.Trace, defaultTrace)
		if path == "" {
			return nil, errors.New("trace windows need a trace: set trace in the file")
		}
		var err error
		if trace, err = loadgen.OpenTrace(path, lo, hi); err != nil {
			return nil, err
		}
	}
	out := make([]loadgen.Counts, len(f.Windows))
	for i := range f.Windows {
		var err error
		if out[i], err = f.Windows[i].load(trace, lo, f.Damping); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// jobMachine is the machine j runs on: its pipeline's, or with probes (the
// real runs' output directory) the calibration with the engine times its
// real twin's probes measured.
func jobMachine(f *File, pipe sim.Pipeline, m machine, j job, probes string) (machine, error) {
	if probes == "" {
		return m, nil
	}
	name := fmt.Sprintf("%s/%s/%s", pipe.Name, f.Windows[j.window].Name, j.system.Name)
	pipe, baseline, err := configure(pipe, j.system, j.load)
	if err != nil {
		return m, fmt.Errorf("%s: %w", name, err)
	}
	snaps, err := probeSnapshots(pipe, baseline, filepath.Join(probes, "runs", pipe.Name, f.Windows[j.window].Name, fileName(j.system.Name)))
	if err != nil {
		return m, fmt.Errorf("%s: %w", name, err)
	}
	if m, err = calibrated(f, pipe, snaps...); err != nil {
		return m, fmt.Errorf("%s: %w", name, err)
	}
	if f.GlueCost > 0 {
		m.glue, m.glueP99 = f.GlueCost, 0
	}
	return m, nil
}

// machine is what the simulated stages of a pipeline run at: the profile
// they take their times from (nil: the pipeline's) and the router's glue,
// its median and 99th percentile (0: always the median).
type machine struct {
	truth         *profiles.Profile
	glue, glueP99 time.Duration
	hop           time.Duration // sim.Options.HopCost
}

// twin is the run of reals that is job j's (nil: none).
func twin(f *File, pipe sim.Pipeline, j job, reals []*Run) *Run {
	i := slices.IndexFunc(reals, func(r *Run) bool {
		return r.Pipeline == pipe.Name && r.Window == f.Windows[j.window].Name && r.System == j.system.Name
	})
	if i < 0 {
		return nil
	}
	return reals[i]
}

// runOne simulates one job on m and writes its files; with realRun, its
// real twin, it starts when the twin's load began.
func runOne(ctx context.Context, f *File, pipe sim.Pipeline, m machine, j job, solver optimizer.Solver,
	predictor func(string) (orchestrator.Predictor, error), proc loadgen.Process, startup startup, out string, realRun *Run) (*Run, error) {
	name := fmt.Sprintf("%s/%s/%s", pipe.Name, f.Windows[j.window].Name, j.system.Name)
	pred, err := predictor(f.Predictor)
	if err != nil {
		return nil, err
	}
	pipe, baseline, err := configure(pipe, j.system, j.load)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	problem := pipe.Problem(j.system.Alpha, j.system.Beta, f.ScalingCap, f.CoreCapacity)
	problem.Baseline = baseline
	var start time.Time
	if realRun != nil {
		start = realRun.Start
	}
	return simulateJob(ctx, f, pipe, m, j, "sim", &sim.Adaptation{Config: f.loop(),
		Problem: problem, Solver: solver, Predictor: pred, Off: baseline == optimizer.Fixed}, proc, startup, out, start)
}

// replayOne simulates the real run of job j, taken from reals, with the
// configurations its controller applied, when it applied them.
func replayOne(ctx context.Context, f *File, pipe sim.Pipeline, m machine, j job, reals []*Run,
	proc loadgen.Process, startup startup, out string) (*Run, error) {
	name := fmt.Sprintf("%s/%s/%s", pipe.Name, f.Windows[j.window].Name, j.system.Name)
	realRun := twin(f, pipe, j, reals)
	if realRun == nil {
		return nil, fmt.Errorf("%s: no real run to replay", name)
	}
	pipe, _, err := configure(pipe, j.system, j.load)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	replay := sim.ReplayOf(realRun.Decisions, realRun.Start)
	if realRun.Initial != nil {
		replay = append([]sim.Replayed{{Configs: realRun.Initial}}, replay...)
	}
	if len(replay) == 0 {
		return nil, fmt.Errorf("%s: the real run logged no configuration to replay", name)
	}
	return simulateJob(ctx, f, pipe, m, j, "replay", &sim.Adaptation{Config: f.loop(), Replay: replay}, proc, startup, out, realRun.Start)
}

// simulateJob runs one job of pipe (configured for its system) on m under
// adapt, starting at start (zero: sim.Epoch), and writes its files.
func simulateJob(ctx context.Context, f *File, pipe sim.Pipeline, m machine, j job, mode string, adapt *sim.Adaptation,
	proc loadgen.Process, startup startup, out string, start time.Time) (*Run, error) {
	name := fmt.Sprintf("%s/%s/%s", pipe.Name, f.Windows[j.window].Name, j.system.Name)
	var log bytes.Buffer
	res, err := sim.Run(ctx, startup.options(sim.Options{
		Pipeline: pipe, Load: j.load, Process: proc, Seed: f.Seed, TrueProfile: m.truth, Adapt: adapt,
		GlueCost: m.glue, GlueP99: m.glueP99, HopCost: m.hop, Cores: f.CoreCapacity, Interference: f.Interference, SwitchDelay: f.SwitchDelay, Decisions: &log, Start: start,
	}))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	r := &Run{Pipeline: pipe.Name, Window: f.Windows[j.window].Name, System: j.system.Name, Mode: mode, Sim: res, Decisions: res.Decisions, Start: res.Load.Start}
	reqs := make([]report.Request, len(res.Load.Records))
	for i, rec := range res.Load.Records {
		reqs[i] = report.Request{Sent: rec.Sent.Seconds(), Latency: rec.Latency.Seconds(), Outcome: rec.Kind.String()}
	}
	r.summarize(pipe, reqs, res.Load.Start, res.Load.SLA, res.Wall)
	if out != "" {
		dir := filepath.Join(out, "runs", pipe.Name, r.Window, fileName(r.System))
		if err := writeRun(dir, res, log.Bytes()); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	return r, nil
}

// configure sets the initial configuration and the baseline of a system
// (IPA.md §2.6): fa2 pins the variant (scale baseline), rim the replicas
// (switch baseline); static and off run with the controller off (fixed).
func configure(pipe sim.Pipeline, sys System, load loadgen.Counts) (sim.Pipeline, optimizer.Baseline, error) {
	steps := slices.Clone(pipe.Steps)
	pipe.Steps = steps
	peak := slices.Max(append([]float64{0}, load...))
	switch sys.Kind {
	case "ipa":
		return pipe, optimizer.Full, nil
	case "off":
		return pipe, optimizer.Fixed, nil
	case "static":
		if len(sys.Static) != len(steps) {
			return pipe, "", fmt.Errorf("static gives %d configurations for %d steps", len(sys.Static), len(steps))
		}
		for i := range steps {
			steps[i].Initial = sys.Static[i]
		}
		return pipe, optimizer.Fixed, nil
	}
	for i := range steps {
		st := &pipe.Stages[i]
		prof := pipe.Profiles.Stage(cmp.Or(steps[i].Profile, steps[i].Name))
		if prof == nil {
			return pipe, "", fmt.Errorf("step %q is not in the profile", steps[i].Name)
		}
		var v string
		var err error
		switch sys.Kind {
		case "fa2-high":
			v, err = heavy(st, prof, pipe.SLA/time.Duration(len(steps)), sys.Variant)
		default:
			v = lightest(st, prof)
		}
		if err != nil {
			return pipe, "", fmt.Errorf("step %q: %w", steps[i].Name, err)
		}
		vp := pipe.Profiles.Variant(prof.Name, v)
		c := vp.Cores()[0]
		steps[i].Initial = models.StageConfig{Variant: v, MaxBatch: 1, Replicas: 1, Cores: c}
		if sys.Kind == "rim" {
			n := sys.Replicas
			if n == 0 { // provisioned for the window's peak with the heavy variant, as RIM's fixed large capacity
				hv, err := heavy(st, prof, pipe.SLA/time.Duration(len(steps)), "")
				if err != nil {
					return pipe, "", err
				}
				pt, _ := pipe.Profiles.Variant(prof.Name, hv).Configs[0].Lookup(1)
				fan := cmp.Or(steps[i].Fanout, 1) // rows per request
				n = max(1, int(math.Ceil(peak*fan/pt.Throughput)))
			}
			steps[i].Initial.Replicas = n
		}
	}
	if sys.Kind == "rim" {
		return pipe, optimizer.Switch, nil
	}
	return pipe, optimizer.Scale, nil
}

// lightest is the offered variant with the highest one-replica throughput
// at batch 1 and its fewest cores (ties: the less accurate).
func lightest(st *optimizer.Step, prof *profiles.StageProfile) string {
	best, bestH, bestA := "", -1.0, 0.0
	for _, v := range st.Variants {
		h := throughput1(prof, v.Name)
		if h > bestH || (h == bestH && v.Accuracy < bestA) {
			best, bestH, bestA = v.Name, h, v.Accuracy
		}
	}
	return best
}

// heavy is want, or the most accurate offered variant whose batch-1 p99 at
// its fewest cores fits share (its step's part of the SLA).
func heavy(st *optimizer.Step, prof *profiles.StageProfile, share time.Duration, want string) (string, error) {
	if want != "" {
		for _, v := range st.Variants {
			if v.Name == want {
				return want, nil
			}
		}
		return "", fmt.Errorf("fa2-high:%s: not an offered variant", want)
	}
	best, bestA := "", math.Inf(-1)
	for _, v := range st.Variants {
		vp := variant(prof, v.Name)
		if vp == nil {
			continue
		}
		pt, err := vp.Configs[0].Lookup(1)
		if err != nil || pt.LatencyP99 > share.Seconds() {
			continue
		}
		if v.Accuracy > bestA {
			best, bestA = v.Name, v.Accuracy
		}
	}
	if best == "" {
		return "", fmt.Errorf("no variant meets %s at batch 1", share)
	}
	return best, nil
}

func variant(prof *profiles.StageProfile, name string) *profiles.VariantProfile {
	for i := range prof.Variants {
		if prof.Variants[i].Name == name {
			return &prof.Variants[i]
		}
	}
	return nil
}

func throughput1(prof *profiles.StageProfile, name string) float64 {
	vp := variant(prof, name)
	if vp == nil {
		return -1
	}
	pt, err := vp.Configs[0].Lookup(1)
	if err != nil {
		return -1
	}
	return pt.Throughput
}

// summarize fills r's row and per-interval series from its decisions and
// the requests' records.
func (r *Run) summarize(pipe sim.Pipeline, reqs []report.Request, start time.Time, sla, wall time.Duration) {
	lat := make([]float64, 0, len(reqs))
	for _, q := range reqs {
		if q.Outcome == loadgen.Succeeded.String() {
			lat = append(lat, q.Latency)
		}
	}
	iv, sum := report.Build(r.Decisions, reqs, start, sla)
	r.Intervals = iv
	// A step none of whose variants has an accuracy (all 0: BlazeFace has
	// no published one) is left out of the product: it would make every
	// PAS of the pipeline 0.
	acc := map[string]float64{}
	unknown := map[int]bool{}
	for s, st := range pipe.Stages {
		unknown[s] = true
		for _, v := range st.Variants {
			acc[fmt.Sprint(s, "/", v.Name)] = v.Accuracy
			unknown[s] = unknown[s] && v.Accuracy == 0
		}
	}
	var pas, cost float64
	for _, d := range r.Decisions {
		p, c := 100.0, 0
		for s, cfg := range d.Applied {
			if !unknown[s] {
				p *= acc[fmt.Sprint(s, "/", cfg.Variant)] / 100
			}
			c += cfg.Cores * cfg.Replicas
		}
		r.PAS, r.Cost = append(r.PAS, p), append(r.Cost, float64(c))
		pas += p
		cost += float64(c)
	}
	n := max(len(r.Decisions), 1)
	slices.Sort(lat)
	row := Row{Pipeline: r.Pipeline, Window: r.Window, System: r.System, Requests: len(reqs),
		PAS: pas / float64(n), Cost: cost / float64(n), Dropped: sum.Drops, Late: sum.Late, Violations: sum.Violations,
		Changes: sum.Changes, WallSeconds: wall.Seconds()}
	if len(reqs) > 0 {
		row.ViolationsPct = 100 * float64(sum.Violations) / float64(len(reqs))
	}
	if len(lat) > 0 {
		row.P99 = lat[min(len(lat)-1, int(math.Ceil(0.99*float64(len(lat))))-1)]
	}
	r.Row = row
}

// writeRun writes a run as ipa local and ipa load would have: the decision
// log, the load report and the records.
func writeRun(dir string, res *sim.Result, decisions []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, DecisionsFile), decisions, 0o644); err != nil {
		return err
	}
	rep := res.Load.Report()
	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, LoadReportFile), b.Bytes(), 0o644); err != nil {
		return err
	}
	b.Reset()
	if err := loadgen.WriteRecords(&b, res.Load.Records, loadgen.JSONLines); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, RecordsFile), b.Bytes(), 0o644)
}

// fileName makes a system name safe as a directory name.
func fileName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// withFanout sets the fan-out of the steps fan names.
func withFanout(pipe sim.Pipeline, fan map[string]float64) (sim.Pipeline, error) {
	pipe.Steps = slices.Clone(pipe.Steps)
	for name, f := range fan {
		i := slices.IndexFunc(pipe.Steps, func(s sim.Step) bool { return s.Name == name })
		if i < 0 {
			return pipe, fmt.Errorf("fanout: no step %q", name)
		}
		pipe.Steps[i].Fanout = f
	}
	return pipe, nil
}

// calibrated returns what f's calibration (File.Calibration), real runs'
// decision logs, says of this machine: the profile the simulated stages of
// pipe run at, the pipeline's scaled per step and variant by the
// corrections at the end of a log (of the log with the most batches behind
// the variant's or the step's correction; a variant without evidence of
// its own takes its step's factor), and the router's glue time per
// request from what their controllers measured (0 when they logged none):
// the median; or, with interference (the simulator slows the glue itself
// beside other work), what the glue takes alone: glueAlone. Where the
// calibration holds snapshots of ipa local's /metrics (a real run's
// metrics.txt, or such a snapshot named on its own), the glue varies as it
// did there (its 99th percentile is the median's times the router's glue
// histogram's p99 ÷ p50), and a variant whose engine times they hold
// (ipa_stage_batch_engine_seconds, minEngineSamples batches of a shape at
// least) runs at the speed its median says, whatever the logs' corrections,
// each measured point taking the median and p99 measured in serving.
// Snapshots of probes (File.Probe), if given, replace the calibration's
// engine times of every variant and batch shape they measured in at least
// minEngineSamples batches; a variant its probe measured in fewer (one too
// slow to keep up with the probe's rate, whose requests the stage refused)
// keeps the calibration's. The probes' glue histograms, together, replace
// the calibration's glue where they hold minEngineSamples requests: the
// glue takes their median, and varies to their 99th percentile (a probe
// runs one variant at a low rate, so its glue is the glue alone, what the
// simulator slows itself with interference; without interference the
// calibration's median was the glue under its runs' load). The probes also
// give the hops between processes (probeHop; their median), which nothing
// else measures. Without a calibration or probes: the zero machine.
func calibrated(f *File, pipe sim.Pipeline, probes ...string) (machine, error) {
	if len(f.Calibration) == 0 && len(probes) == 0 {
		return machine{}, nil
	}
	stage, variant := map[string]factor{}, map[[2]string]factor{}
	var glue []glueSample
	snap := newSnapshot()
	for _, path := range f.Calibration {
		if isMetricsFile(path) {
			if err := snap.read(path, pipe); err != nil {
				return machine{}, err
			}
			continue
		}
		last, g, err := readCalibration(path)
		if err != nil {
			return machine{}, err
		}
		if dir := runDir(path); dir != "" {
			if _, err := os.Stat(filepath.Join(dir, MetricsFile)); err == nil {
				if err := snap.read(filepath.Join(dir, MetricsFile), pipe); err != nil {
					return machine{}, err
				}
			}
		}
		glue = append(glue, g...)
		// By the profile's stage name: the steps' corrections are named by step.
		for _, c := range last {
			i := slices.IndexFunc(pipe.Steps, func(s sim.Step) bool { return s.Name == c.Stage })
			if i < 0 {
				continue
			}
			prof := cmp.Or(pipe.Steps[i].Profile, pipe.Steps[i].Name)
			keepMost(stage, prof, factor{c.Factor, c.Evidence})
			for _, v := range c.Variants {
				keepMost(variant, [2]string{prof, v.Variant}, factor{v.Factor, v.Evidence})
			}
		}
	}
	probeGlue := histogram{}
	var hops []time.Duration
	for _, path := range probes {
		ps := newSnapshot()
		if err := ps.read(path, pipe); err != nil {
			return machine{}, err
		}
		if hop, ok, err := probeHop(path, ps, pipe); err != nil {
			return machine{}, err
		} else if ok {
			hops = append(hops, hop)
		}
		for r, c := range ps.glue {
			probeGlue[r] += c
		}
		for k, h := range ps.engines {
			if _, _, n, ok := h.quantiles(); ok && n >= minEngineSamples {
				snap.engines[k] = h
			}
		}
	}
	var m machine
	if len(glue) > 0 {
		sec := glueMedian(glue)
		if f.Interference > 0 {
			sec = glueAlone(glue)
		}
		m.glue = time.Duration(sec * float64(time.Second))
	}
	if p50, p99, _, ok := snap.glue.quantiles(); ok && m.glue > 0 && p50 > 0 {
		m.glueP99 = time.Duration(float64(m.glue) * p99 / p50)
	}
	if p50, p99, n, ok := probeGlue.quantiles(); ok && n >= minEngineSamples && p50 > 0 {
		m.glue, m.glueP99 = time.Duration(p50*float64(time.Second)), time.Duration(p99*float64(time.Second))
	}
	m.hop = medianHop(hops)
	for v, x := range snap.engineSpeeds(pipe.Profiles) {
		variant[v] = factor{x, math.Inf(1)}
	}
	m.truth = pipe.Profiles.Scaled(func(s, v string, _, _ int) float64 {
		if x, ok := variant[[2]string{s, v}]; ok {
			return x.x
		}
		return cmp.Or(stage[s].x, 1)
	})
	snap.setEngineTimes(m.truth)
	return m, nil
}

// isMetricsFile tells a metrics snapshot (metrics.txt, or NAME.metrics.txt)
// from a decision log.
func isMetricsFile(path string) bool {
	b := filepath.Base(path)
	return b == MetricsFile || strings.HasSuffix(b, "."+MetricsFile)
}

// runDir is path when it is a directory (a run's), else "".
func runDir(path string) string {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return path
	}
	return ""
}

// glueSample is one interval of a calibration log: the router's mean glue
// time per request, at the load the controller observed.
type glueSample struct{ rps, seconds float64 }

func glueMedian(g []glueSample) float64 {
	x := make([]float64, len(g))
	for i, s := range g {
		x[i] = s.seconds
	}
	slices.Sort(x)
	return x[len(x)/2]
}

// glueAlone is the glue's time with nothing beside it: where a least-squares
// line through the samples' glue time against their load meets no load
// (the glue slows as the load adds work beside it). It falls back to the
// median where the line is not to be trusted: loads that hardly vary (less
// than 5 req/s apart), a line that falls with the load, or one that meets
// no load below half the median.
func glueAlone(g []glueSample) float64 {
	med := glueMedian(g)
	var mx, my float64
	for _, s := range g {
		mx, my = mx+s.rps, my+s.seconds
	}
	n := float64(len(g))
	mx, my = mx/n, my/n
	var sxy, sxx, lo, hi float64
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, s := range g {
		sxy += (s.rps - mx) * (s.seconds - my)
		sxx += (s.rps - mx) * (s.rps - mx)
		lo, hi = min(lo, s.rps), max(hi, s.rps)
	}
	if hi-lo < 5 || sxx == 0 || sxy <= 0 {
		return med
	}
	if a := my - sxy/sxx*mx; a >= med/2 {
		return min(a, med)
	}
	return med
}

// factor is a profile correction and the batches behind it.
type factor struct{ x, evidence float64 }

// keepMost sets m[k] to x unless m holds a factor with more evidence.
func keepMost[K comparable](m map[K]factor, k K, x factor) {
	if old, ok := m[k]; !ok || x.evidence > old.evidence {
		m[k] = x
	}
}

// readCalibration reads a real run's decision log (path, or path's
// decisions.jsonl when it is a run's directory): the profile corrections at
// its end and the glue times it logged. A log with neither is an error.
func readCalibration(path string) ([]orchestrator.StageCorrection, []glueSample, error) {
	if runDir(path) != "" {
		path = filepath.Join(path, DecisionsFile)
	}
	fh, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("calibration: %w", err)
	}
	defer fh.Close()
	ds, err := report.ReadDecisions(fh)
	if err != nil {
		return nil, nil, fmt.Errorf("calibration %s: %w", path, err)
	}
	var last []orchestrator.StageCorrection
	var glue []glueSample
	for _, d := range ds {
		if len(d.Corrections) > 0 {
			last = d.Corrections
		}
		if d.Glue > 0 {
			glue = append(glue, glueSample{d.Observed, d.Glue})
		}
	}
	if last == nil && glue == nil {
		return nil, nil, fmt.Errorf("calibration %s: its controller logged no profile correction and no glue time (was it run with the correction off, before glue_seconds was logged?)", path)
	}
	return last, glue, nil
}
