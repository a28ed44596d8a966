package sim

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"time"

	"github.com/ipa-serving/ipa/batcher"
	"github.com/ipa-serving/ipa/dataplane/loadgen"
	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/optimizer"
	"github.com/ipa-serving/ipa/orchestrator"
	"github.com/ipa-serving/ipa/profiles"
)

// Defaults of the delays, and where they come from.
const (
	// LocalStartupDelay is how long `ipa local` took to add a classify
	// replica (load every variant's ONNX Runtime session) while the old one
	// served: apply_seconds 5.2 of the scale-up in docs/run-bursty/decisions.jsonl.
	LocalStartupDelay = 5200 * time.Millisecond
	// LocalSwitchDelay is a variant switch in `ipa local`: one atomic store
	// (apply_seconds 0.0001 in the same log); zero here.
	LocalSwitchDelay = 0
	// KubernetesStartupDelay is a new stage pod on Kubernetes: the pod
	// start-up SLO (99th percentile ≤ 5 s for a schedulable stateless pod,
	// image pull excluded: kubernetes/community,
	// sig-scalability/slos/pod_startup_latency.md), plus loading the sessions
	// (LocalStartupDelay), plus one period of the stage's startup probe (5 s)
	// and of its readiness probe (2 s) as `ipa manifests` renders them.
	KubernetesStartupDelay = 5*time.Second + LocalStartupDelay + 5*time.Second + 2*time.Second
	// DefaultMaxQueue and DefaultMaxInflight are ipa local's
	// --batch.max-queue and ipa load's --max-inflight defaults.
	DefaultMaxQueue    = 1024
	DefaultMaxInflight = 1024
)

// ParseStartupDelay reads a start-up delay: local, kubernetes, or a
// non-negative duration.
func ParseStartupDelay(s string) (time.Duration, error) {
	d, _, _, err := ParseStartup(s)
	return d, err
}

// ParseStartup reads a start-up delay as Options takes it: local and
// kubernetes take the sessions' load time from the profile where it has
// load_seconds (fromProfile), beyond overhead (kubernetes: the pod's
// start-up and probes, KubernetesStartupDelay − LocalStartupDelay), and
// delay where it has not; a duration is the delay, always.
func ParseStartup(s string) (delay, overhead time.Duration, fromProfile bool, err error) {
	switch s {
	case "local":
		return LocalStartupDelay, 0, true, nil
	case "kubernetes":
		return KubernetesStartupDelay, KubernetesStartupDelay - LocalStartupDelay, true, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, 0, false, fmt.Errorf("start-up delay %q: use local, kubernetes or a non-negative duration", s)
	}
	return d, 0, false, nil
}

// Epoch is the virtual time of a simulation's start unless Options.Start
// says otherwise: fixed, so that outputs are reproducible.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Step is one step of the simulated pipeline.
type Step struct {
	// Name is the step's name (decision log, plan).
	Name string
	// Profile names its stage in the profile; empty means Name.
	Profile string
	// Initial is the configuration it starts with.
	Initial models.StageConfig
	// Fanout is the mean number of batch rows one request brings to the
	// step (a page's text lines at a recognizer), 0 meaning 1: each
	// request brings ⌊Fanout⌋ rows, one more with probability its
	// fraction, as one item; none ends the request there, answered, as the
	// router answers a page on which the detector found nothing.
	Fanout float64
}

// Adaptation is the controller of a simulated run.
type Adaptation struct {
	Config orchestrator.Config
	// Problem is the optimizer's template: stages, profile, SLA, weights,
	// caps, baseline (ArrivalRate and Current are filled in every interval).
	Problem   optimizer.Problem
	Solver    optimizer.Solver
	Predictor orchestrator.Predictor
	// Off turns the controller off: every interval the loop only observes,
	// predicts and logs the running configuration evaluated at the
	// predicted load (baseline fixed), so that the run has a decision log
	// to render; it never applies anything.
	Off bool
	// Replay, when set, stands in for the controller: at each entry's time
	// the stages are given its configurations through the same actuator the
	// controller uses (start-up and switch delays included); nothing is
	// observed, predicted or solved. Given the decision log of a recorded
	// run, it serves that run's plans at that run's times, so that the
	// simulated latency can be compared with the recorded one apart from
	// any difference between the two controllers' plans.
	Replay []Replayed
}

