package loadgen

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Clock is the runner's time. The wall clock is the default; a simulator
// passes a virtual one. Now is called concurrently; WaitUntil only by the
// runner's dispatching goroutine.
type Clock interface {
	Now() time.Time
	// WaitUntil returns once Now() ≥ t, or ctx's error if ctx ends first.
	WaitUntil(ctx context.Context, t time.Time) error
}

// WallClock returns the system clock. Each WallClock reuses one timer, so
// give each Runner its own.
func WallClock() Clock { return &wallClock{} }

type wallClock struct{ timer *time.Timer }

func (*wallClock) Now() time.Time { return time.Now() }

func (c *wallClock) WaitUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	if c.timer == nil {
		c.timer = time.NewTimer(d)
	} else {
		c.timer.Reset(d)
	}
	select {
	case <-c.timer.C:
		return nil
	case <-ctx.Done():
		c.timer.Stop()
		return ctx.Err()
	}
}

// Record is what happened to one request. Times are from the start of the
// run.
type Record struct {
	Seq int
	// Scheduled is when the request was due, Sent when it was handed to the
	// target (later than Scheduled by the generator's own lag).
	Scheduled, Sent time.Duration
	// Latency is from Sent to the answer; 0 for a request never sent.
	Latency time.Duration
	Outcome
}

// Runner replays arrivals against a target, open loop: each request is sent
// at its time whatever is outstanding, up to MaxInflight; a request due
// while MaxInflight are outstanding is dropped with ReasonClientOverload,
// never queued. Set the fields, then call Run once. Progress may be called
// concurrently with Run.
type Runner struct {
	Target   Target
	Arrivals *Arrivals
	// Clock is the wall clock when nil.
	Clock Clock
	// MaxInflight bounds outstanding requests; 0 means 1024.
	MaxInflight int
	// Duration, when positive, ends the run at that time after the start
	// (Run sets Arrivals.Until: no request is scheduled at or after it;
	// answers are still awaited).
	Duration time.Duration
	// Total, when positive, ends the run after that many requests.
	Total int
	// SLA, when positive, is the latency bound the report measures
	// attainment and goodput against.
	SLA time.Duration

	start    time.Time
	started  atomic.Bool
	sent     atomic.Int64
	inflight atomic.Int64
	counts   [3]atomic.Int64 // by Kind

	mu      sync.Mutex // guards records, reasons
	records []Record
	reasons reasonSet
}

// Progress is a snapshot of a running Runner.
type Progress struct {
	Sent, Succeeded, Dropped, Failed, Inflight int64
	Elapsed                                    time.Duration
}

// Progress returns the counts so far.
func (r *Runner) Progress() Progress {
	p := Progress{
		Sent:      r.sent.Load(),
		Succeeded: r.counts[Succeeded].Load(),
		Dropped:   r.counts[Dropped].Load(),
		Failed:    r.counts[Failed].Load(),
		Inflight:  r.inflight.Load(),
	}
	if r.started.Load() { // Run set Clock and start before started
		p.Elapsed = r.Clock.Now().Sub(r.start)
	}
	return p
}

// Result is a finished run.
type Result struct {
	// Start is the wall (or virtual) time of slot 0.
	Start time.Time
	// Elapsed is from Start to the last answer or the end of the schedule,
	// whichever is later.
	Elapsed time.Duration
	// Interrupted is set when ctx ended the run early.
	Interrupted bool
	SLA         time.Duration
	MaxInflight int
	// Records holds every request in Seq order.
	Records []Record
}

// Run sends the requests and waits for every answer; a run that is not
// cut short by Total or ctx lasts at least its schedule's span (to the end
// of the load's last slot, or Duration). It returns early
// (Interrupted, with the requests sent so far all answered) when ctx ends;
// an error only for a misconfigured Runner.
func (r *Runner) Run(ctx context.Context) (*Result, error) {
	if r.Target == nil || r.Arrivals == nil {
		return nil, errors.New("loadgen: Runner needs a Target and Arrivals")
	}
	if r.started.Load() {
		return nil, errors.New("loadgen: Runner.Run called twice")
	}
	maxInflight := r.MaxInflight
	if maxInflight <= 0 {
		maxInflight = 1024
	}
	if r.Duration > 0 && (r.Arrivals.Until <= 0 || r.Arrivals.Until > r.Duration) {
		r.Arrivals.Until = r.Duration
	}
	if r.Clock == nil {
		r.Clock = WallClock()
	}
	clock := r.Clock
	r.start = clock.Now()
	r.started.Store(true)
	if r.Total > 0 {
		r.records = make([]Record, 0, min(r.Total, 1<<20))
	}

	var wg sync.WaitGroup
	interrupted, scheduleEnded := false, false
	for seq := 0; r.Total <= 0 || seq < r.Total; seq++ {
		at, ok := r.Arrivals.Next()
		if !ok {
			scheduleEnded = true
			break
		}
		if err := clock.WaitUntil(ctx, r.start.Add(at)); err != nil {
			interrupted = true
			break
		}
		now := clock.Now().Sub(r.start)
		r.sent.Add(1)
		if r.inflight.Load() >= int64(maxInflight) {
			r.finish(Record{Seq: seq, Scheduled: at, Sent: now, Outcome: Outcome{Kind: Dropped, Reason: ReasonClientOverload}})
			continue
		}
		r.inflight.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := r.Target.Do(ctx, seq)
			lat := clock.Now().Sub(r.start) - now
			r.inflight.Add(-1)
			r.finish(Record{Seq: seq, Scheduled: at, Sent: now, Latency: lat, Outcome: out})
		}()
	}
	// A run lasts its schedule's span (an offered rate is per second of it),
	// or until the last answer if that is later.
	if scheduleEnded {
		if err := clock.WaitUntil(ctx, r.start.Add(r.Arrivals.End())); err != nil {
			interrupted = true
		}
	}
	wg.Wait()
	res := &Result{
		Start:       r.start,
		Elapsed:     clock.Now().Sub(r.start),
		Interrupted: interrupted,
		SLA:         r.SLA,
		MaxInflight: maxInflight,
	}
	r.mu.Lock()
	res.Records = r.records
	r.records = nil
	r.mu.Unlock()
	slices.SortFunc(res.Records, func(a, b Record) int { return a.Seq - b.Seq })
	return res, nil
}

func (r *Runner) finish(rec Record) {
	r.mu.Lock()
	rec.Reason = r.reasons.intern(rec.Kind, rec.Reason)
	r.records = append(r.records, rec)
	r.mu.Unlock()
	r.counts[rec.Kind].Add(1)
}

// maxReasons bounds the distinct reasons interned (and reported) per
// outcome kind, so a server that puts request IDs in its errors cannot blow
// up memory or the report.
const maxReasons = 32

// reasonSet interns up to maxReasons reasons per kind, so that a million
// drops for one reason hold one string.
type reasonSet struct {
	seen [3]map[string]string
}

func (s *reasonSet) intern(k Kind, reason string) string {
	if reason == "" {
		return ""
	}
	m := s.seen[k]
	if m == nil {
		m = map[string]string{}
		s.seen[k] = m
	}
	if v, ok := m[reason]; ok {
		return v
	}
	if len(m) >= maxReasons {
		return reason
	}
	m[reason] = reason
	return reason
}
