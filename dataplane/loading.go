package dataplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipa-serving/ipa/models"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// ErrSuperseded is returned by a Reconfigure that a newer one replaced
// while its sessions loaded; the admin API answers it with 409 Conflict.
var ErrSuperseded = errors.New("superseded by a newer reconfiguration of the stage while its sessions loaded; the newer one applies")

// Preload says which variants a replica loads besides the one it runs
// (--stage.preload). A replica serves as soon as the variant it runs is
// loaded; the others load after, in the background, one at a time. The
// zero value preloads every variant.
type Preload struct {
	active bool     // only the variant that runs
	only   []string // these (and the one that runs); nil: all
}

// ParsePreload reads --stage.preload: "all" (or empty), "active", or a
// comma-separated list of variant names. The names are checked against
// the stages by Check.
func ParsePreload(s string) (Preload, error) {
	switch strings.TrimSpace(s) {
	case "", "all":
		return Preload{}, nil
	case "active":
		return Preload{active: true}, nil
	}
	var p Preload
	for _, n := range strings.Split(s, ",") {
		n = strings.TrimSpace(n)
		if !models.ValidName(n) {
			return Preload{}, fmt.Errorf("--stage.preload %q: %q is not a variant name; use all, active, or variant names separated by commas", truncate(s), truncate(n))
		}
		if !slices.Contains(p.only, n) {
			p.only = append(p.only, n)
		}
	}
	return p, nil
}

// String is the flag's form.
func (p Preload) String() string {
	switch {
	case p.active:
		return "active"
	case p.only != nil:
		return strings.Join(p.only, ",")
	}
	return "all"
}

// Check reports a variant of the list that none of stages has.
func (p Preload) Check(stages ...*models.Stage) error {
	for _, n := range p.only {
		if !slices.ContainsFunc(stages, func(st *models.Stage) bool { return st.Variant(n) != nil }) {
			var have []string
			for _, st := range stages {
				have = append(have, st.VariantNames()...)
			}
			return fmt.Errorf("--stage.preload: no stage has variant %q (have %v)", n, have)
		}
	}
	return nil
}

// variants returns the names of meta's variants p preloads, in meta's order.
func (p Preload) variants(meta *models.Stage) map[string]bool {
	out := map[string]bool{}
	for _, v := range meta.Variants {
		if !p.active && (p.only == nil || slices.Contains(p.only, v.Name)) {
			out[v.Name] = true
		}
	}
	return out
}

// slot is one variant's engine on one replica, loaded when it is first
// needed. A replica's slots are made with it and never change, so that the
// worker and the inline path read r.engines without a lock; the engine in a
// slot comes and goes. It implements mlrt.Engine; Run on an empty slot
// fails (the stage never runs a variant that some serving replica lacks).
type slot struct {
	v       *models.Variant
	eng     atomic.Pointer[engineRef] // nil: not loaded
	loading atomic.Bool
	mu      sync.Mutex // held while the engine loads or closes
	closed  bool       // under mu: the replica stopped; load nothing more
}

type engineRef struct{ mlrt.Engine }

func (sl *slot) Variant() *models.Variant { return sl.v }

func (sl *slot) Run(ctx context.Context, in []models.Tensor) ([]models.Tensor, error) {
	e := sl.eng.Load()
	if e == nil {
		return nil, fmt.Errorf("BUG: variant %q is not loaded on this replica", sl.v.Name)
	}
	return e.Run(ctx, in)
}

func (sl *slot) loaded() bool { return sl.eng.Load() != nil }

// Close closes the engine, if loaded, and keeps the slot empty for good.
func (sl *slot) Close() error {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	sl.closed = true
	if e := sl.eng.Swap(nil); e != nil {
		return e.Close()
	}
	return nil
}

// newReplica returns a replica of cores threads with no engine loaded.
func (s *Stage) newReplica(cores int) *replica {
	r := &replica{cores: cores, engines: make(map[string]*slot, len(s.meta.Variants))}
	for _, v := range s.meta.Variants {
		r.engines[v.Name] = &slot{v: v}
	}
	return r
}

