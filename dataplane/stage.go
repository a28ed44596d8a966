package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipa-serving/ipa/batcher"
	"github.com/ipa-serving/ipa/models"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// Opener creates an engine for variant v with the given intra-op threads.
// main passes one backed by ONNX Runtime; unit tests may pass a fake.
type Opener func(v *models.Variant, threads int) (mlrt.Engine, error)

// Sentinel errors of a stage; the HTTP layer maps them to status codes.
var (
	// ErrUnavailable is returned for requests that arrive or are still queued
	// while the stage shuts down.
	ErrUnavailable = errors.New("stage is shutting down")
	// ErrDeadline is returned for a request whose deadline passed before it
	// could be computed.
	ErrDeadline = errors.New("deadline exceeded before the request was computed")
)

// StageOptions configures a Stage beyond its live-tunable StageConfig.
type StageOptions struct {
	// MaxQueue bounds the queued rows; see batcher.Config.
	MaxQueue int
	// Clock drives queue timing; nil means the system clock.
	Clock  batcher.Clock
	Logger *slog.Logger
	// Limits are the host's ceilings, shared by the stages of a process;
	// nil: none.
	Limits *Limits
	// Preload is what a replica loads besides the variant it runs, in the
	// background once it serves (zero: every variant).
	Preload Preload
}

// Stage serves one pipeline stage. It is safe for concurrent use.
//
// A replica serves as soon as the variant it runs is loaded; the variants
// Preload names load after it, in the background, one at a time. A switch
// to a variant first loads it on every serving replica that lacks it, then
// is an atomic pointer store: batches already formed finish on the variant
// they started with and every later batch uses the new one, which every
// serving replica holds.
//
// Locks, in the order they nest: a slot's mu, s.mu. No session loads
// under s.mu.
type Stage struct {
	meta    *models.Stage
	inputs  []models.TensorSpec // the stage's common interface
	outputs []models.TensorSpec
	open    Opener
	b       *batcher.Batcher[*call]
	log     *slog.Logger
	clock   batcher.Clock
	m       *stageMetrics
	lm      *loadMetrics
	limits  *Limits
	est     *batcher.Estimator[estKey] // deadline-aware admission (admission.go)
	// promised counts the requests admitted from their header whose body
	// is still arriving (Server.Before), which early decisions count ahead.
	promised atomic.Int64
	preload  Preload

	// cfg is read by every worker at the start of every batch.
	cfg   atomic.Pointer[models.StageConfig]
	ready atomic.Bool

	// ctx ends with Close: loads in progress stop at their next session.
	ctx    context.Context
	cancel context.CancelFunc
	// loaders counts the goroutines that may load sessions (the background
	// loader and Reconfigures): Close waits for them.
	loaders  sync.WaitGroup
	kick     chan struct{} // wakes the background loader; buffered 1
	fg       atomic.Int32  // loads a Reconfigure waits for
	loadingN atomic.Int32  // sessions loading now
	// running counts the batches computing now, on every replica: the
	// background loader waits while they keep the replicas busy.
	running atomic.Int32

	mu       sync.Mutex // guards replicas, nextID, closed, target, gen, cancelPending, spare
	replicas []*replica
	nextID   int
	closed   bool
	// target is the configuration the latest Reconfigure asks for; gen
	// numbers the Reconfigures, and only the latest one may switch.
	// cancelPending stops the loads of the latest one while it loads.
	target        models.StageConfig
	gen           uint64
	cancelPending context.CancelFunc
	// spare holds replicas a superseded Reconfigure loaded: the next
	// Reconfigure that needs replicas of their cores takes them; the next
	// switch closes the rest.
	spare []*replica
	// live holds exactly the replicas that serve now (s.replicas), for
	// Infer's inline path and the admission, which must not take mu;
	// stored under mu whenever replicas changes.
	live atomic.Pointer[[]*replica]
}