// Replayed is one configuration of a recorded run.
type Replayed struct {
	// At is the time since the load began; a configuration from before it
	// (a controller that started first) runs from the start.
	At time.Duration
	// Configs are the steps' configurations from then on, in step order.
	Configs []models.StageConfig
}

// ReplayOf returns the configurations a decision log applied, each at its
// decision's time since start.
func ReplayOf(ds []orchestrator.Decision, start time.Time) []Replayed {
	out := make([]Replayed, 0, len(ds))
	for _, d := range ds {
		if len(d.Applied) > 0 {
			out = append(out, Replayed{At: d.Time.Sub(start), Configs: d.Applied})
		}
	}
	return out
}

// Pipeline is what the simulator knows of a pipeline.
type Pipeline struct {
	// Name is the pipeline's (drop reasons); SLA its latency objective.
	Name  string
	SLA   time.Duration
	Steps []Step
	// Stages offers each step's variants, with their accuracies, to the
	// optimizer, in step order.
	Stages   []optimizer.Step
	Profiles *profiles.Profile
}

// Problem returns the optimizer's template for p with the given weights
// and caps (γ = 1e-6, as IPA).
func (p Pipeline) Problem(alpha, beta float64, scalingCap, coreCapacity int) optimizer.Problem {
	return optimizer.Problem{Stages: p.Stages, Profiles: p.Profiles, SLA: p.SLA, Alpha: alpha, Beta: beta, Gamma: 1e-6,
		ScalingCap: scalingCap, CoreCapacity: coreCapacity}
}

// Initial returns the steps' initial configurations.
func (p Pipeline) Initial() []models.StageConfig {
	out := make([]models.StageConfig, len(p.Steps))
	for i, s := range p.Steps {
		out[i] = s.Initial
	}
	return out
}

// Options are one simulated run.
type Options struct {
	Pipeline Pipeline
	// SLA is the load generator's --sla: the report measures against it,
	// and it is sent as the request's budget, so a request's deadline is
	// arrival + the earlier of it and the pipeline's SLA, as the router
	// takes the earliest (0: the pipeline's).
	SLA time.Duration

	// Load, Process and Slot are what `ipa load` would send; Duration (if
	// positive) ends the schedule, as --duration. Seed seeds the arrivals as
	// `ipa load --seed` does, and the service times.
	Load     loadgen.Load
	Process  loadgen.Process
	Slot     time.Duration
	Duration time.Duration
	// Total, when positive, ends the load after that many requests.
	Total int
	Seed  uint64

	// TrueProfile, when set, is what the stages really take: service times
	// are drawn from it while the controller plans with Pipeline.Profiles
	// (a stale profile, a slower machine; see profiles.Profile.Scaled).
	TrueProfile *profiles.Profile

	// Adapt runs the controller; nil keeps the initial configuration and
	// logs no decision.
	Adapt *Adaptation

	// GlueCost is the router's time per request before its first stage
	// (its work at full speed when Cores is set): the median, every time
	// unless GlueP99 is larger, when each request's is drawn from a
	// log-normal fitted to both (as the stages' batch times).
	GlueCost, GlueP99 time.Duration
	// HopCost is what a request spends between the processes, on none of
	// the modelled cores: the client's upload to the router, the router's
	// to each stage (a 600 KB tensor over loopback) and the answers back,
	// and the router's work outside its glue (decoding the request,
	// encoding the answer). It is added to each answer's latency at the
	// client, after the router's deadline (which counts from the request's
	// arrival at the router). Zero: none.
	HopCost time.Duration
	// Cores, when positive, is the machine's: the replicas' batches and the
	// router's glue share them (processor sharing, see cpu), so a batch or
	// a glue takes longer while more threads have work than there are
	// cores, and the controller sees the glue time as measured. As Go runs
	// the router's goroutines on GOMAXPROCS = Cores processors, at most
	// Cores glues run at once; the others wait their turn in arrival order,
	// a wait that counts in the request's latency but not in the glue time
	// (the router's clock starts when the glue does). Zero: every batch
	// takes its drawn time and the glue GlueCost, whatever else runs.
	Cores int
	// Interference, on a shared machine, is how much longer the router's
	// glue and whatever runs beside it (a batch, another request's glue)
	// take while they run together, a core each: 1 + Interference times
	// their time alone (the glue streams through memory; see cpu). The
	// stages' times should then be their times alone (a calibration's
	// engine histograms at a light load), or the slowdown counts twice.
	// Zero: none.
	Interference float64
	// StartupDelay is how long new replicas (or replicas with other
	// cores) take to load; SwitchDelay how long a variant switch takes.
	StartupDelay, SwitchDelay time.Duration
	// StartupFromProfile takes the start-up from the profile the stages
	// run with (TrueProfile, else the pipeline's) where it has the
	// load_seconds of the variant the new replicas run: StartupOverhead
	// plus one load per new replica, one after another, as
	// dataplane.Stage.Reconfigure loads them; StartupDelay elsewhere.
	StartupFromProfile bool
	StartupOverhead    time.Duration
	// MaxQueue is each stage's --batch.max-queue; MaxInflight the load
	// generator's --max-inflight (0: the defaults).
	MaxQueue, MaxInflight int
	// Start is the virtual wall time of the start (zero: Epoch). Its
	// fraction of a second is where the router's per-second counts begin
	// (perSec): to simulate a real run, give its load's start.
	Start time.Time
	// Decisions receives the decision log (may be nil).
	Decisions io.Writer
	// Progress, if set, is called every few thousand events with the
	// virtual time reached and the load's end (its last slot, or
	// Duration).
	Progress func(now, end time.Duration)
}

