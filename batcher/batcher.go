package batcher

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sync"
	"time"
)

// ErrQueueFull is returned, wrapped in a message that names the limit and the
// flag to raise, by Submit when the item would push the queued rows past
// MaxQueue. The dataplane answers it with 429.
var ErrQueueFull = errors.New("batcher: queue full")

// ErrClosed is returned by Submit after Close, and by Next once the Batcher is
// closed and its queue is empty.
var ErrClosed = errors.New("batcher: closed")

// ErrExpired is passed to the OnExpire callback with an item whose deadline
// passed while it was queued, and returned by Submit for an item whose
// deadline has already passed. The dataplane answers it with 504.
var ErrExpired = errors.New("batcher: deadline expired")

// queueFullError is ErrQueueFull with the operator-facing message. One is
// built per Config, so rejecting a request under overload does not allocate.
type queueFullError struct{ msg string }

func (e *queueFullError) Error() string { return e.msg }
func (e *queueFullError) Unwrap() error { return ErrQueueFull }

func newQueueFullError(maxQueue int) error {
	return &queueFullError{msg: fmt.Sprintf("queue full (%d items); raise --batch.max-queue or add replicas", maxQueue)}
}

// Option configures a Batcher in New.
type Option func(*options)

type options struct {
	clock    Clock
	onExpire any // a func(T, error) for the Batcher's T; New checks the type
}

// WithClock makes the Batcher take time from c instead of SystemClock. A nil
// c means SystemClock.
func WithClock(c Clock) Option {
	return func(o *options) { o.clock = c }
}

// OnExpire sets f to receive, with ErrExpired, each item whose deadline
// passes while it is queued. T must be the Batcher's item type, or New fails.
//
// f runs without the Batcher's lock held, on whichever goroutine noticed the
// expiry: the Batcher's timer, a Next caller or Drain. It should answer the
// request and return quickly, since a Next caller may be running it. Without
// OnExpire, expired items are dropped and only counted in Stats.
func OnExpire[T any](f func(v T, err error)) Option {
	return func(o *options) {
		if f != nil {
			o.onExpire = f
		}
	}
}

// Stats counts what a Batcher has done since New. Accepted items are
// conserved: Submitted == Batched + Expired + Drained + QueuedItems.
type Stats struct {
	QueuedItems int    // items in the queue now
	QueuedRows  int    // rows in the queue now, as Len returns
	Submitted   uint64 // items accepted by Submit
	Rejected    uint64 // Submit calls refused with ErrQueueFull
	Batches     uint64 // batches returned by Next
	Batched     uint64 // items returned by Next
	Expired     uint64 // items removed because their deadline passed while queued
	Drained     uint64 // items returned by Drain
}

// noDeadline is the deadline of an item that has none, and the timer target
// when the timer is not armed: it sorts after every real time.
const noDeadline = time.Duration(math.MaxInt64)

// entry is one queued item. Times are offsets from the Batcher's epoch, which
// keeps entries small and comparisons cheap.
type entry[T any] struct {
	v        T
	size     int
	at       time.Duration // when Submit queued it
	deadline time.Duration // noDeadline if none
}

// Batcher is a bounded FIFO queue of items of type T that hands them out in
// batches. Request handlers call Submit; replica workers call Next in a loop.
//
// A Batcher is safe for concurrent use by any number of goroutines. It must
// not be copied; use the pointer New returns.
type Batcher[T any] struct {
	clock    Clock
	onExpire func(T, error)
	epoch    time.Time // time zero for entry times

	// turn is a one-slot semaphore. The Next caller holding it is the only
	// one waiting for a batch to form; other Next callers block on it in
	// arrival order. A channel rather than a mutex, so that waiting for the
	// turn can be abandoned when ctx is done.
	turn chan struct{}

	// wake tells the turn holder to look at the queue again. It has one
	// slot and senders never block, so a wakeup is never lost and a stale
	// one costs only a look.
	wake chan struct{}

	mu          sync.Mutex // guards the fields below
	cfg         Config
	errFull     error          // the ErrQueueFull message for cfg.MaxQueue
	q           ring[entry[T]] // queued items, oldest first
	rows        int            // sum of the sizes in q
	minDeadline time.Duration  // earliest deadline in q, or noDeadline; may be too early after q shrinks, never too late
	expired     ring[T]        // removed items waiting for onExpire
	timer       Timer          // fires onTimer; nil until first armed
	timerAt     time.Duration  // when timer will fire, or noDeadline when it will not
	leading     bool           // the turn holder is waiting on wake
	closed      bool           // Close was called
	stats       Stats          // counters; QueuedItems and QueuedRows are filled in by Stats
}

