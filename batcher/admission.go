package batcher

import (
	"sync"
	"time"
)

// Admission control: an Estimator predicts when a request submitted now
// would be answered, from what is queued ahead of it, the batch policy and
// the service times of the batches that ran lately, so that a server can
// refuse at arrival the requests that cannot finish by their deadline rather
// than compute them late; and it tells a worker holding a batch which of its
// items would finish late.
//
// It is built to refuse only on evidence:
//
//   - Service times are order statistics of the last samples per batch
//     size, so that a few slow batches (another process taking the CPU, a
//     page fault storm) do not move the prediction: the batches queued
//     ahead count at their mean without the largest sample, the rest of
//     running ones at the median, the request's own batch at the 90th
//     percentile (of 16 samples, the second largest) or the newest sample
//     if longer, which the worker also requires of a batch before
//     computing it, so that what is computed is rarely late.
//     Sizes without samples are interpolated from those that have them.
//   - Samples older than the window are forgotten: a stage that was slow a
//     minute ago and idle since starts over. And a batch size that has not
//     run for freshEvidence while others of its K did (freshBatches of them
//     in that span) has no evidence: it is interpolated from the sizes
//     that ran, at the stage's speed now rather than under the overload a
//     few seconds ago. After a 3× overload on this machine, its batches of
//     4 (slowed by the reading of the requests beside them) refused a third
//     of each light burst that followed as too short for a batch, while
//     the stage served the rest in 7 ms a request, one by one; a refused
//     request brings no evidence, so the stale samples refused until the
//     window forgot them. Likewise, while the K is busy, a size whose last
//     second's batches were each faster than the median of its older ones
//     takes those alone. A stall in the last second keeps the older
//     samples, so it is ignored as before.
//   - Without samples there is no prediction, and Decide admits.
//   - A request with nothing ahead of it (no queued row, a replica idle) is
//     always admitted: there is no wait to predict, and whether its own batch
//     fits the deadline is the worker's call (Fit), with the batch in hand.
//   - It refuses only when the predicted completion is after the time left
//     it is given: what is held back for what the stage does not see is
//     the caller's (Usable).

// estimatorSamples is how many service times are kept per batch size.
const estimatorSamples = 16

// DefaultEvidenceWindow is how long a service time counts as evidence when
// NewEstimator is given none.
const DefaultEvidenceWindow = 5 * time.Second

// freshEvidence and freshBatches: a batch size none of whose samples is
// younger than freshEvidence, while freshBatches batches of its K (of any
// sizes) are, has no evidence.
const (
	freshEvidence = time.Second
	freshBatches  = 4
)

// Estimator predicts completion times from recent batch service times. K
// identifies what a batch ran on (a dataplane stage uses its variant and
// cores per replica): samples of one K say nothing about another. It is safe
// for concurrent use, and allocates only on the first batch of a new K or
// batch size, and when more batches run at once than ever before.
type Estimator[K comparable] struct {
	clock  Clock
	epoch  time.Time
	window time.Duration

	mu      sync.Mutex // guards the fields below
	classes map[K]*serviceTimes
	running []runningBatch // indexed by the slot Begin returns
	free    []int          // slots of running not in use
}

// serviceTimes holds the recent service times of one K, per batch size.
type serviceTimes struct {
	sizes []sizeSamples // index rows-1
	// ends is when the last freshBatches batches of any size ended (a
	// ring; endNext is the oldest's slot once it is full, endN ≤
	// freshBatches).
	ends    [freshBatches]time.Duration
	endNext int
	endN    int
}

// busy tells whether freshBatches batches of c ended within freshEvidence
// (or window, if shorter) of now.
func (c *serviceTimes) busy(now, window time.Duration) bool {
	return c.endN == freshBatches && now-c.ends[c.endNext] <= min(window, freshEvidence)
}

// sizeSamples is a ring of the last service times of batches of one size.
type sizeSamples struct {
	d    [estimatorSamples]time.Duration
	at   [estimatorSamples]time.Duration // when each ended, from the epoch
	n    int                             // samples held, ≤ estimatorSamples
	next int                             // slot the next sample goes to
	last time.Duration                   // when the newest ended
}

// runningBatch is a batch between Begin and End.
type runningBatch struct {
	class *serviceTimes
	rows  int
	start time.Duration
	used  bool
}

// maxEstimatorRows bounds the batch sizes an Estimator keeps samples for; a
// larger batch (one request of more rows than MaxBatch) is not recorded, and
// its service time is scaled from the largest recorded size.
const maxEstimatorRows = 4096

