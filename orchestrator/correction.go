package orchestrator

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ipa-serving/ipa/profiles"
)

// BatchStats is the engine time of the batches a stage ran with one variant,
// batch size and cores per replica.
type BatchStats struct {
	// Stage is the stage's name in the profile (the model repository's
	// stage, which dataplane.Stage.Name returns).
	Stage   string `json:"stage"`
	Variant string `json:"variant"`
	// Cores is the intra-op threads of the replicas that ran them; Rows the
	// rows of each batch.
	Cores int `json:"cores"`
	Rows  int `json:"rows"`
	// Count is the number of batches (fractional when it comes from
	// Prometheus's increase()); Seconds their engine time in total.
	Count   float64 `json:"count"`
	Seconds float64 `json:"seconds"`
}

// BatchObserver reports what the stages measured: the batches they ran
// since the previous call (the first call: since the observer was made).
// The controller compares their mean engine time with the profile's and
// corrects the profile it plans with (Corrector).
type BatchObserver interface {
	Batches(ctx context.Context) ([]BatchStats, error)
}

// batchKey names one series of BatchStats.
type batchKey struct {
	stage, variant string
	cores, rows    int
}

func (b BatchStats) key() batchKey { return batchKey{b.Stage, b.Variant, b.Cores, b.Rows} }

// BatchDeltas turns cumulative counters (what a stage exposes on /metrics)
// into the increases since the previous call, for a BatchObserver. A series
// whose count went down was restarted: its increase is its new value, as in
// Prometheus's increase(). Safe for concurrent use.
type BatchDeltas struct {
	mu   sync.Mutex
	last map[batchKey]BatchStats
}

// NewBatchDeltas starts from the totals seen now, so that the first Deltas
// reports only what ran after it.
func NewBatchDeltas(now []BatchStats) *BatchDeltas {
	d := &BatchDeltas{}
	d.Deltas(now)
	return d
}

// Deltas returns the increase of each series of total since the previous
// call (series with none are left out) and remembers total.
func (d *BatchDeltas) Deltas(total []BatchStats) []BatchStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	next := make(map[batchKey]BatchStats, len(total))
	var out []BatchStats
	for _, t := range total {
		k := t.key()
		next[k] = t
		inc := t
		if prev, ok := d.last[k]; ok && t.Count >= prev.Count && t.Seconds >= prev.Seconds {
			inc.Count, inc.Seconds = t.Count-prev.Count, t.Seconds-prev.Seconds
		}
		if inc.Count > 0 {
			out = append(out, inc)
		}
	}
	d.last = next
	return out
}

// Defaults of the correction (Config's zero values take them).
const (
	DefaultCorrectHalfLife = 5 * time.Minute
	DefaultCorrectMin      = 0.5
	DefaultCorrectMax      = 4.0
)

// Constants of the correction's estimator; see Corrector.
const (
	// correctMinBatches is the evidence a series folds at once: fewer
	// batches wait for the next interval's, so that one slow batch is not
	// a measurement.
	correctMinBatches = 5
	// correctPrior is the weight, in batches, of the level above (variant
	// over its batch sizes, stage over its variants, the profile over the
	// stage) in each level's estimate.
	correctPrior = 5
	// correctSmoothing is the weight of a new measurement against the
	// running estimate of its series when that one is fresh.
	correctSmoothing = 0.5
	// z99 is the 0.99 quantile of the standard normal distribution.
	z99 = 2.3263478740408408
)

// CorrectionConfig tunes a Corrector.
type CorrectionConfig struct {
	// HalfLife is how fast a correction returns to the profile without new
	// evidence: half of the way every HalfLife.
	HalfLife time.Duration
	// Min and Max bound every factor.
	Min, Max float64
}

func (c CorrectionConfig) withDefaults() CorrectionConfig {
	if c.HalfLife <= 0 {
		c.HalfLife = DefaultCorrectHalfLife
	}
	if c.Min <= 0 {
		c.Min = DefaultCorrectMin
	}
	if c.Max <= 0 {
		c.Max = DefaultCorrectMax
	}
	return c
}

