package batcher

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Timing tests run inside synctest bubbles, where time.Now, time.Sleep and
// time.AfterFunc use virtual time that advances only when every goroutine in
// the bubble is blocked. "Exactly MaxWait" is then exact, and synctest.Wait
// replaces sleeping while another goroutine gets somewhere.

func newBatcher(t *testing.T, cfg Config, opts ...Option) *Batcher[int] {
	t.Helper()
	b, err := New[int](cfg, opts...)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	// Close wakes Next calls still waiting, so that their goroutines exit
	// before the bubble ends; Drain stops the timer.
	t.Cleanup(func() {
		b.Close()
		b.Drain()
	})
	return b
}

func submit(t *testing.T, b *Batcher[int], v, size int) {
	t.Helper()
	if err := b.Submit(v, size, time.Time{}); err != nil {
		t.Fatalf("Submit(%d, %d): %v", v, size, err)
	}
}

type result struct {
	batch []int
	err   error
	at    time.Time
}

// goNext calls b.Next once on a new goroutine and delivers what it returned.
func goNext(ctx context.Context, b *Batcher[int]) <-chan result {
	ch := make(chan result, 1)
	go func() {
		batch, err := b.Next(ctx, nil)
		ch <- result{batch: batch, err: err, at: time.Now()}
	}()
	return ch
}

// returned waits until the bubble is idle and returns what the Next call
// behind ch returned, failing if it is still waiting.
func returned(t *testing.T, ch <-chan result) result {
	t.Helper()
	synctest.Wait()
	select {
	case r := <-ch:
		return r
	default:
		t.Fatal("Next is still waiting; want it to have returned")
		return result{}
	}
}

// waiting waits until the bubble is idle and fails if the Next call behind ch
// has returned.
func waiting(t *testing.T, ch <-chan result) {
	t.Helper()
	synctest.Wait()
	select {
	case r := <-ch:
		t.Fatalf("Next returned %v, %v; want it still waiting", r.batch, r.err)
	default:
	}
}

// batchIs fails unless r is a batch equal to want, returned at time at.
func batchIs(t *testing.T, r result, want []int, at time.Time) {
	t.Helper()
	if r.err != nil {
		t.Fatalf("Next error: %v; want batch %v", r.err, want)
	}
	if !slices.Equal(r.batch, want) {
		t.Fatalf("Next returned %v; want %v", r.batch, want)
	}
	if !r.at.Equal(at) {
		t.Fatalf("Next returned at %v; want at %v", r.at, at)
	}
}

func TestConfigValidate(t *testing.T) {
	f := func(cfg Config, wantErr string) {
		t.Helper()
		err := cfg.Validate()
		if wantErr == "" {
			if err != nil {
				t.Fatalf("Validate(%+v): %v; want nil", cfg, err)
			}
			return
		}
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("Validate(%+v): %v; want an error containing %q", cfg, err, wantErr)
		}
	}
	f(Config{MaxBatch: 1, MaxWait: 2 * time.Millisecond, MaxQueue: 1024}, "")
	f(Config{MaxBatch: 8, MaxWait: 0, MaxQueue: 8}, "")
	f(Config{MaxBatch: 0, MaxQueue: 8}, "--batch.max-batch must be at least 1, got 0")
	f(Config{MaxBatch: 1, MaxWait: -time.Millisecond, MaxQueue: 8}, "--batch.max-wait must not be negative")
	f(Config{MaxBatch: 1, MaxQueue: 0}, "--batch.max-queue must be at least 1, got 0")
	f(Config{MaxBatch: 16, MaxQueue: 8}, "--batch.max-queue (8) must be at least --batch.max-batch (16)")
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	b, err := New[int](Config{})
	if err == nil || b != nil {
		t.Fatalf("New(Config{}) = %v, %v; want nil and an error", b, err)
	}
}

func TestNewRejectsOnExpireOfAnotherItemType(t *testing.T) {
	_, err := New[int](Config{MaxBatch: 1, MaxQueue: 1}, OnExpire(func(string, error) {}))
	if err == nil || !strings.Contains(err.Error(), "want func(int, error)") {
		t.Fatalf("New with OnExpire(func(string, error)) for Batcher[int]: %v; want a type mismatch error", err)
	}
}

func TestSubmitRejectsNonPositiveSize(t *testing.T) {
	b := newBatcher(t, Config{MaxBatch: 1, MaxQueue: 1})
	for _, size := range []int{0, -1} {
		if err := b.Submit(1, size, time.Time{}); err == nil {
			t.Fatalf("Submit with size %d: nil error; want one", size)
		}
	}
	if n := b.Len(); n != 0 {
		t.Fatalf("Len() = %d after rejected Submits; want 0", n)
	}
}