// NewStage starts cfg.Replicas replicas of cfg.Cores threads each once the
// variant cfg runs is loaded on them; the variants opt.Preload names load
// after, in the background.
func NewStage(meta *models.Stage, cfg models.StageConfig, opt StageOptions, open Opener) (*Stage, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("stage %q: %w", meta.Name, err)
	}
	if meta.Variant(cfg.Variant) == nil {
		return nil, fmt.Errorf("stage %q has no variant %q (have %v)", meta.Name, cfg.Variant, meta.VariantNames())
	}
	if err := opt.Limits.admit(nil, heldVariants(meta, opt.Preload, cfg), cfg); err != nil {
		return nil, fmt.Errorf("stage %q: %w", meta.Name, err)
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Clock == nil {
		opt.Clock = batcher.SystemClock{}
	}
	s := &Stage{meta: meta, open: open, clock: opt.Clock, log: opt.Logger.With("stage", meta.Name), limits: opt.Limits,
		preload: opt.Preload, target: cfg, kick: make(chan struct{}, 1)}
	s.est = batcher.NewEstimator[estKey](opt.Clock, 0)
	s.inputs, s.outputs = meta.Interface()
	var err error
	s.b, err = batcher.New[*call](batcher.Config{MaxBatch: cfg.MaxBatch, MaxWait: cfg.MaxWait, MaxQueue: opt.MaxQueue},
		batcher.WithClock(opt.Clock), batcher.OnExpire(s.expire))
	if err != nil {
		return nil, fmt.Errorf("stage %q: %w", meta.Name, err)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.live.Store(&[]*replica{})
	s.m = newStageMetrics(s)
	s.lm = newLoadMetrics(s)
	s.cfg.Store(&cfg)
	start := time.Now()
	var reps []*replica
	for range cfg.Replicas {
		r := s.newReplica(cfg.Cores)
		reps = append(reps, r)
		if err = s.ensure(s.ctx, r, cfg.Variant, false); err != nil {
			break
		}
	}
	if err != nil {
		closeReplicas(reps)
		s.cancel()
		s.b.Close()
		s.m.close()
		return nil, err
	}
	s.mu.Lock()
	s.startLocked(reps)
	s.mu.Unlock()
	s.limits.join(s)
	s.ready.Store(true)
	s.loaders.Add(1)
	go s.preloadLoop()
	s.kickPreload()
	s.log.Info("stage ready", "variants", len(meta.Variants), "preload", s.preload.String(), "replicas", cfg.Replicas, "cores", cfg.Cores,
		"variant", cfg.Variant, "load_seconds", time.Since(start).Seconds())
	return s, nil
}

// Name returns the stage's name.
func (s *Stage) Name() string { return s.meta.Name }

// Meta returns the stage's repository entry.
func (s *Stage) Meta() *models.Stage { return s.meta }

// Interface returns the stage's common input and output specs.
func (s *Stage) Interface() (inputs, outputs []models.TensorSpec) { return s.inputs, s.outputs }

// Config returns the configuration in effect.
func (s *Stage) Config() models.StageConfig { return *s.cfg.Load() }

// Ready reports whether the stage accepts requests.
func (s *Stage) Ready() bool { return s.ready.Load() }

// Replicas returns the number of replicas serving now.
func (s *Stage) Replicas() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.replicas)
}

// QueueLen returns the number of queued rows.
func (s *Stage) QueueLen() int { return s.b.Len() }

// replica is one worker goroutine with a slot per variant of the stage.
type replica struct {
	id    int
	cores int
	// engines is made with the replica and never changes: the engines
	// come and go inside the slots (loading.go).
	engines map[string]*slot
	stop    context.CancelFunc
	done    chan struct{}
	// run is held while a batch runs on the replica's engines and scratch:
	// by its worker, or by a caller of Infer running its request inline.
	// retired is set
	// before the replica stops; once its worker has exited run is taken
	// for good and the engines closed.
	run     sync.Mutex
	retired atomic.Bool

	// Scratch, owned by the worker goroutine (or the inline run holding
	// run).
	batch  []*call
	group  []*call
	in     []models.Tensor
	inBuf  [][]byte
	shapes [][]int64
	// rows, left and fate: the batch's calls for Estimator.Fit, later the
	// calls it puts back in the queue (dropLate).
	rows  []int
	left  []time.Duration
	fate  []batcher.Fate
	later []*call
}

// close closes the replica's engines for good.
func (r *replica) close() {
	for _, sl := range r.engines {
		sl.Close()
	}
}

// closeReplicas closes replicas that never started (or whose workers have
// exited) and returns their memory to the OS.
func closeReplicas(reps []*replica) {
	for _, r := range reps {
		r.close()
	}
	if len(reps) > 0 {
		mlrt.ReleaseMemory()
	}
}

