package dataplane_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
)

// slowAccept accepts each connection delay after it arrived: a server too
// busy to reach it, while its request waits in the kernel.
type slowAccept struct {
	net.Listener
	delay time.Duration
}

func (l slowAccept) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		time.Sleep(l.delay)
	}
	return c, err
}

// serveSlowly serves h on a loopback port whose connections are accepted
// delay late, until the test ends.
func serveSlowly(t *testing.T, srv interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}, delay time.Duration) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the kernel's arrival clock (TCP_INFO) is Linux's")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(slowAccept{ln, delay})
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return ln.Addr().String()
}

type httpServer struct{ *dataplane.HTTPServer }

func (s httpServer) Shutdown(ctx context.Context) error { return s.ShutdownWithContext(ctx) }

// A request that waited in the kernel for the server to reach it (a burst
// of uploads on busy cores) arrived when its bytes did, not when its
// handler started; the next request on the same connection arrives when
// it is sent.
func TestArrivalCountsTheWaitInTheKernel(t *testing.T) {
	waited := make(chan time.Duration, 2)
	srv := dataplane.NewHTTPServer(dataplane.ServerConfig{}, func(ctx *fasthttp.RequestCtx) {
		waited <- ctx.Time().Sub(dataplane.Arrival(ctx))
		ctx.SetBodyString("ok")
	}, nil)
	addr := serveSlowly(t, httpServer{srv}, 300*time.Millisecond)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	ask := func() {
		t.Helper()
		io.WriteString(c, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%v %v", resp, err)
		}
		io.Copy(io.Discard, resp.Body)
	}
	ask()
	// 300 ms in the accept queue, less the kernel clock's tick (1–10 ms).
	if d := <-waited; d < 250*time.Millisecond || d > 400*time.Millisecond {
		t.Errorf("the request waited 300 ms to be accepted; Arrival is %s before its handler ran", d)
	}
	time.Sleep(100 * time.Millisecond)
	ask()
	if d := <-waited; d > 50*time.Millisecond {
		t.Errorf("a request read as it came: Arrival %s before its handler (the connection's idle time counted?)", d)
	}
}

// The stage counts a request's deadline from when it arrived in the
// kernel: a request with 150 ms to live that waited 300 ms to be reached
// is refused 504 without being computed, not computed and answered late.
func TestStageDeadlineCountsTheWaitInTheKernel(t *testing.T) {
	rig := newFakeRig(false)
	st := rig.stage(t, models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 1, Cores: 1}, 16)
	srv := dataplane.NewServer(dataplane.ServerConfig{}, dataplane.AdminConfig{}, []*dataplane.Stage{st}, nil, "test")
	body := `{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}`
	infer := func(addr, timeout string) (int, string) {
		t.Helper()
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://" + addr + "/v2/models/fake/infer")
		req.Header.SetMethod("POST")
		req.Header.Set(v2codec.HeaderTimeout, timeout)
		req.SetBodyString(body)
		if err := fasthttp.DoTimeout(req, resp, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode(), string(resp.Body())
	}
	addr := serveSlowly(t, srv, 300*time.Millisecond)
	if status, msg := infer(addr, "150ms"); status != 504 || !strings.Contains(msg, "deadline") {
		t.Errorf("150 ms to live, 300 ms in the kernel: %d %s, want 504 (deadline)", status, msg)
	}
	if n := rig.runs.Load(); n != 0 {
		t.Errorf("the engine ran %d batches for a request past its deadline", n)
	}
	if status, msg := infer(addr, "2s"); status != 200 {
		t.Errorf("2 s to live, 300 ms in the kernel: %d %s, want 200", status, msg)
	}
}