func TestFullBatchIsReturnedImmediately(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBatcher(t, Config{MaxBatch: 3, MaxWait: time.Hour, MaxQueue: 16})
		start := time.Now()

		// Queued before Next is called.
		submit(t, b, 1, 1)
		submit(t, b, 2, 1)
		submit(t, b, 3, 1)
		batchIs(t, returned(t, goNext(t.Context(), b)), []int{1, 2, 3}, start)

		// Filled while Next waits.
		ch := goNext(t.Context(), b)
		submit(t, b, 4, 2)
		waiting(t, ch)
		submit(t, b, 5, 1)
		batchIs(t, returned(t, ch), []int{4, 5}, start)
	})
}

func TestPartialBatchIsReturnedAfterExactlyMaxWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const maxWait = 2 * time.Millisecond
		b := newBatcher(t, Config{MaxBatch: 4, MaxWait: maxWait, MaxQueue: 16})
		ch := goNext(t.Context(), b)
		start := time.Now()
		submit(t, b, 1, 1)
		time.Sleep(maxWait / 2)
		submit(t, b, 2, 2)
		time.Sleep(maxWait/2 - time.Nanosecond)
		waiting(t, ch)
		time.Sleep(time.Nanosecond)
		batchIs(t, returned(t, ch), []int{1, 2}, start.Add(maxWait))
	})
}

func TestMaxWaitIsMeasuredFromSubmitNotFromNext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const maxWait = 10 * time.Millisecond
		b := newBatcher(t, Config{MaxBatch: 4, MaxWait: maxWait, MaxQueue: 16})
		start := time.Now()
		submit(t, b, 1, 1)
		time.Sleep(7 * time.Millisecond) // every replica busy
		ch := goNext(t.Context(), b)
		waiting(t, ch)
		time.Sleep(3 * time.Millisecond)
		batchIs(t, returned(t, ch), []int{1}, start.Add(maxWait))

		// An item that has already waited MaxWait goes at once.
		submit(t, b, 2, 1)
		time.Sleep(time.Second)
		batchIs(t, returned(t, goNext(t.Context(), b)), []int{2}, start.Add(maxWait+time.Second))
	})
}

func TestZeroMaxWaitSendsWhatIsQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBatcher(t, Config{MaxBatch: 8, MaxWait: 0, MaxQueue: 16})
		start := time.Now()
		submit(t, b, 1, 1)
		submit(t, b, 2, 3)
		batchIs(t, returned(t, goNext(t.Context(), b)), []int{1, 2}, start)

		ch := goNext(t.Context(), b)
		waiting(t, ch) // an empty queue is never a batch
		submit(t, b, 3, 1)
		batchIs(t, returned(t, ch), []int{3}, start)
	})
}

func TestOversizeItemFormsABatchAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const maxWait = time.Millisecond
		b := newBatcher(t, Config{MaxBatch: 4, MaxWait: maxWait, MaxQueue: 64})
		start := time.Now()
		submit(t, b, 1, 2)
		submit(t, b, 2, 9) // bigger than MaxBatch
		submit(t, b, 3, 1)
		// The queue holds more than MaxBatch rows, so batches go at once
		// until it does not; item 3 may not jump ahead into item 1's batch.
		batchIs(t, returned(t, goNext(t.Context(), b)), []int{1}, start)
		batchIs(t, returned(t, goNext(t.Context(), b)), []int{2}, start)
		ch := goNext(t.Context(), b)
		waiting(t, ch)
		time.Sleep(maxWait)
		batchIs(t, returned(t, ch), []int{3}, start.Add(maxWait))

		// Alone in the queue, it goes at once too.
		submit(t, b, 4, 5)
		batchIs(t, returned(t, goNext(t.Context(), b)), []int{4}, start.Add(maxWait))
	})
}

func TestBatchesAreFIFOAndWithinMaxBatch(t *testing.T) {
	const maxBatch = 5
	b := newBatcher(t, Config{MaxBatch: maxBatch, MaxWait: 0, MaxQueue: 1 << 16})
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := make(map[int]int)
	var want []int
	for v := range 1000 {
		size := 1 + rng.IntN(maxBatch+2) // some bigger than MaxBatch
		sizes[v] = size
		want = append(want, v)
		submit(t, b, v, size)
	}
	var got, batch []int
	for len(got) < len(want) {
		var err error
		batch, err = b.Next(context.Background(), batch)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		rows := 0
		for _, v := range batch {
			rows += sizes[v]
		}
		if rows > maxBatch && len(batch) > 1 {
			t.Fatalf("batch %v has %d rows; want at most %d, or a single item", batch, rows, maxBatch)
		}
		got = append(got, batch...)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("items came out in the order %v; want Submit order", got)
	}
	if n := b.Len(); n != 0 {
		t.Fatalf("Len() = %d after taking everything; want 0", n)
	}
}