// Result is a finished simulated run.
type Result struct {
	// Load is what `ipa load` would have recorded.
	Load *loadgen.Result
	// Decisions are the controller's, in order.
	Decisions []orchestrator.Decision
	// Events, Batches count the work done.
	Events, Batches uint64
	// Wall is the real time the simulation took.
	Wall time.Duration
}

// request is one simulated request.
type request struct {
	seq      int
	sent     time.Duration
	deadline time.Time
	arrived  time.Time // at the stage of step
	step     int
	rows     int // at step
	answered bool
}

// sim is one run.
type sim struct {
	opt      Options
	loop     *loop
	rng      *rand.Rand
	svc      services
	stages   []*stage
	arrivals *loadgen.Arrivals
	horizon  time.Duration

	records  []loadgen.Record
	inflight int
	budget   time.Duration // from arrival to the deadline
	lastDone time.Duration
	// perSec counts the router's arrivals per second of the wall clock,
	// as dataplane/router.RateCounter does (Unix seconds): perSec[0] is
	// the second the load began in, so a load that began 0.4 s into a
	// second has a first bin of 0.6 s, and every bin straddles two of the
	// load's seconds. That phase decides what the predictor sees of a
	// bursty load, and with it plans at a threshold (see second).
	perSec []int64
	// Per step, the requests that reached it and the rows the router sent
	// it (router.Pipeline.Rows), and the random stream of the fan-outs'
	// fractions.
	stepReached, stepRows []int64
	fanRNG                *rand.Rand
	// glueRNG draws each request's glue from glueDist (a random stream of
	// its own: runs without a spread keep their other streams).
	glueRNG  *rand.Rand
	glueDist logNormal
	actions  []orchestrator.Action
	batches  uint64
	err      error

	ran map[ranKey]*orchestrator.BatchStats // batches since the controller's last look (batches.go)

	// cpu is the shared machine (Options.Cores; nil: none); gluing is how
	// many glues run on it, glueWait the requests waiting for a processor
	// to run theirs. glueTook and glueN sum the glue times it measured;
	// glueMean tells the controller, as ipa local's observer does.
	cpu      *cpu
	gluing   int
	glueWait []*request
	glueTook time.Duration
	glueN    int64
	glueMean orchestrator.PerRequest

	// onBatch, when set (tests), sees every batch a replica takes: when,
	// and the sequence numbers in it.
	onBatch func(at time.Duration, seqs []int)
}

