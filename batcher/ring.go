package batcher

// ring is a growable FIFO ring buffer. Its capacity is zero or a power of two,
// so indexes wrap with a mask. It never shrinks: a queue that once held n
// elements keeps room for n, which is what makes Submit and Next free of
// allocations in steady state (the VictoriaMetrics "reuse, don't reallocate"
// rule; a queue's high-water mark is bounded by MaxQueue).
//
// Removed slots are zeroed so that the ring does not keep a request alive
// after it has left the queue.
type ring[E any] struct {
	buf  []E
	head int // index of the oldest element in buf
	n    int // number of elements
}

// at returns the i-th oldest element; 0 <= i < r.n.
func (r *ring[E]) at(i int) *E {
	return &r.buf[(r.head+i)&(len(r.buf)-1)]
}

// push appends e as the newest element.
func (r *ring[E]) push(e E) {
	if r.n == len(r.buf) {
		r.grow()
	}
	*r.at(r.n) = e
	r.n++
}

// pushFront inserts e as the oldest element.
func (r *ring[E]) pushFront(e E) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.head = (r.head - 1) & (len(r.buf) - 1)
	r.buf[r.head] = e
	r.n++
}

// pop removes and returns the oldest element; r.n must be > 0.
func (r *ring[E]) pop() E {
	p := &r.buf[r.head]
	e := *p
	var zero E
	*p = zero
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	return e
}

// truncate keeps the n oldest elements and zeroes the slots of the rest.
func (r *ring[E]) truncate(n int) {
	var zero E
	for i := n; i < r.n; i++ {
		*r.at(i) = zero
	}
	r.n = n
}

func (r *ring[E]) grow() {
	c := 2 * len(r.buf)
	if c == 0 {
		c = 16
	}
	buf := make([]E, c)
	for i := 0; i < r.n; i++ {
		buf[i] = *r.at(i)
	}
	r.buf = buf
	r.head = 0
}