func TestConcurrentNextCallersGetDisjointBatchesInCallOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBatcher(t, Config{MaxBatch: 2, MaxWait: time.Hour, MaxQueue: 16})
		start := time.Now()
		var chs []<-chan result
		for range 3 {
			chs = append(chs, goNext(t.Context(), b))
			synctest.Wait() // fix the order in which they call
		}
		for v := range 6 {
			submit(t, b, v, 1)
		}
		batchIs(t, returned(t, chs[0]), []int{0, 1}, start)
		batchIs(t, returned(t, chs[1]), []int{2, 3}, start)
		batchIs(t, returned(t, chs[2]), []int{4, 5}, start)
	})
}

func TestQueueFullRejectsAndRecovers(t *testing.T) {
	b := newBatcher(t, Config{MaxBatch: 2, MaxWait: 0, MaxQueue: 4})
	submit(t, b, 1, 3)
	err := b.Submit(2, 2, time.Time{})
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Submit past MaxQueue: %v; want ErrQueueFull", err)
	}
	if want := "queue full (4 items); raise --batch.max-queue or add replicas"; err.Error() != want {
		t.Fatalf("ErrQueueFull message = %q; want %q", err, want)
	}
	submit(t, b, 3, 1) // exactly MaxQueue
	if err := b.Submit(4, 1, time.Time{}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Submit to a queue at MaxQueue: %v; want ErrQueueFull", err)
	}
	if n := b.Len(); n != 4 {
		t.Fatalf("Len() = %d; want 4", n)
	}

	batch, err := b.Next(context.Background(), nil)
	if err != nil || !slices.Equal(batch, []int{1}) {
		t.Fatalf("Next = %v, %v; want [1], nil", batch, err)
	}
	submit(t, b, 5, 2) // room again
	if s := b.Stats(); s.Rejected != 2 || s.Submitted != 3 || s.QueuedRows != 3 || s.QueuedItems != 2 {
		t.Fatalf("Stats() = %+v; want 2 rejected, 3 submitted, 2 items of 3 rows queued", s)
	}
}

func TestItemBiggerThanMaxQueueIsAcceptedOnlyIntoAnEmptyQueue(t *testing.T) {
	b := newBatcher(t, Config{MaxBatch: 2, MaxWait: 0, MaxQueue: 4})
	submit(t, b, 1, 1)
	if err := b.Submit(2, 10, time.Time{}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Submit of 10 rows to a non-empty queue with MaxQueue 4: %v; want ErrQueueFull", err)
	}
	if _, err := b.Next(context.Background(), nil); err != nil {
		t.Fatalf("Next: %v", err)
	}
	submit(t, b, 3, 10)
	if err := b.Submit(4, 1, time.Time{}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Submit behind an oversize item: %v; want ErrQueueFull", err)
	}
	batch, err := b.Next(context.Background(), nil)
	if err != nil || !slices.Equal(batch, []int{3}) {
		t.Fatalf("Next = %v, %v; want [3], nil", batch, err)
	}
}

func TestShrinkingMaxQueueKeepsQueuedItems(t *testing.T) {
	b := newBatcher(t, Config{MaxBatch: 2, MaxWait: 0, MaxQueue: 8})
	for v := range 6 {
		submit(t, b, v, 1)
	}
	if err := b.SetConfig(Config{MaxBatch: 2, MaxWait: 0, MaxQueue: 3}); err != nil {
		t.Fatalf("SetConfig: %v", err)
	}
	if n := b.Len(); n != 6 {
		t.Fatalf("Len() = %d after shrinking MaxQueue; want 6, nothing dropped", n)
	}
	err := b.Submit(6, 1, time.Time{})
	if !errors.Is(err, ErrQueueFull) || !strings.Contains(err.Error(), "(3 items)") {
		t.Fatalf("Submit over the new MaxQueue: %v; want ErrQueueFull naming 3 items", err)
	}
	var got []int
	for b.Len() > 2 {
		batch, err := b.Next(context.Background(), nil)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		got = append(got, batch...)
	}
	if !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Fatalf("Next returned %v; want [0 1 2 3]", got)
	}
	submit(t, b, 7, 1)
}

func TestSubmitRejectsPassedDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		b := newBatcher(t, Config{MaxBatch: 1, MaxQueue: 4}, OnExpire(func(int, error) { calls.Add(1) }))
		for _, dl := range []time.Time{time.Now(), time.Now().Add(-time.Second)} {
			if err := b.Submit(1, 1, dl); !errors.Is(err, ErrExpired) {
				t.Fatalf("Submit with deadline %v at %v: %v; want ErrExpired", dl, time.Now(), err)
			}
		}
		synctest.Wait()
		if n, s := calls.Load(), b.Stats(); n != 0 || s.Submitted != 0 || s.Expired != 0 {
			t.Fatalf("after two refused Submits: %d callbacks, %+v; want no callback and nothing counted", n, s)
		}
	})
}

// expiry records OnExpire calls.
type expiry struct {
	mu sync.Mutex
	vs []int
	at []time.Time
}

func (e *expiry) record(v int, err error) {
	if !errors.Is(err, ErrExpired) {
		panic("OnExpire called with " + err.Error())
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.vs = append(e.vs, v)
	e.at = append(e.at, time.Now())
}

func (e *expiry) check(t *testing.T, want []int, at []time.Time) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if !slices.Equal(e.vs, want) {
		t.Fatalf("OnExpire got %v; want %v", e.vs, want)
	}
	if at != nil && !slices.EqualFunc(e.at, at, time.Time.Equal) {
		t.Fatalf("OnExpire called at %v; want at %v", e.at, at)
	}
}

func TestExpiredItemIsAnsweredAtItsDeadlineWhileNoWorkerWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var exp expiry
		b := newBatcher(t, Config{MaxBatch: 8, MaxWait: time.Second, MaxQueue: 16}, OnExpire(exp.record))
		start := time.Now()
		dl1, dl3 := start.Add(300*time.Millisecond), start.Add(100*time.Millisecond)
		if err := b.Submit(1, 1, dl1); err != nil {
			t.Fatal(err)
		}
		submit(t, b, 2, 1)
		if err := b.Submit(3, 2, dl3); err != nil { // earlier deadline, later Submit
			t.Fatal(err)
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		exp.check(t, []int{3, 1}, []time.Time{dl3, dl1})
		if s := b.Stats(); s.Expired != 2 || s.QueuedItems != 1 || s.QueuedRows != 1 {
			t.Fatalf("Stats() = %+v; want 2 expired and 1 item of 1 row queued", s)
		}
		batchIs(t, returned(t, goNext(t.Context(), b)), []int{2}, start.Add(time.Hour))
	})
}

func TestExpiredItemIsAnsweredWhileTheWorkerWaitsForABatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var exp expiry
		b := newBatcher(t, Config{MaxBatch: 8, MaxWait: time.Second, MaxQueue: 16}, OnExpire(exp.record))
		start := time.Now()
		ch := goNext(t.Context(), b)
		dl := start.Add(10 * time.Millisecond)
		if err := b.Submit(1, 1, dl); err != nil {
			t.Fatal(err)
		}
		submit(t, b, 2, 1)
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		exp.check(t, []int{1}, []time.Time{dl})
		waiting(t, ch)
		// Item 2's MaxWait counts from its own Submit.
		time.Sleep(time.Second - 10*time.Millisecond)
		batchIs(t, returned(t, ch), []int{2}, start.Add(time.Second))
	})
}

// manualClock is a Clock whose time moves and whose timers fire only when
// the test says, the way a discrete-event simulator drives the Batcher. Fire
// runs due timers on the test's goroutine, never inside AfterFunc or Reset,
// as the Clock contract requires.
type manualClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*manualTimer
}

type manualTimer struct {
	c     *manualClock
	when  time.Time
	f     func()
	armed bool
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &manualTimer{c: c, when: c.now.Add(d), f: f, armed: true}
	c.timers = append(c.timers, t)
	return t
}

func (t *manualTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.armed
	t.armed = false
	return was
}

func (t *manualTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.armed
	t.when, t.armed = t.c.now.Add(d), true
	return was
}

// Advance moves time forward by d without firing anything.
func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Armed returns when the earliest armed timer will fire.
func (c *manualClock) Armed() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var when time.Time
	ok := false
	for _, t := range c.timers {
		if t.armed && (!ok || t.when.Before(when)) {
			when, ok = t.when, true
		}
	}
	return when, ok
}

// Fire runs the timers that are due, earliest first, including any that a
// callback arms for a time already due, up to limit firings. It returns how
// many ran.
func (c *manualClock) Fire(limit int) int {
	n := 0
	for ; n < limit; n++ {
		when, ok := c.Armed()
		if !ok || when.After(c.Now()) {
			break
		}
		c.mu.Lock()
		var f func()
		for _, t := range c.timers {
			if t.armed && t.when.Equal(when) {
				t.armed, f = false, t.f
				break
			}
		}
		c.mu.Unlock()
		f()
	}
	return n
}

