// Package experiment is the paper's experiment runner (`ipa experiment
// FILE.yaml`): it runs every pipeline × load window × system of a file,
// in parallel, and writes per-run results, a summary table (Markdown, CSV,
// JSON) and one comparison figure per pipeline in the style of the paper's
// Figure 8.
//
// Systems (IPA.md §2.6): ipa (with objective presets), fa2-low and
// fa2-high (the scale-only baseline pinned to the lightest or a heavy
// variant), rim (the switch-only baseline on a fixed replica count),
// static:<config> and off (the loop runs pinned, baseline fixed, so every
// run has a decision log). Mode sim runs each in orchestrator/sim; mode
// real runs each on this machine (ipa local + ipa load, through
// Env.Real), one at a time; mode fidelity runs both and compares them
// (Compare).
//
// The package is pure Go like the simulator: main injects the pipeline
// resolver, the solvers and the predictors.
package experiment

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/ipa-serving/ipa/dataplane/loadgen"
	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/models/yamlx"
	"github.com/ipa-serving/ipa/orchestrator"
	"github.com/ipa-serving/ipa/orchestrator/sim"
)

// File is an experiment file.
type File struct {
	Name string `yaml:"name"`
	// Mode is sim (default), real (ipa local + ipa load on this machine, one
	// run at a time) or fidelity (both, compared: see Tolerances).
	Mode string `yaml:"mode"`
	Seed uint64 `yaml:"seed"`
	// Trace is the per-second trace of the trace windows (default: the
	// runner's: the Twitter trace built into ipa).
	Trace string `yaml:"trace"`
	// Damping divides trace counts (default 8, as the paper).
	Damping float64 `yaml:"damping"`
	// Arrivals is poisson (default), burst (IPA's tester; "exponential" reads as burst) or equal.
	Arrivals string `yaml:"arrivals"`

	// The loop and the optimizer, shared by every system.
	Interval   time.Duration `yaml:"interval"`    // default 10s
	History    int           `yaml:"history"`     // default 120
	Margin     float64       `yaml:"margin"`      // default 1.1
	SwitchCost *float64      `yaml:"switch_cost"` // default 0.01, as ipa's controller; 0 disables
	// Correct is the controller's online profile correction (default true,
	// as ipa local's; orchestrator.Config.Correct), simulated and real.
	Correct      *bool  `yaml:"correct"`
	Predictor    string `yaml:"predictor"`     // default lstm
	Solver       string `yaml:"solver"`        // default exact
	CoreCapacity int    `yaml:"core_capacity"` // required
	ScalingCap   int    `yaml:"scaling_cap"`   // default 16

	// The simulated data plane. The simulated machine has core_capacity
	// cores, shared by the replicas' batches and the router's glue
	// (processor sharing); Interference is how much longer a glue and
	// whatever runs beside it take while they run together
	// (sim.Options.Interference; default 0; measure it with `go test -run
	// XXX -bench GlueBesideAnEngine -benchtime 6x ./dataplane/glue`).
	GlueCost     time.Duration `yaml:"glue_cost"`
	Interference float64       `yaml:"interference"`
	StartupDelay string        `yaml:"startup_delay"` // local (default), kubernetes or a duration
	// Calibration is one or more real runs' decision logs (a file, or a
	// run's directory holding decisions.jsonl; a string or a list): the
	// simulated stages take the profile's times scaled by the profile
	// corrections the logs' controllers had measured at their ends, per
	// step and variant (this machine as it was then; where several logs
	// measured a variant, the one with the most batches behind it), while
	// the simulated controller plans with the profile and corrects it, as
	// the real one does; and the router's glue cost is the median of what
	// they measured (glue_seconds), or with Interference what the glue
	// takes alone (where their glue times against their load meet no
	// load), unless glue_cost is set. An entry may also be a snapshot of
	// ipa local's /metrics (NAME.metrics.txt; a run directory's
	// metrics.txt is read with its log): its ipa_router_glue_seconds
	// histogram gives the glue its spread (p99 ÷ p50), and its
	// ipa_stage_batch_engine_seconds histograms give each variant they
	// measured its speed and spread in serving, over the logs' corrections
	// (calibrated). Empty: the stages run as profiled.
	Calibration Paths         `yaml:"calibration"`
	SwitchDelay time.Duration `yaml:"switch_delay"`

	Pipelines []PipelineRef `yaml:"pipelines"`
	Windows   []Window      `yaml:"windows"`
	Systems   []string      `yaml:"systems"`

	// Fidelity are the tolerances of mode fidelity.
	Fidelity Tolerances `yaml:"fidelity"`

	// Probe (modes real and fidelity) measures, right before each real
	// run, every variant the run's system may serve (ipa and rim: each
	// offered variant; fa2, static and off: the pinned ones) alone at
	// batch 1 on one replica of its fewest cores, the other steps as the
	// run starts them, for Duration at Rate requests a second: each probe
	// is a real run of its own under the run's directory
	// (probe/STEP-VARIANT/, its metrics.txt kept). The simulated twin of
	// the run (mode fidelity) takes the engine times of the variants its
	// probes measured from them, over the calibration's: the machine of
	// the minutes before the run, not of the hour the calibration was
	// taken (an engine's median moves by a few percent from one hour to
	// the next, which a p99 at 45 % utilisation amplifies about 2.5
	// times). Mode fidelity then runs the real side first. A run with few
	// variants to probe probes each longer, so that its probes send
	// glueRequests together (Probe.loadFor).
	Probe *Probe `yaml:"probe"`
}

