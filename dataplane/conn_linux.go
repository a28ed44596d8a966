package dataplane

import (
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
