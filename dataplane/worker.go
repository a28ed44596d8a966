package dataplane

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ipa-serving/ipa/models"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// work is a replica's loop: pull a batch, run it on the active variant,
// answer its calls (holding r.run while it does). It exits when ctx is cancelled or the batcher closes; a
// batch it already holds is always finished.
func (s *Stage) work(ctx context.Context, r *replica) {
	defer close(r.done)
	for {
		batch, err := s.b.Next(ctx, r.batch[:0])
		if err != nil {
			return
		}
		r.batch = batch
		if !r.run.TryLock() {
			// A request runs inline on r (Stage.runInline): put the batch
			// back, where its deadlines keep running and another replica
			// may take it, and wait for r.
			s.requeue(batch)
			clear(r.batch)
			r.run.Lock()
			//lint:ignore SA2001 waits for the inline run to release r; nothing to guard
			r.run.Unlock()
			continue
		}
		cfg := s.cfg.Load()
		eng := r.engines[cfg.Variant]
		now := s.clock.Now()
		live := r.group[:0]
		for _, c := range batch {
			if !c.state.CompareAndSwap(statePending, stateRunning) {
				// Abandoned by its caller while queued: nobody waits for it.
				releaseCall(c)
				continue
			}
			if !c.deadline.IsZero() && !now.Before(c.deadline) {
				s.m.refused(reasonExpired)
				s.m.outcome(outcomeExpired)
				s.finish(c, ErrDeadline)
				continue
			}
			c.res.QueueWait = now.Sub(c.enqueued)
			s.m.queueWait.Update(c.res.QueueWait.Seconds())
			live = append(live, c)
		}
		r.group = live
		// What the batch would finish late is answered now.
		live = s.dropLate(r, estKey{eng.Variant().Name, r.cores}, live, now)
		// Calls with different non-batch shapes (e.g. text crops of other
		// widths) cannot share a tensor: run each shape as its own group.
		for len(live) > 0 {
			n := partitionSameShape(live)
			s.runGroup(r, r.engineFor(eng, live[0].in), live[:n])
			live = live[n:]
		}
		clear(r.batch)
		clear(r.group)
		r.run.Unlock()
	}
}

// requeue puts batch back at the head of the queue, newest first; after
// Close its calls are answered ErrUnavailable instead.
func (s *Stage) requeue(batch []*call) {
	for i := len(batch) - 1; i >= 0; i-- {
		c := batch[i]
		if err := s.b.Requeue(c, c.rows, c.enqueued, c.deadline); err != nil {
			s.m.outcome(outcomeUnavailable)
			s.finish(c, ErrUnavailable)
		}
	}
}

// partitionSameShape moves the calls whose inputs have the shape of live[0]
// (ignoring dimension 0) to the front, keeping FIFO order among them, and
// returns how many there are.
func partitionSameShape(live []*call) int {
	n := 1
	for i := 1; i < len(live); i++ {
		if sameShapes(live[0].in, live[i].in) {
			c := live[i]
			copy(live[n+1:i+1], live[n:i])
			live[n] = c
			n++
		}
	}
	return n
}

func sameShapes(a, b []models.Tensor) bool {
	for i := range a {
		if !slices.Equal(a[i].Shape[1:], b[i].Shape[1:]) {
			return false
		}
	}
	return true
}

