package dataplane

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Listen announces on the TCP address addr for a server that stops
// without resetting a connection it could still serve: see
// DrainingListener.Close.
func Listen(addr string) (*DrainingListener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &DrainingListener{TCPListener: ln.(*net.TCPListener), closed: make(chan struct{})}, nil
}

// DrainingListener is a TCP listener whose Close first accepts what the
// kernel already queued.
//
// The kernel completes a client's handshake before the server accepts the
// connection, so the client sends its request at once. Closing a listening
// socket resets the connections still in its queue: a client that
// connected a moment before a plain Close, under load, saw its request
// fail with "connection reset by peer", as if the server had dropped it
// (the SIGTERM e2e test saw it once in CI). Here Close hands those
// connections to Accept (its server answers them: while draining, 503
// with Connection: close) and closes the socket the moment the queue is
// empty, in the same goroutine; only a client whose handshake completes
// within that system call's microseconds is still reset. On systems other
// than Linux it is a plain Close.
type DrainingListener struct {
	*net.TCPListener
	closing atomic.Bool
	once    sync.Once
	closed  chan struct{} // closed with the socket
	err     error
}

// drainWait is how long Close waits for the server's Accept to take the
// queue before it closes the socket itself (no Accept is running: the
// server stopped).
const drainWait = time.Second

// Accept waits for the next connection; once Close was called it returns
// those still queued without waiting, then closes the socket and returns
// net.ErrClosed.
func (l *DrainingListener) Accept() (net.Conn, error) {
	if !l.closing.Load() {
		c, err := l.TCPListener.Accept()
		if err == nil || !l.closing.Load() {
			return c, err
		}
	}
	if c := acceptQueued(l.TCPListener); c != nil {
		return c, nil
	}
	l.closeSocket()
	return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
}

// Close stops taking connections: the ones the kernel queued are accepted
// first (by the server's Accept, woken here), then the socket closes, and
// new clients are refused. It returns once the socket is closed: at once
// if no Accept takes the queue within drainWait.
func (l *DrainingListener) Close() error {
	if l.closing.Swap(true) {
		<-l.closed
		return &net.OpError{Op: "close", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
	}
	l.TCPListener.SetDeadline(time.Unix(1, 0)) // wakes an Accept waiting
	select {
	case <-l.closed:
	case <-time.After(drainWait):
		l.closeSocket()
	}
	return l.err
}

func (l *DrainingListener) closeSocket() {
	l.once.Do(func() {
		l.err = l.TCPListener.Close()
		close(l.closed)
	})
}