// NewEstimator returns an Estimator that reads time from clock (SystemClock
// when nil) and forgets samples older than window (DefaultEvidenceWindow
// when zero or less).
func NewEstimator[K comparable](clock Clock, window time.Duration) *Estimator[K] {
	if clock == nil {
		clock = SystemClock{}
	}
	if window <= 0 {
		window = DefaultEvidenceWindow
	}
	return &Estimator[K]{clock: clock, epoch: clock.Now(), window: window, classes: map[K]*serviceTimes{}}
}

// Begin records that a batch of rows started now on k and returns its slot
// for End.
func (e *Estimator[K]) Begin(k K, rows int) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.classes[k]
	if c == nil {
		c = &serviceTimes{}
		e.classes[k] = c
	}
	b := runningBatch{class: c, rows: rows, start: e.now(), used: true}
	if n := len(e.free); n > 0 {
		slot := e.free[n-1]
		e.free = e.free[:n-1]
		e.running[slot] = b
		return slot
	}
	e.running = append(e.running, b)
	return len(e.running) - 1
}

// End records that the batch in slot finished now. If ok, its time since
// Begin becomes a sample of its size; a failed batch says nothing about how
// long a good one takes.
func (e *Estimator[K]) End(slot int, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	b := e.running[slot]
	if !b.used {
		panic("BUG: batcher.Estimator.End of a slot not begun")
	}
	e.running[slot] = runningBatch{}
	e.free = append(e.free, slot)
	if !ok || b.rows < 1 || b.rows > maxEstimatorRows {
		return
	}
	now := e.now()
	c := b.class
	if len(c.sizes) < b.rows {
		c.sizes = append(c.sizes, make([]sizeSamples, b.rows-len(c.sizes))...)
	}
	s := &c.sizes[b.rows-1]
	s.d[s.next], s.at[s.next] = now-b.start, now
	s.next = (s.next + 1) % estimatorSamples
	s.n = min(s.n+1, estimatorSamples)
	s.last = now
	c.ends[c.endNext] = now
	c.endNext = (c.endNext + 1) % freshBatches
	c.endN = min(c.endN+1, freshBatches)
}

// Ahead describes the queue a request joins and the stage that serves it.
type Ahead struct {
	Rows     int // rows queued ahead of the request, not yet taken by a replica
	Size     int // the request's own rows
	MaxBatch int // the batch policy's largest batch, in rows
	Replicas int // replicas serving
}

// Prediction is when a request submitted now would be answered.
type Prediction struct {
	// Wait is until a replica starts the request's batch: the rest of the
	// batches running (at their median) and the batches queued ahead (at
	// their mean without the largest sample), spread over the replicas.
	// Service is that batch's own run at its bound (the 90th percentile,
	// or the newest sample if longer), what the worker will require of it
	// (Fit).
	Wait, Service time.Duration
}

// Completion is Wait + Service.
func (p Prediction) Completion() time.Duration { return p.Wait + p.Service }

// Verdict is Decide's answer.
type Verdict uint8

const (
	// Admit: queue the request. It is predicted to finish in time, or
	// nothing is ahead of it, or there is no evidence to predict with.
	Admit Verdict = iota
	// RefuseBusy: the work ahead of the request would make it late; with
	// less ahead it would fit (a server answers 429 with Retry-After).
	RefuseBusy
	// RefuseTooShort: the time left is shorter than the request's own batch
	// takes, so waiting for the queue to clear would not help (504).
	RefuseTooShort
)

// String names the verdict.
func (v Verdict) String() string {
	switch v {
	case Admit:
		return "admit"
	case RefuseBusy:
		return "refuse: busy"
	case RefuseTooShort:
		return "refuse: too short"
	}
	return "Verdict(?)"
}

// Decide predicts the completion of a request of a.Size rows that joins
// the queue now, on k, with left until its deadline, and says whether to
// admit it. A request without a deadline needs no Decide. The Prediction is
// zero when Decide admitted without one.
func (e *Estimator[K]) Decide(k K, a Ahead, left time.Duration) (Verdict, Prediction) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if a.Rows == 0 && e.runningLocked() < a.Replicas {
		return Admit, Prediction{} // nothing ahead: an idle replica takes it now
	}
	p, ok := e.predictLocked(k, a)
	switch {
	case !ok || p.Completion() <= left:
		return Admit, p
	case p.Service > left:
		return RefuseTooShort, p
	}
	return RefuseBusy, p
}

