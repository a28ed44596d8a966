package sim

import (
	"math"
	"time"
)

// cpu is the machine's cores, shared by the replicas' batches and the
// router's glue as the operating system shares them between threads:
// processor sharing. A batch of a replica with c cores is c threads (ONNX
// Runtime's intra-op threads), one request's glue one (a goroutine). While
// the threads that have work number no more than the cores, each job runs
// at full speed, its time what the profile (or the glue cost) says; beyond
// that every job slows by cores ÷ threads. So a router decoding pages beside
// two single-core replicas on two cores takes half as long again, and so do
// the replicas' batches, as on the machine.
//
// Beyond the share, interference: while a memory-bound job (the glue:
// decoding and resizing an image streams through memory) runs beside
// another, both take 1 + interference times longer. On this machine a glue
// beside a squeezenet engine, a core each, takes ×1.24–1.29 (medians of
// six rounds, ×0.99–1.46), and the engine ×1.23–1.29; two engines beside
// each other ×1.02, so engines alone do not interfere (see
// Options.Interference).
type cpu struct {
	l            *loop
	cores        float64
	interference float64
	jobs         []*job // running, in start order
	memory       int    // how many of them are memory-bound
	// threads is the sum of the running jobs' threads; last when their
	// work was last brought up to date.
	threads float64
	last    time.Duration
	next    *event // the next completion
}

// job is work on the cpu: left is what remains at full speed.
type job struct {
	left    time.Duration
	threads float64
	memory  bool
	done    func(took time.Duration)
	start   time.Duration
}

// rateOf is how fast j progresses: its share of the cores, slowed by the
// interference if it is memory-bound and runs beside another job, or runs
// beside a memory-bound one.
func (c *cpu) rateOf(j *job) float64 {
	r := c.rate()
	if (j.memory && len(c.jobs) > 1) || (!j.memory && c.memory > 0) {
		r /= 1 + c.interference
	}
	return r
}

// rate is every running job's share of the cores: 1 while the threads fit.
func (c *cpu) rate() float64 {
	r := 1.0
	if c.threads > c.cores {
		r = c.cores / c.threads
	}
	return r
}

// run starts work (its time at full speed and alone) on threads, memory
// if it is memory-bound; done gets the time it took.
func (c *cpu) run(work time.Duration, threads int, memory bool, done func(took time.Duration)) {
	c.advance()
	c.jobs = append(c.jobs, &job{left: work, threads: float64(threads), memory: memory, done: done, start: c.l.now})
	c.threads += float64(threads)
	if memory {
		c.memory++
	}
	c.schedule()
}

// advance brings every running job's work up to now.
func (c *cpu) advance() {
	if el := c.l.now - c.last; el > 0 {
		for _, j := range c.jobs {
			if r := c.rateOf(j); r == 1 {
				j.left -= el
			} else {
				j.left -= time.Duration(math.Round(float64(el) * r))
			}
		}
	}
	c.last = c.l.now
}

// schedule sets the next completion event.
func (c *cpu) schedule() {
	if c.next != nil {
		c.next.dead = true
		c.next = nil
	}
	if len(c.jobs) == 0 {
		return
	}
	wait := time.Duration(math.MaxInt64)
	for _, j := range c.jobs {
		w := max(j.left, 0)
		if r := c.rateOf(j); r < 1 {
			w = time.Duration(math.Ceil(float64(w) / r))
		}
		wait = min(wait, w)
	}
	c.next = c.l.at(c.l.now+wait, c.complete)
}

// complete finishes the jobs whose work is done (within the nanosecond the
// rate's rounding may leave), in start order, then runs their callbacks.
func (c *cpu) complete() {
	c.next = nil
	c.advance()
	var done []*job
	kept := c.jobs[:0]
	for _, j := range c.jobs {
		if j.left <= 1 {
			done = append(done, j)
			c.threads -= j.threads
			if j.memory {
				c.memory--
			}
			continue
		}
		kept = append(kept, j)
	}
	clear(c.jobs[len(kept):])
	c.jobs = kept
	if len(c.jobs) == 0 {
		c.threads = 0 // no drift
	}
	c.schedule()
	for _, j := range done {
		j.done(c.l.now - j.start)
	}
}
