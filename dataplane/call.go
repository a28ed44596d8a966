package dataplane

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipa-serving/ipa/batcher"
	"github.com/ipa-serving/ipa/models"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// Call states. A call is released to the pool exactly once: by the caller
// through Result.Release after it was answered, or by whoever answers it
// after the caller abandoned it (context cancelled while queued).
const (
	statePending int32 = iota
	stateRunning
	stateDone
	stateAbandoned
)

// call is one request travelling through a stage.
type call struct {
	in       []models.Tensor // in stage input order; Data owned by the caller
	rows     int
	deadline time.Time
	enqueued time.Time
	state    atomic.Int32
	done     chan struct{} // buffered 1
	stage    *Stage
	res      Result
	outBuf   [][]byte
	err      error
}

// Result is the answer to one Infer call.
//
// Outputs, and the Data they point to, belong to the Result until Release;
// do not retain them after calling Release.
type Result struct {
	// Outputs follow the stage's output order.
	Outputs []models.Tensor
	// Variant is the variant that computed the outputs.
	Variant string
	// QueueWait is the time the request spent queued; Compute the duration
	// of the batch that computed it; Batch that batch's rows.
	QueueWait, Compute time.Duration
	Batch              int
	c                  *call
}

// Release returns r to the pool; r must not be used afterwards.
func (r *Result) Release() { releaseCall(r.c) }

var callPool = sync.Pool{New: func() any {
	c := &call{done: make(chan struct{}, 1)}
	c.res.c = c
	return c
}}

func acquireCall() *call {
	c := callPool.Get().(*call)
	c.state.Store(statePending)
	return c
}

// releaseCall returns c to the pool. c must not be used afterwards.
func releaseCall(c *call) {
	clear(c.in)
	c.in = c.in[:0]
	c.stage = nil
	c.err = nil
	c.res.Outputs = c.res.Outputs[:0]
	c.res.Variant = ""
	callPool.Put(c)
}

// Infer runs one request: in holds one tensor per stage input, in any order,
// all with the same batch size (dimension 0). in must stay unchanged until
// Infer returns. A zero deadline means none. Errors: a models/runtime
// validation error wrapping mlrt.ErrInvalidInput, batcher.ErrQueueFull,
// ErrDeadline, an *AdmissionError (ErrCannotMeetDeadline: predicted to
// finish after deadline, see admission.go), ErrUnavailable, a context error,
// or an engine error.
func (s *Stage) Infer(ctx context.Context, in []models.Tensor, deadline time.Time) (*Result, error) {
	if !s.ready.Load() {
		s.m.outcome(outcomeUnavailable)
		return nil, ErrUnavailable
	}
	c := acquireCall()
	rows, err := s.admit(c, in)
	if err != nil {
		releaseCall(c)
		s.m.outcome(outcomeBadRequest)
		return nil, err
	}
	now := s.clock.Now()
	if !deadline.IsZero() && !now.Before(deadline) {
		releaseCall(c)
		s.m.refused(reasonExpired)
		s.m.outcome(outcomeExpired)
		return nil, ErrDeadline
	}
	c.rows, c.deadline, c.enqueued, c.stage = rows, deadline, now, s
	if err := s.admitInTime(c, now); err != nil {
		releaseCall(c)
		return nil, err
	}
	if s.runInline(c) {
		// answered: c.done holds the answer
	} else if err := s.b.Submit(c, rows, deadline); err != nil {
		releaseCall(c)
		switch {
		case errors.Is(err, batcher.ErrQueueFull):
			s.m.refused(reasonQueueFull)
			s.m.outcome(outcomeQueueFull)
		case errors.Is(err, batcher.ErrClosed):
			s.m.outcome(outcomeUnavailable)
			return nil, ErrUnavailable
		case errors.Is(err, batcher.ErrExpired):
			s.m.refused(reasonExpired)
			s.m.outcome(outcomeExpired)
			return nil, ErrDeadline
		default:
			s.m.outcome(outcomeError)
		}
		return nil, fmt.Errorf("stage %q: %w", s.meta.Name, err)
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		if c.state.CompareAndSwap(statePending, stateAbandoned) {
			return nil, ctx.Err()
		}
		<-c.done // already running: wait for it, the caller's inputs are in use
	}
	if err := c.err; err != nil {
		releaseCall(c)
		return nil, err
	}
	return &c.res, nil
}