// Predict returns the prediction Decide would make, and false when there is
// no evidence for it.
func (e *Estimator[K]) Predict(k K, a Ahead) (Prediction, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.predictLocked(k, a)
}

// Usable returns the time a stage plans with for a request that arrived at
// arrived, with deadline, at now: the time left less a twentieth of its
// whole budget, for what the stage does not see: the time the request spent
// before its arrival was stamped (read behind the others of a burst) and
// its answer's way out. Planning with the whole budget, a 1 s burst on this
// machine had 23 answers 5–113 ms late at the client that the stage had
// computed in time; with a twentieth held back none were (e2e overload
// battery, quiet 2-core VM). Decide and Fit are given times from it.
func Usable(deadline, arrived, now time.Time) time.Duration {
	return deadline.Sub(now) - deadline.Sub(arrived)/20
}

// Fate is what Fit decides for one call of a batch.
type Fate uint8

const (
	// Compute: the call is in the batch computed now.
	Compute Fate = iota
	// Later: the call would end in time, but the batch that keeps the most
	// rows in time has no room for it: it goes back to the head of the
	// queue, to be judged again when a replica takes it.
	Later
	// Late: the call would end after its deadline in the batch computed
	// now, and so after it: answer it now, uncomputed.
	Late
)

// Fit decides, for the calls a worker holds, which to compute now, so that
// as many rows as can end by their deadlines do. Call i has rows[i] rows
// and left[i] until its deadline (math.MaxInt64 for none), in queue order.
// A batch of n rows is taken to end after the bound of the recent service
// times of such batches (their 90th percentile, or the newest if longer),
// so that what a worker computes is rarely late (at the median, half the
// batches that just fit would be); when the whole batch would end late for some calls, a smaller
// batch may end in time for them: Fit takes the batch size that computes
// the most rows in time (the smaller on a tie, as it ends sooner), and in
// it the calls, in queue order, that end in time and fit its rows (a call
// that comes first is not passed over for a larger one behind it). It sets
// fate[i] (len(fate) ≥ len(rows)): Compute for those, Later for the calls
// that would end in time but found no room, Late for the rest; when no call
// ends in time every call is Late. Without evidence every call is Compute
// and Fit returns false.
func (e *Estimator[K]) Fit(k K, rows []int, left []time.Duration, fate []Fate) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	fate = fate[:len(rows)]
	for i := range fate {
		fate[i] = Compute
	}
	total := 0
	for _, r := range rows {
		total += r
	}
	c, now := e.classes[k], e.now()
	t, ok := e.serviceLocked(c, total, now, high)
	if !ok {
		return false
	}
	inTime := func(size int, t time.Duration) int { // rows computed in time by a batch of size
		got := 0
		for i, r := range rows {
			if left[i] >= t && got+r <= size {
				got += r
			}
		}
		return got
	}
	best, bestT, bestRows := total, t, inTime(total, t)
	// A batch of size rows computes at most size rows in time: below the
	// best so far, nothing is left to gain.
	for size := total - 1; size > bestRows; size-- {
		ts, _ := e.serviceLocked(c, size, now, high)
		if got := inTime(size, ts); got >= bestRows {
			best, bestT, bestRows = size, ts, got
		}
	}
	got := 0
	for i, r := range rows {
		switch {
		case left[i] < bestT || bestRows == 0:
			fate[i] = Late
		case got+r <= best:
			got += r
		default:
			fate[i] = Later
		}
	}
	return true
}

// Service returns the median and the bound (the 90th percentile, or the
// newest if longer) of the recent service times of batches of rows on k
// (what Fit judges a batch by), and false when there is no evidence for
// them.
func (e *Estimator[K]) Service(k K, rows int) (typical, bound time.Duration, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	c := e.classes[k]
	if typical, ok = e.serviceLocked(c, rows, now, median); !ok {
		return 0, 0, false
	}
	bound, _ = e.serviceLocked(c, rows, now, high)
	return typical, bound, true
}

func (e *Estimator[K]) now() time.Duration { return e.clock.Now().Sub(e.epoch) }

func (e *Estimator[K]) runningLocked() int { return len(e.running) - len(e.free) }