// Probe is a light load that measures each variant a real run may use,
// right before it (File.Probe).
type Probe struct {
	Rate     float64       `yaml:"rate"`
	Duration time.Duration `yaml:"duration"`
}

// glueRequests is the fewest requests the probes of one real run send
// together: the router's glue of the twin varies to their glue's 99th
// percentile, which 160 requests (one probe) put at their second slowest.
// On classify's steady-low window under fa2-low (one variant probed, 165
// requests) the twin's p99 was 30 % under the real one; with the glue's
// spread as the run itself measured it (5,958 requests), 12 %.
const glueRequests = 1000

// loadFor is the load of each of n probes of one run, its arrivals per
// second: a constant-rate window's, made longer (at the same rate) when
// the n together would send fewer than glueRequests.
func (p *Probe) loadFor(n int) loadgen.Counts {
	d := p.Duration
	if need := time.Duration(math.Ceil(glueRequests/(p.Rate*float64(max(n, 1))))) * time.Second; need > d {
		d = need
	}
	out, _ := (&Window{Rate: p.Rate, Duration: d}).load(nil, 0, 1) // a rate window has no error
	return out
}

// Tolerances bound how far a simulated run may be from the same run on
// this machine (mode fidelity). Zero fields take the defaults (the issue's
// targets); PlanAgreement is only reported unless set.
type Tolerances struct {
	// P99 bounds |sim p99 / real p99 − 1| (default 0.15).
	P99 float64 `yaml:"p99" json:"p99"`
	// ViolationsPP bounds |sim − real| SLA-violation rate, in percentage
	// points (default 1).
	ViolationsPP float64 `yaml:"violations_pp" json:"violations_pp"`
	// Cost bounds |sim mean cost / real mean cost − 1| (default 0.10).
	Cost float64 `yaml:"cost" json:"cost"`
	// PlanAgreement is the least share of intervals whose configurations
	// agree (0: not checked).
	PlanAgreement float64 `yaml:"plan_agreement" json:"plan_agreement"`
}

