//go:build !race

package batcher

import (
	"context"
	"errors"
	"testing"
	"time"
)

// The race detector allocates on its own, so allocation budgets are checked
// only without it (fasthttp's allocation tests, NATS's TestNoRace naming).

func TestNoRaceSubmitAndNextDoNotAllocate(t *testing.T) {
	f := func(name string, cfg Config, perBatch int, withDeadline bool) {
		t.Helper()
		b, err := New[*request](cfg, OnExpire(func(*request, error) {}))
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		reqs := make([]*request, perBatch)
		for i := range reqs {
			reqs[i] = &request{rows: 1}
		}
		batch := make([]*request, 0, cfg.MaxBatch)
		ctx := context.Background()
		allocs := testing.AllocsPerRun(1000, func() {
			var dl time.Time
			if withDeadline {
				dl = time.Now().Add(time.Hour) // moves on every run, as real deadlines do
			}
			for _, r := range reqs {
				if err := b.Submit(r, r.rows, dl); err != nil {
					t.Fatal(err)
				}
			}
			batch, err = b.Next(ctx, batch)
			if err != nil || len(batch) != perBatch {
				t.Fatalf("Next = %d items, %v; want %d, nil", len(batch), err, perBatch)
			}
		})
		if allocs != 0 {
			t.Fatalf("%s: %.1f allocations per Submit+Next round; want 0", name, allocs)
		}
	}
	f("full batches", Config{MaxBatch: 8, MaxWait: time.Millisecond, MaxQueue: 64}, 8, false)
	f("full batches with deadlines", Config{MaxBatch: 8, MaxWait: time.Millisecond, MaxQueue: 64}, 8, true)
	f("partial batches, MaxWait 0", Config{MaxBatch: 8, MaxWait: 0, MaxQueue: 64}, 3, true)
}

func TestNoRaceRejectingDoesNotAllocate(t *testing.T) {
	b, err := New[*request](Config{MaxBatch: 1, MaxQueue: 1})
	if err != nil {
		t.Fatal(err)
	}
	r := &request{rows: 1}
	if err := b.Submit(r, 1, time.Time{}); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if err := b.Submit(r, 1, time.Time{}); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("Submit to a full queue: %v; want ErrQueueFull", err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per rejected Submit; want 0", allocs)
	}
}

// TestNoRaceWaitingWorkerDoesNotAllocate covers the path where a worker waits
// in Next and the timer, not a Submit, completes the batch.
func TestNoRaceWaitingWorkerDoesNotAllocate(t *testing.T) {
	b, err := New[*request](Config{MaxBatch: 8, MaxWait: 20 * time.Microsecond, MaxQueue: 64})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int)
	go func() {
		batch := make([]*request, 0, 8)
		for {
			var err error
			batch, err = b.Next(context.Background(), batch)
			if err != nil {
				close(got)
				return
			}
			got <- len(batch)
		}
	}()
	r := &request{rows: 1}
	allocs := testing.AllocsPerRun(200, func() {
		if err := b.Submit(r, 1, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if n := <-got; n != 1 {
			t.Fatalf("batch of %d; want 1", n)
		}
	})
	b.Close()
	select {
	case <-got:
	case <-time.After(time.Minute):
		t.Fatal("Next still waiting a minute after Close")
	}
	if allocs != 0 {
		t.Fatalf("%.1f allocations per Submit and timer-completed Next; want 0", allocs)
	}
}

// Admission runs on every request and every batch: once a K and its batch
// sizes have been seen, it allocates nothing.
func TestNoRaceEstimatorDoesNotAllocate(t *testing.T) {
	type key struct {
		variant string
		cores   int
	}
	k := key{"a", 1}
	e := NewEstimator[key](nil, 0)
	for range 4 {
		e.End(e.Begin(k, 4), true)
		e.End(e.Begin(k, 1), true)
	}
	rows, left, fate := []int{1, 2}, []time.Duration{time.Second, time.Second}, make([]Fate, 2)
	allocs := testing.AllocsPerRun(1000, func() {
		slot := e.Begin(k, 4)
		e.Decide(k, Ahead{Rows: 9, Size: 1, MaxBatch: 4, Replicas: 2}, time.Second)
		e.Fit(k, rows, left, fate)
		e.End(slot, true)
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per request and batch, want 0", allocs)
	}
}
