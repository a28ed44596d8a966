package orchestrator

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/optimizer"
	"github.com/ipa-serving/ipa/profiles"
)

// Observer reads the recent load: per-second arrival counts, oldest first,
// of the last complete seconds.
type Observer interface {
	Rates(ctx context.Context, seconds int) ([]float64, error)
}

// OverheadObserver is implemented by observers that also know the CPU time
// the router spends per request outside the stages (the glue: decoding and
// resizing images, crops). When the router shares the plan's cores (ipa
// local), the loop keeps predicted rate × overhead cores, to the nearest
// whole core, out of the core capacity for it (a tensor pipeline's few
// microseconds reserve nothing; 60 pages/s at 12 ms reserve one core).
type OverheadObserver interface {
	OverheadSeconds(ctx context.Context) (float64, error)
}

// PerRequest turns running totals of a time spent per request (the router's
// glue: total time, requests) into what an OverheadObserver reports: the
// mean per request since the previous call, or the previous mean when no
// request came in between (0 before any). Safe for concurrent use.
type PerRequest struct {
	mu    sync.Mutex
	total time.Duration
	n     int64
	mean  float64
}

// Mean returns the mean per request between the previous totals and total
// over n requests, and remembers them.
func (p *PerRequest) Mean(total time.Duration, n int64) float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n > p.n {
		p.mean = (total - p.total).Seconds() / float64(n-p.n)
	}
	p.total, p.n = total, n
	return p.mean
}

// FanoutObserver is implemented by observers that know how many items
// (batch rows) one pipeline request brings to each step: the text lines of
// a page at the recognizer. Fanout returns, per step in pipeline order, the
// totals since the observer began: the requests that reached the step (not
// dropped before it) and the rows sent to it for them. The loop plans each
// step for the predicted rate times its fan-out over the last interval
// (optimizer.Step.Fanout), keeping the last fan-out measured while no
// request reaches the step.
type FanoutObserver interface {
	Fanout(ctx context.Context) (reached, rows []int64, err error)
}

// Predictor predicts the peak arrival rate of the next interval from the
// per-second history (oldest first). orchestrator/predict implements it.
type Predictor interface {
	Predict(history []float64) float64
}

// PredictorFunc adapts a function to Predictor.
type PredictorFunc func([]float64) float64

// Predict implements Predictor.
func (f PredictorFunc) Predict(h []float64) float64 { return f(h) }

// Actuator reads and changes the configuration of the pipeline's stages,
// in pipeline order.
type Actuator interface {
	Current(ctx context.Context) ([]models.StageConfig, error)
	Apply(ctx context.Context, stage int, cfg models.StageConfig) error
}

// Action is one thing an actuator did to the cluster (a scale, a pod
// configured, …), shown in the decision log.
type Action struct {
	Kind    string  `json:"kind"`
	Object  string  `json:"object"`
	What    string  `json:"what"`
	Seconds float64 `json:"seconds"`
}

// ActionReporter is implemented by actuators that act in the background as
// well as in Apply (the Kubernetes one): each decision logs what they did
// since the previous one.
type ActionReporter interface {
	TakeActions() []Action
}

// Clock is the loop's time source.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Config tunes the loop. Tags are kong's.
type Config struct {
	Interval time.Duration `default:"10s" help:"Adaptation interval (>= 1s)."`
	History  int           `default:"120" help:"Seconds of arrival history handed to the predictor."`
	Margin   float64       `default:"1.1" help:"Multiplier on the predicted rate (head-room for prediction error)."`
	// SwitchCost makes planning change-aware: the running configuration is
	// kept while it meets the predicted load and the SLA and the new plan's
	// objective beats it by no more than this per stage it would change
	// (seconds of loading and memory for a replica; a moment's cold cache
	// for a variant switch).
	SwitchCost float64 `name:"switch-cost" default:"0.01" help:"Objective a change must gain per stage it changes (0.01 = one accuracy point, or 0.2 cores at --controller.beta 0.05); the running configuration stays while it meets the load and SLA otherwise (0: always take the best plan)."`
	// Correct turns on the online profile correction (correction.go) when
	// the controller has a BatchObserver. The flag lives under the
	// controller. prefix, which kong does not add to a negation's name.
	Correct         bool          `name:"correct" default:"true" negatable:"controller.no-correct" help:"Correct the profile online: compare the engine time per batch the stages measure with the profile, per variant, batch size and cores, and plan with the profile scaled by the (bounded, smoothed) factors; unmeasured variants and sizes take the factors of the measured ones (--controller.no-correct: plan with the profile as it is)."`
	CorrectHalfLife time.Duration `name:"correct-half-life" default:"5m" help:"Without new measurements a correction returns half of the way to the profile every this long."`
	CorrectMin      float64       `name:"correct-min" default:"0.5" help:"Smallest correction factor (0.5: the stages may be up to twice as fast as profiled)."`
	CorrectMax      float64       `name:"correct-max" default:"4" help:"Largest correction factor (4: up to four times as slow as profiled)."`
}

