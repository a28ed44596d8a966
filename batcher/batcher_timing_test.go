package batcher

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"
)

// The parallel benchmarks pit the Batcher against a baseline in the same run:
// a buffered channel whose consumers take one item and then whatever else is
// there, up to MaxBatch. That is the least a batching queue has to do, with
// none of what the Batcher adds (rows, MaxWait, deadlines, live config). On a
// shared machine, read the ratio, not the absolute numbers.

const (
	benchMaxBatch  = 8
	benchMaxQueue  = 1024
	benchConsumers = 2
)

// request stands in for a stage server's pooled request.
type request struct{ rows int }

// BenchmarkSubmitNext is one goroutine submitting a full batch and taking it:
// the uncontended cost per item.
func BenchmarkSubmitNext(b *testing.B) {
	bt, err := New[*request](Config{MaxBatch: benchMaxBatch, MaxWait: time.Millisecond, MaxQueue: benchMaxQueue})
	if err != nil {
		b.Fatal(err)
	}
	r := &request{rows: 1}
	batch := make([]*request, 0, benchMaxBatch)
	ctx := context.Background()
	dl := time.Now().Add(time.Hour)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := bt.Submit(r, 1, dl); err != nil {
			b.Fatal(err)
		}
		if i%benchMaxBatch == benchMaxBatch-1 {
			if batch, err = bt.Next(ctx, batch); err != nil || len(batch) != benchMaxBatch {
				b.Fatalf("Next = %d items, %v", len(batch), err)
			}
		}
	}
}

// BenchmarkSubmitParallel has b.RunParallel producers submit while
// benchConsumers replicas take batches, with MaxWait 0 so that consumers
// never idle on the clock. One op is one item through the queue.
func BenchmarkSubmitParallel(b *testing.B) {
	bt, err := New[*request](Config{MaxBatch: benchMaxBatch, MaxWait: 0, MaxQueue: benchMaxQueue})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	var items, batches [benchConsumers]int
	for c := range benchConsumers {
		wg.Go(func() {
			batch := make([]*request, 0, benchMaxBatch)
			for {
				var err error
				if batch, err = bt.Next(context.Background(), batch); err != nil {
					return
				}
				items[c] += len(batch)
				batches[c]++
			}
		})
	}
	dl := time.Now().Add(time.Hour)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := &request{rows: 1}
		for pb.Next() {
			for errors.Is(bt.Submit(r, 1, dl), ErrQueueFull) {
				runtime.Gosched()
			}
		}
	})
	bt.Close()
	wg.Wait()
	reportBatchSize(b, items[:], batches[:])
}

// BenchmarkChannelParallel is BenchmarkSubmitParallel's baseline.
func BenchmarkChannelParallel(b *testing.B) {
	ch := make(chan *request, benchMaxQueue)
	var wg sync.WaitGroup
	var items, batches [benchConsumers]int
	for c := range benchConsumers {
		wg.Go(func() {
			batch := make([]*request, 0, benchMaxBatch)
			for r := range ch {
				batch = append(batch[:0], r)
			fill:
				for len(batch) < benchMaxBatch {
					select {
					case r, ok := <-ch:
						if !ok {
							break fill
						}
						batch = append(batch, r)
					default:
						break fill
					}
				}
				items[c] += len(batch)
				batches[c]++
			}
		})
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := &request{rows: 1}
		for pb.Next() {
			for sent := false; !sent; {
				select {
				case ch <- r:
					sent = true
				default:
					runtime.Gosched()
				}
			}
		}
	})
	close(ch)
	wg.Wait()
	reportBatchSize(b, items[:], batches[:])
}

func reportBatchSize(b *testing.B, items, batches []int) {
	var n, m int
	for i := range items {
		n += items[i]
		m += batches[i]
	}
	if m > 0 {
		b.ReportMetric(float64(n)/float64(m), "items/batch")
	}
}
