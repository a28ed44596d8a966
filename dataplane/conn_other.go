//go:build !linux

package dataplane

import "time"

const canAskKernel = false

func lastDataReceived(int) (time.Time, bool) { return time.Time{}, false }