// correction is the corrector's part of the configuration.
func (c Config) correction() CorrectionConfig {
	return CorrectionConfig{HalfLife: c.CorrectHalfLife, Min: c.CorrectMin, Max: c.CorrectMax}.withDefaults()
}

// reserveBand is the hysteresis of the cores kept for the router's glue: the
// reservation moves to the nearest whole core only once the need is more than
// this beyond the half-way point, so a rate that wobbles around a rounding
// boundary does not flip the plan's capacity every interval.
const reserveBand = 0.25

// Validate checks the ranges.
func (c Config) Validate() error {
	switch {
	case c.Interval < time.Second:
		return fmt.Errorf("--controller.interval %s must be at least 1s", c.Interval)
	case c.History < 1:
		return fmt.Errorf("--controller.history must be at least 1")
	case c.Margin < 1 || c.Margin > 10:
		return fmt.Errorf("--controller.margin %g must be in [1, 10]", c.Margin)
	case c.SwitchCost < 0 || c.SwitchCost > 1e6 || math.IsNaN(c.SwitchCost):
		return fmt.Errorf("--controller.switch-cost %g must be in [0, 1e6]", c.SwitchCost)
	case c.CorrectHalfLife < 0:
		return fmt.Errorf("--controller.correct-half-life %s must not be negative", c.CorrectHalfLife)
	case c.CorrectMin < 0 || c.CorrectMin > 1 || math.IsNaN(c.CorrectMin):
		return fmt.Errorf("--controller.correct-min %g must be in (0, 1]", c.CorrectMin)
	case c.CorrectMax != 0 && (c.CorrectMax < 1 || c.CorrectMax > 100) || math.IsNaN(c.CorrectMax):
		return fmt.Errorf("--controller.correct-max %g must be in [1, 100]", c.CorrectMax)
	}
	return nil
}

// Decision is what the loop did in one interval: one JSON line of the
// decision log.
type Decision struct {
	Time      time.Time            `json:"time"`
	Observed  float64              `json:"observed_rps"` // mean of the last interval
	PeakSeen  float64              `json:"observed_peak_rps"`
	Predicted float64              `json:"predicted_rps"`            // with margin
	Reserved  int                  `json:"reserved_cores,omitempty"` // cores kept out of the capacity for the router's glue
	Glue      float64              `json:"glue_seconds,omitempty"`   // the router's glue time per request (OverheadObserver)
	Kept      string               `json:"kept,omitempty"`           // why the running configuration stayed over a better plan
	Plan      *optimizer.Plan      `json:"plan,omitempty"`
	Fallback  bool                 `json:"fallback,omitempty"`
	Changes   []Change             `json:"changes,omitempty"`
	SolveSec  float64              `json:"solve_seconds"`
	ApplySec  float64              `json:"apply_seconds"`
	Error     string               `json:"error,omitempty"`
	Applied   []models.StageConfig `json:"applied,omitempty"`
	Actions   []Action             `json:"actions,omitempty"`
	// Corrections are the profile corrections the plan was made with, per
	// step; CorrectionError why the stages' measurements could not be read
	// (the plan then used the corrections as they were).
	Corrections     []StageCorrection `json:"corrections,omitempty"`
	CorrectionError string            `json:"correction_error,omitempty"`
	// Expected is how long the changes should take until the new capacity
	// serves: the sum of the changes' (they are applied one after another).
	// ExpectedEstimated lists the stage/variant pairs whose load time the
	// profile lacks (load_seconds), estimated from the memory model.
	Expected          float64  `json:"expected_seconds,omitempty"`
	ExpectedEstimated []string `json:"expected_estimated,omitempty"`
	// Fanout is the items per request each step was planned for, as
	// measured (FanoutObserver); absent when every step gets one.
	Fanout []float64 `json:"fanout,omitempty"`
}