// Run simulates opt. It fails on a misconfigured run, or when ctx ends.
func Run(ctx context.Context, opt Options) (*Result, error) { return run(ctx, opt, nil) }

func run(ctx context.Context, opt Options, onBatch func(time.Duration, []int)) (*Result, error) {
	wall := time.Now()
	s, err := newSim(opt)
	if err != nil {
		return nil, err
	}
	s.onBatch = onBatch
	if opt.Adapt != nil && opt.Adapt.Replay != nil {
		res := &Result{}
		for _, r := range opt.Adapt.Replay {
			if len(r.Configs) != len(s.stages) {
				return nil, fmt.Errorf("sim: replay at %v: %d configurations for %d steps", r.At, len(r.Configs), len(s.stages))
			}
			for i, c := range r.Configs {
				if err := c.Validate(); err != nil {
					return nil, fmt.Errorf("sim: replay at %v: step %q: %w", r.At, s.stages[i].name, err)
				}
			}
			if r.At <= s.horizon {
				s.loop.at(max(r.At, 0), func() { res.Decisions = append(res.Decisions, s.replay(ctx, r.Configs)) })
			}
		}
		return s.finish(ctx, res, wall)
	}
	var ctl *orchestrator.Controller
	if opt.Adapt != nil && !opt.Adapt.Off {
		ctl, err = orchestrator.New(opt.Adapt.Config, opt.Adapt.Problem, orchestrator.Options{
			Observer: observer{s}, Batches: batchObserver{s}, Predictor: opt.Adapt.Predictor, Actuator: actuator{s},
			Solver: opt.Adapt.Solver, Log: opt.Decisions, Clock: s.loop})
		if err != nil {
			return nil, err
		}
		defer ctl.Close()
	}
	res := &Result{}
	if opt.Adapt != nil {
		iv := opt.Adapt.Config.Interval
		var step func()
		step = func() {
			if ctl == nil {
				res.Decisions = append(res.Decisions, s.observe(ctx))
			} else {
				res.Decisions = append(res.Decisions, ctl.Step(ctx))
			}
			if next := s.loop.now + iv; next <= s.horizon {
				s.loop.at(next, step)
			}
		}
		if iv <= s.horizon {
			s.loop.at(iv, step)
		}
	}
	return s.finish(ctx, res, wall)
}

// finish runs the simulation to its end and fills res.
func (s *sim) finish(ctx context.Context, res *Result, wall time.Time) (*Result, error) {
	opt := s.opt
	s.nextArrival()
	if !s.loop.run(func() bool {
		if opt.Progress != nil {
			opt.Progress(s.loop.now, s.horizon)
		}
		return ctx.Err() != nil || s.err != nil
	}) {
		if s.err != nil {
			return nil, s.err
		}
		return nil, ctx.Err()
	}
	if s.err != nil {
		return nil, s.err
	}
	res.Load = &loadgen.Result{
		Start:       s.loop.epoch,
		Elapsed:     max(s.arrivals.End(), s.lastDone),
		SLA:         s.opt.SLA,
		MaxInflight: s.opt.MaxInflight,
		Records:     s.records,
	}
	res.Events, res.Batches, res.Wall = s.loop.ran, s.batches, time.Since(wall)
	return res, nil
}

// Validate reports what makes opt unusable (Run checks it too), so that a
// caller can refuse it before it creates any output.
func (opt Options) Validate() error {
	if opt.SLA == 0 {
		opt.SLA = opt.Pipeline.SLA
	}
	switch {
	case len(opt.Pipeline.Steps) == 0:
		return errors.New("sim: the pipeline has no steps")
	case opt.Pipeline.Profiles == nil:
		return errors.New("sim: no profile")
	case opt.Load == nil:
		return errors.New("sim: no load")
	case opt.SLA <= 0:
		return errors.New("sim: the SLA must be positive")
	case opt.StartupDelay < 0 || opt.SwitchDelay < 0 || opt.GlueCost < 0 || opt.GlueP99 < 0 || opt.HopCost < 0 || opt.StartupOverhead < 0:
		return errors.New("sim: delays, glue and hop costs must not be negative")
	case opt.Cores < 0:
		return errors.New("sim: the machine's cores must not be negative")
	case !(opt.Interference >= 0 && opt.Interference <= 10):
		return errors.New("sim: the interference must be in [0, 10]")
	}
	return nil
}

