package batcher_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ipa-serving/ipa/batcher"
)

// request is what a stage server queues: the decoded input, when it arrived
// (for the queue-wait metric) and where to send the answer.
type request struct {
	rows    int
	arrived time.Time
	answer  chan error
}

// This is the shape of a stage server: handlers Submit, each replica loops on
// Next, and shutdown fails what is left.
func Example() {
	b, err := batcher.New[*request](
		batcher.Config{MaxBatch: 4, MaxWait: 2 * time.Millisecond, MaxQueue: 64},
		batcher.OnExpire(func(r *request, err error) { r.answer <- err }), // 504
	)
	if err != nil {
		panic(err)
	}

	// Handlers: one request of 3 rows and one of 2.
	for _, rows := range []int{3, 2} {
		r := &request{rows: rows, arrived: time.Now(), answer: make(chan error, 1)}
		if err := b.Submit(r, r.rows, r.arrived.Add(time.Second)); errors.Is(err, batcher.ErrQueueFull) {
			fmt.Println("429:", err)
		}
	}

	// A replica: 3+2 rows exceed MaxBatch, so the first batch goes at once
	// and holds only the first request; the second waits up to MaxWait for
	// company.
	var batch []*request
	for range 2 {
		batch, err = b.Next(context.Background(), batch)
		if err != nil {
			break
		}
		for _, r := range batch {
			_ = time.Since(r.arrived) // queue wait, for the histogram
			fmt.Println("batch item of", r.rows, "rows")
		}
	}

	// Shutdown: stop intake, then fail whatever is still queued with 503.
	b.Close()
	fmt.Println("failed with 503:", len(b.Drain()))
	_, err = b.Next(context.Background(), batch)
	fmt.Println(err)
	// Output:
	// batch item of 3 rows
	// batch item of 2 rows
	// failed with 503: 0
	// batcher: closed
}