// PipelineRef names a pipeline (built-in or a spec file) and its profile
// (default: profiles/measured/NAME.json).
type PipelineRef struct {
	Name    string `yaml:"name"`
	Profile string `yaml:"profile"`
	// Body is the file every request of a real run sends (modes real and
	// fidelity), e.g. docs/sample-page.png.
	Body string `yaml:"body"`
	// Fanout is the batch rows one request brings to a step, by step name
	// (simulated runs; default 1), e.g. {rec: 4} for pages of four lines.
	Fanout map[string]float64 `yaml:"fanout"`
}

// Window is one load: segments of the trace, concatenated (the paper's
// steady-high window is one 10-minute segment twice), a step pattern, or a
// constant rate for a duration.
type Window struct {
	Name     string        `yaml:"name"`
	Trace    [][2]int      `yaml:"trace"`
	Steps    string        `yaml:"steps"`
	Rate     float64       `yaml:"rate"`
	Duration time.Duration `yaml:"duration"`
}

// Paths is a list of files that YAML may also give as one string.
type Paths []string

// UnmarshalYAML takes a string or a list of strings.
func (p *Paths) UnmarshalYAML(unmarshal func(any) error) error {
	var one string
	if err := unmarshal(&one); err == nil {
		*p = nil
		if one != "" {
			*p = Paths{one}
		}
		return nil
	}
	var many []string
	if err := unmarshal(&many); err != nil {
		return errors.New("want a file or a list of files")
	}
	*p = many
	return nil
}

// Parse reads an experiment file, strictly, and fills in the defaults.
func Parse(r io.Reader) (*File, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	var f File
	if err := yamlx.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("bad experiment file: %s", strings.Join(strings.Fields(yaml.FormatError(err, false, false)), " "))
	}
	f.Mode, f.Arrivals, f.Predictor = cmp.Or(f.Mode, "sim"), cmp.Or(f.Arrivals, "poisson"), cmp.Or(f.Predictor, "lstm")
	f.Solver, f.StartupDelay = cmp.Or(f.Solver, "exact"), cmp.Or(f.StartupDelay, "local")
	f.Damping, f.Margin = cmp.Or(f.Damping, 8), cmp.Or(f.Margin, 1.1)
	if f.SwitchCost == nil {
		f.SwitchCost = new(0.01)
	}
	if f.Correct == nil {
		f.Correct = new(true)
	}
	f.Interval, f.History, f.ScalingCap = cmp.Or(f.Interval, 10*time.Second), cmp.Or(f.History, 120), cmp.Or(f.ScalingCap, 16)
	f.Fidelity.P99, f.Fidelity.ViolationsPP, f.Fidelity.Cost = cmp.Or(f.Fidelity.P99, 0.15), cmp.Or(f.Fidelity.ViolationsPP, 1), cmp.Or(f.Fidelity.Cost, 0.10)
	return &f, f.validate()
}

// loop is the controller's configuration of every run of f, simulated and
// real (ipa local's defaults for what f does not set).
func (f *File) loop() orchestrator.Config {
	return orchestrator.Config{Interval: f.Interval, History: f.History, Margin: f.Margin, SwitchCost: *f.SwitchCost, Correct: *f.Correct,
		CorrectHalfLife: orchestrator.DefaultCorrectHalfLife, CorrectMin: orchestrator.DefaultCorrectMin, CorrectMax: orchestrator.DefaultCorrectMax}
}