// predictLocked is Predict with e.mu held.
//
// The batches ahead: the queued rows leave in batches of MaxBatch (a queue
// that has rows waiting is backed up, so its batches leave full), and the
// request rides in the batch that holds the last of them if it fits there.
// Its own batch is taken to be full too when it has to wait at all, since
// the requests that arrive meanwhile fill it. A replica frees up when its running batch
// ends (the median time of such a batch less what it has run, at least 0)
// and then takes queued batches one after another; the request's batch
// starts when the batches ahead have all been taken (startAfter).
func (e *Estimator[K]) predictLocked(k K, a Ahead) (Prediction, bool) {
	c := e.classes[k]
	if c == nil {
		return Prediction{}, false
	}
	now := e.now()
	mb, size, replicas := max(a.MaxBatch, 1), max(a.Size, 1), max(a.Replicas, 1)
	before := a.Rows / mb
	if rem := a.Rows % mb; rem > 0 && rem+size > mb {
		before++
	}
	var full time.Duration
	if before > 0 {
		var ok bool
		if full, ok = e.serviceLocked(c, mb, now, mean); !ok {
			return Prediction{}, false
		}
	}
	// When each replica frees up: idle ones now, busy ones after the rest
	// of their batch. Replicas retiring with a batch (more busy than
	// serving) are counted as if they would take more.
	var buf [64]time.Duration
	free := buf[:0]
	for i := range e.running {
		b := &e.running[i]
		if !b.used || len(free) == len(buf) {
			continue
		}
		rest := time.Duration(0)
		if t, ok := e.serviceLocked(b.class, b.rows, now, median); ok {
			rest = max(t-(now-b.start), 0)
		}
		free = append(free, rest)
	}
	for len(free) < min(replicas, len(buf)) {
		free = append(free, 0)
	}
	wait := startAfter(free, before, full)
	own := size
	if (a.Rows > 0 || wait > 0) && size < mb {
		own = mb // it waits, and what arrives meanwhile fills its batch
	}
	service, ok := e.serviceLocked(c, own, now, high)
	if !ok {
		return Prediction{}, false
	}
	return Prediction{Wait: wait, Service: service}, true
}