// runInline runs c on the caller's goroutine, as a batch of its own, when
// that is what a worker would do at once: the queue is empty, a replica is
// idle, and the batch would not wait for company (c fills it, or max wait
// is 0). It saves the hand-off to a worker and back, the common case of an
// unloaded stage. It reports whether it ran c; c is then answered.
func (s *Stage) runInline(c *call) bool {
	cfg := s.cfg.Load()
	if (c.rows < cfg.MaxBatch && cfg.MaxWait > 0) || s.b.Len() > 0 {
		return false
	}
	for _, r := range *s.live.Load() {
		if !r.run.TryLock() {
			continue
		}
		if r.retired.Load() {
			r.run.Unlock()
			continue
		}
		c.state.Store(stateRunning)
		c.res.QueueWait = 0
		s.m.queueWait.Update(0)
		// The variant of this batch: read after the replica was taken,
		// as a worker reads it after taking a batch.
		cfg = s.cfg.Load()
		r.group = append(r.group[:0], c)
		// The worker's check on the batch it takes (worker.go): answered
		// 504 now if its batch would end past the deadline.
		if len(s.dropLate(r, estKey{cfg.Variant, r.cores}, r.group, s.clock.Now())) == 0 {
			clear(r.group)
			r.run.Unlock()
			return true
		}
		s.runGroup(r, r.engineFor(r.engines[cfg.Variant], r.group[0].in), r.group)
		clear(r.group)
		r.run.Unlock()
		return true
	}
	return false
}

// admit orders in by the stage's inputs into c.in and validates it.
func (s *Stage) admit(c *call, in []models.Tensor) (rows int, err error) {
	if len(in) != len(s.inputs) {
		return 0, fmt.Errorf("%w: stage %q takes %d inputs %v, got %d", mlrt.ErrInvalidInput, s.meta.Name, len(s.inputs), models.TensorNames(s.inputs), len(in))
	}
	c.in = c.in[:0]
	for _, spec := range s.inputs {
		i := indexTensor(in, spec.Name)
		if i < 0 {
			return 0, fmt.Errorf("%w: stage %q needs input %q (inputs are %v)", mlrt.ErrInvalidInput, s.meta.Name, spec.Name, models.TensorNames(s.inputs))
		}
		t := in[i]
		if err := spec.Check(t.DataType, t.Shape); err != nil {
			return 0, fmt.Errorf("%w: %w", mlrt.ErrInvalidInput, err)
		}
		if want := models.Elements(t.Shape) * t.DataType.Size(); want < 0 || len(t.Data) != want {
			return 0, fmt.Errorf("%w: input %q of shape %s needs %d bytes, got %d", mlrt.ErrInvalidInput, t.Name, models.FormatShape(t.Shape), want, len(t.Data))
		}
		if len(c.in) > 0 && t.Shape[0] != c.in[0].Shape[0] {
			return 0, fmt.Errorf("%w: input %q has batch %d, input %q has %d", mlrt.ErrInvalidInput, t.Name, t.Shape[0], c.in[0].Name, c.in[0].Shape[0])
		}
		c.in = append(c.in, t)
	}
	return int(c.in[0].Shape[0]), nil
}

func indexTensor(ts []models.Tensor, name string) int {
	for i := range ts {
		if ts[i].Name == name {
			return i
		}
	}
	return -1
}

// finish answers c with err (nil for success). If the caller abandoned c, it
// is released here instead.
func (s *Stage) finish(c *call, err error) {
	c.err = err
	for {
		st := c.state.Load()
		if st == stateAbandoned {
			releaseCall(c)
			return
		}
		if c.state.CompareAndSwap(st, stateDone) {
			c.done <- struct{}{}
			return
		}
	}
}

// expire is the batcher's callback for a call whose deadline passed in the queue.
func (s *Stage) expire(c *call, _ error) {
	s.m.refused(reasonExpired)
	s.m.outcome(outcomeExpired)
	s.finish(c, ErrDeadline)
}
