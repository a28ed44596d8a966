package dataplane

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/batcher"
)

// Deadline-aware admission (batcher.Estimator): a request with a deadline is
// refused at arrival when the stage predicts it cannot be answered in time,
// from the rows queued ahead, the batch policy, the replicas serving and the
// service times of recent batches of its variant and cores; and a worker
// answers 504 at once, instead of computing late, a call of the batch it
// took that the batch would likely finish after its deadline.
//
// A refusal is 429 with Retry-After (the wait ahead is what makes the request
// late; the queue will have drained by then) or 504 (the time left is
// shorter than its own batch takes: waiting would not help). Both are
// ErrCannotMeetDeadline, counted in ipa_stage_refused_total with reason
// cannot_meet_deadline; the worker's drops have reason would_finish_late.

// ErrCannotMeetDeadline is wrapped by the *AdmissionError of a request
// refused at arrival because it was predicted to finish after its deadline.
var ErrCannotMeetDeadline = errors.New("cannot meet the deadline")

// errWouldFinishLate answers a call the worker holds whose deadline would
// pass before its batch finished.
var errWouldFinishLate = fmt.Errorf("%w (the batch it is in takes longer than the time left: not computed)", ErrDeadline)

// estKey is what a batch ran on, for the estimator: samples of one variant
// or cores per replica say nothing of another.
type estKey struct {
	variant string
	cores   int
}

// Refusal reasons, the values of the reason label of ipa_stage_refused_total.
const (
	reasonQueueFull       = "queue_full"           // the bounded queue is full (429)
	reasonCannotMeet      = "cannot_meet_deadline" // refused at arrival by the estimate (429 or 504)
	reasonExpired         = "expired"              // the deadline passed before a replica computed it (504)
	reasonWouldFinishLate = "would_finish_late"    // dropped by the worker: its batch would end after the deadline (504)
)

var reasons = []string{reasonQueueFull, reasonCannotMeet, reasonExpired, reasonWouldFinishLate}

// AdmissionError is a request refused at arrival because the stage predicts
// it would be answered after its deadline.
type AdmissionError struct {
	Stage string
	// Busy is true when the work ahead makes it late (429, retry after
	// Wait); false when the time left is shorter than its own batch (504).
	Busy bool
	// Wait is the predicted time until a replica starts its batch, Service
	// that batch's median run, Left the time to its deadline.
	Wait, Service, Left time.Duration
}

// Error says why, in words that do not change from one request to the
// next, so that clients and load reports can count refusals by message;
// the numbers are in the fields, Retry-After and the stage's metrics.
func (e *AdmissionError) Error() string {
	if e.Busy {
		return fmt.Sprintf("stage %q %v: the work queued ahead would make the answer late; retry after Retry-After", e.Stage, ErrCannotMeetDeadline)
	}
	return fmt.Sprintf("stage %q %v: less time is left than its batch takes; send a longer deadline", e.Stage, ErrCannotMeetDeadline)
}

// Unwrap returns ErrCannotMeetDeadline.
func (e *AdmissionError) Unwrap() error { return ErrCannotMeetDeadline }

// Is reports a refusal that waiting would not help as ErrDeadline too: it
// is a deadline the stage cannot meet, like one that passed in the queue.
func (e *AdmissionError) Is(target error) bool { return !e.Busy && target == ErrDeadline }

// RetryAfter returns the whole seconds after which err's stage is expected
// to take a request again (at least 1), for the Retry-After of a 429: the
// predicted wait of an *AdmissionError, 1 for other errors.
func RetryAfter(err error) int {
	var ae *AdmissionError
	if errors.As(err, &ae) && ae.Busy {
		return max(1, int(math.Ceil(ae.Wait.Seconds())))
	}
	return 1
}

// Before is the stage server's Preflight: it refuses, from its header, an
// inference request that its stage predicts it cannot answer in time, so
// that its body is dropped as it arrives instead of being read into memory
// and decoded. The prediction is admitInTime's (admitAt), with the
// deadline the headers and the server's --http.timeout give (deadline; the
// body's own "timeout" parameter can only make it earlier, so a refusal
// stays right), one row, and the requests admitted so whose bodies are
// still arriving counted ahead: in a burst of requests sent at once, the first that fit are
// admitted and the rest refused before any body is in. An admitted request
// is decided again, as every request is, once its body is read (Infer),
// when its rows are known. Requests without a deadline, for a stage that
// is not ready, or while draining go on to the handler.
func (s *Server) Before(ctx *fasthttp.RequestCtx) bool {
	if s.drain.Draining() {
		return false
	}
	st := s.inferStage(ctx)
	if st == nil || !st.Ready() {
		return false
	}
	d, err := s.deadline(ctx, nil)
	if err != nil || d.IsZero() { // a bad header is answered 400 by the handler
		return false
	}
	now := st.clock.Now()
	if !now.Before(d) {
		return false // the handler answers 504
	}
	if err := st.admitAt(d, Arrival(ctx), now, 1, int(st.promised.Load())); err != nil {
		writeInferError(ctx, err)
		return true
	}
	st.promised.Add(1)
	ctx.SetUserValue(promiseKey{}, promise{st})
	return false
}

