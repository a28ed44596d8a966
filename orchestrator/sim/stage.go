package sim

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ipa-serving/ipa/batcher"
	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/orchestrator"
)

// stage is one simulated dataplane.Stage: a batcher, replicas, the active
// configuration.
type stage struct {
	s             *sim
	idx           int
	name, profile string
	b             *batcher.Batcher[*request]
	est           *batcher.Estimator[estKey] // deadline-aware admission, as dataplane/admission.go
	cfg           models.StageConfig         // what serves now
	target        models.StageConfig         // what was last applied (Current)
	replicas      []*replica                 // the worker set, in start order
	idle          []*replica                 // waiting for a batch, longest first
	busyUntil     time.Duration              // when the last queued reconfiguration lands
	buf           []*request
	// Scratch of run's check: the batch's rows, time left and fates.
	sizes []int
	left  []time.Duration
	fate  []batcher.Fate
}

// estKey is what a batch ran on, as the data plane keys its estimator.
type estKey struct {
	variant string
	cores   int
}

// replica is one worker.
type replica struct {
	cores   int
	retired bool // finishes its batch, then exits
}

func (st *stage) deadlineReason() string {
	return fmt.Sprintf("HTTP 504: pipeline %q: stage %q: deadline exceeded before the request was computed", st.s.opt.Pipeline.Name, st.name)
}

// infer is dataplane.Stage.Infer: admission, then the queue.
func (st *stage) infer(r *request) {
	if !st.s.loop.Now().Before(r.deadline) {
		st.s.drop(r, 504, st.deadlineReason())
		return
	}
	now := st.s.loop.Now()
	r.arrived = now
	ahead := batcher.Ahead{Rows: st.b.Len(), Size: r.rows, MaxBatch: st.cfg.MaxBatch, Replicas: len(st.replicas)}
	switch v, _ := st.est.Decide(estKey{st.cfg.Variant, st.cfg.Cores}, ahead, batcher.Usable(r.deadline, now, now)); v {
	case batcher.RefuseBusy:
		st.s.drop(r, 429, fmt.Sprintf("HTTP 429: pipeline %q: stage %q cannot meet the deadline: the work queued ahead would make the answer late; retry after Retry-After", st.s.opt.Pipeline.Name, st.name))
		return
	case batcher.RefuseTooShort:
		st.s.drop(r, 504, fmt.Sprintf("HTTP 504: pipeline %q: stage %q cannot meet the deadline: less time is left than its batch takes; send a longer deadline", st.s.opt.Pipeline.Name, st.name))
		return
	}
	if err := st.b.Submit(r, r.rows, r.deadline); err != nil {
		status := 500
		switch {
		case errors.Is(err, batcher.ErrQueueFull):
			status = 429
		case errors.Is(err, batcher.ErrExpired):
			st.s.drop(r, 504, st.deadlineReason())
			return
		}
		st.s.drop(r, status, fmt.Sprintf("HTTP %d: pipeline %q: stage %q: %v", status, st.s.opt.Pipeline.Name, st.name, err))
		return
	}
	st.dispatch()
}

// dispatch hands ready batches to idle replicas, as workers blocked in
// Batcher.Next would take them.
func (st *stage) dispatch() {
	for len(st.idle) > 0 {
		batch, ok := st.b.Poll(st.buf[:0])
		if !ok {
			return
		}
		st.buf = batch[:0]
		r := st.idle[0]
		st.idle = st.idle[1:]
		st.run(r, batch)
	}
}

