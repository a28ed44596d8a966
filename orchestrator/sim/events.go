package sim

import (
	"container/heap"
	"time"

	"github.com/ipa-serving/ipa/batcher"
)

// event is one entry of the event queue. Events at the same time run in
// the order they were scheduled.
type event struct {
	at   time.Duration // since the start
	seq  uint64
	fn   func()
	dead bool // cancelled (a stopped timer)
}

type eventHeap []*event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(*event)) }
func (h *eventHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return x
}

// loop is the virtual clock and its event queue.
type loop struct {
	epoch time.Time
	now   time.Duration
	seq   uint64
	q     eventHeap
	ran   uint64
}

// at schedules fn at t (never before now).
func (l *loop) at(t time.Duration, fn func()) *event {
	l.seq++
	e := &event{at: max(t, l.now), seq: l.seq, fn: fn}
	heap.Push(&l.q, e)
	return e
}

// run processes events until the queue is empty or stop returns true
// (checked every 4096 events).
func (l *loop) run(stop func() bool) bool {
	for len(l.q) > 0 {
		e := heap.Pop(&l.q).(*event)
		if e.dead {
			continue
		}
		l.now = e.at
		e.fn()
		l.ran++
		if l.ran%4096 == 0 && stop() {
			return false
		}
	}
	return true
}

// Now implements batcher.Clock and orchestrator.Clock.
func (l *loop) Now() time.Time { return l.epoch.Add(l.now) }

// After implements orchestrator.Clock (the loop steps the controller
// itself; this is for completeness).
func (l *loop) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	l.at(l.now+d, func() { ch <- l.Now() })
	return ch
}

// stageClock is a stage's batcher.Clock: its timer's callback is followed
// by a poll of the stage, as the signal it sends wakes a waiting worker.
type stageClock struct {
	*loop
	after func()
}

// AfterFunc implements batcher.Clock.
func (c stageClock) AfterFunc(d time.Duration, f func()) batcher.Timer {
	t := &timer{l: c.loop, f: func() { f(); c.after() }}
	t.Reset(d)
	return t
}

// timer is a batcher.Timer on the event queue.
type timer struct {
	l  *loop
	f  func()
	ev *event
}

func (t *timer) Stop() bool {
	if t.ev == nil {
		return false
	}
	t.ev.dead = true
	t.ev = nil
	return true
}

func (t *timer) Reset(d time.Duration) bool {
	was := t.Stop()
	t.ev = t.l.at(t.l.now+max(d, 0), func() { t.ev = nil; t.f() })
	return was
}