// New returns a Batcher with configuration cfg. It fails if cfg is invalid or
// an OnExpire callback does not take T.
func New[T any](cfg Config, opts ...Option) (*Batcher[T], error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := options{clock: SystemClock{}}
	for _, opt := range opts {
		opt(&o)
	}
	if o.clock == nil {
		o.clock = SystemClock{}
	}
	b := &Batcher[T]{
		clock:       o.clock,
		epoch:       o.clock.Now(),
		turn:        make(chan struct{}, 1),
		wake:        make(chan struct{}, 1),
		cfg:         cfg,
		errFull:     newQueueFullError(cfg.MaxQueue),
		minDeadline: noDeadline,
		timerAt:     noDeadline,
	}
	if o.onExpire != nil {
		f, ok := o.onExpire.(func(T, error))
		if !ok {
			return nil, fmt.Errorf("cannot create batcher: OnExpire callback is %T, want %v",
				o.onExpire, reflect.TypeFor[func(T, error)]())
		}
		b.onExpire = f
	}
	return b, nil
}

// Submit queues v, which carries size rows (size >= 1), for a later batch.
// A zero deadline means none; otherwise v is never returned by Next after
// deadline, but handed to the OnExpire callback instead.
//
// Submit does not wait for room. It returns ErrClosed after Close, ErrExpired
// if deadline has already passed, and an error wrapping ErrQueueFull if the
// queue has rows and v would push them past MaxQueue. On any error v was not
// queued. On success v belongs to the Batcher until exactly one of Next,
// Drain or the OnExpire callback hands it back.
func (b *Batcher[T]) Submit(v T, size int, deadline time.Time) error {
	if size < 1 {
		return fmt.Errorf("cannot queue an item of %d rows: size must be at least 1", size)
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	now := b.now()
	dl := noDeadline
	if !deadline.IsZero() {
		dl = deadline.Sub(b.epoch)
		if dl <= now {
			b.mu.Unlock()
			return ErrExpired
		}
	}
	if b.rows > 0 && b.rows+size > b.cfg.MaxQueue {
		b.stats.Rejected++
		err := b.errFull
		b.mu.Unlock()
		return err
	}
	b.q.push(entry[T]{v: v, size: size, at: now, deadline: dl})
	b.rows += size
	b.stats.Submitted++
	b.minDeadline = min(b.minDeadline, dl)
	if b.leading && (b.rows >= b.cfg.MaxBatch || b.cfg.MaxWait == 0) {
		b.signal()
	}
	b.armLocked(now)
	b.checkLocked()
	b.mu.Unlock()
	return nil
}

// Next waits until a batch is ready, appends it to dst[:0] in FIFO order and
// returns it. Concurrent callers get disjoint batches, in the order they
// called. Pass the previous batch back as dst so that Next does not allocate;
// the Batcher does not retain dst.
//
// Next returns ctx.Err() if ctx is done before a batch is ready; the queue is
// then left as it was. After Close it returns what is still queued without
// waiting for batches to fill, then ErrClosed. The returned slice is empty
// whenever the error is not nil.
func (b *Batcher[T]) Next(ctx context.Context, dst []T) ([]T, error) {
	dst = dst[:0]
	if err := ctx.Err(); err != nil {
		return dst, err
	}
	select {
	case b.turn <- struct{}{}:
	case <-ctx.Done():
		return dst, ctx.Err()
	}
	dst, expired, err := b.lead(ctx, dst)
	<-b.turn
	if expired {
		b.runExpired()
	}
	return dst, err
}

// lead waits, holding the turn, until a batch is ready or ctx is done. It
// reports whether it moved items to b.expired, which the caller must then
// hand to onExpire.
func (b *Batcher[T]) lead(ctx context.Context, dst []T) ([]T, bool, error) {
	expired := false
	for {
		b.mu.Lock()
		now := b.now()
		expired = b.expireLocked(now) || expired
		if b.q.n > 0 && b.readyLocked(now) {
			b.leading = false
			dst = b.popBatchLocked(dst)
			b.checkLocked()
			b.mu.Unlock()
			return dst, expired, nil
		}
		if b.closed {
			b.leading = false
			b.mu.Unlock()
			return dst, expired, ErrClosed
		}
		b.leading = true
		b.armLocked(now)
		b.mu.Unlock()

		select {
		case <-b.wake:
		case <-ctx.Done():
			b.mu.Lock()
			b.leading = false
			b.mu.Unlock()
			return dst, expired, ctx.Err()
		}
	}
}

// Requeue puts v, which Next handed out, back at the head of the queue as it
// was: size rows, queued at queued, deadline as given to Submit. It is for a
// consumer that took a batch it cannot run after all; it requeues the batch
// newest item first, so that the queue keeps its order. A waiting Next
// caller sees v at once. After Close it returns ErrClosed and v is not
// queued: the caller answers it.
func (b *Batcher[T]) Requeue(v T, size int, queued, deadline time.Time) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	dl := noDeadline
	if !deadline.IsZero() {
		dl = deadline.Sub(b.epoch)
	}
	b.q.pushFront(entry[T]{v: v, size: size, at: queued.Sub(b.epoch), deadline: dl})
	b.rows += size
	b.stats.Batched--
	b.minDeadline = min(b.minDeadline, dl)
	now := b.now()
	if b.leading && b.readyLocked(now) {
		b.signal()
	}
	b.armLocked(now)
	b.checkLocked()
	b.mu.Unlock()
	return nil
}