// run is the worker's loop body (dataplane/worker.go): drop what has
// expired and what the batch would finish late, compute the rest as one
// batch, answer.
func (st *stage) run(rep *replica, batch []*request) {
	s := st.s
	if s.onBatch != nil {
		seqs := make([]int, len(batch))
		for i, r := range batch {
			seqs[i] = r.seq
		}
		s.onBatch(s.loop.now, seqs)
	}
	now := s.loop.Now()
	live := make([]*request, 0, len(batch))
	for _, r := range batch {
		if !now.Before(r.deadline) {
			s.drop(r, 504, st.deadlineReason())
			continue
		}
		live = append(live, r)
	}
	// The worker's check (dataplane's dropLate): the batch cut to the size
	// that computes the most rows in time, what would end late answered
	// 504, what found no room in the cut back at the head of the queue.
	key := estKey{st.cfg.Variant, rep.cores}
	st.sizes, st.left, st.fate = st.sizes[:0], st.left[:0], slices.Grow(st.fate[:0], len(live))[:len(live)]
	for _, r := range live {
		st.sizes, st.left = append(st.sizes, r.rows), append(st.left, batcher.Usable(r.deadline, r.arrived, now))
	}
	if fate := st.fate; st.est.Fit(key, st.sizes, st.left, fate) {
		kept, later := live[:0], []*request(nil)
		for i, r := range live {
			switch fate[i] {
			case batcher.Late:
				s.drop(r, 504, st.deadlineReason()+" (the batch it is in takes longer than the time left: not computed)")
			case batcher.Later:
				later = append(later, r)
			default:
				kept = append(kept, r)
			}
		}
		for i := len(later) - 1; i >= 0; i-- { // newest first: the queue keeps its order
			r := later[i]
			if err := st.b.Requeue(r, r.rows, r.arrived, r.deadline); err != nil {
				s.err = err
				return
			}
		}
		live = kept
	}
	if len(live) == 0 {
		st.free(rep)
		return
	}
	rows := rowsOf(live)
	d, err := s.svc.dist(st.profile, st.cfg.Variant, rep.cores, rows)
	if err != nil {
		s.err = err
		return
	}
	s.batches++
	dur := d.draw(s.rng)
	slot := st.est.Begin(key, rows)
	finish := func(took time.Duration) {
		st.ran(key.variant, rep.cores, rows, took)
		st.est.End(slot, true)
		for _, r := range live {
			s.done(r)
		}
		st.free(rep)
	}
	if s.cpu != nil {
		s.cpu.run(dur, rep.cores, false, finish)
		return
	}
	s.loop.at(s.loop.now+dur, func() { finish(dur) })
}

// rowsOf is the batch rows of rs.
func rowsOf(rs []*request) int {
	n := 0
	for _, r := range rs {
		n += r.rows
	}
	return n
}

// free puts a replica that finished its batch back to work, or lets it
// exit if it was retired.
func (st *stage) free(rep *replica) {
	if rep.retired {
		return
	}
	st.idle = append(st.idle, rep)
	st.dispatch()
}

func (st *stage) addReplica(cores int) {
	rep := &replica{cores: cores}
	st.replicas = append(st.replicas, rep)
	st.idle = append(st.idle, rep)
}

// retire stops reps: idle ones at once, busy ones after their batch.
func (st *stage) retire(reps []*replica) {
	for _, r := range reps {
		r.retired = true
	}
	st.replicas = slices.DeleteFunc(st.replicas, func(r *replica) bool { return r.retired })
	st.idle = slices.DeleteFunc(st.idle, func(r *replica) bool { return r.retired })
	if len(st.idle) == 0 {
		st.b.StopPolling()
	}
}

// apply schedules cfg as dataplane.Stage.Reconfigure does it: new
// replicas (or all, for other cores) load for StartupDelay while the old
// configuration serves; then batching, variant and the worker set switch at
// once. A variant switch takes SwitchDelay. Reconfigurations of one stage
// land in order.
func (st *stage) apply(cfg models.StageConfig) {
	s := st.s
	delay := time.Duration(0)
	added := max(cfg.Replicas-st.target.Replicas, 0)
	if cfg.Cores != st.target.Cores {
		added = cfg.Replicas
	}
	if added > 0 {
		delay += st.startup(cfg.Variant, added)
	}
	if cfg.Variant != st.target.Variant {
		delay += s.opt.SwitchDelay
	}
	st.target = cfg
	at := max(s.loop.now, st.busyUntil) + delay
	st.busyUntil = at
	asked := s.loop.now
	s.loop.at(at, func() {
		old := st.cfg
		if err := st.b.SetConfig(batcher.Config{MaxBatch: cfg.MaxBatch, MaxWait: cfg.MaxWait, MaxQueue: max(s.opt.MaxQueue, cfg.MaxBatch)}); err != nil {
			s.err = fmt.Errorf("stage %q: %w", st.name, err)
			return
		}
		st.cfg = cfg
		switch {
		case cfg.Cores != old.Cores:
			st.retire(slices.Clone(st.replicas))
			for range cfg.Replicas {
				st.addReplica(cfg.Cores)
			}
		case cfg.Replicas > len(st.replicas):
			for range cfg.Replicas - len(st.replicas) {
				st.addReplica(cfg.Cores)
			}
		case cfg.Replicas < len(st.replicas):
			st.retire(slices.Clone(st.replicas[cfg.Replicas:]))
		}
		s.actions = append(s.actions, orchestrator.Action{Kind: "reconfigured", Object: st.name,
			What:    fmt.Sprintf("%s batch %d wait %s ×%d (%d cores)", cfg.Variant, cfg.MaxBatch, cfg.MaxWait, cfg.Replicas, cfg.Cores),
			Seconds: (s.loop.now - asked).Seconds()})
		st.dispatch()
	})
}