func TestNextNeverReturnsAnExpiredItem(t *testing.T) {
	clock := &manualClock{now: time.Unix(1e9, 0)} // its timers never fire here
	var exp expiry
	b := newBatcher(t, Config{MaxBatch: 3, MaxWait: 0, MaxQueue: 16}, WithClock(clock), OnExpire(exp.record))
	start := clock.Now()
	for v := range 6 {
		if err := b.Submit(v, 1, start.Add(time.Duration(v)*time.Millisecond+time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(3 * time.Millisecond) // items 0, 1, 2 are due; the timer is late
	batch, err := b.Next(context.Background(), nil)
	if err != nil || !slices.Equal(batch, []int{3, 4, 5}) {
		t.Fatalf("Next = %v, %v; want [3 4 5], nil", batch, err)
	}
	exp.check(t, []int{0, 1, 2}, nil)

	// Drain, too, hands due items to OnExpire rather than returning them.
	if err := b.Submit(6, 1, clock.Now().Add(time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	submit(t, b, 7, 1)
	clock.Advance(time.Millisecond)
	if got := b.Drain(); !slices.Equal(got, []int{7}) {
		t.Fatalf("Drain() = %v; want [7]", got)
	}
	exp.check(t, []int{0, 1, 2, 6}, nil)
}

func TestExpiryWithoutCallbackDropsAndCounts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBatcher(t, Config{MaxBatch: 2, MaxWait: time.Second, MaxQueue: 16})
		if err := b.Submit(1, 1, time.Now().Add(time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if s := b.Stats(); s.Expired != 1 || s.QueuedItems != 0 || s.QueuedRows != 0 {
			t.Fatalf("Stats() = %+v; want 1 expired and nothing queued", s)
		}
	})
}

func TestSetConfigLoweringMaxWaitWakesTheWaitingWorker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBatcher(t, Config{MaxBatch: 8, MaxWait: time.Second, MaxQueue: 16})
		start := time.Now()
		ch := goNext(t.Context(), b)
		submit(t, b, 1, 1)
		time.Sleep(5 * time.Millisecond)
		submit(t, b, 2, 1)
		waiting(t, ch)
		if err := b.SetConfig(Config{MaxBatch: 8, MaxWait: 20 * time.Millisecond, MaxQueue: 16}); err != nil {
			t.Fatal(err)
		}
		waiting(t, ch)
		time.Sleep(15 * time.Millisecond)
		// 20ms after item 1's Submit, not a second.
		batchIs(t, returned(t, ch), []int{1, 2}, start.Add(20*time.Millisecond))

		// Lowered below what the oldest item has already waited: at once.
		ch = goNext(t.Context(), b)
		submit(t, b, 3, 1)
		time.Sleep(10 * time.Millisecond)
		waiting(t, ch)
		if err := b.SetConfig(Config{MaxBatch: 8, MaxWait: time.Millisecond, MaxQueue: 16}); err != nil {
			t.Fatal(err)
		}
		batchIs(t, returned(t, ch), []int{3}, start.Add(30*time.Millisecond))
	})
}

func TestSetConfigChangingMaxBatchTakesEffectForTheWaitingWorker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBatcher(t, Config{MaxBatch: 2, MaxWait: time.Second, MaxQueue: 16})
		start := time.Now()
		ch := goNext(t.Context(), b)
		submit(t, b, 1, 1)
		waiting(t, ch)

		// Raised: two items no longer make a batch, three do.
		if err := b.SetConfig(Config{MaxBatch: 3, MaxWait: time.Second, MaxQueue: 16}); err != nil {
			t.Fatal(err)
		}
		submit(t, b, 2, 1)
		waiting(t, ch)
		submit(t, b, 3, 1)
		batchIs(t, returned(t, ch), []int{1, 2, 3}, start)

		// Lowered below what is queued: a batch goes at once.
		ch = goNext(t.Context(), b)
		submit(t, b, 4, 1)
		submit(t, b, 5, 1)
		waiting(t, ch)
		if err := b.SetConfig(Config{MaxBatch: 1, MaxWait: time.Second, MaxQueue: 16}); err != nil {
			t.Fatal(err)
		}
		batchIs(t, returned(t, ch), []int{4}, start)
		if got := b.Config(); got.MaxBatch != 1 {
			t.Fatalf("Config().MaxBatch = %d; want 1", got.MaxBatch)
		}
	})
}

