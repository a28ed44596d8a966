//go:build !race

package batcher

// invariants is false outside race builds; see invariants_on.go.
const invariants = false
