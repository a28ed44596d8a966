package batcher

import (
	"container/heap"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock whose time moves only when the test says.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) AfterFunc(time.Duration, func()) Timer { panic("the Estimator sets no timer") }

const ms = time.Millisecond

// ran records a batch of rows on k that took d, ending now.
func ran(e *Estimator[string], c *fakeClock, k string, rows int, d time.Duration) {
	slot := e.Begin(k, rows)
	c.Advance(d)
	e.End(slot, true)
}

func TestEstimatorWithoutEvidenceAdmits(t *testing.T) {
	c := newFakeClock()
	e := NewEstimator[string](c, 0)
	if _, ok := e.Predict("a", Ahead{Rows: 100, Size: 1, MaxBatch: 4, Replicas: 1}); ok {
		t.Error("Predict without any batch: ok, want no prediction")
	}
	if v, _ := e.Decide("a", Ahead{Rows: 1000, Size: 1, MaxBatch: 4, Replicas: 1}, ms); v != Admit {
		t.Errorf("Decide without evidence, 1000 rows ahead, 1 ms left: %v, want admit", v)
	}
	ran(e, c, "a", 4, 50*ms)
	if v, _ := e.Decide("b", Ahead{Rows: 1000, Size: 1, MaxBatch: 4, Replicas: 1}, ms); v != Admit {
		t.Errorf("evidence of variant a judged a request on b: %v, want admit", v)
	}
	if late(e, "b", 4, ms) {
		t.Error("Late on b from a's evidence")
	}
	// A failed batch is no evidence.
	slot := e.Begin("b", 4)
	c.Advance(time.Second)
	e.End(slot, false)
	if _, _, ok := e.Service("b", 4); ok {
		t.Error("a failed batch became a service time")
	}
}

func TestEstimatorNeverRefusesWhatHasNothingAhead(t *testing.T) {
	c := newFakeClock()
	e := NewEstimator[string](c, 0)
	ran(e, c, "a", 1, 500*ms) // slow evidence: a request alone takes 0.5 s
	// Empty queue, the one replica idle: admitted, however short its time.
	if v, p := e.Decide("a", Ahead{Rows: 0, Size: 1, MaxBatch: 4, Replicas: 1}, ms); v != Admit || p != (Prediction{}) {
		t.Errorf("nothing ahead, 1 ms left: %v %+v, want admit without a prediction", v, p)
	}
	// The same with the replica busy: now there is something ahead.
	slot := e.Begin("a", 1)
	if v, _ := e.Decide("a", Ahead{Rows: 0, Size: 1, MaxBatch: 4, Replicas: 1}, ms); v == Admit {
		t.Error("replica busy for 0.5 s, 1 ms left: admitted")
	}
	// A second, idle replica: nothing ahead again.
	if v, _ := e.Decide("a", Ahead{Rows: 0, Size: 1, MaxBatch: 4, Replicas: 2}, ms); v != Admit {
		t.Errorf("one of two replicas idle: %v, want admit", v)
	}
	e.End(slot, true)
}

// The prediction with one replica is exact: the rest of the running batch,
// the full batches ahead, the request's own (full) batch.
func TestEstimatorPredictsOneReplicaExactly(t *testing.T) {
	c := newFakeClock()
	e := NewEstimator[string](c, 0)
	for range 5 {
		ran(e, c, "a", 4, 50*ms)
	}
	slot := e.Begin("a", 4) // running for 10 ms: 40 ms to go
	c.Advance(10 * ms)
	f := func(rows, size int, want Prediction) {
		t.Helper()
		a := Ahead{Rows: rows, Size: size, MaxBatch: 4, Replicas: 1}
		got, ok := e.Predict("a", a)
		if !ok || got != want {
			t.Errorf("Predict(%+v) = %+v, %v; want %+v", a, got, ok, want)
		}
	}
	f(0, 1, Prediction{Wait: 40 * ms, Service: 50 * ms}) // it waits: what arrives meanwhile fills its batch
	f(12, 1, Prediction{Wait: 40*ms + 3*50*ms, Service: 50 * ms})
	f(13, 1, Prediction{Wait: 40*ms + 3*50*ms, Service: 50 * ms}) // rides with the 13th row
	f(15, 2, Prediction{Wait: 40*ms + 4*50*ms, Service: 50 * ms}) // 3 rows left in the 4th batch: 2 more do not fit
	a := Ahead{Rows: 12, Size: 1, MaxBatch: 4, Replicas: 1}
	if v, _ := e.Decide("a", a, 240*ms); v != Admit {
		t.Errorf("completion 240 ms, 240 ms left: %v, want admit", v)
	}
	if v, _ := e.Decide("a", a, 239*ms); v != RefuseBusy {
		t.Errorf("completion 240 ms, 239 ms left: %v, want refuse: busy", v)
	}
	if v, _ := e.Decide("a", a, 49*ms); v != RefuseTooShort {
		t.Errorf("own batch 50 ms, 49 ms left: %v, want refuse: too short", v)
	}
	e.End(slot, true)
}