func TestSetConfigRejectsInvalidConfig(t *testing.T) {
	cfg := Config{MaxBatch: 2, MaxWait: time.Millisecond, MaxQueue: 4}
	b := newBatcher(t, cfg)
	if err := b.SetConfig(Config{MaxBatch: 0, MaxQueue: 4}); err == nil {
		t.Fatal("SetConfig with MaxBatch 0: nil error; want one")
	}
	if got := b.Config(); got != cfg {
		t.Fatalf("Config() = %+v after a rejected SetConfig; want %+v", got, cfg)
	}
}

func TestCloseWakesWaitingWorkers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBatcher(t, Config{MaxBatch: 4, MaxWait: time.Hour, MaxQueue: 16})
		start := time.Now()
		var chs []<-chan result
		for range 3 {
			chs = append(chs, goNext(t.Context(), b))
		}
		for _, ch := range chs {
			waiting(t, ch)
		}
		if err := b.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		for _, ch := range chs {
			r := returned(t, ch)
			if !errors.Is(r.err, ErrClosed) || len(r.batch) != 0 || !r.at.Equal(start) {
				t.Fatalf("Next after Close = %v, %v at %v; want ErrClosed at once", r.batch, r.err, r.at)
			}
		}
		if err := b.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
}

func TestCloseHandsOutTheRestWithoutWaitingThenErrClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBatcher(t, Config{MaxBatch: 2, MaxWait: time.Hour, MaxQueue: 16})
		start := time.Now()
		ch := goNext(t.Context(), b)
		submit(t, b, 1, 1)
		waiting(t, ch)
		b.Close()
		if err := b.Submit(9, 1, time.Time{}); !errors.Is(err, ErrClosed) {
			t.Fatalf("Submit after Close: %v; want ErrClosed", err)
		}
		batchIs(t, returned(t, ch), []int{1}, start)
		r := returned(t, goNext(t.Context(), b))
		if !errors.Is(r.err, ErrClosed) {
			t.Fatalf("Next on a closed, empty Batcher: %v, %v; want ErrClosed", r.batch, r.err)
		}
	})
}

func TestDrainReturnsEverythingQueued(t *testing.T) {
	b := newBatcher(t, Config{MaxBatch: 2, MaxWait: time.Hour, MaxQueue: 16})
	for v := range 5 {
		submit(t, b, v, 1+v%2)
	}
	b.Close()
	if got := b.Drain(); !slices.Equal(got, []int{0, 1, 2, 3, 4}) {
		t.Fatalf("Drain() = %v; want [0 1 2 3 4]", got)
	}
	if got := b.Drain(); len(got) != 0 {
		t.Fatalf("second Drain() = %v; want nothing", got)
	}
	if _, err := b.Next(context.Background(), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Drain: %v; want ErrClosed", err)
	}
	if s := b.Stats(); s.Drained != 5 || s.QueuedRows != 0 || b.Len() != 0 {
		t.Fatalf("Stats() = %+v; want 5 drained and nothing queued", s)
	}
}

func TestNextReturnsCtxErrAndLeavesTheQueueAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBatcher(t, Config{MaxBatch: 4, MaxWait: time.Hour, MaxQueue: 16})
		submit(t, b, 1, 1)

		// One caller waits for the batch to form, the other for its turn.
		ctx1, cancel1 := context.WithCancel(t.Context())
		ch1 := goNext(ctx1, b)
		synctest.Wait()
		ctx2, cancel2 := context.WithTimeout(t.Context(), time.Minute)
		defer cancel2()
		ch2 := goNext(ctx2, b)

		time.Sleep(time.Minute)
		r := returned(t, ch2)
		if !errors.Is(r.err, context.DeadlineExceeded) || len(r.batch) != 0 {
			t.Fatalf("Next waiting for its turn, ctx timed out: %v, %v; want DeadlineExceeded", r.batch, r.err)
		}
		waiting(t, ch1)
		cancel1()
		r = returned(t, ch1)
		if !errors.Is(r.err, context.Canceled) || len(r.batch) != 0 {
			t.Fatalf("Next waiting for a batch, ctx cancelled: %v, %v; want Canceled", r.batch, r.err)
		}
		if n := b.Len(); n != 1 {
			t.Fatalf("Len() = %d after cancelled Next calls; want 1", n)
		}

		// A ctx that is already done wins over a ready batch.
		submit(t, b, 2, 3)
		if batch, err := b.Next(ctx1, nil); !errors.Is(err, context.Canceled) || len(batch) != 0 {
			t.Fatalf("Next with a cancelled ctx = %v, %v; want Canceled", batch, err)
		}
		start := time.Now()
		batchIs(t, returned(t, goNext(t.Context(), b)), []int{1, 2}, start)
	})
}

