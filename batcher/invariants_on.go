//go:build race

package batcher

// invariants turns on consistency checks of the queue's bookkeeping. It is
// true in race builds, which is how tests run, and false otherwise, so the
// checks cost nothing in production (the idea of pebble's internal/invariants).
const invariants = true