func (f *File) validate() error {
	switch {
	case f.Mode != "sim" && f.Mode != "real" && f.Mode != "fidelity":
		return fmt.Errorf("mode %q: use sim, real or fidelity", f.Mode)
	case f.Fidelity.P99 < 0 || f.Fidelity.ViolationsPP < 0 || f.Fidelity.Cost < 0 || f.Fidelity.PlanAgreement < 0 || f.Fidelity.PlanAgreement > 1:
		return errors.New("fidelity: tolerances are not negative, plan_agreement at most 1")
	case f.CoreCapacity < 1:
		return errors.New("core_capacity: give the cores the plans may use (the machine's or the cluster's), e.g. 8")
	case len(f.Pipelines) == 0 || len(f.Windows) == 0 || len(f.Systems) == 0:
		return errors.New("name at least one pipeline, window and system")
	case !(f.Damping > 0):
		return fmt.Errorf("damping %v must be positive", f.Damping)
	case f.GlueCost < 0 || f.SwitchDelay < 0:
		return errors.New("glue_cost and switch_delay must not be negative")
	case !(f.Interference >= 0 && f.Interference <= 10):
		return fmt.Errorf("interference %v: give the slowdown beside the glue as a fraction in [0, 10], e.g. 0.3", f.Interference)
	}
	if p := f.Probe; p != nil {
		switch n := p.Rate * p.Duration.Seconds(); {
		case f.Mode == "sim":
			return errors.New("probe measures this machine before each real run: modes real and fidelity (or remove probe)")
		case !(p.Rate > 0 && p.Rate <= 1000) || p.Duration < time.Second:
			return fmt.Errorf("probe: rate %v and duration %s: give a light rate (e.g. 2) and a duration of seconds (e.g. 80s)", p.Rate, p.Duration)
		case n < probeRequests:
			return fmt.Errorf("probe: rate × duration = %.0f requests; a variant's engine times are taken from %d batches at least, so send %d or more (e.g. rate 2, duration %s)",
				n, minEngineSamples, probeRequests, time.Duration(probeRequests/2)*time.Second)
		}
	}
	if _, err := loadgen.ParseProcess(f.Arrivals); err != nil {
		return err
	}
	if _, err := f.startup(); err != nil {
		return err
	}
	names := map[string]bool{}
	for _, w := range f.Windows {
		if w.Name == "" || names["w/"+w.Name] {
			return fmt.Errorf("window %q: every window needs a unique name", w.Name)
		}
		names["w/"+w.Name] = true
		n := 0
		if len(w.Trace) > 0 {
			n++
		}
		if w.Steps != "" {
			n++
		}
		if w.Rate > 0 {
			n++
			if w.Duration <= 0 {
				return fmt.Errorf("window %q: a constant rate needs a duration", w.Name)
			}
		}
		if n != 1 {
			return fmt.Errorf("window %q: give exactly one of trace, steps or rate", w.Name)
		}
		for _, seg := range w.Trace {
			if seg[0] < 0 || seg[1] <= seg[0] {
				return fmt.Errorf("window %q: trace segment %v is empty", w.Name, seg)
			}
		}
	}
	for _, s := range f.Systems {
		if names["s/"+s] {
			return fmt.Errorf("system %q is listed twice", s)
		}
		names["s/"+s] = true
		if _, err := ParseSystem(s); err != nil {
			return err
		}
	}
	for _, p := range f.Pipelines {
		if p.Name == "" || names["p/"+p.Name] {
			return fmt.Errorf("pipeline %q: every pipeline needs a unique name", p.Name)
		}
		names["p/"+p.Name] = true
	}
	return nil
}

// startup is how the simulator starts new replicas (sim.ParseStartup):
// local and kubernetes take each variant's load_seconds from the profile
// where it has them, as ipa simulate does; a duration is always that long.
type startup struct {
	delay, overhead time.Duration
	fromProfile     bool
}

func (f *File) startup() (startup, error) {
	d, o, p, err := sim.ParseStartup(f.StartupDelay)
	if err != nil {
		return startup{}, fmt.Errorf("startup_delay: %w", err)
	}
	return startup{d, o, p}, nil
}

// options sets the start-up fields of o.
func (s startup) options(o sim.Options) sim.Options {
	o.StartupDelay, o.StartupOverhead, o.StartupFromProfile = s.delay, s.overhead, s.fromProfile
	return o
}

// System is one way of running the pipeline.
type System struct {
	// Name is as written in the file.
	Name string
	// Kind is ipa, fa2-low, fa2-high, rim, static or off.
	Kind string
	// Alpha and Beta weigh accuracy and cost (ipa; the baselines use the
	// default preset's).
	Alpha, Beta float64
	// Variant pins fa2-high's variant (empty: chosen from the profile).
	Variant string
	// Replicas is rim's fixed count (0: provisioned for the window's peak).
	Replicas int
	// Static is static's configuration, one per step.
	Static []models.StageConfig
}

