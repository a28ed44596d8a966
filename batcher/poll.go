package batcher

// Poll is Next for a caller that must never block: a discrete-event
// simulator that runs the Batcher single-threaded under a virtual Clock.
// It looks at the queue once, exactly as a waiting Next does each time it
// wakes: it expires what is due (handing it to OnExpire), and returns the
// ready batch appended to dst[:0] and true, or false when no batch is ready.
//
// A false Poll leaves the Batcher as if one Next caller were waiting for a
// batch: the timer is armed for the oldest item's MaxWait and the earliest
// deadline, and Submit or SetConfig make a batch ready at once. So the caller
// polls again when its Clock runs the timer's callback, after each Submit and
// SetConfig, and whenever a replica frees up; it then gets the same batches,
// at the same times, as replicas blocked in Next would. A true Poll ends that
// wait, like a Next that returns.
//
// Poll must not be mixed with Next or called concurrently with itself.
func (b *Batcher[T]) Poll(dst []T) ([]T, bool) {
	dst = dst[:0]
	select { // a stale wakeup is meaningless to a caller that does not wait
	case <-b.wake:
	default:
	}
	b.mu.Lock()
	now := b.now()
	expired := b.expireLocked(now)
	ready := b.q.n > 0 && b.readyLocked(now)
	if ready {
		b.leading = false
		dst = b.popBatchLocked(dst)
		b.checkLocked()
	} else if !b.closed {
		b.leading = true
		b.armLocked(now)
	}
	b.mu.Unlock()
	if expired {
		b.runExpired()
	}
	return dst, ready
}

// StopPolling tells the Batcher that no caller waits for a batch any more
// (the last idle replica of a simulated stage left), as a Next caller whose
// context ends does.
func (b *Batcher[T]) StopPolling() {
	b.mu.Lock()
	b.leading = false
	b.mu.Unlock()
}