func TestEstimatorOwnBatch(t *testing.T) {
	c := newFakeClock()
	e := NewEstimator[string](c, 0)
	ran(e, c, "a", 4, 40*ms)
	slot := e.Begin("a", 4)
	p, ok := e.Predict("a", Ahead{Rows: 0, Size: 1, MaxBatch: 4, Replicas: 1})
	if !ok || p.Service != 40*ms || p.Wait != 40*ms {
		t.Errorf("alone behind a running batch: %+v %v, want 40 ms wait and a full batch (40 ms): it fills while it waits", p, ok)
	}
	c.Advance(40 * ms)
	e.End(slot, true)
	p, ok = e.Predict("a", Ahead{Rows: 0, Size: 1, MaxBatch: 4, Replicas: 1})
	if !ok || p.Service != 10*ms || p.Wait != 0 {
		t.Errorf("alone, replica idle: %+v %v, want no wait and its own row's batch scaled from 4 rows (10 ms)", p, ok)
	}
}

// A median: stalls in fewer than half the recent batches do not move it,
// where a mean or a max would refuse requests the stage can serve.
func TestEstimatorIgnoresAMinorityOfStalls(t *testing.T) {
	c := newFakeClock()
	e := NewEstimator[string](c, 0)
	for i := range estimatorSamples {
		d := 50 * ms
		if i%3 == 0 {
			d = 700 * ms // 6 stalls of 16
		}
		ran(e, c, "a", 4, d)
	}
	if got, _, _ := e.Service("a", 4); got != 50*ms {
		t.Errorf("median with 6 stalls in 16: %s, want 50ms", got)
	}
	// 10 rows ahead (2 full batches and 2 rows the request joins), 1.5 s
	// left: the batches ahead at their mean without the largest sample
	// ((10·50+5·700)/15 ≈ 267 ms), its own at the bound (700 ms).
	if v, p := e.Decide("a", Ahead{Rows: 10, Size: 1, MaxBatch: 4, Replicas: 1}, 1500*ms); v != Admit || p.Wait != 2*(4000*ms/15) {
		t.Errorf("decide: %v %+v, want admit, 533 ms wait", v, p)
	}
	// Its bound (the 90th percentile) tolerates one stall in 16, not six.
	if _, bound, _ := e.Service("a", 4); bound != 700*ms {
		t.Errorf("bound with 6 stalls in 16: %s, want 700ms", bound)
	}
	e1 := NewEstimator[string](c, 0)
	for i := range estimatorSamples {
		ran(e1, c, "a", 4, map[bool]time.Duration{true: 700 * ms, false: 50 * ms}[i == 7])
	}
	if typical, bound, _ := e1.Service("a", 4); typical != 50*ms || bound != 50*ms || late(e1, "a", 4, 60*ms) {
		t.Errorf("one stall in 16: median %s, bound %s, want both 50ms and a batch in time with 60 ms left", typical, bound)
	}
	// A majority of slow batches is the stage's speed now.
	for range estimatorSamples / 2 {
		ran(e, c, "a", 4, 700*ms)
	}
	if got, _, _ := e.Service("a", 4); got != 700*ms {
		t.Errorf("median after 8 more slow batches: %s, want 700ms", got)
	}
}