// Corrector learns how far what the stages measure is from the profile, and
// returns the profile corrected by it. It is the controller's, stepped once
// per interval; its methods are safe for concurrent use.
//
// Measurement. For every series (stage, variant, cores, rows) the observed
// mean engine time of a batch is compared with what the profile expects at
// that point: the mean of the log-normal the profile's p50 and p99 describe,
// p50·exp(σ²/2) with σ = ln(p99/p50)/z₀.₉₉ (the simulator draws service times
// from the same law). A batch size between measured ones is compared with the
// profile's estimate there (profiles.Config.Lookup); a series the profile
// cannot answer (cores or rows outside what it measured) is ignored. A series
// folds its batches once it has correctMinBatches of them.
//
// Estimate. Each series keeps the logarithm of its factor (observed over
// expected), smoothed: a new measurement replaces it fully when the series
// has none or its evidence is many half-lives old, and weighs
// correctSmoothing against a fresh one. Every factor is bounded to [Min, Max].
//
// Scaling to what was not measured. A profile point (stage, variant, cores,
// batch) is corrected by a hierarchy of estimates, each pulled towards the
// level above in proportion to how much evidence it has: the stage-wide
// factor (over every variant measured; pulled towards 1, the profile), the
// variant's (over its cores and batch sizes; pulled towards the stage's), the
// variant at those cores (pulled towards the variant's), and the point's own
// series. A level's estimate is the mean of its series' logarithms weighted
// by their batches and freshness, and its weight against the level above is
// N/(N+correctPrior) · 2^(−Δ/HalfLife), with N its batches and Δ how much
// older its newest evidence is than the level above's; the whole is then
// scaled by 2^(−age/HalfLife), age that of the stage's newest evidence. So
// other batch sizes and cores of a variant that
// runs take its factor, and a variant that never ran takes the stage's: the
// usual cause of a stale profile is the machine (another CPU, its clock,
// other tenants), which slows every variant alike; and a variant that looked
// faster only for want of evidence would draw the plan to it, measure slow,
// and flip the plan back. Without new evidence every level decays back to the
// level above, and the stage to the profile.
type Corrector struct {
	cfg  CorrectionConfig
	base *profiles.Profile

	mu      sync.Mutex // guards series, pending
	series  map[batchKey]*evidence
	pending map[batchKey]*BatchStats
}

func compareKeys(a, b batchKey) int {
	return cmp.Or(cmp.Compare(a.stage, b.stage), cmp.Compare(a.variant, b.variant), cmp.Compare(a.cores, b.cores), cmp.Compare(a.rows, b.rows))
}

// evidence is one series' running estimate.
type evidence struct {
	logf float64   // smoothed ln(observed / expected)
	n    float64   // batches folded in
	at   time.Time // newest evidence
}

// NewCorrector corrects base (which it does not change).
func NewCorrector(base *profiles.Profile, cfg CorrectionConfig) *Corrector {
	return &Corrector{cfg: cfg.withDefaults(), base: base, series: map[batchKey]*evidence{}, pending: map[batchKey]*BatchStats{}}
}

// Observe folds what the stages ran in the last interval into the estimates,
// at time now. It returns the batches seen per stage (folded or pending).
func (c *Corrector) Observe(now time.Time, stats []BatchStats) map[string]float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[string]float64{}
	for _, b := range stats {
		if !(b.Count > 0 && b.Seconds > 0) || math.IsInf(b.Count, 0) || math.IsInf(b.Seconds, 0) {
			continue // nothing measured, or nonsense
		}
		if _, ok := c.expected(b.key()); !ok {
			continue
		}
		k := b.key()
		seen[k.stage] += b.Count
		p := c.pending[k]
		if p == nil {
			p = &BatchStats{Stage: b.Stage, Variant: b.Variant, Cores: b.Cores, Rows: b.Rows}
			c.pending[k] = p
		}
		p.Count += b.Count
		p.Seconds += b.Seconds
	}
	lo, hi := math.Log(c.cfg.Min), math.Log(c.cfg.Max)
	for k, p := range c.pending {
		if p.Count < correctMinBatches {
			continue
		}
		delete(c.pending, k)
		want, _ := c.expected(k)
		x := min(max(math.Log(p.Seconds/p.Count/want), lo), hi)
		e := c.series[k]
		if e == nil {
			c.series[k] = &evidence{logf: x, n: p.Count, at: now}
			continue
		}
		alpha := 1 - (1-correctSmoothing)*c.fresh(now.Sub(e.at))
		e.logf += alpha * (x - e.logf)
		e.n += p.Count
		e.at = now
	}
	return seen
}