// runGroup runs calls of identical shapes as one batch and answers them.
func (s *Stage) runGroup(r *replica, eng mlrt.Engine, group []*call) {
	rows := 0
	for _, c := range group {
		rows += c.rows
	}
	variant := eng.Variant().Name
	// The batch's service time, from its inputs' copy to its last answer,
	// is the admission estimate's evidence (admission.go).
	slot := s.est.Begin(estKey{variant, r.cores}, rows)
	in := group[0].in
	if len(group) > 1 {
		in = r.concat(group, rows)
	}
	start := s.clock.Now()
	s.running.Add(1)
	out, err := eng.Run(context.Background(), in)
	s.running.Add(-1)
	dur := s.clock.Now().Sub(start)
	s.m.batch(variant, rows, dur)
	if err == nil {
		for i := range out {
			if out[i].Batch() != rows {
				err = fmt.Errorf("output %q has batch %d for %d input rows", out[i].Name, out[i].Batch(), rows)
				break
			}
		}
	}
	if err != nil {
		if !errors.Is(err, mlrt.ErrInvalidInput) {
			err = fmt.Errorf("stage %q variant %q: %w", s.meta.Name, variant, err)
			s.m.engineError(variant)
		}
		for _, c := range group {
			s.m.outcome(outcomeError)
			s.finish(c, err)
		}
		s.est.End(slot, false)
		return
	}
	s.m.observe(variant, r.cores, rows, dur) // the controller's profile correction (observed.go)
	end := start.Add(dur)
	row := 0
	for _, c := range group {
		if !c.deadline.IsZero() && end.After(c.deadline) {
			s.m.late.Inc() // what admission and dropLate failed to keep from being late
		}
		c.setOutputs(out, row, rows)
		c.res.Variant, c.res.Compute, c.res.Batch = variant, dur, rows
		row += c.rows
		s.m.outcome(outcomeOK)
		s.finish(c, nil)
	}
	s.est.End(slot, true)
}

// concat joins the inputs of group along dimension 0 into r's buffers.
func (r *replica) concat(group []*call, rows int) []models.Tensor {
	first := group[0].in
	if len(r.inBuf) < len(first) {
		r.inBuf = make([][]byte, len(first))
		r.shapes = make([][]int64, len(first))
	}
	r.in = r.in[:0]
	for i, t := range first {
		buf := r.inBuf[i][:0]
		for _, c := range group {
			buf = append(buf, c.in[i].Data...)
		}
		r.inBuf[i] = buf
		shape := append(r.shapes[i][:0], t.Shape...)
		shape[0] = int64(rows)
		r.shapes[i] = shape
		r.in = append(r.in, models.Tensor{Name: t.Name, DataType: t.DataType, Shape: shape, Data: buf})
	}
	return r.in
}

// setOutputs copies c's rows [row, row+c.rows) of the batch outputs into c.
func (c *call) setOutputs(out []models.Tensor, row, rows int) {
	if len(c.outBuf) < len(out) {
		c.outBuf = append(c.outBuf, make([][]byte, len(out)-len(c.outBuf))...)
	}
	c.res.Outputs = c.res.Outputs[:0]
	for i, t := range out {
		per := len(t.Data) / rows
		c.outBuf[i] = append(c.outBuf[i][:0], t.Data[row*per:(row+c.rows)*per]...)
		var shape []int64
		if i < cap(c.res.Outputs) {
			shape = c.res.Outputs[:i+1][i].Shape[:0]
		}
		shape = append(shape, t.Shape...)
		shape[0] = int64(c.rows)
		c.res.Outputs = append(c.res.Outputs, models.Tensor{Name: t.Name, DataType: t.DataType, Shape: shape, Data: c.outBuf[i]})
	}
}

// engineFor returns eng if in fits its variant's inputs, else a loaded
// variant of r's that in fits: a request the router prepared for the
// variant that was active when it arrived (an OCR page resized for
// det-640) and that was still queued when the stage switched to another
// shape (det-960) runs on the variant it was made for, not refused. When
// none fits, eng, which refuses it.
func (r *replica) engineFor(eng mlrt.Engine, in []models.Tensor) mlrt.Engine {
	if fits(eng.Variant(), in) {
		return eng
	}
	for _, sl := range r.engines {
		if sl.loaded() && fits(sl.v, in) {
			return sl
		}
	}
	return eng
}

// fits reports whether in matches v's input specs.
func fits(v *models.Variant, in []models.Tensor) bool {
	for _, t := range in {
		spec, ok := v.Input(t.Name)
		if !ok || spec.Check(t.DataType, t.Shape) != nil {
			return false
		}
	}
	return true
}
