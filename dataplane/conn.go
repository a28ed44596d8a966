package dataplane

import (
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Arrival returns when the request arrived, the instant its deadline counts
// from: the earlier of two clocks.
//
// fasthttp's ctx.Time() is the moment the server called the handler, which
// (StreamRequestBody) is once the header and the first 8 KiB of the body
// were read, before the rest of the body is: the upload of the body counts
// against the deadline. It does not see the time a request waited in the
// kernel before the server read its first byte, which under a burst is
// most of it: 676 requests of 600 KB sent at once to a stage on two cores
// waited up to 90 ms each for the server to reach them (measured with this
// clock), and a request reached last that counted its deadline from there
// was answered "in time" by the stage, late for its client.
//
// So on Linux, for a connection accepted by HTTPServer.Serve, the kernel's
// clock too: when its socket last received data (TCP_INFO's
// tcpi_last_data_recv, to the millisecond), asked when the handler asks.
// With one request at a time on a connection (HTTP/1.1), the last data
// received is this request's, so that instant is no earlier than its first
// byte arrived: the deadline never counts time the request was not there.
// A request still being uploaded when the handler started arrives at
// ctx.Time(), as before. A ctx that no server filled in (a handler called
// directly) arrives now. Asked again for the same request, Arrival answers
// the same.
func Arrival(ctx *fasthttp.RequestCtx) time.Time {
	t := ctx.Time()
	if t.IsZero() {
		t = time.Now()
	}
	if v, ok := served.Load(ctx.Conn()); ok {
		sc := v.(*servedConn)
		if n := ctx.ConnRequestNum(); n != 0 && sc.request == n {
			return sc.arrival // asked before, for this request
		} else if sc.fd >= 0 {
			if k, ok := lastDataReceived(sc.fd); ok && k.Before(t) {
				t = k
			}
			sc.request, sc.arrival = n, t
		}
	}
	return t
}

// servedConn is what the server knows of a connection it serves: the
// listener whose limits count it, its client's address and its socket
// (-1: none to ask), which stays open as long as the connection is.
type servedConn struct {
	l  *connListener
	ip netip.Addr
	fd int
	// request is the number on the connection (ctx.ConnRequestNum) of
	// the request whose arrival Arrival found; asked again, for the same
	// request (after its body was read, the socket's last data is the
	// body's), it answers the same. Only the connection's goroutine uses
	// them.
	request uint64
	arrival time.Time
}

// served holds every connection a connListener returned, from Accept until
// fasthttp reports it closed (connState).
var served sync.Map // net.Conn → *servedConn

// connState is every HTTPServer's fasthttp.Server.ConnState: a connection
// Accept returned is counted out of its listener's limits once fasthttp
// closed it (or handed it over), once.
func connState(c net.Conn, st fasthttp.ConnState) {
	if st != fasthttp.StateClosed && st != fasthttp.StateHijacked {
		return
	}
	if v, ok := served.LoadAndDelete(c); ok {
		sc := v.(*servedConn)
		sc.l.closed(sc.ip)
	}
}

// connListener accepts the connections of an HTTPServer: it refuses the
// connections past most (0: no limit) with 503 and a client's past perIP
// with 429, each with a V2 error, and keeps each served TCP connection's
// socket for Arrival. The connections it returns are the kernel's own
// (*net.TCPConn), not wrapped: fasthttp writes a response's header and body
// with one writev only to those (behind a wrapper every answer took two
// writes). So a connection is counted out when fasthttp reports it closed
// (connState), not by a Close of ours. (fasthttp's own per-IP limit would
// hide the connection behind a wrapper of its own, and its refusals are
// plain text.)
type connListener struct {
	net.Listener
	most, perIP int
	mu          sync.Mutex
	total       int
	open        map[netip.Addr]int
}

func newConnListener(ln net.Listener, most, perIP int) *connListener {
	return &connListener{Listener: ln, most: most, perIP: perIP, open: map[netip.Addr]int{}}
}

// Accept returns the next connection within the limits.
func (l *connListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := clientIP(c.RemoteAddr())
		if refuse := l.admit(ip); refuse != nil {
			go refuse(c)
			continue
		}
		served.Store(c, &servedConn{l: l, ip: ip, fd: socketOf(c)})
		return c, nil
	}
}

// admit counts a connection from ip in, or returns how to refuse it: past
// the server's limit 503, past its client's 429.
func (l *connListener) admit(ip netip.Addr) func(net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.most > 0 && l.total >= l.most {
		return refuseTotal
	}
	if l.perIP > 0 && ip.IsValid() {
		if l.open[ip] >= l.perIP {
			return refusePerIP
		}
		l.open[ip]++
	}
	l.total++
	return nil
}

// closed counts a connection from ip out.
func (l *connListener) closed(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perIP > 0 && ip.IsValid() {
		if l.open[ip]--; l.open[ip] <= 0 {
			delete(l.open, ip)
		}
	}
}

func refuseTotal(c net.Conn) {
	refused[refusedConns].Inc()
	rejectConn(c, "503 Service Unavailable", "the server serves too many connections (--http.max-conns); retry later")
}

func refusePerIP(c net.Conn) {
	refused[refusedConnsPerIP].Inc()
	rejectConn(c, "429 Too Many Requests", "too many connections from your address (--http.max-conns-per-ip); reuse a connection or retry later")
}

// rejectConn answers a connection status with msg as a V2 error and closes
// it, within a second whatever the client does (it reads nothing of the
// request).
func rejectConn(c net.Conn, status, msg string) {
	body := `{"error":` + strconv.Quote(msg) + `}`
	c.SetDeadline(time.Now().Add(time.Second))
	c.Write([]byte("HTTP/1.1 " + status + "\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body))
	c.Close()
}

// clientIP is the address a connection came from (invalid when it is not
// an IP connection).
func clientIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// socketOf returns the socket of a TCP connection, looking through
// wrappers that return what they wrap with NetConn (as crypto/tls does);
// -1 when there is none, or the kernel cannot be asked.
func socketOf(c net.Conn) int {
	if !canAskKernel {
		return -1
	}
	for {
		if tc, ok := c.(*net.TCPConn); ok {
			raw, err := tc.SyscallConn()
			if err != nil {
				return -1
			}
			fd := -1
			if err := raw.Control(func(s uintptr) { fd = int(s) }); err != nil {
				return -1
			}
			return fd
		}
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return -1
		}
		c = w.NetConn()
	}
}