func TestEstimatorForgetsStaleEvidence(t *testing.T) {
	c := newFakeClock()
	e := NewEstimator[string](c, 2*time.Second)
	ran(e, c, "a", 4, 500*ms)
	a := Ahead{Rows: 40, Size: 1, MaxBatch: 4, Replicas: 1}
	if v, _ := e.Decide("a", a, time.Second); v != RefuseBusy {
		t.Fatalf("10 batches of 0.5 s ahead, 1 s left: %v, want refuse: busy", v)
	}
	c.Advance(2*time.Second + ms)
	if v, _ := e.Decide("a", a, time.Second); v != Admit {
		t.Errorf("evidence older than the window: %v, want admit", v)
	}
	// Fresh samples only: two old slow ones and a fresh fast one.
	ran(e, c, "a", 4, 500*ms)
	c.Advance(2 * time.Second)
	ran(e, c, "a", 4, 10*ms)
	if got, _, _ := e.Service("a", 4); got != 10*ms {
		t.Errorf("median of the fresh samples: %s, want 10ms", got)
	}
}

func TestEstimatorInterpolatesBatchSizes(t *testing.T) {
	c := newFakeClock()
	e := NewEstimator[string](c, time.Hour)
	f := func(rows int, want time.Duration) {
		t.Helper()
		if got, _, ok := e.Service("a", rows); !ok || got != want {
			t.Errorf("Service(%d rows) = %s, %v; want %s", rows, got, ok, want)
		}
	}
	ran(e, c, "a", 8, 40*ms)
	f(8, 40*ms)
	f(2, 10*ms)  // only 8 known: scaled by rows
	f(16, 80*ms) // the same, up
	ran(e, c, "a", 1, 12*ms)
	f(5, 12*ms+4*28*ms/7) // between 1 and 8: on the line
	f(16, 72*ms)          // beyond 8: the line through 1 and 8 (4 ms a row)
	ran(e, c, "a", 2, 13*ms)
	f(1, 12*ms) // its own samples
	// Below the smallest known, on the line through the two nearest, but
	// not under its time scaled down: the line through (8, 40) and (16, 30)
	// would give 45 ms at 4 rows, more than 8 rows take; bounded by 40 ms.
	e2 := NewEstimator[string](c, time.Hour)
	ran(e2, c, "b", 8, 40*ms)
	ran(e2, c, "b", 16, 30*ms)
	if got, _, _ := e2.Service("b", 4); got != 40*ms {
		t.Errorf("below the known sizes on a falling line: %s, want 40ms", got)
	}
}

// late reports whether the worker's check (Fit) answers a lone call of rows
// on k, with left until its deadline, late.
// While freshBatches batches ran in the last freshEvidence, a batch size
// that did not is stale, and one whose batches there were each faster than
// the median of its older ones takes those alone: after an overload's slow
// batches of 4, a light load of single rows at 7 ms is not refused as too
// short for a batch of 4 taking 200 ms (the batch of 4 is estimated from
// the fresh single rows, scaled by rows, or from its own fresh batch). One
// fresh batch fewer, or a fresh batch of 4 as slow as the old ones, keeps
// the overload's batches.
func TestEstimatorForgetsAStaleBatchSize(t *testing.T) {
	for _, c := range []struct {
		fresh          int           // batches of 1 row at 7 ms
		four           time.Duration // a batch of 4 among the fresh ones, if not 0
		typical, bound time.Duration // of a batch of 4
	}{
		{freshBatches, 0, 28 * ms, 28 * ms},
		{freshBatches - 1, 0, 200 * ms, 200 * ms},
		{freshBatches, 200 * ms, 200 * ms, 200 * ms},
		{freshBatches, 30 * ms, 30 * ms, 30 * ms},
	} {
		clock := newFakeClock()
		e := NewEstimator[string](clock, 0)
		for range estimatorSamples {
			ran(e, clock, "a", 4, 200*ms) // the overload
		}
		clock.Advance(1500 * ms)
		if c.four > 0 {
			ran(e, clock, "a", 4, c.four)
		}
		for range c.fresh {
			ran(e, clock, "a", 1, 7*ms)
			clock.Advance(3 * ms)
		}
		typical, bound, _ := e.Service("a", 4)
		v, _ := e.Decide("a", Ahead{Rows: 1, Size: 1, MaxBatch: 4, Replicas: 1}, 150*ms)
		if typical != c.typical || bound != c.bound || (v == Admit) != (c.bound < 150*ms) {
			t.Errorf("%+v: a batch of 4 takes %s (bound %s), a request behind one row with 150 ms left: %v", c, typical, bound, v)
		}
	}
}