func newSim(opt Options) (*sim, error) {
	if err := opt.Validate(); err != nil {
		return nil, err
	}
	if opt.SLA == 0 {
		opt.SLA = opt.Pipeline.SLA
	}
	if opt.Slot <= 0 {
		opt.Slot = time.Second
	}
	if opt.MaxQueue <= 0 {
		opt.MaxQueue = DefaultMaxQueue
	}
	if opt.MaxInflight <= 0 {
		opt.MaxInflight = DefaultMaxInflight
	}
	if opt.Start.IsZero() {
		opt.Start = Epoch
	}
	s := &sim{
		opt:  opt,
		loop: &loop{epoch: opt.Start},
		// Arrivals are seeded as `ipa load` seeds them; service times get
		// their own stream.
		arrivals:    loadgen.NewArrivals(opt.Load, opt.Process, opt.Slot, rand.New(rand.NewPCG(opt.Seed, 0xa44))),
		rng:         rand.New(rand.NewPCG(opt.Seed, 0x5e7)),
		svc:         services{prof: cmp.Or(opt.TrueProfile, opt.Pipeline.Profiles), cache: map[serviceKey]logNormal{}},
		fanRNG:      rand.New(rand.NewPCG(opt.Seed, 0xfa7)),
		glueRNG:     rand.New(rand.NewPCG(opt.Seed, 0x91e)),
		glueDist:    fitLogNormal(opt.GlueCost.Seconds(), opt.GlueP99.Seconds()),
		stepRows:    make([]int64, len(opt.Pipeline.Steps)),
		stepReached: make([]int64, len(opt.Pipeline.Steps)),
	}
	s.arrivals.Until = opt.Duration
	if opt.Cores > 0 {
		s.cpu = &cpu{l: s.loop, cores: float64(opt.Cores), interference: opt.Interference}
	}
	s.budget = min(opt.SLA, opt.Pipeline.SLA)
	if opt.Pipeline.SLA <= 0 {
		s.budget = opt.SLA
	}
	switch l := opt.Load.(type) {
	case loadgen.Counts:
		s.horizon = time.Duration(len(l)) * opt.Slot
		if opt.Duration > 0 {
			s.horizon = min(s.horizon, opt.Duration)
		}
	default:
		if opt.Duration <= 0 {
			return nil, errors.New("sim: an unbounded load needs a duration")
		}
		s.horizon = opt.Duration
	}
	for i, st := range opt.Pipeline.Steps {
		prof := st.Profile
		if prof == "" {
			prof = st.Name
		}
		if err := st.Initial.Validate(); err != nil {
			return nil, fmt.Errorf("step %q: initial configuration: %w", st.Name, err)
		}
		if f := st.Fanout; math.IsNaN(f) || f < 0 || f > optimizer.MaxFanout {
			return nil, fmt.Errorf("step %q: fanout %v must be in [0, %g] rows per request", st.Name, f, optimizer.MaxFanout)
		}
		if _, err := s.svc.dist(prof, st.Initial.Variant, st.Initial.Cores, 1); err != nil {
			return nil, fmt.Errorf("step %q: %w", st.Name, err)
		}
		stg := &stage{s: s, idx: i, name: st.Name, profile: prof, cfg: st.Initial, target: st.Initial}
		b, err := batcher.New[*request](batcher.Config{MaxBatch: st.Initial.MaxBatch, MaxWait: st.Initial.MaxWait, MaxQueue: max(opt.MaxQueue, st.Initial.MaxBatch)},
			batcher.WithClock(stageClock{loop: s.loop, after: stg.dispatch}),
			batcher.OnExpire(func(r *request, _ error) { stg.s.drop(r, 504, stg.deadlineReason()) }))
		if err != nil {
			return nil, fmt.Errorf("step %q: %w", st.Name, err)
		}
		stg.b = b
		stg.est = batcher.NewEstimator[estKey](stageClock{loop: s.loop}, 0)
		for range st.Initial.Replicas {
			stg.addReplica(st.Initial.Cores)
		}
		s.stages = append(s.stages, stg)
	}
	return s, nil
}