// startup is how long n new replicas running variant take to serve.
func (st *stage) startup(variant string, n int) time.Duration {
	o := st.s.opt
	if o.StartupFromProfile {
		if v := st.s.svc.prof.Variant(st.profile, variant); v != nil && v.LoadSeconds > 0 {
			return o.StartupOverhead + time.Duration(float64(n)*v.LoadSeconds*float64(time.Second))
		}
	}
	return o.StartupDelay
}

// actuator is the controller's view of the simulated stages. Current is
// what was last applied (a change may still be loading, as the Kubernetes
// actuator's desired state); what actually ran shows in the actions.
type actuator struct{ s *sim }

func (a actuator) Current(context.Context) ([]models.StageConfig, error) {
	out := make([]models.StageConfig, len(a.s.stages))
	for i, st := range a.s.stages {
		out[i] = st.target
	}
	return out, nil
}

func (a actuator) Apply(_ context.Context, i int, cfg models.StageConfig) error {
	if i < 0 || i >= len(a.s.stages) {
		return fmt.Errorf("no stage %d", i)
	}
	st := a.s.stages[i]
	if err := cfg.Validate(); err != nil {
		return err
	}
	if _, err := a.s.svc.dist(st.profile, cfg.Variant, cfg.Cores, 1); err != nil {
		return err
	}
	st.apply(cfg)
	return nil
}

// TakeActions implements orchestrator.ActionReporter: reconfigurations that
// landed since the last decision, with the seconds they took.
func (a actuator) TakeActions() []orchestrator.Action {
	out := a.s.actions
	a.s.actions = nil
	return out
}

// routerRateSeconds is how many seconds the router's counter keeps
// (dataplane.NewRouter's RateCounter).
const routerRateSeconds = 600

// observer is the router's arrival counter (dataplane.RateCounter.Last):
// the last n complete seconds, zeros before the start.
type observer struct{ s *sim }

func (o observer) Rates(_ context.Context, n int) ([]float64, error) {
	n = min(n, routerRateSeconds-1)
	now := o.s.second(o.s.loop.now)
	out := make([]float64, n)
	for j := range n {
		if sec := now - n + j; sec >= 0 && sec < len(o.s.perSec) {
			out[j] = float64(o.s.perSec[sec])
		}
	}
	return out, nil
}

// Fanout implements orchestrator.FanoutObserver: per step, the requests
// that reached it and the rows the router sent it, as router.Pipeline.Rows
// counts them.
func (o observer) Fanout(context.Context) (reached, rows []int64, err error) {
	return slices.Clone(o.s.stepReached), slices.Clone(o.s.stepRows), nil
}

// OverheadSeconds implements orchestrator.OverheadObserver: the glue cost
// per request, so the controller reserves cores for the router as in ipa
// local. On a shared machine (Options.Cores) it is what ipa local's
// observer reports: the mean glue time measured since the previous call
// (the previous mean when no request came), GlueCost before the first.
func (o observer) OverheadSeconds(context.Context) (float64, error) {
	s := o.s
	if s.cpu == nil || s.glueN == 0 {
		return s.opt.GlueCost.Seconds(), nil
	}
	return s.glueMean.Mean(s.glueTook, s.glueN), nil
}
