//go:build !linux

package dataplane

import (
	"net"
	"time"
)

const canAskKernel = false

func lastDataReceived(int) (time.Time, bool) { return time.Time{}, false }

func acceptQueued(*net.TCPListener) net.Conn { return nil }
