package batcher

import (
	"testing"
	"time"
)

// BenchmarkEstimatorDecide is the admission check of one request on a busy
// stage: 16 samples of each batch size up to 8 over the last 2.4 s (part
// of them in the last second), 10 rows queued ahead, both replicas
// running. On a shared machine, compare runs, not absolute numbers.
func BenchmarkEstimatorDecide(b *testing.B) {
	c := newFakeClock()
	e := NewEstimator[string](c, 0)
	for i := range 16 * 8 {
		ran(e, c, "a", i%8+1, time.Duration(5+i%8)*ms)
		c.Advance(10 * ms)
	}
	e.Begin("a", 8)
	e.Begin("a", 4)
	a := Ahead{Rows: 10, Size: 1, MaxBatch: 8, Replicas: 2}
	b.ReportAllocs()
	for b.Loop() {
		e.Decide("a", a, time.Second)
	}
}
