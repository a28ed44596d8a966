package dataplane

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// startHTTP serves handler with NewHTTPServer on a loopback port until the
// test ends.
func startHTTP(t *testing.T, cfg ServerConfig, handler fasthttp.RequestHandler) string {
	addr, _ := startGuarded(t, cfg, handler)
	return addr
}

// startGuarded is startHTTP that also returns the server's body guard.
func startGuarded(t *testing.T, cfg ServerConfig, handler fasthttp.RequestHandler) (string, *bodyGuard) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, g := newHTTPServer(cfg, handler, slog.New(slog.DiscardHandler))
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String(), g
}

// answer is what a raw client read back.
type answer struct {
	status  int
	header  http.Header
	err     string // the V2 error, if the body is one
	body    []byte
	closed  bool // the server announced and did close the connection after answering
	elapsed time.Duration
}

// send writes raw on a new connection (then each of more, with pause
// between them) and reads one answer, waiting at most 10 s.
func send(t *testing.T, addr, raw string, pause time.Duration, more ...string) answer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.SetDeadline(start.Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	for _, m := range more {
		time.Sleep(pause)
		io.WriteString(c, m) // the server may have answered and closed already
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer after %s: %v", time.Since(start), err)
	}
	a := answer{status: resp.StatusCode, header: resp.Header, elapsed: time.Since(start)}
	a.body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	var e struct{ Error string }
	if json.Unmarshal(a.body, &e) == nil {
		a.err = e.Error
	}
	// Closed: the answer says so and the server then closes its end.
	if resp.Close {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = br.ReadByte()
		// EOF, or a reset when the server closed with unread request
		// bytes (the rest of a header or body it refused).
		a.closed = err != nil && !os.IsTimeout(err)
	}
	return a
}

// wantError checks a V2 error answer that closes the connection.
func (a answer) wantError(t *testing.T, what string, status int, msg string) {
	t.Helper()
	if a.status != status || !strings.Contains(a.err, msg) || strings.Contains(a.err, "\n") {
		t.Fatalf("%s: %d %q, want %d and a one-line V2 error mentioning %q", what, a.status, a.body, status, msg)
	}
	if !a.closed {
		t.Fatalf("%s: the connection stays open after %d", what, a.status)
	}
}

// okHandler answers 200 with the body's length and SHA-256.
func okHandler(ctx *fasthttp.RequestCtx) {
	sum := sha256.Sum256(ctx.PostBody())
	fmt.Fprintf(ctx, "%d %x", len(ctx.PostBody()), sum)
}