// expected is the profile's mean engine time of a batch of k, seconds.
func (c *Corrector) expected(k batchKey) (float64, bool) {
	pt, err := c.base.Lookup(k.stage, k.variant, k.cores, k.rows)
	if err != nil {
		return 0, false
	}
	sigma := 0.0
	if pt.LatencyP99 > pt.LatencyP50 {
		sigma = math.Log(pt.LatencyP99/pt.LatencyP50) / z99
	}
	return pt.LatencyP50 * math.Exp(sigma*sigma/2), true
}

// fresh is the weight left to evidence of that age: 2^(−age/HalfLife).
func (c *Corrector) fresh(age time.Duration) float64 {
	return math.Exp2(-max(age, 0).Seconds() / c.cfg.HalfLife.Seconds())
}

// level is one level of the hierarchy: a group of series.
type level struct {
	sumU, sumUL, n float64
	newest         time.Time
}

func (l *level) add(e *evidence, u float64) {
	l.sumU += u
	l.sumUL += u * e.logf
	l.n += e.n
	if e.at.After(l.newest) {
		l.newest = e.at
	}
}

// table is the levels of every stage at one time.
type table struct {
	c        *Corrector
	now      time.Time
	stage    map[string]*level
	variant  map[[2]string]*level
	cores    map[batchKey]*level // rows 0
	point    map[batchKey]*level
	lo, high float64
}

func (c *Corrector) table(now time.Time) *table {
	t := &table{c: c, now: now, stage: map[string]*level{}, variant: map[[2]string]*level{}, cores: map[batchKey]*level{},
		point: map[batchKey]*level{}, lo: math.Log(c.cfg.Min), high: math.Log(c.cfg.Max)}
	get := func(m map[batchKey]*level, k batchKey) *level {
		if m[k] == nil {
			m[k] = &level{}
		}
		return m[k]
	}
	// In a fixed order: sums of floats depend on it, and a simulation must
	// give the same bytes every run.
	keys := slices.SortedFunc(maps.Keys(c.series), compareKeys)
	for _, k := range keys {
		e := c.series[k]
		u := e.n * c.fresh(now.Sub(e.at))
		if t.stage[k.stage] == nil {
			t.stage[k.stage] = &level{}
		}
		t.stage[k.stage].add(e, u)
		vk := [2]string{k.stage, k.variant}
		if t.variant[vk] == nil {
			t.variant[vk] = &level{}
		}
		t.variant[vk].add(e, u)
		get(t.cores, batchKey{k.stage, k.variant, k.cores, 0}).add(e, u)
		get(t.point, k).add(e, u)
	}
	return t
}

// pull is a level's estimate pulled towards its parent's (parent, whose
// newest evidence is from parentAt) by its want of evidence: its weight is
// N/(N+correctPrior), halved for every half-life its newest evidence is older
// than the parent's.
func (t *table) pull(l *level, parent float64, parentAt time.Time) (float64, time.Time) {
	if l == nil || l.sumU <= 0 {
		return parent, parentAt
	}
	w := l.n / (l.n + correctPrior) * t.c.fresh(parentAt.Sub(l.newest))
	return w*l.sumUL/l.sumU + (1-w)*parent, l.newest
}

// The estimates below are the hierarchy as of the stage's newest evidence;
// decay scales them down by the age of that evidence, so that a stage
// without new measurements returns to the profile as a whole.

// stageLog is the stage-wide estimate and its newest evidence.
func (t *table) stageLog(stage string) (float64, time.Time) {
	l := t.stage[stage]
	if l == nil {
		return 0, t.now
	}
	return t.pull(l, 0, l.newest)
}