func late(e *Estimator[string], k string, rows int, left time.Duration) bool {
	var fate [1]Fate
	return e.Fit(k, []int{rows}, []time.Duration{left}, fate[:]) && fate[0] == Late
}

func TestEstimatorLate(t *testing.T) {
	c := newFakeClock()
	e := NewEstimator[string](c, 0)
	if late(e, "a", 4, 0) {
		t.Error("Late without evidence")
	}
	ran(e, c, "a", 4, 50*ms)
	if !late(e, "a", 4, 49*ms) || late(e, "a", 4, 50*ms) {
		t.Error("a 50 ms batch: want late with 49 ms left, in time with 50 ms")
	}
}

// Fit keeps the whole batch when it ends in time, and otherwise cuts it to
// the size that computes the most rows in time, its calls taken in queue
// order: four calls with 45 ms left miss a 50 ms batch of four, three of
// them make a batch of three (40 ms, between the sizes measured), and the
// fourth goes back to the queue. A call with time to spare is never
// answered late because the cut had no room for it.
func TestEstimatorFitCutsTheBatchToWhatEndsInTime(t *testing.T) {
	c := newFakeClock()
	e := NewEstimator[string](c, 0)
	fate := make([]Fate, 8)
	if e.Fit("a", []int{1, 1}, []time.Duration{ms, ms}, fate) || fate[0] != Compute || fate[1] != Compute {
		t.Error("without evidence: want every call computed and false")
	}
	ran(e, c, "a", 4, 50*ms)
	ran(e, c, "a", 2, 30*ms)
	ran(e, c, "a", 1, 20*ms)
	none := time.Duration(math.MaxInt64)
	const C, L, X = Compute, Later, Late
	for _, tc := range []struct {
		rows []int
		left []time.Duration
		want []Fate
	}{
		{[]int{1, 1, 1, 1}, []time.Duration{50 * ms, 60 * ms, 50 * ms, none}, []Fate{C, C, C, C}},
		{[]int{1, 1, 1, 1}, []time.Duration{45 * ms, 45 * ms, 45 * ms, 45 * ms}, []Fate{C, C, C, L}},
		// The late first call does not hold up the ones behind it.
		{[]int{1, 1, 1, 1}, []time.Duration{10 * ms, 35 * ms, 35 * ms, 35 * ms}, []Fate{X, C, C, L}},
		// In queue order: the first call's row goes in the batch of two,
		// and the second's two rows no longer fit it.
		{[]int{1, 2}, []time.Duration{31 * ms, 31 * ms}, []Fate{C, L}},
		{[]int{1, 1, 1, 1}, []time.Duration{19 * ms, 5 * ms, 0, -ms}, []Fate{X, X, X, X}},
		// Without a deadline, or with a far one, a call is never late.
		{[]int{1, 1, 1}, []time.Duration{none, 25 * ms, 25 * ms}, []Fate{C, X, X}},
		{[]int{1, 1, 1}, []time.Duration{35 * ms, 35 * ms, time.Minute}, []Fate{C, C, L}},
	} {
		if !e.Fit("a", tc.rows, tc.left, fate) || !slices.Equal(fate[:len(tc.rows)], tc.want) {
			t.Errorf("rows %v left %v: %v, want %v", tc.rows, tc.left, fate[:len(tc.rows)], tc.want)
		}
	}
}