// ensure loads variant name on r unless it is loaded. A load of the same
// slot already under way is waited for; ctx is checked before opening.
// background loads run at a low priority (openLow).
func (s *Stage) ensure(ctx context.Context, r *replica, name string, background bool) error {
	sl := r.engines[name]
	if sl.loaded() {
		return nil
	}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	switch {
	case sl.loaded():
		return nil
	case sl.closed:
		return ErrUnavailable
	case ctx.Err() != nil:
		return ctx.Err()
	}
	sl.loading.Store(true)
	s.loadingN.Add(1)
	start := time.Now()
	open := func() (mlrt.Engine, error) { return s.open(sl.v, r.cores) }
	var e mlrt.Engine
	var err error
	if background && r.cores == 1 {
		e, err = openLow(open)
	} else {
		e, err = open()
	}
	s.loadingN.Add(-1)
	sl.loading.Store(false)
	if err != nil {
		s.lm.failed(name)
		return fmt.Errorf("stage %q: cannot load variant %q: %w", s.meta.Name, name, err)
	}
	sl.eng.Store(&engineRef{e})
	s.lm.loaded(name, background, time.Since(start))
	return nil
}

// wanted returns what each replica holds under cfg: the preloaded
// variants and the one cfg runs.
func (s *Stage) wanted(cfg models.StageConfig) map[string]bool {
	w := s.preload.variants(s.meta)
	w[cfg.Variant] = true
	return w
}

// held returns meta restricted to the variants each replica holds under
// cfgs (all of them together), for the memory model.
func (s *Stage) held(cfgs ...models.StageConfig) *models.Stage {
	return heldVariants(s.meta, s.preload, cfgs...)
}

func heldVariants(meta *models.Stage, p Preload, cfgs ...models.StageConfig) *models.Stage {
	w := p.variants(meta)
	for _, c := range cfgs {
		w[c.Variant] = true
	}
	m := *meta
	m.Variants = slices.DeleteFunc(slices.Clone(meta.Variants), func(v *models.Variant) bool { return !w[v.Name] })
	return &m
}

// kickPreload wakes the background loader.
func (s *Stage) kickPreload() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// foreground counts a load a Reconfigure waits for: the background loader
// starts nothing new while one runs (done ends it and wakes the loader).
func (s *Stage) foreground() (done func()) {
	s.fg.Add(1)
	var once sync.Once
	return func() {
		once.Do(func() {
			s.fg.Add(-1)
			s.kickPreload()
		})
	}
}

// preloadLoop is the background loader: one load at a time, of the
// serving replicas' variants that the running and the requested
// configuration want, while no Reconfigure waits for a load. Nothing is
// unloaded in place: a variant a replica loaded (for a switch, with
// --stage.preload active) stays until the replica retires, since closing
// it safely would need the replica's run lock, and a worker that finds it
// held puts its batch back.
func (s *Stage) preloadLoop() {
	defer s.loaders.Done()
	failed := map[string]bool{} // variants that failed to load here: not retried in the background
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.kick:
		}
		for s.ctx.Err() == nil && s.fg.Load() == 0 {
			r, name := s.nextPreload(failed)
			if r == nil {
				break
			}
			if !s.waitSpare() {
				break
			}
			if err := s.ensure(s.ctx, r, name, true); err != nil && s.ctx.Err() == nil && !errors.Is(err, ErrUnavailable) {
				failed[name] = true
				s.log.Warn("background load failed; the variant loads when a reconfiguration needs it", "variant", name, "err", err)
			}
		}
	}
}

// Background loads give way to serving. Opening a session streams its
// weights through memory and optimizes its graph for seconds, and the
// replicas' batches beside it run slower (the loader's low priority shares
// the cores, not the memory): on this 2-core machine a classify stage
// offered 24 requests/s, scaled from one resnet50 replica to two, answered
// at p50 75–103 ms and p90 113–207 ms for the 18 s the new replica
// preloaded the other eight variants beside serving, and at p50 50–58 ms,
// p90 76–120 ms with the loads waiting — at the moment the scale-up was
// meant to relieve (the fidelity runs' worst episodes came right after
// such scale-ups). So each background load waits until, over preloadLook,
// the replicas were busy less than preloadBusy of the time (sampled every
// preloadLook/20), or at once after a quarter of it with no batch
// computing at all; under a load that keeps them busier the variants load
// when a reconfiguration needs them, in the foreground, while the running
// configuration serves.
const (
	preloadBusy = 0.3
	preloadLook = 2 * time.Second
)

// waitSpare waits until the replicas have spare time (see preloadBusy);
// false when the stage closes, or a Reconfigure waits for loads, first.
func (s *Stage) waitSpare() bool {
	const samples = 20
	t := time.NewTicker(preloadLook / samples)
	defer t.Stop()
	var ring [samples]int32
	sum, n := int32(0), 0
	for {
		select {
		case <-s.ctx.Done():
			return false
		case <-t.C:
		}
		if s.fg.Load() > 0 {
			return false // a Reconfigure waits for loads: the loader yields to it until kicked again
		}
		busy := s.running.Load()
		sum += busy - ring[n%samples]
		ring[n%samples] = busy
		n++
		if n >= samples/4 && sum == 0 {
			return true // idle for a quarter of the look: no need to wait out the rest
		}
		if n < samples {
			continue
		}
		replicas := max(int32(s.cfg.Load().Replicas), 1)
		if float64(sum) < preloadBusy*float64(samples*replicas) {
			return true
		}
	}
}