// startLocked starts a worker for each of reps.
func (s *Stage) startLocked(reps []*replica) {
	for _, r := range reps {
		r.id = s.nextID
		s.nextID++
		ctx, cancel := context.WithCancel(context.Background())
		r.stop, r.done = cancel, make(chan struct{})
		s.replicas = append(s.replicas, r)
		go s.work(ctx, r)
	}
	s.publishLocked()
}

// publishLocked copies s.replicas to s.live.
func (s *Stage) publishLocked() {
	live := slices.Clone(s.replicas)
	s.live.Store(&live)
}

// stopReplicas tells the workers of reps to exit after their current batch,
// waits for them and for a request running inline on them, and closes
// their engines.
func stopReplicas(reps []*replica) {
	for _, r := range reps {
		r.retired.Store(true)
		r.stop()
	}
	for _, r := range reps {
		<-r.done
		r.run.Lock() // never unlocked: the engines close
	}
	closeReplicas(reps) // closed sessions' memory back to the OS
}

// ConfigPatch changes some fields of a StageConfig; nil fields keep their value.
type ConfigPatch struct {
	Variant  *string        `json:"variant,omitempty"`
	MaxBatch *int           `json:"max_batch,omitempty"`
	MaxWait  *time.Duration `json:"-"`
	Replicas *int           `json:"replicas,omitempty"`
	Cores    *int           `json:"cores,omitempty"`
}

// Apply returns c changed by p.
func (p ConfigPatch) Apply(c models.StageConfig) models.StageConfig {
	if p.Variant != nil {
		c.Variant = *p.Variant
	}
	if p.MaxBatch != nil {
		c.MaxBatch = *p.MaxBatch
	}
	if p.MaxWait != nil {
		c.MaxWait = *p.MaxWait
	}
	if p.Replicas != nil {
		c.Replicas = *p.Replicas
	}
	if p.Cores != nil {
		c.Cores = *p.Cores
	}
	return c
}