func TestUsableHoldsBackATwentiethOfTheBudget(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := Usable(t0.Add(time.Second), t0, t0); got != 950*ms {
		t.Errorf("at arrival, 1 s budget: %s, want 950ms", got)
	}
	if got := Usable(t0.Add(time.Second), t0, t0.Add(500*ms)); got != 450*ms {
		t.Errorf("half-way, 1 s budget: %s, want 450ms", got)
	}
}

// A slowdown that lasts shows first in the newest sample: the bound follows
// it at once, and drops back when the next batch is fast again, so one
// stall holds it for one batch only.
func TestEstimatorBoundFollowsTheNewestSample(t *testing.T) {
	c := newFakeClock()
	e := NewEstimator[string](c, time.Hour)
	for range estimatorSamples {
		ran(e, c, "a", 4, 40*ms)
	}
	ran(e, c, "a", 4, 55*ms)
	if typical, bound, _ := e.Service("a", 4); typical != 40*ms || bound != 55*ms {
		t.Errorf("after a 55 ms batch: median %s, bound %s; want 40ms, 55ms", typical, bound)
	}
	if !late(e, "a", 4, 50*ms) {
		t.Error("50 ms left after a 55 ms batch: want late")
	}
	if v, p := e.Decide("a", Ahead{Rows: 4, Size: 1, MaxBatch: 4, Replicas: 1}, time.Second); v != Admit || p.Service != 55*ms {
		t.Errorf("decide: %v %+v, want admit with its own batch at 55 ms", v, p)
	}
	ran(e, c, "a", 4, 40*ms)
	if _, bound, _ := e.Service("a", 4); bound != 40*ms {
		t.Errorf("after the stall and one 40 ms batch: bound %s, want 40ms (one stall in 16)", bound)
	}
}

// startAfter against the dumb reference: hand each batch to the replica
// that frees first, with a heap.
func TestStartAfterMatchesGreedyHandout(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		free := make([]time.Duration, 1+rng.IntN(6))
		for i := range free {
			if rng.IntN(3) > 0 {
				free[i] = time.Duration(rng.IntN(100)) * ms
			}
		}
		before, bt := rng.IntN(30), time.Duration(1+rng.IntN(60))*ms
		h := durHeap(append([]time.Duration(nil), free...))
		heap.Init(&h)
		for range before {
			f := heap.Pop(&h).(time.Duration)
			heap.Push(&h, f+bt)
		}
		if got, want := startAfter(free, before, bt), h[0]; got != want {
			t.Fatalf("startAfter(%v, %d, %s) = %s, want %s", free, before, bt, got, want)
		}
	}
}

type durHeap []time.Duration

func (h durHeap) Len() int           { return len(h) }
func (h durHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h durHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *durHeap) Push(x any)        { *h = append(*h, x.(time.Duration)) }
func (h *durHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Two replicas, one busy for 30 ms more, one idle; batches of 50 ms.
func TestEstimatorSpreadsTheQueueOverReplicas(t *testing.T) {
	c := newFakeClock()
	e := NewEstimator[string](c, 0)
	ran(e, c, "a", 2, 50*ms)
	slot := e.Begin("a", 2)
	c.Advance(20 * ms)
	// 4 rows ahead: 2 batches; they start at 0 and 30 ms, the request's at 50.
	p, _ := e.Predict("a", Ahead{Rows: 4, Size: 1, MaxBatch: 2, Replicas: 2})
	if p.Wait != 50*ms || p.Service != 50*ms {
		t.Errorf("got %+v, want 50 ms wait, 50 ms batch", p)
	}
	e.End(slot, true)
}

func TestEstimatorSlotsAreReused(t *testing.T) {
	c := newFakeClock()
	e := NewEstimator[string](c, 0)
	a, b := e.Begin("a", 1), e.Begin("a", 1)
	e.End(a, true)
	if got := e.Begin("a", 1); got != a {
		t.Errorf("Begin after End got slot %d, want the freed %d", got, a)
	}
	defer func() {
		if recover() == nil {
			t.Error("End of a slot twice did not panic")
		}
	}()
	e.End(b, true)
	e.End(b, true)
}