// observe is one interval of a loop that is off: what it sees, what it
// predicts, and the running configuration evaluated at that load.
func (s *sim) observe(ctx context.Context) orchestrator.Decision {
	a := s.opt.Adapt
	d := orchestrator.Decision{Time: s.loop.Now()}
	rates := s.observed(ctx, &d)
	d.Predicted = a.Predictor.Predict(rates) * a.Config.Margin
	current, _ := actuator{s}.Current(ctx)
	p := a.Problem
	p.Baseline, p.ArrivalRate, p.Current = optimizer.Fixed, d.Predicted, current
	plan, err := optimizer.Solve(&p, a.Solver, s.loop.Now)
	switch {
	case errors.Is(err, optimizer.ErrInfeasible):
		d.Fallback = true
	case err != nil:
		d.Error = fmt.Sprintf("cannot evaluate the running configuration: %v", err)
	}
	if err == nil || d.Fallback {
		d.Plan = &plan
	}
	d.Applied = current
	if s.opt.Decisions != nil {
		if b, err := json.Marshal(d); err == nil {
			s.opt.Decisions.Write(append(b, '\n'))
		}
	}
	return d
}

// observed fills d's observed load, the mean and peak of the last
// interval, as the controller does, and returns the rates of the history.
func (s *sim) observed(ctx context.Context, d *orchestrator.Decision) []float64 {
	a := s.opt.Adapt
	rates, _ := observer{s}.Rates(ctx, a.Config.History)
	if n := min(int(a.Config.Interval/time.Second), len(rates)); n > 0 {
		for _, r := range rates[len(rates)-n:] {
			d.Observed += r / float64(n)
			d.PeakSeen = max(d.PeakSeen, r)
		}
	}
	return rates
}

// replay applies a recorded decision's configurations where they differ
// from the running ones, and logs it as the controller would.
func (s *sim) replay(ctx context.Context, cfgs []models.StageConfig) orchestrator.Decision {
	d := orchestrator.Decision{Time: s.loop.Now(), Actions: actuator{s}.TakeActions()}
	s.observed(ctx, &d)
	current, _ := actuator{s}.Current(ctx)
	for i, c := range cfgs {
		if c == current[i] {
			continue
		}
		if err := (actuator{s}).Apply(ctx, i, c); err != nil {
			d.Error = fmt.Sprintf("stage %q: %v", s.stages[i].name, err)
			continue
		}
		d.Changes = append(d.Changes, orchestrator.Change{Stage: s.stages[i].name, From: current[i], To: c})
	}
	d.Applied, _ = actuator{s}.Current(ctx)
	if s.opt.Decisions != nil {
		if b, err := json.Marshal(d); err == nil {
			s.opt.Decisions.Write(append(b, '\n'))
		}
	}
	return d
}

// nextArrival schedules the next request of the load.
func (s *sim) nextArrival() {
	if s.opt.Total > 0 && len(s.records) >= s.opt.Total {
		return
	}
	at, ok := s.arrivals.Next()
	if !ok {
		return
	}
	s.loop.at(at, func() {
		s.arrive(at)
		s.nextArrival()
	})
}

// second is the index in perSec of the wall-clock second that holds the
// virtual time at: seconds since the one the load began in (Options.Start's
// fraction of a second is the phase).
func (s *sim) second(at time.Duration) int {
	return int((at + time.Duration(s.loop.epoch.Nanosecond())) / time.Second)
}