// SetConfig replaces the configuration. A Next call waiting for a batch
// re-evaluates at once under the new MaxBatch and MaxWait. Queued items are
// kept: if the queue holds more than the new MaxQueue, nothing is dropped and
// Submit fails until it drains below the limit.
func (b *Batcher[T]) SetConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	// Built before taking the lock: Sprintf is slow next to everything
	// else done under it, and SetConfig is rare.
	errFull := newQueueFullError(cfg.MaxQueue)
	b.mu.Lock()
	b.cfg = cfg
	b.errFull = errFull
	if b.leading {
		b.signal()
	}
	b.mu.Unlock()
	return nil
}

// Config returns the current configuration.
func (b *Batcher[T]) Config() Config {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cfg
}

// Len returns the number of rows queued.
func (b *Batcher[T]) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rows
}

// Stats returns the Batcher's counters.
func (b *Batcher[T]) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats
	s.QueuedItems = b.q.n
	s.QueuedRows = b.rows
	return s
}

// Close stops intake: later Submits fail with ErrClosed, and Next calls wake
// up to hand out what is still queued, without waiting for batches to fill,
// then return ErrClosed. Items already queued stay queued until Next or Drain
// takes them or they expire. Close is idempotent and always returns nil.
func (b *Batcher[T]) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	if b.leading {
		b.signal()
	}
	if b.q.n == 0 {
		b.stopTimerLocked()
	}
	return nil
}

// Drain removes every queued item and returns them in FIFO order, for the
// server to fail, typically with 503 after Close. Items whose deadline has
// already passed go to the OnExpire callback instead, as everywhere else.
// Drain may be called at any time; it does not close the Batcher.
func (b *Batcher[T]) Drain() []T {
	b.mu.Lock()
	expired := b.expireLocked(b.now())
	out := make([]T, 0, b.q.n)
	for b.q.n > 0 {
		out = append(out, b.q.pop().v)
	}
	b.rows = 0
	b.minDeadline = noDeadline
	b.stats.Drained += uint64(len(out))
	b.stopTimerLocked()
	b.checkLocked()
	b.mu.Unlock()
	if expired {
		b.runExpired()
	}
	return out
}

// now returns the current time as an offset from b.epoch.
func (b *Batcher[T]) now() time.Duration {
	return b.clock.Now().Sub(b.epoch)
}

// signal wakes the turn holder, without blocking.
func (b *Batcher[T]) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// readyLocked reports whether the queue, which must not be empty, holds a
// batch that should go now.
func (b *Batcher[T]) readyLocked(now time.Duration) bool {
	return b.rows >= b.cfg.MaxBatch ||
		b.cfg.MaxWait == 0 ||
		b.closed ||
		now-b.q.at(0).at >= b.cfg.MaxWait
}

// popBatchLocked moves the next batch from the queue to dst: the longest FIFO
// prefix of at most MaxBatch rows, or the head alone if it is bigger.
func (b *Batcher[T]) popBatchLocked(dst []T) []T {
	total := 0
	for b.q.n > 0 {
		size := b.q.at(0).size
		if total > 0 && total+size > b.cfg.MaxBatch {
			break
		}
		dst = append(dst, b.q.pop().v)
		total += size
		if total >= b.cfg.MaxBatch {
			break
		}
	}
	b.rows -= total
	if b.q.n == 0 {
		b.minDeadline = noDeadline
		if b.closed {
			b.stopTimerLocked()
		}
	}
	b.stats.Batches++
	b.stats.Batched += uint64(len(dst))
	if invariants && total > b.cfg.MaxBatch && len(dst) > 1 {
		panic(fmt.Sprintf("BUG: batch of %d items has %d rows, more than MaxBatch %d", len(dst), total, b.cfg.MaxBatch))
	}
	return dst
}