func TestReadTimeoutIs408WithAV2Error(t *testing.T) {
	addr := startHTTP(t, ServerConfig{ReadTimeout: 300 * time.Millisecond, MaxBodySize: 4 << 20}, okHandler)
	for _, tc := range []struct{ what, raw string }{
		{"header never ends", "POST /x HTTP/1.1\r\nHost: a\r\n"},
		{"Content-Length longer than the body (fasthttp's first 8 KiB)", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + strings.Repeat("x", 50)},
		{"Content-Length longer than the body (ipa's read)", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n" + strings.Repeat("x", 100000)},
		{"chunked body never ends", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n"},
	} {
		a := send(t, addr, tc.raw, 0)
		a.wantError(t, tc.what, 408, "--http.read-timeout")
		// Answered at the timeout, not at a client's or kernel's.
		if a.elapsed > 5*time.Second {
			t.Fatalf("%s: answered after %s", tc.what, a.elapsed)
		}
	}
}

func TestOversizedHeaderIs431(t *testing.T) {
	addr := startHTTP(t, ServerConfig{MaxHeaderSize: 4096}, okHandler)
	a := send(t, addr, "GET /x HTTP/1.1\r\nHost: a\r\nCookie: "+strings.Repeat("c", 5000)+"\r\n\r\n", 0)
	a.wantError(t, "5 KB cookie", 431, "--http.max-header-size")
	if a := send(t, addr, "GET /x HTTP/1.1\r\nHost: a\r\nCookie: "+strings.Repeat("c", 3000)+"\r\n\r\n", 0); a.status != 200 {
		t.Fatalf("3 KB cookie: %d %s", a.status, a.body)
	}
}

// A request that frames its body both ways is refused (request smuggling:
// a proxy in front may read the other framing), whatever the order.
func TestContentLengthWithTransferEncodingIsRefused(t *testing.T) {
	var handled atomic.Int64
	addr := startHTTP(t, ServerConfig{}, func(ctx *fasthttp.RequestCtx) { handled.Add(1); okHandler(ctx) })
	for _, hdr := range []string{
		"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
		"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
		"transfer-encoding: chunked\r\ncontent-length: 5\r\n",
		"Content-Length: 5\r\nTransfer-Encoding: identity\r\n",
	} {
		a := send(t, addr, "POST /x HTTP/1.1\r\nHost: a\r\n"+hdr+"\r\n5\r\nhello\r\n0\r\n\r\n", 0)
		a.wantError(t, hdr, 400, "both Content-Length and Transfer-Encoding")
	}
	if handled.Load() != 0 {
		t.Fatalf("the handler ran %d times", handled.Load())
	}
	// Either framing alone is served.
	if a := send(t, addr, "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 0); a.status != 200 || !strings.HasPrefix(string(a.body), "5 ") {
		t.Fatalf("chunked: %d %s", a.status, a.body)
	}
}

// fasthttp's error texts quote the request's bytes; the answers must not,
// least of all its Authorization header.
func TestErrorsNeverEchoTheRequest(t *testing.T) {
	addr := startHTTP(t, ServerConfig{MaxHeaderSize: 4096, ReadTimeout: 300 * time.Millisecond}, okHandler)
	const secret = "Authorization: Bearer s3cret-token-0123456789"
	for _, tc := range []struct {
		raw    string
		status int
	}{
		{"POST /x HTTP/1.1\r\nHost: a\r\n" + secret + "\r\nB(ad: x\r\n\r\n", 400},
		{"POST /x HTTP/1.1\r\nHost: a\r\n" + secret + "\r\nNo colon\r\n\r\n", 400},
		{"POST /x HTTP/1.1\r\n" + secret + "\r\nContent-Length: 12x\r\n\r\n", 400},
		{"POST /x HTTP/1.1\r\n" + secret + "\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
		{"P\x00ST /x HTTP/1.1\r\n" + secret + "\r\n\r\n", 400},
		{"POST /x HTTP/1.1\r\n" + secret + "\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
		{"POST /x HTTP/1.1\r\n" + secret + "\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
		{"GET /x HTTP/1.1\r\n" + secret + "\r\nX-Pad: " + strings.Repeat("p", 5000) + "\r\n\r\n", 431},
		{"GET /x HTTP/1.1\r\n" + secret + "\r\n", 408},
	} {
		a := send(t, addr, tc.raw, 0)
		if a.status != tc.status || a.err == "" {
			t.Errorf("%.60q: %d %q, want %d with a V2 error", tc.raw, a.status, a.body, tc.status)
		}
		if bytes.Contains(a.body, []byte("s3cret")) || bytes.Contains(a.body, []byte("Bearer")) {
			t.Errorf("%.60q: the answer echoes the request: %s", tc.raw, a.body)
		}
	}
}

// Bodies reach the handler whole whatever their size, framing and pace,
// and a connection serves the next request after each.
func TestBodiesReachTheHandlerWhole(t *testing.T) {
	addr := startHTTP(t, ServerConfig{MaxBodySize: 8 << 20}, okHandler)
	client := &fasthttp.HostClient{Addr: addr, MaxConns: 1}
	for _, n := range []int{0, 1, 4095, 4096, 8191, 8192, 8193, 65535, 65536, 65537, 262145, 602112, 3 << 20, 8 << 20} {
		body := make([]byte, n)
		for i := range body {
			body[i] = byte(i*7 + n)
		}
		sum := sha256.Sum256(body)
		want := fmt.Sprintf("%d %x", n, sum)
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://" + addr + "/x")
		req.Header.SetMethod("POST")
		req.SetBody(body)
		if err := client.Do(req, resp); err != nil || resp.StatusCode() != 200 || string(resp.Body()) != want {
			t.Fatalf("%d bytes: %v %d %q, want %q", n, err, resp.StatusCode(), resp.Body(), want)
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
	// Slowly, in pieces: declared, and chunked.
	body := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320 KB
	sum := sha256.Sum256(body)
	want := fmt.Sprintf("%d %x", len(body), sum)
	var pieces []string
	for i := 0; i < len(body); i += 70000 {
		pieces = append(pieces, string(body[i:min(i+70000, len(body))]))
	}
	a := send(t, addr, fmt.Sprintf("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", len(body)), 20*time.Millisecond, pieces...)
	if a.status != 200 || string(a.body) != want || a.closed {
		t.Fatalf("declared, in pieces: %d %q (closed %v)", a.status, a.body, a.closed)
	}
	var chunks []string
	for _, p := range pieces {
		chunks = append(chunks, fmt.Sprintf("%x\r\n%s\r\n", len(p), p))
	}
	chunks = append(chunks, "0\r\n\r\n")
	a = send(t, addr, "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 20*time.Millisecond, chunks...)
	if a.status != 200 || string(a.body) != want || a.closed {
		t.Fatalf("chunked, in pieces: %d %q (closed %v)", a.status, a.body, a.closed)
	}
}

// TestCompressedBodiesAreDecodedWithinTheLimits: a gzip or deflate body
// (Content-Encoding, as Triton's clients send it) reaches the handler
// decoded, without the header, declared or chunked, small or large; one
// that decodes past --http.max-body-size is 413 (a zip bomb), a corrupt one
// 400, another encoding 415, and the decoded bodies' memory is returned.
func TestCompressedBodiesAreDecodedWithinTheLimits(t *testing.T) {
	var sawEncoding atomic.Int64
	addr, g := startGuarded(t, ServerConfig{MaxBodySize: 1 << 20}, func(ctx *fasthttp.RequestCtx) {
		if e := string(ctx.Request.Header.ContentEncoding()); e != "" && e != "identity" {
			sawEncoding.Add(1)
		}
		okHandler(ctx)
	})
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		w.Write(b)
		w.Close()
		return buf.Bytes()
	}
	zl := func(b []byte) []byte {
		var buf bytes.Buffer
		w := zlib.NewWriter(&buf)
		w.Write(b)
		w.Close()
		return buf.Bytes()
	}
	post := func(what, enc string, body []byte) answer {
		return send(t, addr, fmt.Sprintf("POST /x HTTP/1.1\r\nHost: a\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n%s", enc, len(body), body), 0)
	}
	for _, n := range []int{0, 10, 5000, 70000, 602112, 1 << 20} {
		body := make([]byte, n)
		for i := range body {
			body[i] = byte(i % 251)
		}
		sum := sha256.Sum256(body)
		want := fmt.Sprintf("%d %x", n, sum)
		for enc, c := range map[string][]byte{"gzip": gz(body), "x-gzip": gz(body), "deflate": zl(body), "GZIP": gz(body), "identity": body} {
			if a := post(enc, enc, c); a.status != 200 || string(a.body) != want {
				t.Fatalf("%d bytes, %s: %d %q, want %q", n, enc, a.status, a.body, want)
			}
		}
	}
	// Chunked and compressed.
	body := bytes.Repeat([]byte("tensor "), 40000)
	c := gz(body)
	sum := sha256.Sum256(body)
	a := send(t, addr, fmt.Sprintf("POST /x HTTP/1.1\r\nHost: a\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(c), c), 0)
	if want := fmt.Sprintf("%d %x", len(body), sum); a.status != 200 || string(a.body) != want {
		t.Fatalf("chunked gzip: %d %q", a.status, a.body)
	}
	if sawEncoding.Load() != 0 {
		t.Fatalf("the handler saw Content-Encoding %d times: it gets the decoded body", sawEncoding.Load())
	}
	// 4 MiB of zeros in about 4 KB: past the 1 MiB limit once decoded.
	post("bomb", "gzip", gz(make([]byte, 4<<20))).wantError(t, "gzip bomb", 413, "--http.max-body-size")
	post("corrupt", "gzip", []byte("not gzip at all")).wantError(t, "corrupt gzip", 400, "not valid gzip data")
	post("truncated", "deflate", zl(body)[:100]).wantError(t, "truncated deflate", 400, "not valid deflate data")
	post("brotli", "br", []byte("whatever")).wantError(t, "brotli", 415, `Content-Encoding "br" is not supported`)
	deadline := time.Now().Add(5 * time.Second)
	for g.inUse.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := g.inUse.Load(); n != 0 {
		t.Fatalf("%d bytes of body memory still reserved after the requests", n)
	}
}

func TestBodyOverTheLimitIs413AtOnce(t *testing.T) {
	var handled atomic.Int64
	addr := startHTTP(t, ServerConfig{MaxBodySize: 100 << 10, ReadTimeout: 10 * time.Second}, func(ctx *fasthttp.RequestCtx) { handled.Add(1) })
	// Declared: refused before the body is sent, not at the read timeout.
	a := send(t, addr, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 67108864\r\n\r\n"+strings.Repeat("x", 8192), 0)
	a.wantError(t, "declared 64 MiB", 413, "--http.max-body-size")
	if a.elapsed > 5*time.Second {
		t.Fatalf("413 after %s", a.elapsed)
	}
	// Chunked: refused once the chunks pass the limit.
	chunk := fmt.Sprintf("%x\r\n%s\r\n", 30<<10, strings.Repeat("y", 30<<10))
	a = send(t, addr, "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"+strings.Repeat(chunk, 4), 0)
	a.wantError(t, "120 KiB chunked", 413, "--http.max-body-size")
	if handled.Load() != 0 {
		t.Fatalf("the handler ran %d times", handled.Load())
	}
}

// Memory is reserved as bodies arrive, not as they are declared:
// connections declaring the largest body and sending nothing reserve
// 64 KiB each. Bodies that did arrive count against --http.max-body-memory
// until their handler returns, and a body that would pass it is refused
// with 503 and Retry-After while smaller ones are still served.
func TestBodyMemoryIsReservedAsItArrives(t *testing.T) {
	const maxBody = 256 << 10
	cfg := ServerConfig{MaxBodySize: maxBody, MaxBodyMemory: 1, ReadTimeout: 30 * time.Second}
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	addr, g := startGuarded(t, cfg, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/hold" {
			<-release
		}
		okHandler(ctx)
	})
	t.Cleanup(unblock) // runs before the server's shutdown, which waits for the handlers
	if g.budget != 1<<20 {
		t.Fatalf("budget %d, want it raised to the least that fits a %d-byte body: 1 MiB", g.budget, maxBody)
	}
	reserved := func(want int64) {
		t.Helper()
		for end := time.Now().Add(10 * time.Second); g.inUse.Load() != want; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("reserved %d bytes, want %d", g.inUse.Load(), want)
			}
		}
	}
	dial := func(raw string) net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		io.WriteString(c, raw)
		return c
	}
	// Declared, not sent: 64 KiB each, 30 of them 1.9 MiB.
	var idle []net.Conn
	for range 30 {
		idle = append(idle, dial(fmt.Sprintf("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", maxBody, strings.Repeat("z", 8192))))
	}
	if a := send(t, addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 0); a.status != 200 {
		t.Fatalf("GET beside the idle bodies: %d %s", a.status, a.body)
	}
	for end := time.Now().Add(10 * time.Second); g.inUse.Load() < 16*firstBodyBuffer; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("reserved %d bytes, want the 16 first buffers the budget holds", g.inUse.Load())
		}
	}
	for _, c := range idle {
		c.Close()
	}
	reserved(0)
	// Sent and held by their handlers: 256 KiB each, so three leave
	// 256 KiB, which a fourth cannot grow into (it holds 64 KiB and needs
	// 256 more), but a short body fits.
	full := fmt.Sprintf("POST /hold HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", maxBody, strings.Repeat("h", maxBody))
	var held []net.Conn
	for range 3 {
		held = append(held, dial(full))
	}
	reserved(3 * maxBody)
	a := send(t, addr, strings.Replace(full, "/hold", "/x", 1), 0)
	a.wantError(t, "a body past the budget", 503, "--http.max-body-memory")
	if a.header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	if a := send(t, addr, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789", 0); a.status != 200 {
		t.Fatalf("a short body beside them: %d %s", a.status, a.body)
	}
	unblock()
	for _, c := range held {
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("held request: %v %v", resp, err)
		}
	}
	reserved(0)
	if a := send(t, addr, strings.Replace(full, "/hold", "/x", 1), 0); a.status != 200 {
		t.Fatalf("once the memory is free: %d %.100s", a.status, a.body)
	}
}

// The deadline counts from Arrival, before the body was read: a slow
// upload uses up the request's time.
func TestArrivalIsBeforeTheBodyArrived(t *testing.T) {
	waited := make(chan time.Duration, 1)
	addr := startHTTP(t, ServerConfig{}, func(ctx *fasthttp.RequestCtx) {
		waited <- time.Since(Arrival(ctx))
		okHandler(ctx)
	})
	body := strings.Repeat("b", 200<<10)
	a := send(t, addr, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 204800\r\n\r\n"+body[:100<<10], time.Second, body[100<<10:])
	if a.status != 200 {
		t.Fatalf("%d %s", a.status, a.body)
	}
	// The second half came a second after the first; half a second leaves
	// room for the server to see the first half late.
	if d := <-waited; d < 500*time.Millisecond {
		t.Fatalf("the handler ran %s after Arrival; the upload took a second", d)
	}
}

// fasthttp's connection limits are on: past --http.max-conns-per-ip a
// client's connection is refused with 429, past --http.max-conns with 503.
func TestConnectionLimits(t *testing.T) {
	for _, tc := range []struct {
		cfg    ServerConfig
		open   int
		status int
	}{
		{ServerConfig{MaxConnsPerIP: 2}, 2, 429},
		{ServerConfig{MaxConns: 3}, 3, 503},
	} {
		addr := startHTTP(t, tc.cfg, okHandler)
		var open []net.Conn
		for range tc.open {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			open = append(open, c)
			// A request answered shows the connection is being served.
			io.WriteString(c, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
				t.Fatalf("%+v: connection within the limit: %v %v", tc.cfg, resp, err)
			}
		}
		if a := send(t, addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 0); a.status != tc.status || a.err == "" {
			t.Fatalf("%+v: one connection more: %d %s, want %d and a V2 error", tc.cfg, a.status, a.body, tc.status)
		}
		// A connection closed gives its place back.
		open[0].Close()
		deadline := time.Now().Add(5 * time.Second)
		for a := send(t, addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 0); a.status != 200; a = send(t, addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 0) {
			if time.Now().After(deadline) {
				t.Fatalf("%+v: after one connection closed: %d %s, want 200", tc.cfg, a.status, a.body)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestFramingConflictReadsHeaderNames(t *testing.T) {
	for raw, want := range map[string]bool{
		"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n": true,
		"transfer-encoding:chunked\ncontent-length:1\n":           true,
		"Content-Length : 1\r\nTransfer-Encoding : chunked\r\n":   true,
		"Content-Length: 1\r\n\r\n":                               false,
		"Transfer-Encoding: chunked\r\n":                          false,
		"X-Content-Length: 1\r\nTransfer-Encoding: chunked\r\n":   false,
		"X: Content-Length: 1\r\nTransfer-Encoding: chunked\r\n":  false,
		"": false,
	} {
		if got := framingConflict([]byte(raw)); got != want {
			t.Errorf("%q: %v, want %v", raw, got, want)
		}
	}
}

// framingConflict agrees with net/textproto on every header it can parse.
func FuzzFramingConflict(f *testing.F) {
	for _, s := range []string{"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "A: b\r\n\r\n", "content-length:1\r\n\r\n", "Transfer-Encoding: x\r\n Content-Length: 1\r\n\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got := framingConflict(raw)
		h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw))).ReadMIMEHeader()
		if err != nil || !bytes.HasSuffix(raw, []byte("\n\n")) && !bytes.HasSuffix(raw, []byte("\r\n\r\n")) || bytes.ContainsAny(raw, "\x00") {
			return // not a header textproto reads whole
		}
		if want := len(h["Content-Length"]) > 0 && len(h["Transfer-Encoding"]) > 0; got != want {
			t.Fatalf("%q: %v, textproto says %v (%v)", raw, got, want, h)
		}
	})
}

func TestBufferSizesArePooledPowersOfTwo(t *testing.T) {
	for n, want := range map[int]int{1: 4096, 4096: 4096, 4097: 8192, 600000: 1 << 20, 4 << 20: 4 << 20, 4<<20 + 1: 4<<20 + 1} {
		if got := bufferSize(n); got != want {
			t.Errorf("bufferSize(%d) = %d, want %d", n, got, want)
		}
		b := getBodyBuffer(n)
		if cap(b.b) != want || len(b.b) != 0 {
			t.Errorf("getBodyBuffer(%d): len %d cap %d, want cap %d", n, len(b.b), cap(b.b), want)
		}
		putBodyBuffer(b)
	}
}

// The handler sees the kernel's connection, not a wrapper: fasthttp sends
// a response's header and body in one writev only to a *net.TCPConn
// (behind a wrapper every answer took two writes). The connection's socket
// is known to Arrival while it is served (where the kernel can be asked)
// and forgotten once it closed.
func TestServedConnectionsAreTheKernelsOwn(t *testing.T) {
	types := make(chan string, 1)
	addr := startHTTP(t, ServerConfig{}, func(ctx *fasthttp.RequestCtx) {
		v, known := served.Load(ctx.Conn())
		known = known && v.(*servedConn).fd >= 0
		types <- fmt.Sprintf("%T %v", ctx.Conn(), known)
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	if got, want := <-types, fmt.Sprintf("*net.TCPConn %v", canAskKernel); got != want {
		t.Errorf("the handler's connection: %s, want %s (a TCP connection, its socket known where the kernel can be asked)", got, want)
	}
	c.Close()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		n := 0
		served.Range(func(k, _ any) bool {
			if k.(net.Conn).LocalAddr().String() == addr {
				n++
			}
			return true
		})
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d closed connections still counted as served", n)
		}
	}
}