func (t *table) variantLog(stage, variant string) (float64, time.Time) {
	s, at := t.stageLog(stage)
	return t.pull(t.variant[[2]string{stage, variant}], s, at)
}

func (t *table) pointLog(stage, variant string, cores, batch int) float64 {
	l, at := t.variantLog(stage, variant)
	l, at = t.pull(t.cores[batchKey{stage, variant, cores, 0}], l, at)
	l, _ = t.pull(t.point[batchKey{stage, variant, cores, batch}], l, at)
	return l * t.decay(stage)
}

// decay is the weight left to a stage's estimates: 2^(−age/HalfLife) of its
// newest evidence.
func (t *table) decay(stage string) float64 {
	if l := t.stage[stage]; l != nil {
		return t.c.fresh(t.now.Sub(l.newest))
	}
	return 1
}

func (t *table) factor(log float64) float64 { return math.Exp(min(max(log, t.lo), t.high)) }

// Factor returns the correction of one profile point at now.
func (c *Corrector) Factor(now time.Time, stage, variant string, cores, batch int) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.table(now)
	return t.factor(t.pointLog(stage, variant, cores, batch))
}

// Profile returns the base profile corrected at now.
func (c *Corrector) Profile(now time.Time) *profiles.Profile {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.table(now)
	return c.base.Scaled(func(stage, variant string, cores, batch int) float64 {
		return t.factor(t.pointLog(stage, variant, cores, batch))
	})
}

// StageCorrection is the correction of one step's stage, in the decision
// log.
type StageCorrection struct {
	// Stage is the step's name.
	Stage string `json:"stage"`
	// Factor is the stage-wide factor, which variants without evidence of
	// their own take; Evidence the batches behind it; New the batches the
	// stage reported in this interval.
	Factor   float64 `json:"factor"`
	Evidence float64 `json:"evidence_batches"`
	New      float64 `json:"new_batches,omitempty"`
	// Variants are the variants with evidence of their own.
	Variants []VariantCorrection `json:"variants,omitempty"`
}

// VariantCorrection is one variant's factor (over its cores and batch
// sizes), the batches behind it and the age of the newest.
type VariantCorrection struct {
	Variant    string  `json:"variant"`
	Factor     float64 `json:"factor"`
	Evidence   float64 `json:"evidence_batches"`
	AgeSeconds float64 `json:"age_seconds"`
}

// Summary returns the correction of profile stage stage at now, named step.
func (c *Corrector) Summary(now time.Time, step, stage string) StageCorrection {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.table(now)
	sl, _ := t.stageLog(stage)
	sc := StageCorrection{Stage: step, Factor: t.factor(sl * t.decay(stage))}
	if l := t.stage[stage]; l != nil {
		sc.Evidence = l.n
	}
	for k, l := range t.variant {
		if k[0] != stage {
			continue
		}
		vl, _ := t.variantLog(stage, k[1])
		sc.Variants = append(sc.Variants, VariantCorrection{Variant: k[1], Factor: t.factor(vl * t.decay(stage)),
			Evidence: l.n, AgeSeconds: now.Sub(l.newest).Seconds()})
	}
	slices.SortFunc(sc.Variants, func(a, b VariantCorrection) int { return cmp.Compare(a.Variant, b.Variant) })
	return sc
}

// VariantFactor returns a variant's factor at now and the batches behind
// it (0 when it takes the stage's).
func (c *Corrector) VariantFactor(now time.Time, stage, variant string) (factor, evidence float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.table(now)
	if l := t.variant[[2]string{stage, variant}]; l != nil {
		evidence = l.n
	}
	vl, _ := t.variantLog(stage, variant)
	return t.factor(vl * t.decay(stage)), evidence
}

// fmtCorrections is the decision's corrections for the log line:
// "classify ×2.01 (812 batches)".
func fmtCorrections(cs []StageCorrection) string {
	var parts []string
	for _, s := range cs {
		parts = append(parts, fmt.Sprintf("%s ×%.3g (%.0f batches)", s.Stage, s.Factor, s.Evidence))
	}
	return strings.Join(parts, ", ")
}
