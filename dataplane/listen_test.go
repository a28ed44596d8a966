package dataplane

import (
	"bufio"
	"errors"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// Clients whose connections the kernel queued before Close are served,
// not reset; after Close new clients are refused. (A plain net.Listener's
// Close resets the queued ones: each client below would read
// "connection reset by peer".)
func TestCloseServesTheQueuedConnections(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the queue is taken on Linux only")
	}
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	const clients = 8
	answers := make(chan error, clients)
	for range clients {
		c, err := net.Dial("tcp", addr) // queued: nothing accepts yet
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go func() {
			if _, err := c.Write([]byte("ping\n")); err != nil {
				answers <- err
				return
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err == nil && line != "pong\n" {
				err = errors.New("answer " + line)
			}
			answers <- err
		}()
	}
	closed := make(chan error, 1)
	go func() { closed <- ln.Close() }()
	time.Sleep(100 * time.Millisecond) // Close waits for an Accept to take the queue
	served := 0
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
			}
			break
		}
		served++
		go func() {
			defer c.Close()
			bufio.NewReader(c).ReadString('\n')
			c.Write([]byte("pong\n"))
		}()
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if served != clients {
		t.Errorf("Accept returned %d connections after Close, want the %d queued", served, clients)
	}
	for range clients {
		if err := <-answers; err != nil {
			t.Errorf("a client queued before Close: %v", err)
		}
	}
	if _, err := net.Dial("tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial after Close: %v, want connection refused", err)
	}
	if err := ln.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v, want net.ErrClosed", err)
	}
}

// With no Accept running (the server stopped), Close closes the socket
// itself after drainWait.
func TestCloseWithoutAcceptCloses(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < drainWait || d > drainWait+2*time.Second {
		t.Errorf("Close returned after %s, want about %s", d, drainWait)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Errorf("dial after Close succeeded")
	}
}

// An Accept waiting when Close comes returns net.ErrClosed at once (the
// queue is empty).
func TestCloseWakesAWaitingAccept(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		accepted <- err
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > drainWait/2 {
		t.Errorf("Close took %s with an Accept waiting", d)
	}
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept: %v, want net.ErrClosed", err)
	}
}
