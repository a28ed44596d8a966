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
}

// Stage serves one pipeline stage. It is safe for concurrent use.
//
// Every variant of the stage is loaded on every replica, so a variant switch
// is an atomic pointer store: batches already formed finish on the variant
// they started with and every later batch uses the new one.
type Stage struct {
	meta    *models.Stage
	inputs  []models.TensorSpec // the stage's common interface
	outputs []models.TensorSpec
	open    Opener
	b       *batcher.Batcher[*call]
	log     *slog.Logger
	clock   batcher.Clock
	m       *stageMetrics
	limits  *Limits
	est     *batcher.Estimator[estKey] // deadline-aware admission (admission.go)

	// cfg is read by every worker at the start of every batch.
	cfg   atomic.Pointer[models.StageConfig]
	ready atomic.Bool

	// reconf serialises Reconfigure. Sessions load under reconf alone, so
	// that reading the replicas, Close and the metrics never wait for a load
	// (seconds for a large variant).
	reconf   sync.Mutex
	mu       sync.Mutex // guards replicas, nextID, closed
	replicas []*replica
	nextID   int
	closed   bool
	// live is a copy of replicas for Infer's inline path, which must not
	// take mu; stored under mu whenever replicas changes.
	live atomic.Pointer[[]*replica]
}