// Change is one stage whose configuration the loop changed.
type Change struct {
	Stage string             `json:"stage"`
	From  models.StageConfig `json:"from"`
	To    models.StageConfig `json:"to"`
	// Seconds is how long the actuator took to apply the change.
	Seconds float64 `json:"seconds"`
	// Expected is how long it should take by the profile (see expected).
	Expected float64 `json:"expected_seconds,omitempty"`
}

// Controller runs the loop. It is safe for concurrent use; Run must be
// called once.
type Controller struct {
	cfg     Config
	problem optimizer.Problem // template: everything but ArrivalRate and Current
	solver  optimizer.Solver
	obs     Observer
	pred    Predictor
	act     Actuator
	clock   Clock
	log     *slog.Logger
	m       *metricsSet
	mu      sync.Mutex // guards last
	out     io.Writer
	last    *Decision
	batches BatchObserver
	corr    *Corrector // nil: no correction
	// fan measures fan-out from a FanoutObserver (nil without one).
	fan *fanout
}

// Options are a Controller's collaborators.
type Options struct {
	Observer Observer
	// Batches reports what the stages measure; with Config.Correct, the
	// loop corrects the profile from it (nil: the Observer, if it is a
	// BatchObserver too; else no correction).
	Batches   BatchObserver
	Predictor Predictor
	Actuator  Actuator
	Solver    optimizer.Solver
	// Log receives one JSON line per interval (may be nil).
	Log    io.Writer
	Clock  Clock
	Logger *slog.Logger
}

// New returns a controller that plans with problem as a template (its
// ArrivalRate and Current are filled in every interval).
func New(cfg Config, problem optimizer.Problem, opt Options) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opt.Observer == nil || opt.Predictor == nil || opt.Actuator == nil || opt.Solver == nil {
		return nil, errors.New("orchestrator: observer, predictor, actuator and solver are required")
	}
	if opt.Clock == nil {
		opt.Clock = systemClock{}
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if b, ok := opt.Observer.(BatchObserver); ok && opt.Batches == nil {
		opt.Batches = b
	}
	c := &Controller{cfg: cfg, problem: problem, solver: opt.Solver, obs: opt.Observer, pred: opt.Predictor,
		act: opt.Actuator, clock: opt.Clock, log: opt.Logger.With("role", "controller"), out: opt.Log, batches: opt.Batches}
	if f, ok := opt.Observer.(FanoutObserver); ok {
		c.fan = &fanout{obs: f, per: make([]float64, len(problem.Stages))}
	}
	if cfg.Correct && opt.Batches != nil && problem.Profiles != nil {
		c.corr = NewCorrector(problem.Profiles, cfg.correction())
	}
	c.m = newMetrics(problem.Stages, c.corr != nil)
	return c, nil
}

// Close unregisters the controller's metrics.
func (c *Controller) Close() { c.m.close() }

// Last returns the last decision, or nil.
func (c *Controller) Last() *Decision {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// Run steps every interval until ctx is done. A failing step is recorded
// and the loop goes on: the data plane keeps serving the last configuration.
func (c *Controller) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.clock.After(c.cfg.Interval):
		}
		d := c.Step(ctx)
		if d.Error != "" {
			c.log.Warn("adaptation step failed; keeping the running configuration", "err", d.Error)
		}
	}
}

