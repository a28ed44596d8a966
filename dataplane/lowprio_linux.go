package dataplane

import (
	"runtime"
	"syscall"

	mlrt "github.com/ipa-serving/ipa/runtime"
)

// lowNice is the nice value of a background load's thread: the scheduler
// gives the serving threads (nice 0) about ten times its share of a busy
// core.
const lowNice = 10

// openLow runs open on an OS thread of its own at nice lowNice, so that a
// background load takes the CPU the serving replicas leave. Only for
// single-threaded sessions: threads that ONNX Runtime starts while opening
// a session (its intra-op pool) would inherit the nice value for good. The
// thread exits with the goroutine (LockOSThread is never undone), and its
// nice value with it.
func openLow(open func() (mlrt.Engine, error)) (mlrt.Engine, error) {
	type result struct {
		e   mlrt.Engine
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		_ = syscall.Setpriority(syscall.PRIO_PROCESS, syscall.Gettid(), lowNice) // best effort
		e, err := open()
		ch <- result{e, err}
	}()
	r := <-ch
	return r.e, r.err
}
