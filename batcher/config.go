package batcher

import (
	"fmt"
	"time"
)

// Config sets how a Batcher forms batches and how much it queues. The struct
// tags are read by kong in main, which embeds Config with the prefix "batch."
// (giving --batch.max-batch, --batch.max-wait, --batch.max-queue); this
// package does not import kong. A Batcher's Config can be changed while it
// runs with SetConfig.
type Config struct {
	// MaxBatch is the largest batch, in rows (tensor dimension 0). An item
	// with more rows than MaxBatch still forms a batch, alone.
	MaxBatch int `help:"Largest batch, in items (rows)." default:"1"`

	// MaxWait is how long the oldest queued item may wait, from its Submit,
	// for a batch to fill. Zero sends whatever is queued as soon as a
	// replica asks for it.
	MaxWait time.Duration `help:"How long the oldest queued request may wait for a batch to fill." default:"2ms"`

	// MaxQueue is the most rows queued at once. A Submit that would exceed it
	// fails with ErrQueueFull, except that an empty queue accepts an item of
	// any size, so no item is refused forever.
	MaxQueue int `help:"Most items queued before new requests are rejected with 429." default:"1024"`
}

// Validate reports the first field of c that is out of range, saying which
// flag to change.
func (c Config) Validate() error {
	switch {
	case c.MaxBatch < 1:
		return fmt.Errorf("--batch.max-batch must be at least 1, got %d", c.MaxBatch)
	case c.MaxWait < 0:
		return fmt.Errorf("--batch.max-wait must not be negative, got %s", c.MaxWait)
	case c.MaxQueue < 1:
		return fmt.Errorf("--batch.max-queue must be at least 1, got %d", c.MaxQueue)
	case c.MaxQueue < c.MaxBatch:
		// With a queue shorter than a batch, no batch could ever fill and
		// every request would pay the full MaxWait: a misconfiguration.
		return fmt.Errorf("--batch.max-queue (%d) must be at least --batch.max-batch (%d), or batches can never fill",
			c.MaxQueue, c.MaxBatch)
	}
	return nil
}