// NewStage loads every variant of meta on cfg.Replicas replicas of cfg.Cores
// threads each and starts the workers.
func NewStage(meta *models.Stage, cfg models.StageConfig, opt StageOptions, open Opener) (*Stage, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("stage %q: %w", meta.Name, err)
	}
	if meta.Variant(cfg.Variant) == nil {
		return nil, fmt.Errorf("stage %q has no variant %q (have %v)", meta.Name, cfg.Variant, meta.VariantNames())
	}
	if err := opt.Limits.admit(nil, meta, cfg); err != nil {
		return nil, fmt.Errorf("stage %q: %w", meta.Name, err)
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Clock == nil {
		opt.Clock = batcher.SystemClock{}
	}
	s := &Stage{meta: meta, open: open, clock: opt.Clock, log: opt.Logger.With("stage", meta.Name), limits: opt.Limits}
	s.est = batcher.NewEstimator[estKey](opt.Clock, 0)
	s.inputs, s.outputs = meta.Interface()
	var err error
	s.b, err = batcher.New[*call](batcher.Config{MaxBatch: cfg.MaxBatch, MaxWait: cfg.MaxWait, MaxQueue: opt.MaxQueue},
		batcher.WithClock(opt.Clock), batcher.OnExpire(s.expire))
	if err != nil {
		return nil, fmt.Errorf("stage %q: %w", meta.Name, err)
	}
	s.m = newStageMetrics(s)
	s.cfg.Store(&cfg)
	start := time.Now()
	reps, err := s.loadReplicas(cfg.Replicas, cfg.Cores)
	if err != nil {
		s.b.Close()
		s.m.close()
		return nil, err
	}
	s.mu.Lock()
	s.startLocked(reps)
	s.mu.Unlock()
	s.limits.join(s)
	s.ready.Store(true)
	s.log.Info("stage ready", "variants", len(meta.Variants), "replicas", cfg.Replicas, "cores", cfg.Cores,
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

// replica is one worker goroutine with one engine per variant.
type replica struct {
	id      int
	cores   int
	engines map[string]mlrt.Engine
	stop    context.CancelFunc
	done    chan struct{}
	// run is held while a batch runs on the replica's engines and scratch:
	// by its worker, or by a caller of Infer running its request inline.
	// retired is set before the replica stops; once its worker has exited
	// run is taken for good and the engines closed.
	run     sync.Mutex
	retired atomic.Bool

	// Scratch, owned by the worker goroutine.
	batch  []*call
	group  []*call
	in     []models.Tensor
	inBuf  [][]byte
	shapes [][]int64
}

func (r *replica) close() {
	for _, e := range r.engines {
		e.Close()
	}
}

// loadReplicas opens every variant n times with the given threads.
func (s *Stage) loadReplicas(n, cores int) ([]*replica, error) {
	var reps []*replica
	for i := 0; i < n; i++ {
		r := &replica{cores: cores, engines: map[string]mlrt.Engine{}}
		reps = append(reps, r)
		for _, v := range s.meta.Variants {
			e, err := s.open(v, cores)
			if err != nil {
				for _, r := range reps {
					r.close()
				}
				return nil, fmt.Errorf("stage %q: cannot load variant %q: %w", s.meta.Name, v.Name, err)
			}
			r.engines[v.Name] = e
		}
	}
	return reps, nil
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
		r.close()
	}
	if len(reps) > 0 {
		mlrt.ReleaseMemory() // closed sessions' memory back to the OS
	}
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

// Reconfigure switches the stage to cfg without dropping a request. The
// sessions a new setting needs (more replicas, or other cores per replica)
// load first, while the old setting serves and without holding the lock
// that Close and the readers take. Then, in one short critical section, the
// variant and batching take effect for every batch formed from then on and
// the new workers start; last, surplus workers finish the batch they hold
// and exit. Calls are serialised. It returns the pause: the length of the
// critical section, during which running batches go on and no new batch
// starts on a retiring worker.
func (s *Stage) Reconfigure(cfg models.StageConfig) (pause time.Duration, err error) {
	if err := cfg.Validate(); err != nil {
		return 0, err
	}
	if s.meta.Variant(cfg.Variant) == nil {
		return 0, fmt.Errorf("stage %q has no variant %q (have %v)", s.meta.Name, cfg.Variant, s.meta.VariantNames())
	}
	s.reconf.Lock()
	defer s.reconf.Unlock()
	if err := s.limits.admit(s, s.meta, cfg); err != nil {
		return 0, err
	}
	s.mu.Lock()
	closed, running := s.closed, len(s.replicas)
	s.mu.Unlock()
	if closed {
		return 0, ErrUnavailable
	}
	start := time.Now()
	old := *s.cfg.Load()
	// Load what the new setting needs while the old one keeps serving. Only
	// Reconfigure changes the replicas (and Close, checked again below), so
	// running stays true while the sessions load.
	var add []*replica
	switch {
	case cfg.Cores != old.Cores:
		add, err = s.loadReplicas(cfg.Replicas, cfg.Cores)
	case cfg.Replicas > running:
		add, err = s.loadReplicas(cfg.Replicas-running, cfg.Cores)
	}
	if err != nil {
		return 0, err
	}
	discard := func() {
		for _, r := range add { // loaded, never started
			r.close()
		}
	}
	loaded := time.Now()
	// The switch itself: two stores and the worker set change.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		discard()
		return 0, ErrUnavailable
	}
	var retire []*replica
	switch {
	case cfg.Cores != old.Cores:
		retire = slices.Clone(s.replicas)
	case cfg.Replicas < len(s.replicas):
		retire = slices.Clone(s.replicas[cfg.Replicas:])
	}
	if err := s.b.SetConfig(batcher.Config{MaxBatch: cfg.MaxBatch, MaxWait: cfg.MaxWait, MaxQueue: s.b.Config().MaxQueue}); err != nil {
		s.mu.Unlock()
		discard()
		return 0, err
	}
	s.cfg.Store(&cfg)
	s.startLocked(add)
	s.replicas = slices.DeleteFunc(s.replicas, func(r *replica) bool { return slices.Contains(retire, r) })
	s.publishLocked()
	pause = time.Since(loaded)
	s.mu.Unlock()
	// Retired workers finish the batch they hold; the new ones already pull.
	stopReplicas(retire)
	s.m.reconfigured(time.Since(start))
	s.log.Info("stage reconfigured", "from", fmt.Sprintf("%+v", old), "to", fmt.Sprintf("%+v", cfg),
		"seconds", time.Since(start).Seconds(), "pause_seconds", pause.Seconds())
	return pause, nil
}

// Close stops accepting requests, fails the queued ones with ErrUnavailable,
// lets in-flight batches finish, and closes every engine. It is idempotent.
func (s *Stage) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.ready.Store(false)
	start := time.Now()
	s.b.Close()
	for _, c := range s.b.Drain() {
		s.finish(c, ErrUnavailable)
	}
	reps := s.replicas
	s.replicas = nil
	s.publishLocked()
	s.mu.Unlock()
	stopReplicas(reps)
	s.limits.leave(s)
	s.m.close()
	s.log.Info("stage stopped", "seconds", time.Since(start).Seconds())
	return nil
}
