package loadgen

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"
)

// Process is how arrivals are placed within the load's slots. The zero
// value is Burst; `ipa load`, `ipa simulate` and experiment files default
// to Poisson.
type Process uint8

const (
	// Burst is what IPA's tester did (BarAzmoon, IPA.md §5.3): it places the
	// c requests of a slot at c independent offsets drawn from an
	// exponential distribution with mean slot/c, sorted. The offsets are not
	// cumulative, so a slot's requests bunch up at its start: at 375
	// requests/s, 99 % of each second's requests leave in its first 13 ms
	// (ln 100 / 375 s), one burst per second rather than a rate. An offset
	// may pass the end of its slot (probability e^-c), and such a request is
	// sent in time order among the next slot's. Fractional counts are
	// carried over to the next slot, so c = 2.5 sends 2, 3, 2, 3, …, and
	// every slot sends exactly its count: use it to replay the paper's
	// experiments as they were run.
	Burst Process = iota
	// Poisson is a true (piecewise-homogeneous) Poisson process whose rate
	// in slot i is Count(i)/slot: exponential inter-arrival times, so
	// requests spread over the slot and the number in a slot varies around
	// Count(i) (standard deviation √Count(i)). The default.
	Poisson
	// Equal spaces a slot's c requests evenly, at j·slot/c (BarAzmoon's
	// "equal"); deterministic, for tests and calibration.
	Equal
)

var processNames = [...]string{Burst: "burst", Poisson: "poisson", Equal: "equal"}

// String returns the flag spelling of p.
func (p Process) String() string {
	if int(p) < len(processNames) {
		return processNames[p]
	}
	return fmt.Sprintf("Process(%d)", uint8(p))
}

// ParseProcess parses "poisson", "burst" or "equal"; "exponential", the
// name Burst had before Poisson became the default, still reads as Burst.
func ParseProcess(s string) (Process, error) {
	if strings.EqualFold(s, "exponential") {
		return Burst, nil
	}
	for i, n := range processNames {
		if strings.EqualFold(s, n) {
			return Process(i), nil
		}
	}
	return 0, fmt.Errorf("unknown arrival process %q; use poisson (the default), burst (IPA's tester: each second's requests bunched at its start) or equal", s)
}

// Arrivals produces the send times of a load, in order. It is a pure
// function of its inputs and the random source: the same seed gives the
// same schedule. An Arrivals is not safe for concurrent use.
type Arrivals struct {
	load Load
	proc Process
	slot time.Duration
	rng  *rand.Rand

	// Until, when positive, ends the arrivals at that time: no arrival at
	// or after it is produced. A load that stays at zero forever ends only
	// this way.
	Until time.Duration

	ended bool
	end   time.Duration // when the schedule ended, once ended

	// Burst and Equal: slots are generated one at a time into
	// pending, which releases an arrival once no later-generated slot can
	// precede it (offsets are ≥ 0, so slot next starts no earlier than
	// next·slot).
	next    int
	carry   float64
	pending durationHeap

	// Poisson: the current slot and the fraction of it already used.
	pslot int
	pfrac float64
}

// NewArrivals returns the arrivals of load under process p, with slots of
// the given length (one second replays a per-second trace in real time; half
// a second replays it twice as fast, at twice the rate). rng is the only
// source of randomness.
func NewArrivals(load Load, p Process, slot time.Duration, rng *rand.Rand) *Arrivals {
	if slot <= 0 {
		slot = time.Second
	}
	return &Arrivals{load: load, proc: p, slot: slot, rng: rng}
}

// Slot returns the length of one slot.
func (a *Arrivals) Slot() time.Duration { return a.slot }

// End returns when the schedule ends (the end of the load's last slot, or
// Until), once Next has returned false; 0 before.
func (a *Arrivals) End() time.Duration {
	if !a.ended {
		return 0
	}
	return a.end
}

// finish marks the schedule ended at the start of slot i or at Until.
func (a *Arrivals) finish(i int) {
	a.ended = true
	a.end = time.Duration(i) * a.slot
	if a.Until > 0 && a.end > a.Until {
		a.end = a.Until
	}
}

// Next returns the time of the next arrival, from the start of slot 0, and
// false once the load (or Until) has ended.
func (a *Arrivals) Next() (time.Duration, bool) {
	if a.proc == Poisson {
		return a.nextPoisson()
	}
	for {
		if len(a.pending) > 0 && (a.ended || a.pending[0] < time.Duration(a.next)*a.slot) {
			t := heap.Pop(&a.pending).(time.Duration)
			if a.Until > 0 && t >= a.Until {
				a.finish(a.next)
				a.pending = a.pending[:0]
				return 0, false
			}
			return t, true
		}
		if a.ended {
			return 0, false
		}
		a.generate()
	}
}

// generate adds slot a.next's arrivals to pending.
func (a *Arrivals) generate() {
	i := a.next
	start := time.Duration(i) * a.slot
	n, ok := a.load.Count(i)
	if !ok || (a.Until > 0 && start >= a.Until) {
		a.finish(i)
		return
	}
	a.next++
	if !(n > 0) || math.IsInf(n, 0) {
		return
	}
	// The epsilon keeps 0.1+0.2+… from losing a request to rounding.
	c := math.Floor(n + a.carry + 1e-9)
	a.carry = max(n+a.carry-c, 0)
	cnt := int(c)
	if cnt <= 0 {
		return
	}
	slot := float64(a.slot)
	for j := range cnt {
		var off float64
		switch a.proc {
		case Equal:
			off = float64(j) * slot / float64(cnt)
		default:
			off = a.rng.ExpFloat64() * slot / float64(cnt)
		}
		heap.Push(&a.pending, start+time.Duration(off))
	}
}

// nextPoisson draws the next arrival of a Poisson process whose rate is
// piecewise constant over slots, by spending an Exp(1) budget of expected
// arrivals across the slots (time rescaling).
func (a *Arrivals) nextPoisson() (time.Duration, bool) {
	if a.ended {
		return 0, false
	}
	budget := a.rng.ExpFloat64()
	for {
		start := time.Duration(a.pslot) * a.slot
		n, ok := a.load.Count(a.pslot)
		if !ok || (a.Until > 0 && start >= a.Until) {
			a.finish(a.pslot)
			return 0, false
		}
		if n > 0 && !math.IsInf(n, 0) {
			if rest := n * (1 - a.pfrac); budget < rest {
				a.pfrac += budget / n
				t := start + time.Duration(a.pfrac*float64(a.slot))
				if a.Until > 0 && t >= a.Until {
					a.finish(a.pslot + 1)
					return 0, false
				}
				return t, true
			}
			budget -= n * (1 - a.pfrac)
		}
		a.pslot++
		a.pfrac = 0
	}
}

// durationHeap is a min-heap of times.
type durationHeap []time.Duration

func (h durationHeap) Len() int           { return len(h) }
func (h durationHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h durationHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *durationHeap) Push(x any)        { *h = append(*h, x.(time.Duration)) }
func (h *durationHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