// Step runs one interval: observe, predict, solve, apply what changed.
func (c *Controller) Step(ctx context.Context) Decision {
	d := Decision{Time: c.clock.Now()}
	defer c.record(&d)
	// Background actions (retries, new pods configured) show even in a
	// decision that fails early.
	defer c.takeActions(&d)
	rates, err := c.obs.Rates(ctx, c.cfg.History)
	if err != nil {
		d.Error = fmt.Sprintf("cannot observe the load: %v", err)
		c.m.observeErrors.Inc()
		return d
	}
	d.Observed, d.PeakSeen = stats(rates, int(c.cfg.Interval/time.Second))
	d.Predicted = c.pred.Predict(rates) * c.cfg.Margin
	current, err := c.act.Current(ctx)
	if err != nil {
		d.Error = fmt.Sprintf("cannot read the running configuration: %v", err)
		return d
	}
	p := c.problem
	p.ArrivalRate = d.Predicted
	p.Current = current
	if c.fan != nil {
		p.Stages, d.Fanout = c.fan.apply(ctx, p.Stages)
	}
	if c.corr != nil {
		p.Profiles = c.correct(ctx, &d)
	}
	if o, ok := c.obs.(OverheadObserver); ok {
		if per, err := o.OverheadSeconds(ctx); err == nil && per > 0 {
			d.Glue = per
			if p.CoreCapacity > 0 {
				d.Reserved = min(reserve(d.Predicted*per, c.lastReserved()), p.CoreCapacity-1) // leave the stages a core
				p.CoreCapacity -= d.Reserved
			}
		}
	}
	plan, err := optimizer.Solve(&p, c.solver, c.clock.Now)
	d.SolveSec = plan.SolveTime.Seconds()
	switch {
	case errors.Is(err, optimizer.ErrInfeasible):
		d.Fallback = true
		c.m.solves("infeasible")
	case err != nil:
		c.m.solves("error")
		d.Error = fmt.Sprintf("cannot solve: %v", err)
		return d
	default:
		c.m.solves("optimal")
	}
	c.m.solveDur.Update(d.SolveSec)
	if !d.Fallback && c.cfg.SwitchCost > 0 && len(current) == len(plan.Stages) {
		if n := changed(current, plan); n > 0 {
			keep := p
			keep.Baseline = optimizer.Fixed
			if cur, err := optimizer.Solve(&keep, c.solver, c.clock.Now); err == nil && !cur.Fallback &&
				cur.Objective >= plan.Objective-c.cfg.SwitchCost*float64(n) {
				d.Kept = fmt.Sprintf("the running configuration meets the load and SLA; the best plan gains %.4g for %d changed stages (switch cost %g each)",
					plan.Objective-cur.Objective, n, c.cfg.SwitchCost)
				plan = cur
			}
		}
	}
	d.Plan = &plan
	start := c.clock.Now()
	// Applied ends up as what runs: the plan where it was applied, the old
	// configuration where nothing changed or an earlier stage failed.
	d.Applied = append(d.Applied, current...)
	for i, sp := range plan.Stages {
		to := sp.Config()
		if i < len(current) && (d.Kept != "" || sameConfig(current[i], to)) {
			continue // a kept configuration is kept as it runs, max wait included
		}
		ch := Change{Stage: sp.Stage, To: to}
		if i < len(current) {
			ch.From = current[i]
		}
		var estimated bool
		ch.Expected, estimated = c.expected(i, ch.From, to)
		d.Expected += ch.Expected
		if estimated {
			d.ExpectedEstimated = append(d.ExpectedEstimated, sp.Stage+"/"+to.Variant)
		}
		t0 := c.clock.Now()
		if err := c.act.Apply(ctx, i, to); err != nil {
			d.Error = fmt.Sprintf("cannot apply %s to stage %q: %v", fmtConfig(to), sp.Stage, err)
			break
		}
		ch.Seconds = c.clock.Now().Sub(t0).Seconds()
		if i < len(current) {
			d.Applied[i] = to
		}
		d.Changes = append(d.Changes, ch)
	}
	d.ApplySec = c.clock.Now().Sub(start).Seconds()
	c.m.update(&d)
	c.takeActions(&d)
	return d
}