// nextPreload picks the background loader's next load on a serving
// replica: a variant the running or the requested configuration wants
// that is not loaded yet, variant by variant so that each variant is soon
// loaded on every replica.
func (s *Stage) nextPreload(failed map[string]bool) (*replica, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ""
	}
	want := s.wanted(*s.cfg.Load())
	for n := range s.wanted(s.target) {
		want[n] = true
	}
	for _, v := range s.meta.Variants {
		if !want[v.Name] || failed[v.Name] {
			continue
		}
		for _, r := range s.replicas {
			if !r.engines[v.Name].loaded() {
				return r, v.Name
			}
		}
	}
	return nil, ""
}

// ReplicaView is one serving replica as the admin API shows it.
type ReplicaView struct {
	ID      int      `json:"id"`
	Cores   int      `json:"cores"`
	Loaded  []string `json:"loaded"`
	Loading []string `json:"loading,omitempty"`
}

// LoadView is what a stage has loaded and is loading.
type LoadView struct {
	Preload  string        `json:"preload"`
	Replicas []ReplicaView `json:"replicas"`
	// Loading is true while a variant loads anywhere in the stage: on a
	// replica that serves, or on new replicas for a pending Reconfigure.
	Loading bool `json:"loading"`
	// Pending is the configuration a Reconfigure that is still loading will
	// apply (nil: none).
	Pending *models.StageConfig `json:"pending,omitempty"`
}

// Loads returns the stage's replicas with their loaded variants.
func (s *Stage) Loads() LoadView {
	s.mu.Lock()
	reps := slices.Clone(s.replicas)
	var pending *models.StageConfig
	if s.cancelPending != nil {
		t := s.target
		pending = &t
	}
	s.mu.Unlock()
	view := LoadView{Preload: s.preload.String(), Replicas: []ReplicaView{}, Loading: s.loadingN.Load() > 0, Pending: pending}
	for _, r := range reps {
		rv := ReplicaView{ID: r.id, Cores: r.cores, Loaded: []string{}}
		for _, v := range s.meta.Variants {
			sl := r.engines[v.Name]
			if sl.loaded() {
				rv.Loaded = append(rv.Loaded, v.Name)
			} else if sl.loading.Load() {
				rv.Loading = append(rv.Loading, v.Name)
			}
		}
		view.Replicas = append(view.Replicas, rv)
	}
	return view
}

// Target returns the configuration the latest Reconfigure asks for: the
// one in effect unless a Reconfigure is still loading. Admin patches apply
// to it, so that a patch does not undo a pending change it does not name.
func (s *Stage) Target() models.StageConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.target
}

// loadMetrics are a stage's loading metrics, in its metrics set.
type loadMetrics struct {
	s *Stage
}

func newLoadMetrics(s *Stage) *loadMetrics {
	m := &loadMetrics{s: s}
	name := s.meta.Name
	set := s.m.set
	set.NewGauge(fmt.Sprintf(`ipa_stage_variants_loading{stage=%q}`, name), func() float64 { return float64(s.loadingN.Load()) })
	for _, v := range s.meta.Variants {
		vn := v.Name
		set.NewGauge(fmt.Sprintf(`ipa_stage_variant_replicas_loaded{stage=%q,variant=%q}`, name, vn), func() float64 {
			n := 0
			for _, r := range *s.live.Load() {
				if r.engines[vn].loaded() {
					n++
				}
			}
			return float64(n)
		})
	}
	return m
}

func (m *loadMetrics) loaded(variant string, background bool, d time.Duration) {
	prio := "foreground"
	if background {
		prio = "background"
	}
	st := m.s.meta.Name
	m.s.m.set.GetOrCreateCounter(fmt.Sprintf(`ipa_stage_variant_loads_total{stage=%q,variant=%q,priority=%q}`, st, variant, prio)).Inc()
	m.s.m.set.GetOrCreatePrometheusHistogram(fmt.Sprintf(`ipa_stage_variant_load_seconds{stage=%q,variant=%q}`, st, variant)).Update(d.Seconds())
}

func (m *loadMetrics) failed(variant string) {
	m.s.m.set.GetOrCreateCounter(fmt.Sprintf(`ipa_stage_variant_load_errors_total{stage=%q,variant=%q}`, m.s.meta.Name, variant)).Inc()
}
