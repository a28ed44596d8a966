package dataplane

import (
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const canAskKernel = true

// lastDataReceived returns when socket fd last received data, to the
// millisecond (TCP_INFO's tcpi_last_data_recv): one getsockopt, no
// allocation.
func lastDataReceived(fd int) (time.Time, bool) {
	var info unix.TCPInfo
	n := uint32(unsafe.Sizeof(info))
	now := time.Now()
	_, _, errno := syscall.RawSyscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), syscall.IPPROTO_TCP, syscall.TCP_INFO,
		uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&n)), 0)
	if errno != 0 || uintptr(n) < unsafe.Offsetof(info.Last_data_recv)+unsafe.Sizeof(info.Last_data_recv) {
		return time.Time{}, false
	}
	return now.Add(-time.Duration(info.Last_data_recv) * time.Millisecond), true
}

// acceptQueued accepts a connection the kernel has queued on ln without
// waiting (nil when there is none), whatever ln's deadline.
func acceptQueued(ln *net.TCPListener) net.Conn {
	raw, err := ln.SyscallConn()
	if err != nil {
		return nil
	}
	var c net.Conn
	raw.Control(func(fd uintptr) {
		for {
			nfd, _, err := unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
			if err == unix.EINTR || err == unix.ECONNABORTED {
				continue // interrupted, or a client that left while queued
			}
			if err != nil {
				return
			}
			f := os.NewFile(uintptr(nfd), "")
			c, _ = net.FileConn(f) // a duplicate: f closes
			f.Close()
			return
		}
	})
	return c
}