// startAfter returns when the batch after the first before batches starts,
// each batch taking t, on replicas that free up at the times in free and
// then take one batch after another: the (before+1)-th smallest of the times
// f + m·t (f in free, m ≥ 0), which is what handing each batch to the
// replica that frees up first gives. free must not be empty.
func startAfter(free []time.Duration, before int, t time.Duration) time.Duration {
	first := free[0]
	for _, f := range free[1:] {
		first = min(first, f)
	}
	if before == 0 || t <= 0 {
		return first
	}
	starts := func(s time.Duration) int { // batches started by s
		n := 0
		for _, f := range free {
			if f <= s {
				n += int((s-f)/t) + 1
			}
		}
		return n
	}
	// The replica that frees first alone starts batch before+1 by hi.
	lo, hi := first, first+time.Duration(before)*t
	for lo < hi {
		mid := lo + (hi-lo)/2
		if starts(mid) >= before+1 {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// serviceLocked returns statistic q of the service times of batches of rows
// in c, from the samples younger than the window. A size without samples is
// interpolated linearly between the nearest sizes with samples on either
// side; beyond them, extrapolated along the line through the two nearest on
// its side, bounded by the nearest one's time and that time scaled by rows
// (the line of a batch whose time grows by less than its rows, which is
// what batching is for), or just scaled by rows when only one size has
// samples.
func (e *Estimator[K]) serviceLocked(c *serviceTimes, rows int, now time.Duration, q quantile) (time.Duration, bool) {
	if c == nil {
		return 0, false
	}
	rows = max(rows, 1)
	if t, ok := e.quantileLocked(c, rows, now, q); ok {
		return t, true
	}
	lo, lo2, hi, hi2 := 0, 0, 0, 0 // sizes with evidence: nearest and next nearest below, above
	var tlo, tlo2, thi, thi2 time.Duration
	for r := min(rows-1, len(c.sizes)); r >= 1 && lo2 == 0; r-- {
		if t, ok := e.quantileLocked(c, r, now, q); ok {
			if lo == 0 {
				lo, tlo = r, t
			} else {
				lo2, tlo2 = r, t
			}
		}
	}
	for r := rows + 1; r <= len(c.sizes) && hi2 == 0; r++ {
		if t, ok := e.quantileLocked(c, r, now, q); ok {
			if hi == 0 {
				hi, thi = r, t
			} else {
				hi2, thi2 = r, t
			}
		}
	}
	switch {
	case lo > 0 && hi > 0:
		return line(lo, tlo, hi, thi, rows), true
	case lo > 0:
		return extrapolate(lo, tlo, lo2, tlo2, rows), true
	case hi > 0:
		return extrapolate(hi, thi, hi2, thi2, rows), true
	}
	return 0, false
}

// extrapolate continues the line through (n2, t2) and the nearest size with
// evidence (n, t) to rows, bounded by t and t scaled by rows/n; without n2,
// it scales t by rows/n.
func extrapolate(n int, t time.Duration, n2 int, t2 time.Duration, rows int) time.Duration {
	scaled := time.Duration(float64(t) * float64(rows) / float64(n))
	if n2 == 0 {
		return scaled
	}
	v := line(n2, t2, n, t, rows)
	return min(max(v, min(t, scaled)), max(t, scaled))
}

// line evaluates at x the line through (x1, y1) and (x2, y2), x1 ≠ x2.
func line(x1 int, y1 time.Duration, x2 int, y2 time.Duration, x int) time.Duration {
	return y1 + time.Duration(float64(y2-y1)*float64(x-x1)/float64(x2-x1))
}

// quantile selects a statistic of the recent service times of a size.
type quantile uint8

const (
	// median: how long such a batch typically takes, robust to stalls in
	// fewer than half the samples; the rest of the running batches counts
	// at it.
	median quantile = iota
	// mean: the mean without the largest sample, what the batches ahead of
	// a request add up to: their sum grows with the occasional slow batch,
	// which the median ignores (on a contended host the median of 16 was
	// 30 % under the mean, and requests reached the head that much later
	// than predicted), while one stall in the window is left out.
	mean
	// high: the 90th percentile (of 16 samples, the second largest), how
	// long it takes unless a stall hits; a batch must fit the time left at
	// it to be computed, so that what is computed is rarely late, while
	// one stall in the window does not move it for long: it counts only
	// while it is the newest sample. The newest sample counts when it is
	// longer, because a slowdown that lasts (other work taking the cores)
	// shows first there: by the 90th percentile alone the batches of the
	// next second would each be computed late (CI saw that: 6 answers of
	// 385 computed 1–15 ms after a 1 s deadline).
	high
)

// quantileLocked returns statistic q of the samples of batches of rows
// taken within the window, and false when there are none or the size is
// stale (none younger than freshEvidence while its K is busy). While its K
// is busy, a size whose samples younger than freshEvidence are each
// faster than the median of its older ones takes those alone: the stage
// sped up (a slowdown shows in the newest sample and the median already).
func (e *Estimator[K]) quantileLocked(c *serviceTimes, rows int, now time.Duration, q quantile) (time.Duration, bool) {
	if rows < 1 || rows > len(c.sizes) {
		return 0, false
	}
	s := &c.sizes[rows-1]
	recent, busy := min(e.window, freshEvidence), c.busy(now, e.window)
	if s.n == 0 || now-s.last > e.window || busy && now-s.last > recent {
		return 0, false
	}
	var buf [estimatorSamples]time.Duration
	n := s.sorted(&buf, now, 0, e.window)
	if busy {
		// A speed-up: each fresh sample faster than the median of the
		// older ones.
		var fresh, old [estimatorSamples]time.Duration
		if m := s.sorted(&fresh, now, 0, recent); m > 0 && m < n {
			if k := s.sorted(&old, now, recent, e.window); fresh[m-1] < middle(old[:k]) {
				buf, n = fresh, m
			}
		}
	}
	switch {
	case q == high:
		// nearest rank ⌈0.9·n⌉, or the newest sample when it is longer:
		// the stage is as slow as its last batch now (another process took
		// the cores), which the older samples will say only batches later
		newest := s.d[(s.next+estimatorSamples-1)%estimatorSamples]
		return max(buf[(9*n+9)/10-1], newest), true
	case q == mean && n > 1:
		var sum time.Duration
		for _, d := range buf[:n-1] {
			sum += d
		}
		return sum / time.Duration(n-1), true
	}
	return middle(buf[:n]), true
}

// middle is the median of sorted samples (not empty).
func middle(buf []time.Duration) time.Duration {
	n := len(buf)
	if n%2 == 1 {
		return buf[n/2]
	}
	return (buf[n/2-1] + buf[n/2]) / 2
}

// sorted puts in buf, in order, the samples of s older than from and no
// older than to at now, and returns how many.
func (s *sizeSamples) sorted(buf *[estimatorSamples]time.Duration, now, from, to time.Duration) int {
	n := 0
	for i := 0; i < s.n; i++ {
		if age := now - s.at[i]; age <= to && (from == 0 || age > from) {
			// insertion sort: at most estimatorSamples elements
			j := n
			for j > 0 && buf[j-1] > s.d[i] {
				buf[j] = buf[j-1]
				j--
			}
			buf[j] = s.d[i]
			n++
		}
	}
	return n
}