// accounting runs producers and consumers against b and checks that every
// item submitted was returned by Next exactly once, expired exactly once,
// drained exactly once, or refused by Submit. virtual says whether it runs in
// a synctest bubble, where it also checks the timing of every expiry.
func accounting(t *testing.T, virtual bool) {
	const (
		producers = 4
		consumers = 3
		perProd   = 500
		total     = producers * perProd
		maxBatch  = 6
	)
	cfg := Config{MaxBatch: maxBatch, MaxWait: 200 * time.Microsecond, MaxQueue: 48}
	var (
		returned, expired, drained, refused [total]atomic.Int32
		sizes, deadlines                    [total]atomic.Int64 // deadlines in UnixNano, 0 if none
		lateExpiry, lateBatch               atomic.Int32
	)
	b := newBatcher(t, cfg, OnExpire(func(v int, err error) {
		if !errors.Is(err, ErrExpired) {
			t.Errorf("OnExpire(%d, %v); want ErrExpired", v, err)
		}
		expired[v].Add(1)
		if virtual && time.Now().UnixNano() != deadlines[v].Load() {
			lateExpiry.Add(1) // the timer should fire exactly at the deadline
		}
	}))

	var prodWG, consWG sync.WaitGroup
	for p := range producers {
		prodWG.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(p), 7))
			for i := range perProd {
				v := p*perProd + i
				size := 1 + rng.IntN(maxBatch+1)
				var dl time.Time
				if rng.IntN(3) == 0 {
					dl = time.Now().Add(time.Duration(1+rng.IntN(1000)) * time.Microsecond)
					deadlines[v].Store(dl.UnixNano())
				}
				sizes[v].Store(int64(size))
				err := b.Submit(v, size, dl)
				for try := 0; !virtual && errors.Is(err, ErrQueueFull) && try < 100; try++ {
					runtime.Gosched() // let a consumer in, as a client's retry would
					err = b.Submit(v, size, dl)
				}
				if err != nil {
					if !errors.Is(err, ErrQueueFull) && !errors.Is(err, ErrExpired) {
						t.Errorf("Submit(%d): %v", v, err)
					}
					refused[v].Add(1)
				}
				if virtual {
					time.Sleep(time.Duration(rng.IntN(100)) * time.Microsecond)
				}
			}
		})
	}
	for c := range consumers {
		consWG.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 9))
			var batch []int
			for {
				var err error
				batch, err = b.Next(context.Background(), batch)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Next: %v", err)
					return
				}
				rows := 0
				for _, v := range batch {
					returned[v].Add(1)
					rows += int(sizes[v].Load())
					if dl := deadlines[v].Load(); dl != 0 && time.Now().UnixNano() >= dl && virtual {
						lateBatch.Add(1)
					}
				}
				if len(batch) == 0 || rows > maxBatch && len(batch) > 1 {
					t.Errorf("batch %v has %d rows; want 1 to %d, or a single item", batch, rows, maxBatch)
				}
				if virtual {
					time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond) // run the model
				}
			}
		})
	}
	prodWG.Wait()
	b.Close()
	for _, v := range b.Drain() {
		drained[v].Add(1)
	}
	if virtual {
		consWG.Wait() // a hang is a deadlock, which synctest reports
	} else {
		done := make(chan struct{})
		go func() { consWG.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Fatal("consumers still in Next a minute after Close and Drain")
		}
	}

	var nReturned, nExpired, nDrained, nRefused int
	for v := range total {
		r, e, d, f := returned[v].Load(), expired[v].Load(), drained[v].Load(), refused[v].Load()
		if r+e+d+f != 1 {
			t.Fatalf("item %d: returned %d, expired %d, drained %d, refused %d times; want exactly one in all", v, r, e, d, f)
		}
		nReturned += int(r)
		nExpired += int(e)
		nDrained += int(d)
		nRefused += int(f)
	}
	s := b.Stats()
	if s.Batched != uint64(nReturned) || s.Expired != uint64(nExpired) || s.Drained != uint64(nDrained) ||
		s.Submitted != uint64(total-nRefused) || s.QueuedItems != 0 {
		t.Fatalf("Stats() = %+v; want %d batched, %d expired, %d drained, %d submitted, nothing queued",
			s, nReturned, nExpired, nDrained, total-nRefused)
	}
	if n := lateExpiry.Load(); n != 0 {
		t.Fatalf("%d items expired later than their deadline", n)
	}
	if n := lateBatch.Load(); n != 0 {
		t.Fatalf("%d items were returned by Next at or after their deadline", n)
	}
	t.Logf("%d returned in %d batches, %d expired, %d drained, %d refused",
		nReturned, s.Batches, nExpired, nDrained, nRefused)
	if virtual && (nReturned == 0 || nExpired == 0 || nRefused == 0) {
		t.Fatalf("the run did not exercise every path; tune the test")
	}
}

