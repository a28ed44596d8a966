package dataplane

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/ipa-serving/ipa/models"
)

// ErrOverLimit marks a stage configuration beyond what the host can hold:
// more cores × replicas than its ceiling, or more memory than it has. The
// admin API answers it with 422, the CLI with an error at start.
var ErrOverLimit = errors.New("over the host's limits")

// LimitsConfig sets the ceilings of one process's stages. Tags are kong's.
type LimitsConfig struct {
	Oversubscribe  float64 `name:"oversubscribe" default:"2" help:"Most cores × replicas, summed over the stages of this process, per core of the host (its CPUs, or its cgroup's CPU quota). 2 lets replicas share cores as batches and requests interleave, never 256 replicas on 2 cores."`
	MemoryHeadroom float64 `name:"memory-headroom" default:"0.1" help:"Fraction of the available memory (MemAvailable, or the room under the cgroup's limit) that new replicas must leave free, per the memory model."`
}

// Validate checks the flags.
func (c LimitsConfig) Validate() error {
	if !(c.Oversubscribe >= 0.1 && c.Oversubscribe <= 64) {
		return fmt.Errorf("--limits.oversubscribe %g: use 0.1 to 64", c.Oversubscribe)
	}
	if !(c.MemoryHeadroom >= 0 && c.MemoryHeadroom < 1) {
		return fmt.Errorf("--limits.memory-headroom %g: use a fraction in [0, 1)", c.MemoryHeadroom)
	}
	return nil
}

// MemoryEstimate returns the memory model's bytes for a stage serving cfg:
// once, paid by a process's first replica only, and replica, held by each
// replica (main passes profiles.Memory.Estimate over the stage's variants).
type MemoryEstimate func(meta *models.Stage, cfg models.StageConfig) (once, replica int64)

// Limits are the ceilings of the stages of one process: cores × replicas
// summed over the stages at most the host's cores times the oversubscription
// allowance, and the replicas a configuration loads must fit the memory
// available (less the headroom) by the memory model. A nil *Limits allows
// everything (unit tests with fake engines). Limits is safe for concurrent
// use; two stages reconfigured at the same instant are each checked against
// the other's configuration before the change.
type Limits struct {
	cfg      LimitsConfig
	host     Host
	estimate MemoryEstimate
	ceiling  int // cores × replicas, all stages together

	mu     sync.Mutex // guards stages
	stages map[*Stage]bool
}

// NewLimits returns the limits of a process on host. estimate may be nil
// (no memory ceiling), and so may host.Available.
func NewLimits(cfg LimitsConfig, host Host, estimate MemoryEstimate) (*Limits, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !(host.CPUs > 0) {
		return nil, fmt.Errorf("host has %g CPUs", host.CPUs)
	}
	return &Limits{cfg: cfg, host: host, estimate: estimate, stages: map[*Stage]bool{},
		ceiling: max(1, int(math.Floor(host.CPUs*cfg.Oversubscribe+1e-9)))}, nil
}

// Cores returns the ceiling of cores × replicas over every stage.
func (l *Limits) Cores() int { return l.ceiling }

// Host returns the host the limits derive from.
func (l *Limits) Host() Host { return l.host }

// admit checks that stage s may run cfg; meta is the stage restricted to
// the variants each replica holds under cfg (the preloaded ones and the one
// cfg runs: they all load, some in the background). For a stage not yet
// serving (NewStage) everything cfg needs is loaded; for a serving one
// (Reconfigure), what its change needs: every replica when the cores
// change, else the added replicas, plus the growth of the kept replicas:
// their arenas when max_batch grows, and a variant they do not hold yet
// (with --stage.preload other than all), both held until the switch.
func (l *Limits) admit(s *Stage, meta *models.Stage, cfg models.StageConfig) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	others, serving := 0, l.stages[s]
	for o := range l.stages {
		if o != s {
			c := o.Config()
			others += c.Cores * c.Replicas
		}
	}
	l.mu.Unlock()
	if want := cfg.Cores * cfg.Replicas; others+want > l.ceiling {
		held := ""
		if others > 0 {
			held = fmt.Sprintf("; the other stages of this process hold %d", others)
		}
		return fmt.Errorf("%w: %d replicas × %d cores = %d cores exceed this host's ceiling of %d (%s × --limits.oversubscribe %g%s): lower replicas or cores",
			ErrOverLimit, cfg.Replicas, cfg.Cores, want, l.ceiling, l.host.Source, l.cfg.Oversubscribe, held)
	}
	if l.estimate == nil || l.host.Available == nil {
		return nil
	}
	once, replica := l.estimate(meta, cfg)
	need, load := int64(0), cfg.Replicas
	if serving {
		old := s.Config()
		running := s.Replicas()
		if cfg.Cores == old.Cores {
			load = max(cfg.Replicas-running, 0)
			_, was := l.estimate(s.held(old), old)
			_, during := l.estimate(s.held(old, cfg), cfg)
			if during > was {
				need += int64(min(cfg.Replicas, running)) * (during - was)
			}
		}
	} else {
		need += once
	}
	need += int64(load) * replica
	if need == 0 {
		return nil
	}
	avail, err := l.host.Available()
	if err != nil {
		return fmt.Errorf("%w: cannot check memory: %v", ErrOverLimit, err)
	}
	usable := int64(float64(avail) * (1 - l.cfg.MemoryHeadroom))
	if need > usable {
		return fmt.Errorf("%w: %d new replica(s) at max_batch %d need an estimated %s (%s each by the memory model, README \"Memory\"), more than the %s usable (%s available less --limits.memory-headroom %g): lower replicas or max_batch, or load fewer variants (--variants)",
			ErrOverLimit, load, cfg.MaxBatch, formatBytes(need), formatBytes(replica), formatBytes(usable), formatBytes(avail), l.cfg.MemoryHeadroom)
	}
	return nil
}

// join counts s's configuration against the ceilings from now on; leave
// stops counting it.
func (l *Limits) join(s *Stage) {
	if l != nil {
		l.mu.Lock()
		l.stages[s] = true
		l.mu.Unlock()
	}
}

func (l *Limits) leave(s *Stage) {
	if l != nil {
		l.mu.Lock()
		delete(l.stages, s)
		l.mu.Unlock()
	}
}

// formatBytes writes n in B, kB, MB or GB with three significant digits.
func formatBytes(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.3g GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.3g MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.3g kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}

// ReplicaCap returns the most replicas each of stages may have at once
// within memory: with every stage at that many replicas, each replica of
// stages[i] running batches of up to batch[i], the model's estimate fits
// what the stages hold now plus the available memory less the headroom.
// The controller plans with it as its scaling cap. It is at least 1; 0
// means memory sets no cap (no estimate or no memory reading).
func (l *Limits) ReplicaCap(stages []*Stage, batch []int) (int, error) {
	if l == nil || l.estimate == nil || l.host.Available == nil {
		return 0, nil
	}
	avail, err := l.host.Available()
	if err != nil {
		return 0, err
	}
	budget := float64(avail) * (1 - l.cfg.MemoryHeadroom)
	var per int64
	for i, s := range stages {
		cur := s.Config()
		_, held := l.estimate(s.held(cur), cur)
		budget += float64(int64(s.Replicas()) * held)
		c := cur
		c.MaxBatch = max(batch[i], 1)
		_, replica := l.estimate(s.held(c), c)
		per += replica
	}
	if per <= 0 {
		return 0, nil
	}
	return max(1, int(budget/float64(per))), nil
}