// Objective presets of ipa: the default is ipa's own (--controller.alpha 1,
// --controller.beta 0.05); accuracy, balanced and resource are the paper's
// objective-preference runs (IPA.md §2.7: α 10/β 0.125, α 10/β 0.5,
// α 0.125/β 10).
var presets = map[string][2]float64{"": {1, 0.05}, "accuracy": {10, 0.125}, "balanced": {10, 0.5}, "resource": {0.125, 10}}

// ParseSystem parses a system: ipa[:PRESET|:alpha=A,beta=B], fa2-low,
// fa2-high[:VARIANT], rim[:REPLICAS], static:V[/BATCH[/REPLICAS[/CORES]]]
// (steps separated by +), off.
func ParseSystem(s string) (System, error) {
	kind, arg, _ := strings.Cut(s, ":")
	sys := System{Name: s, Kind: kind, Alpha: presets[""][0], Beta: presets[""][1]}
	bad := func(format string, a ...any) (System, error) {
		return System{}, fmt.Errorf("system %q: %s", s, fmt.Sprintf(format, a...))
	}
	switch kind {
	case "ipa":
		if p, ok := presets[arg]; ok {
			sys.Alpha, sys.Beta = p[0], p[1]
			break
		}
		for _, kv := range strings.Split(arg, ",") {
			k, v, _ := strings.Cut(kv, "=")
			x, err := strconv.ParseFloat(v, 64)
			if err != nil || x < 0 || math.IsInf(x, 0) {
				return bad("write ipa, ipa:accuracy, ipa:balanced, ipa:resource or ipa:alpha=A,beta=B")
			}
			switch k {
			case "alpha":
				sys.Alpha = x
			case "beta":
				sys.Beta = x
			default:
				return bad("unknown weight %q; use alpha and beta", k)
			}
		}
	case "fa2-low", "off":
		if arg != "" {
			return bad("%s takes no argument", kind)
		}
	case "fa2-high":
		sys.Variant = arg
	case "rim":
		if arg != "" {
			n, err := strconv.Atoi(arg)
			if err != nil || n < 1 {
				return bad("write rim or rim:REPLICAS with REPLICAS >= 1")
			}
			sys.Replicas = n
		}
	case "static":
		if arg == "" {
			return bad("write static:VARIANT[/BATCH[/REPLICAS[/CORES]]], steps separated by +")
		}
		for _, step := range strings.Split(arg, "+") {
			c, err := models.ParseStageConfig(step, models.StageConfig{})
			if err != nil {
				return bad("%v", err)
			}
			sys.Static = append(sys.Static, c)
		}
	default:
		return bad("unknown system; use ipa, fa2-low, fa2-high, rim, static:CONFIG or off")
	}
	return sys, nil
}

// load returns window w's load, reading trace segments from trace (the
// window of the trace file the runner read, starting at second base).
func (w *Window) load(trace []int, base int, damping float64) (loadgen.Counts, error) {
	switch {
	case w.Steps != "":
		return loadgen.ParseSteps(w.Steps)
	case w.Rate > 0:
		n := int(w.Duration / time.Second)
		out := make(loadgen.Counts, n)
		for i := range out {
			out[i] = w.Rate
		}
		return out, nil
	}
	var out loadgen.Counts
	for _, seg := range w.Trace {
		if seg[0] < base || seg[1]-base > len(trace) {
			return nil, fmt.Errorf("window %q: segment %v is outside the trace read", w.Name, seg)
		}
		c, err := loadgen.TraceWindow(trace[seg[0]-base:seg[1]-base], damping)
		if err != nil {
			return nil, err
		}
		out = append(out, c...)
	}
	return out, nil
}
