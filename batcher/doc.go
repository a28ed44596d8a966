// Package batcher owns dynamic batching for a stage server: a bounded,
// deadline-aware FIFO queue that HTTP handlers Submit requests to, and that
// replica workers pull batches from with Next when they are free.
//
// It must not import fasthttp, onnxruntime_go, client-go or any other ipa
// package. It is standard library only, so the dataplane, the simulator and
// the tests run exactly the same code, the last two under virtual time.
//
// # Batch formation
//
// Every item carries a size: the number of rows (tensor dimension 0) it adds
// to a batch. A batch is a FIFO prefix of the queue whose total size is at
// most MaxBatch; an item larger than MaxBatch forms a batch alone, so it is
// neither split nor starved. Items are never reordered to fill a batch better.
//
// A batch is ready, and the next waiting Next call returns it, when
//
//   - the queued size reaches MaxBatch (the batch can grow no further), or
//   - the oldest queued item has waited MaxWait since its Submit, or
//   - MaxWait is zero and anything is queued, or
//   - the Batcher is closed and anything is queued (nothing more can come).
//
// Only one Next caller at a time waits for a batch to form; the others queue
// behind it in arrival order. That keeps batches disjoint without any
// per-call state, and the replica that has been idle longest gets the next
// batch.
//
// # Deadlines
//
// An item may carry a deadline. An item whose deadline has passed is never
// returned by Next: it is removed from the queue and handed to the OnExpire
// callback with ErrExpired. One timer, armed for the earliest deadline in the
// queue, does this even while every replica is busy, so an expired request is
// answered at its deadline rather than when a replica frees up. Whether an
// item can still finish in time once a replica takes it is the caller's call.
//
// # Queue wait
//
// Next returns only the items. A caller that wants per-item queue wait for
// metrics keeps its own arrival time inside T (a stage request already carries
// one for end-to-end latency) and subtracts it after Next returns. This keeps
// Next's signature small and its hot path free of parallel slices. Stamp the
// arrival time with the same Clock the Batcher uses, so that the numbers agree
// with MaxWait under a virtual clock.
//
// # Shutdown
//
// Close stops intake: later Submits fail with ErrClosed, and waiting Next
// calls wake up. What is still queued stays queued. The server then picks one
// of two endings, or mixes them:
//
//   - graceful: replicas keep calling Next, which hands out the rest at once,
//     without waiting for batches to fill, then returns ErrClosed;
//   - fast: Drain removes everything still queued and returns it, so the
//     server can fail those requests with 503 before closing its engines.
//
// Both take items under one lock, so every accepted item leaves the queue
// exactly once: in a batch from Next, through OnExpire, or from Drain.
//
// # Clock
//
// Time comes from a Clock (SystemClock by default). The Batcher needs only
// Now and one AfterFunc timer, which a discrete-event simulator can implement
// as an entry in its event queue. Tests use SystemClock inside
// testing/synctest bubbles, where time.Now and time.AfterFunc are virtual.
//
// # Allocation
//
// Submit and Next do not allocate in steady state: the queue is a ring buffer
// that grows to its high-water mark and stays there, and Next appends to the
// caller's slice. Pass the previous batch back to Next as dst.
package batcher