// correct folds what the stages measured since the last interval into the
// corrector, records the corrections in d, and returns the profile to plan
// with. A failed read is recorded and planning goes on with the corrections
// as they were.
func (c *Controller) correct(ctx context.Context, d *Decision) *profiles.Profile {
	now := c.clock.Now()
	stats, err := c.batches.Batches(ctx)
	if err != nil {
		d.CorrectionError = fmt.Sprintf("cannot read the stages' measurements: %v", err)
		c.m.observeErrors.Inc()
	}
	seen := c.corr.Observe(now, stats)
	for _, st := range c.problem.Stages {
		name := cmp.Or(st.Profile, st.Name)
		sc := c.corr.Summary(now, st.Name, name)
		sc.New = seen[name]
		d.Corrections = append(d.Corrections, sc)
		for _, v := range st.Variants {
			f, n := c.corr.VariantFactor(now, name, v.Name)
			c.m.correction(st.Name, v.Name, f, n)
		}
	}
	return c.corr.Profile(now)
}

// expected returns how long changing stage i from one configuration to
// another should take until the new capacity serves: the new replicas (all
// of them for other cores) load the session of the variant they run, one
// after another, for the profile's load_seconds each (estimated from the
// memory model where the profile lacks it: estimated). A variant switch
// and batching changes take no loading: the stages preload every variant
// by default (--stage.preload all).
func (c *Controller) expected(i int, from, to models.StageConfig) (seconds float64, estimated bool) {
	added := max(to.Replicas-from.Replicas, 0)
	if to.Cores != from.Cores {
		added = to.Replicas
	}
	if added == 0 || c.problem.Profiles == nil || i >= len(c.problem.Stages) {
		return 0, false
	}
	st := c.problem.Stages[i]
	per, estimated := c.problem.Profiles.LoadTime(cmp.Or(st.Profile, st.Name), to.Variant, profiles.MeasuredMemory())
	return float64(added) * per, estimated
}

// reserve rounds need (cores) to a whole reservation with hysteresis around
// the previous one (see reserveBand).
func reserve(need float64, prev int) int {
	if math.Abs(need-float64(prev)) < 0.5+reserveBand {
		return prev
	}
	return int(math.Round(need))
}

// lastReserved is the previous decision's reservation.
func (c *Controller) lastReserved() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		return 0
	}
	return c.last.Reserved
}

// changed counts the stages whose configuration plan changes.
func changed(current []models.StageConfig, plan optimizer.Plan) int {
	n := 0
	for i, sp := range plan.Stages {
		if !sameConfig(current[i], sp.Config()) {
			n++
		}
	}
	return n
}

// sameConfig compares what the loop decides; max wait differences below a
// millisecond are not worth a reconfiguration.
func sameConfig(a, b models.StageConfig) bool {
	dw := a.MaxWait - b.MaxWait
	return a.Variant == b.Variant && a.MaxBatch == b.MaxBatch && a.Replicas == b.Replicas && a.Cores == b.Cores &&
		dw < time.Millisecond && dw > -time.Millisecond
}

func fmtConfig(c models.StageConfig) string {
	return fmt.Sprintf("%s batch %d wait %s ×%d (%d cores)", c.Variant, c.MaxBatch, c.MaxWait, c.Replicas, c.Cores)
}

// stats returns the mean and max of the last n values of rates.
func stats(rates []float64, n int) (mean, peak float64) {
	if n > len(rates) {
		n = len(rates)
	}
	if n == 0 {
		return 0, 0
	}
	for _, r := range rates[len(rates)-n:] {
		mean += r
		peak = max(peak, r)
	}
	return mean / float64(n), peak
}

func (c *Controller) takeActions(d *Decision) {
	if r, ok := c.act.(ActionReporter); ok {
		d.Actions = append(d.Actions, r.TakeActions()...)
	}
}

func (c *Controller) record(d *Decision) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = d
	if c.out != nil {
		b, err := json.Marshal(d)
		if err == nil {
			c.out.Write(append(b, '\n'))
		}
	}
	args := []any{"observed_rps", d.Observed, "predicted_rps", d.Predicted, "changes", len(d.Changes), "fallback", d.Fallback, "err", d.Error}
	if d.Expected > 0 {
		args = append(args, "expected_seconds", d.Expected, "apply_seconds", d.ApplySec)
	}
	if len(d.Corrections) > 0 {
		args = append(args, "correction", fmtCorrections(d.Corrections))
	}
	c.log.Info("decision", args...)
}