// arrive is the load generator sending a request and the router taking it.
func (s *sim) arrive(at time.Duration) {
	seq := len(s.records)
	s.records = append(s.records, loadgen.Record{Seq: seq, Scheduled: at, Sent: at})
	if s.inflight >= s.opt.MaxInflight {
		s.records[seq].Outcome = loadgen.Outcome{Kind: loadgen.Dropped, Reason: loadgen.ReasonClientOverload}
		return
	}
	s.inflight++
	sec := s.second(at)
	for len(s.perSec) <= sec {
		s.perSec = append(s.perSec, 0)
	}
	s.perSec[sec]++
	r := &request{seq: seq, sent: at, deadline: s.loop.epoch.Add(at + s.budget)}
	if s.cpu != nil && s.opt.GlueCost > 0 {
		s.glueWait = append(s.glueWait, r)
		s.glue()
		return
	}
	if s.opt.GlueCost > 0 {
		s.loop.at(at+s.glueWork(), func() { s.enter(r) })
		return
	}
	s.enter(r)
}

// glueWork is one request's glue: GlueCost, or a draw when it varies.
func (s *sim) glueWork() time.Duration {
	if s.glueDist.sigma == 0 {
		return s.opt.GlueCost
	}
	return s.glueDist.draw(s.glueRNG)
}

// glue starts the glue of waiting requests while a processor is free.
func (s *sim) glue() {
	for s.gluing < s.opt.Cores && len(s.glueWait) > 0 {
		r := s.glueWait[0]
		s.glueWait[0] = nil
		s.glueWait = s.glueWait[1:]
		s.gluing++
		s.cpu.run(s.glueWork(), 1, true, func(took time.Duration) {
			s.gluing--
			s.glueTook += took
			s.glueN++
			s.enter(r)
			s.glue()
		})
	}
}

// enter is the router sending r to its next stage, or dropping it there as
// dataplane.Pipe.Run does once the deadline has passed.
func (s *sim) enter(r *request) {
	st := s.stages[r.step]
	r.rows = s.rowsAt(r.step)
	if r.rows == 0 { // nothing found upstream: later stages have no work
		for j := r.step; j < len(s.stages); j++ {
			s.stepReached[j]++ // with no rows
		}
		s.answer(r, loadgen.Outcome{Kind: loadgen.Succeeded, Status: 200})
		return
	}
	s.stepReached[r.step]++
	s.stepRows[r.step] += int64(r.rows)
	if !s.loop.Now().Before(r.deadline) {
		s.drop(r, 504, fmt.Sprintf("HTTP 504: pipeline %q: dropped: deadline exceeded before the request was computed before stage %q (%d of %d)",
			s.opt.Pipeline.Name, st.name, r.step+1, len(s.stages)))
		return
	}
	st.infer(r)
}

// rowsAt draws the rows a request brings to step i (Step.Fanout); a
// whole fan-out draws nothing, so that runs without fractions keep their
// random streams.
func (s *sim) rowsAt(i int) int {
	f := s.opt.Pipeline.Steps[i].Fanout
	if f == 0 {
		return 1
	}
	n, frac := math.Modf(f)
	if frac > 0 && s.fanRNG.Float64() < frac {
		n++
	}
	return int(n)
}

// answer finishes r at now.
func (s *sim) answer(r *request, out loadgen.Outcome) {
	if r.answered {
		s.err = fmt.Errorf("BUG: request %d answered twice (%v, then %v)", r.seq, s.records[r.seq].Outcome, out)
		return
	}
	r.answered = true
	rec := &s.records[r.seq]
	rec.Latency = s.loop.now - r.sent + s.opt.HopCost
	rec.Outcome = out
	s.inflight--
	s.lastDone = max(s.lastDone, s.loop.now+s.opt.HopCost)
}

func (s *sim) drop(r *request, status int, reason string) {
	s.answer(r, loadgen.Outcome{Kind: loadgen.Dropped, Status: status, Reason: reason})
}

// done moves r past its current stage.
func (s *sim) done(r *request) {
	r.step++
	if r.step == len(s.stages) {
		s.answer(r, loadgen.Outcome{Kind: loadgen.Succeeded, Status: 200})
		return
	}
	s.enter(r)
}