func TestConcurrentUseAccountsForEveryItem(t *testing.T) {
	t.Run("virtual time", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) { accounting(t, true) })
	})
	t.Run("real time", func(t *testing.T) { accounting(t, false) })
}

func TestTimerIsArmedForTheNextEventOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const maxWait = 10 * time.Millisecond
		clock := &manualClock{now: time.Unix(1e9, 0)}
		var exp expiry
		b := newBatcher(t, Config{MaxBatch: 8, MaxWait: maxWait, MaxQueue: 16}, WithClock(clock), OnExpire(exp.record))
		start := clock.Now()
		armedAt := func(want time.Time) {
			t.Helper()
			if when, ok := clock.Armed(); !ok || !when.Equal(want) {
				t.Fatalf("timer armed for %v (armed %v); want %v", when.Sub(start), ok, want.Sub(start))
			}
		}

		// Nobody waits for a batch, so only the deadline needs the timer.
		dl := start.Add(time.Second)
		if err := b.Submit(1, 1, dl); err != nil {
			t.Fatal(err)
		}
		armedAt(dl)

		// A waiting worker brings the oldest item's MaxWait forward.
		ch := goNext(t.Context(), b)
		synctest.Wait()
		armedAt(start.Add(maxWait))

		// At MaxWait the timer wakes the worker, and must not re-arm for
		// that moment again: it would fire in a loop until the worker ran.
		clock.Advance(maxWait)
		if n := clock.Fire(10); n != 1 {
			t.Fatalf("%d timer firings at MaxWait; want 1", n)
		}
		if when, ok := clock.Armed(); ok && !when.After(clock.Now()) {
			t.Fatalf("timer re-armed for %v, which is not in the future", when.Sub(start))
		}
		batchIs(t, returned(t, ch), []int{1}, time.Now())

		// The queue is empty; a spurious firing for item 1's deadline finds
		// nothing to do.
		clock.Advance(time.Second)
		clock.Fire(10)
		exp.check(t, nil, nil)

		// Deadlines that only grow never move the timer earlier than needed.
		if err := b.Submit(2, 1, clock.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		armedAt(clock.Now().Add(time.Second))
		if err := b.Submit(3, 1, clock.Now().Add(2*time.Second)); err != nil {
			t.Fatal(err)
		}
		armedAt(clock.Now().Add(time.Second))
		clock.Advance(time.Second)
		if n := clock.Fire(10); n != 1 {
			t.Fatalf("%d timer firings at the first deadline; want 1", n)
		}
		exp.check(t, []int{2}, nil)
		armedAt(clock.Now().Add(time.Second))
	})
}

func TestRequeuedBatchComesBackFirstInOrderAndStillExpires(t *testing.T) {
	clock := &manualClock{now: time.Unix(1e9, 0)} // its timers never fire here
	var exp expiry
	b := newBatcher(t, Config{MaxBatch: 2, MaxWait: 0, MaxQueue: 16}, WithClock(clock), OnExpire(exp.record))
	start := clock.Now()
	for v := range 4 {
		if err := b.Submit(v, 1, start.Add(time.Duration(v+1)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	batch, err := b.Next(context.Background(), nil)
	if err != nil || !slices.Equal(batch, []int{0, 1}) {
		t.Fatalf("Next = %v, %v; want [0 1], nil", batch, err)
	}
	// The consumer cannot run it: back it goes, newest first.
	for i := len(batch) - 1; i >= 0; i-- {
		v := batch[i]
		if err := b.Requeue(v, 1, start, start.Add(time.Duration(v+1)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.Stats(); got.QueuedItems != 4 || got.Batched != 0 {
		t.Fatalf("after Requeue: %+v; want 4 queued, 0 batched", got)
	}
	clock.Advance(time.Millisecond) // item 0 is due
	batch, err = b.Next(context.Background(), batch)
	if err != nil || !slices.Equal(batch, []int{1, 2}) {
		t.Fatalf("Next = %v, %v; want [1 2], nil", batch, err)
	}
	exp.check(t, []int{0}, nil)
	b.Close()
	if err := b.Requeue(1, 1, start, time.Time{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Requeue after Close: %v; want ErrClosed", err)
	}
}