// expireLocked removes the items whose deadline is at or before now, moving
// them to b.expired when there is an onExpire to hand them to. It reports
// whether it moved any there. It scans the queue only when the earliest
// deadline has passed, and then recomputes that deadline exactly.
func (b *Batcher[T]) expireLocked(now time.Duration) bool {
	if now < b.minDeadline {
		return false
	}
	kept, removed := 0, 0
	next := noDeadline
	for i := 0; i < b.q.n; i++ {
		e := b.q.at(i)
		if e.deadline <= now {
			b.rows -= e.size
			if b.onExpire != nil {
				b.expired.push(e.v)
			}
			removed++
			continue
		}
		next = min(next, e.deadline)
		if kept != i {
			*b.q.at(kept) = *e
		}
		kept++
	}
	b.q.truncate(kept)
	b.minDeadline = next
	b.stats.Expired += uint64(removed)
	if b.closed && b.q.n == 0 {
		b.stopTimerLocked()
	}
	return removed > 0 && b.onExpire != nil
}

// runExpired hands the items in b.expired to onExpire, one at a time and
// without the lock held, until none is left. Whoever moves items to
// b.expired calls it afterwards, so none is left behind; which goroutine
// answers which item does not matter.
func (b *Batcher[T]) runExpired() {
	for {
		b.mu.Lock()
		if b.expired.n == 0 {
			b.mu.Unlock()
			return
		}
		v := b.expired.pop()
		b.mu.Unlock()
		b.onExpire(v, ErrExpired)
	}
}

// armLocked makes sure the timer fires no later than the earliest moment
// something must happen without a caller: the earliest deadline, and, while a
// Next caller waits, the oldest item's MaxWait. It only ever moves the timer
// earlier. A timer that fires too early (its target item already left)
// costs one look at the queue and is re-armed then; this keeps Reset, which
// takes a runtime lock, off the common path where deadlines only grow.
func (b *Batcher[T]) armLocked(now time.Duration) {
	target := b.minDeadline
	if b.leading && b.q.n > 0 && b.cfg.MaxWait > 0 {
		// A MaxWait already reached is not a target: the turn holder has
		// been signalled (by onTimer, which got here first) and is on its
		// way. Re-arming for it would make the timer fire again at once, and
		// again, until the turn holder runs: a busy loop that starves it.
		if due := b.q.at(0).at + b.cfg.MaxWait; due > now {
			target = min(target, due)
		}
	}
	if target == noDeadline || target >= b.timerAt {
		return
	}
	b.timerAt = target
	if b.timer == nil {
		b.timer = b.clock.AfterFunc(target-now, b.onTimer)
		return
	}
	b.timer.Reset(target - now)
}

// stopTimerLocked stops the timer; the next armLocked starts it again.
func (b *Batcher[T]) stopTimerLocked() {
	if b.timer != nil && b.timerAt != noDeadline {
		b.timer.Stop()
	}
	b.timerAt = noDeadline
}

// onTimer runs when the timer fires: it expires what is due, wakes a waiting
// Next caller if the oldest item has waited MaxWait, and re-arms.
func (b *Batcher[T]) onTimer() {
	b.mu.Lock()
	b.timerAt = noDeadline
	now := b.now()
	expired := b.expireLocked(now)
	if b.leading && b.q.n > 0 && b.readyLocked(now) {
		b.signal()
	}
	b.armLocked(now)
	b.checkLocked()
	b.mu.Unlock()
	if expired {
		b.runExpired()
	}
}

// checkLocked verifies the queue's bookkeeping when invariants are on.
func (b *Batcher[T]) checkLocked() {
	if !invariants {
		return
	}
	rows := 0
	earliest := noDeadline
	for i := 0; i < b.q.n; i++ {
		e := b.q.at(i)
		if e.size < 1 {
			panic(fmt.Sprintf("BUG: queued item %d has size %d", i, e.size))
		}
		if i > 0 && e.at < b.q.at(i-1).at {
			panic("BUG: queue is not in Submit order")
		}
		rows += e.size
		earliest = min(earliest, e.deadline)
	}
	if rows != b.rows {
		panic(fmt.Sprintf("BUG: queue holds %d rows, bookkeeping says %d", rows, b.rows))
	}
	if b.minDeadline > earliest {
		panic(fmt.Sprintf("BUG: minDeadline %v is later than the earliest deadline %v", b.minDeadline, earliest))
	}
	if b.minDeadline != noDeadline && b.timerAt > b.minDeadline {
		panic(fmt.Sprintf("BUG: timer set for %v, after the earliest deadline %v", b.timerAt, b.minDeadline))
	}
	s := b.stats
	if s.Submitted != s.Batched+s.Expired+s.Drained+uint64(b.q.n) {
		panic(fmt.Sprintf("BUG: %d submitted, but %d batched + %d expired + %d drained + %d queued",
			s.Submitted, s.Batched, s.Expired, s.Drained, b.q.n))
	}
}