// Reconfigure switches the stage to cfg without dropping a request. What
// the new setting needs loads first, while the old setting serves and
// without holding a lock that Infer, Close, the readers or another
// Reconfigure take: the variant cfg runs, on the replicas that stay and on
// the new ones (more replicas, or other cores per replica; other variants
// load in the background after). Then, in one short critical section, the
// variant and batching take effect for every batch formed from then on and
// the new workers start; last, surplus workers finish the batch they hold
// and exit. It returns the pause: the length of the critical section,
// during which running batches go on and no new batch starts on a retiring
// worker.
//
// A newer Reconfigure supersedes one still loading: that one stops after
// the session it is opening, returns ErrSuperseded and leaves the replicas
// it loaded to the newer one.
func (s *Stage) Reconfigure(cfg models.StageConfig) (pause time.Duration, err error) {
	if err := cfg.Validate(); err != nil {
		return 0, err
	}
	if s.meta.Variant(cfg.Variant) == nil {
		return 0, fmt.Errorf("stage %q has no variant %q (have %v)", s.meta.Name, cfg.Variant, s.meta.VariantNames())
	}
	if err := s.limits.admit(s, s.held(cfg), cfg); err != nil {
		return 0, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, ErrUnavailable
	}
	s.gen++
	gen := s.gen
	if s.cancelPending != nil {
		s.cancelPending()
	}
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	s.cancelPending, s.target = cancel, cfg
	old := *s.cfg.Load()
	// Only the latest Reconfigure switches, so the replicas stay as they
	// are now until this one switches or is superseded.
	var keep, retire []*replica
	need := 0
	if cfg.Cores != old.Cores {
		retire, need = slices.Clone(s.replicas), cfg.Replicas
	} else {
		n := min(cfg.Replicas, len(s.replicas))
		keep, retire = slices.Clone(s.replicas[:n]), slices.Clone(s.replicas[n:])
		need = cfg.Replicas - n
	}
	s.loaders.Add(1)
	s.mu.Unlock()
	defer s.loaders.Done()
	start := time.Now()
	var add []*replica
	for len(add) < need {
		add = append(add, s.takeSpare(cfg.Cores))
	}
	for {
		// Load cfg's variant where it is missing. Nothing unloads a
		// variant of a serving replica, so one pass does; the check under
		// s.mu states the invariant the switch relies on.
		if err = s.ensureAll(ctx, append(slices.Clone(keep), add...), cfg.Variant); err != nil {
			break
		}
		s.mu.Lock()
		if s.closed || s.gen != gen || missing(append(slices.Clone(keep), add...), cfg.Variant) == nil {
			break // with s.mu held
		}
		s.mu.Unlock()
	}
	if err != nil {
		s.mu.Lock()
	}
	// s.mu is held from here.
	switch {
	case s.closed:
		err = ErrUnavailable
	case s.gen != gen:
		err = ErrSuperseded
	case err == nil:
		err = s.b.SetConfig(batcher.Config{MaxBatch: cfg.MaxBatch, MaxWait: cfg.MaxWait, MaxQueue: s.b.Config().MaxQueue})
	}
	if err != nil {
		if s.gen == gen { // the latest: nothing is pending any more
			s.target, s.cancelPending = *s.cfg.Load(), nil
		}
		// What this call loaded goes to the pending Reconfigure that
		// superseded it, if any, else it closes.
		var discard []*replica
		if s.closed || s.cancelPending == nil {
			discard = add
		} else {
			s.spare = append(s.spare, add...)
		}
		s.mu.Unlock()
		closeReplicas(discard)
		s.kickPreload()
		if errors.Is(err, ErrSuperseded) {
			s.log.Info("stage reconfiguration superseded", "to", fmt.Sprintf("%+v", cfg), "seconds", time.Since(start).Seconds())
		}
		return 0, err
	}
	// The switch itself: two stores and the worker set change.
	switchAt := time.Now()
	s.cfg.Store(&cfg)
	s.startLocked(add)
	s.replicas = slices.DeleteFunc(s.replicas, func(r *replica) bool { return slices.Contains(retire, r) })
	s.publishLocked()
	s.cancelPending = nil
	surplus := s.spare
	s.spare = nil
	pause = time.Since(switchAt)
	s.mu.Unlock()
	s.kickPreload()
	// Retired workers finish the batch they hold; the new ones already pull.
	stopReplicas(retire)
	closeReplicas(surplus)
	s.m.reconfigured(time.Since(start))
	s.log.Info("stage reconfigured", "from", fmt.Sprintf("%+v", old), "to", fmt.Sprintf("%+v", cfg),
		"seconds", time.Since(start).Seconds(), "load_seconds", switchAt.Sub(start).Seconds(), "pause_seconds", pause.Seconds())
	return pause, nil
}

// takeSpare returns a spare replica of cores threads, or a new one.
func (s *Stage) takeSpare(cores int) *replica {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, r := range s.spare {
		if r.cores == cores {
			s.spare = slices.Delete(s.spare, i, i+1)
			return r
		}
	}
	return s.newReplica(cores)
}

// ensureAll loads variant on each of reps that lacks it, as a load the
// background loader gives way to.
func (s *Stage) ensureAll(ctx context.Context, reps []*replica, variant string) error {
	done := s.foreground()
	defer done()
	for _, r := range reps {
		if err := s.ensure(ctx, r, variant, false); err != nil {
			if ctx.Err() != nil {
				return ctx.Err() // superseded or closed: the caller says which
			}
			return err
		}
	}
	return nil
}

// missing returns the first of reps without variant loaded, or nil.
func missing(reps []*replica, variant string) *replica {
	for _, r := range reps {
		if !r.engines[variant].loaded() {
			return r
		}
	}
	return nil
}

// Close stops accepting requests, fails the queued ones with ErrUnavailable,
// lets in-flight batches finish, and closes every engine. Loads in
// progress stop after the session each is opening, which Close waits for
// and closes. It is idempotent.
func (s *Stage) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.ready.Store(false)
	s.cancel()
	start := time.Now()
	s.b.Close()
	for _, c := range s.b.Drain() {
		s.finish(c, ErrUnavailable)
	}
	reps, spare := s.replicas, s.spare
	s.replicas, s.spare = nil, nil
	s.publishLocked()
	s.mu.Unlock()
	stopReplicas(reps)
	s.loaders.Wait()
	closeReplicas(spare)
	s.limits.leave(s)
	s.m.close()
	s.log.Info("stage stopped", "seconds", time.Since(start).Seconds())
	return nil
}
