//go:build !linux

package dataplane

import mlrt "github.com/ipa-serving/ipa/runtime"

// openLow opens at the normal priority where threads have no nice value
// of their own.
func openLow(open func() (mlrt.Engine, error)) (mlrt.Engine, error) { return open() }