// After is the stage server's Preflight: it lets go of the promise of a
// request Before admitted, if the handler did not (keep).
func (s *Server) After(ctx *fasthttp.RequestCtx) { keep(ctx) }

// promiseKey is the user value of a request Before admitted: a promise.
type promiseKey struct{}

// promise is the stage a request was admitted to by Before. (Not the
// *Stage itself: fasthttp closes the io.Closers among a request's user
// values once it is done, and a Stage is one.)
type promise struct{ st *Stage }

// keep lets go of the promise Before made for ctx's request, if any: the
// request is about to be queued (or refused), and counts in the queue from
// now on.
func keep(ctx *fasthttp.RequestCtx) {
	if p, ok := ctx.UserValue(promiseKey{}).(promise); ok {
		p.st.promised.Add(-1)
		ctx.SetUserValue(promiseKey{}, nil)
	}
}

// admitInTime decides whether c, with a deadline, is admitted at now; nil
// if so, else the *AdmissionError to answer it with.
func (s *Stage) admitInTime(c *call, now time.Time) error {
	if c.deadline.IsZero() {
		return nil
	}
	return s.admitAt(c.deadline, now, now, c.rows, 0)
}

// admitAt decides whether a request of rows that arrived at arrived, with
// deadline, joining now the queue with extra rows more ahead of it than
// are queued, is admitted; nil if so, else the *AdmissionError to answer
// it with, counted as a refusal.
func (s *Stage) admitAt(deadline, arrived, now time.Time, rows, extra int) error {
	cfg := s.cfg.Load()
	a := s.ahead(cfg.MaxBatch, rows)
	a.Rows += extra
	v, p := s.est.Decide(estKey{cfg.Variant, cfg.Cores}, a, batcher.Usable(deadline, arrived, now))
	if v == batcher.Admit {
		return nil
	}
	s.m.refused(reasonCannotMeet)
	s.m.outcome(outcomeCannotMeet)
	return &AdmissionError{Stage: s.meta.Name, Busy: v == batcher.RefuseBusy, Wait: p.Wait, Service: p.Service, Left: deadline.Sub(now)}
}

// ahead describes the queue a request of rows joins now.
func (s *Stage) ahead(maxBatch, rows int) batcher.Ahead {
	replicas := 0
	if live := s.live.Load(); live != nil {
		replicas = len(*live)
	}
	return batcher.Ahead{Rows: s.b.Len(), Size: rows, MaxBatch: maxBatch, Replicas: replicas}
}

// predictedWait is what ipa_stage_admission_wait_seconds shows: the
// predicted time until a one-row request arriving now starts (0 without
// evidence).
func (s *Stage) predictedWait() float64 {
	cfg := s.cfg.Load()
	if cfg == nil { // loading
		return 0
	}
	p, _ := s.est.Predict(estKey{cfg.Variant, cfg.Cores}, s.ahead(cfg.MaxBatch, 1))
	return p.Wait.Seconds()
}

// dropLate judges the calls of live, a batch a worker (or an inline run) is
// about to run on key on r at now, by the bound of recent such batches
// (batcher.Estimator.Fit): when the whole batch would end after some calls'
// deadlines, it is cut to the size that computes the most rows in time;
// the calls that would end late are answered 504 at once, those that would
// end in time but found no room in the cut go back to the head of the
// queue. It returns the rest, in order, in live's array.
func (s *Stage) dropLate(r *replica, key estKey, live []*call, now time.Time) []*call {
	deadlines := false
	for _, c := range live {
		deadlines = deadlines || !c.deadline.IsZero()
	}
	if !deadlines {
		return live
	}
	r.rows, r.left = r.rows[:0], r.left[:0]
	for _, c := range live {
		left := time.Duration(math.MaxInt64)
		if !c.deadline.IsZero() {
			left = batcher.Usable(c.deadline, c.enqueued, now)
		}
		r.rows, r.left = append(r.rows, c.rows), append(r.left, left)
	}
	if cap(r.fate) < len(live) {
		r.fate = make([]batcher.Fate, len(live))
	}
	fate := r.fate[:len(live)]
	if !s.est.Fit(key, r.rows, r.left, fate) {
		return live
	}
	kept, later := live[:0], r.later[:0]
	for i, c := range live {
		switch fate[i] {
		case batcher.Late:
			s.m.refused(reasonWouldFinishLate)
			s.m.outcome(outcomeExpired)
			s.finish(c, errWouldFinishLate)
		case batcher.Later:
			// Queued again as it was: pending, so that the replica that
			// takes it runs it (or its caller may still abandon it).
			c.state.Store(statePending)
			later = append(later, c)
		default:
			kept = append(kept, c)
		}
	}
	s.requeue(later)
	clear(later)
	r.later = later[:0]
	return kept
}
