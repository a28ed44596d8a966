package dataplane

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/dataplane/promtext"
)

// Limits NewHTTPServer applies where a ServerConfig leaves them zero; the
// command-line defaults are the same (ServerConfig's tags).
const (
	// DefaultMaxConns bounds the connections served at once. Each costs
	// about 30 KiB (goroutine, read and write buffers, the first 8 KiB of
	// its body), so 4,096 hold about 120 MiB at most.
	DefaultMaxConns = 4096
	// DefaultMaxConnsPerIP lets one client address hold half the
	// connections: more than a router (512 per replica) or `ipa load`
	// (--max-inflight 1024) opens.
	DefaultMaxConnsPerIP = 2048
	// DefaultMaxBodyMemory bounds the memory of the request bodies being
	// received or served at once: four bodies of the largest size, or about
	// 250 tensors of 600 KB in their 1 MiB buffers.
	DefaultMaxBodyMemory = 256 << 20
	// DefaultMaxHeaderSize is the largest request line plus header.
	DefaultMaxHeaderSize = 8 << 10
)

// NewHTTPServer returns the fasthttp server every role uses.
//
// Request bodies take memory as they arrive, not as declared. fasthttp
// alone allocates a buffer of the declared Content-Length before reading a
// byte, so 30 connections that declare 64 MiB and send nothing cost up to
// 2 GB. Here (fasthttp's StreamRequestBody) the handler starts after the
// header and the body's first 8 KiB, and the body is read into a buffer
// that starts at 64 KiB (or the declared length if smaller) and grows
// sixteenfold, to the declared length at most, only when the bytes received
// fill it: a body holds at most sixteen times what it sent, and a
// connection that sent nothing 64 KiB. Every buffer is reserved from one budget per
// server (cfg.MaxBodyMemory; each role runs one server, so it is the
// process's): a request that would exceed it is answered 503 with
// Retry-After. The handler sees the whole body through ctx.PostBody as
// before; the buffer is pooled and reused once the handler returns, so a
// handler must not keep the body (fasthttp's own contract). A body sent
// with Content-Encoding gzip or deflate (Triton's clients compress so) is
// decoded before the handler, into a buffer reserved the same way; its
// decoded size is held to cfg.MaxBodySize (413), a corrupt one is 400 and
// another encoding 415.
//
// Errors are V2 errors ({"error": …}) with the status that says what
// happened, and never echo the request: a read timeout is 408, a header
// over cfg.MaxHeaderSize 431, a body over cfg.MaxBodySize 413,
// Content-Length together with Transfer-Encoding 400 (request smuggling),
// any other malformed request 400 with a fixed text. Each of those answers
// closes the connection.
//
// Connections are accepted through a listener of ours (HTTPServer.Serve):
// it refuses connections past cfg.MaxConns (503) and a client's past
// cfg.MaxConnsPerIP (429) with V2 errors, counts those it serves
// (OpenConns), and lets Arrival ask each connection's socket when its
// request arrived.
func NewHTTPServer(cfg ServerConfig, handler fasthttp.RequestHandler, log *slog.Logger) *HTTPServer {
	srv, _ := newHTTPServer(cfg, handler, log)
	return srv
}

// HTTPServer is fasthttp's server, serving through a listener of ours.
type HTTPServer struct {
	*fasthttp.Server
	guard       *bodyGuard
	most, perIP int
	conns       atomic.Pointer[connListener] // set by Serve
}

// Preflight decides on a request from its header alone, before its body is
// read (HTTPServer.SetPreflight): a server that refuses work it cannot do in
// time then spends neither memory nor a copy on the bodies it refuses.
type Preflight interface {
	// Before is called once a request's header is in, before its body is
	// read; it reports whether it answered the request (its response is
	// set). The body of a request it answered is then read and dropped
	// without being kept (it reserves no body memory), taking turns with
	// the other dropped bodies so that the bodies of the requests that go
	// on arrive first; and the handler is not called.
	Before(ctx *fasthttp.RequestCtx) (answered bool)
	// After is called once a request Before did not answer is done:
	// served, or refused while its body was read.
	After(ctx *fasthttp.RequestCtx)
}

// SetPreflight makes p decide on every request before its body is read. It
// must be called before Serve.
func (s *HTTPServer) SetPreflight(p Preflight) { s.guard.preflight = p }

// Serve accepts connections on ln until Shutdown: past the limits refused
// (503, 429), the others served with their sockets at hand (Arrival).
func (s *HTTPServer) Serve(ln net.Listener) error {
	l := newConnListener(ln, s.most, s.perIP)
	s.conns.Store(l)
	return s.Server.Serve(l)
}

// OpenConns is how many connections the server serves now (0 before
// Serve); they stay counted after the listener closes, until each closes.
func (s *HTTPServer) OpenConns() int {
	l := s.conns.Load()
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

func newHTTPServer(cfg ServerConfig, handler fasthttp.RequestHandler, log *slog.Logger) (*HTTPServer, *bodyGuard) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := newBodyGuard(cfg, handler, log)
	return &HTTPServer{guard: g, most: orDefault(cfg.MaxConns, DefaultMaxConns), perIP: orDefault(cfg.MaxConnsPerIP, DefaultMaxConnsPerIP), Server: &fasthttp.Server{
		ConnState:                    connState,
		Handler:                      g.serve,
		ErrorHandler:                 g.readError,
		Name:                         "ipa",
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true, // no request is a form: never spool one to disk
		MaxRequestBodySize:           g.maxBody,
		ReadBufferSize:               g.maxHeader,
		ReadTimeout:                  cfg.ReadTimeout,
		WriteTimeout:                 cfg.WriteTimeout,
		IdleTimeout:                  cfg.IdleTimeout,
		CloseOnShutdown:              true,
		SecureErrorLogMessage:        true, // fasthttp's error texts leave out the request's bytes
		Logger:                       fasthttpLogger{log},
	}}, g
}

func orDefault(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// fasthttpLogger sends fasthttp's connection errors (oversized bodies,
// broken connections) to the debug log: the client already got its answer.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug("http: " + fmt.Sprintf(format, args...))
}

// bodyGuard reads request bodies into pooled buffers reserved from a
// budget, then calls the handler; it also answers the requests fasthttp
// could not read.
type bodyGuard struct {
	next        fasthttp.RequestHandler
	preflight   Preflight     // nil: none
	dropping    chan struct{} // the turns of dropped bodies (drop)
	log         *slog.Logger
	maxBody     int
	maxHeader   int
	budget      int64
	inUse       atomic.Int64
	readTimeout time.Duration
}

func newBodyGuard(cfg ServerConfig, next fasthttp.RequestHandler, log *slog.Logger) *bodyGuard {
	g := &bodyGuard{next: next, log: log, maxBody: cfg.MaxBodySize, maxHeader: orDefault(cfg.MaxHeaderSize, DefaultMaxHeaderSize),
		budget: int64(orDefault(cfg.MaxBodyMemory, DefaultMaxBodyMemory)), readTimeout: cfg.ReadTimeout,
		dropping: make(chan struct{}, dropTurns)}
	if g.maxBody <= 0 {
		g.maxBody = fasthttp.DefaultMaxRequestBodySize
	}
	// The largest body must fit: while a buffer grows, the old one and the
	// new one are both reserved.
	if most := 2 * int64(bufferSize(g.maxBody+1)); g.budget < most {
		g.budget = most
	}
	return g
}

// firstBodyBuffer is the buffer a body starts in when it declares more (or
// is chunked): what one connection reserves before it sent any of its body.
// bodyGrowth is the factor a full buffer grows by: a body never reserves
// more than sixteen times what it sent, and a tensor up to 1 MiB (a 600 KB
// image tensor) is read with one growth, straight to its declared length.
// Growth is not only a copy: each step is one more read that stops short
// while the sender waits for the socket to drain, and on loopback a
// fourfold growth (64 KiB, 256 KiB, then the rest) made the router's hop
// on a 600 KB tensor 190 µs slower than one growth (BenchmarkRouterHopStub).
const (
	firstBodyBuffer = 64 << 10
	bodyGrowth      = 16
)

// Why a request was refused before its handler: the values of the reason
// label of ipa_http_refused_total.
const (
	refusedBodyMemory     = "body_memory"
	refusedBodyTooLarge   = "body_too_large"
	refusedReadTimeout    = "read_timeout"
	refusedHeaderTooLarge = "header_too_large"
	refusedFraming        = "framing"
	refusedMalformed      = "malformed"
	refusedIncomplete     = "incomplete"
	refusedEncoding       = "content_encoding"
	refusedConnsPerIP     = "conns_per_ip"
	refusedConns          = "conns"
)

var (
	refused   = map[string]*metrics.Counter{}
	bodyBytes atomic.Int64 // reserved body buffers of every server in the process
)

func init() {
	for _, r := range []string{refusedBodyMemory, refusedBodyTooLarge, refusedReadTimeout, refusedHeaderTooLarge, refusedFraming, refusedMalformed, refusedIncomplete, refusedEncoding, refusedConnsPerIP, refusedConns} {
		refused[r] = metrics.NewCounter(fmt.Sprintf(`ipa_http_refused_total{reason=%q}`, r))
	}
	metrics.NewGauge("ipa_http_request_body_bytes", func() float64 { return float64(bodyBytes.Load()) })
	promtext.SetHelp("ipa_http_refused_total", "Requests refused before their handler ran, by reason.")
	promtext.SetHelp("ipa_http_request_body_bytes", "Memory reserved by the request bodies being received or served.")
	promtext.SetHelp("ipa_http_dropped_bodies_total", "Request bodies read and dropped unkept: their requests were answered from the header (refused at arrival).")
}

// serve is the server's handler: it reads the body, then calls next.
func (g *bodyGuard) serve(ctx *fasthttp.RequestCtx) {
	// fasthttp closes a connection that framed its body both ways, so only
	// those requests need the raw header scanned.
	if ctx.Request.Header.ConnectionClose() && framingConflict(ctx.Request.Header.RawHeaders()) {
		g.refuse(ctx, fasthttp.StatusBadRequest, refusedFraming, "request has both Content-Length and Transfer-Encoding; send one (RFC 9112 section 6.3)")
		return
	}
	stream := ctx.RequestBodyStream()
	n := ctx.Request.Header.ContentLength() // -1: chunked
	if stream != nil && n > g.maxBody {
		g.refuse(ctx, fasthttp.StatusRequestEntityTooLarge, refusedBodyTooLarge, g.tooLarge())
		return
	}
	if p := g.preflight; p != nil {
		if p.Before(ctx) {
			if stream != nil {
				g.drop(ctx, stream)
			}
			return
		}
		defer p.After(ctx)
	}
	// b is the body when this guard read it: nil when it is empty, or when
	// fasthttp read it whole before the handler (no stream).
	var b *bodyBuffer
	if stream != nil {
		var err error
		if b, err = g.read(stream, n); err != nil {
			g.release(b)
			g.readError(ctx, err)
			return
		}
		ctx.Request.ResetBody()
		if b != nil {
			ctx.Request.SetBodyRaw(b.b)
		}
	}
	if enc := ctx.Request.Header.ContentEncoding(); len(enc) > 0 && !bytes.EqualFold(enc, []byte("identity")) {
		d, err := g.decompress(enc, ctx.Request.Body())
		ctx.Request.ResetBody()
		g.release(b)
		if err != nil {
			g.release(d)
			g.readError(ctx, err)
			return
		}
		b = d
		ctx.Request.Header.Del(fasthttp.HeaderContentEncoding)
		if b != nil {
			ctx.Request.SetBodyRaw(b.b)
		}
	}
	g.next(ctx)
	if b != nil {
		ctx.Request.ResetBody()
		g.release(b)
	}
}

// dropTurns is how many dropped bodies (Preflight) are read at once; the
// others wait for a turn, dropWait at most. In a burst of 700 requests of
// 600 KB sent at once to a stage on a 2-core machine, the bodies read side
// by side each took ~90 ms to arrive (the whole burst's 420 MB); with
// refusals from the header and the refused bodies taking turns, the
// admitted ones were read 4–5 ms after the burst began (the refused wait
// in their sockets, their senders blocked). A turn is not waited for
// longer than dropWait, so that clients sending slowly while they hold the
// turns delay the others by that at most.
const (
	dropTurns = 2
	dropWait  = 100 * time.Millisecond
)

// dropBuffers are the buffers dropped bodies are read into.
var dropBuffers = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// droppedBodies counts the request bodies read and dropped unkept.
var droppedBodies = metrics.NewCounter("ipa_http_dropped_bodies_total")

// drop reads the body of a request Preflight answered and drops it, so that
// the client, which sends its whole request before it reads the answer,
// gets the answer, and the connection can carry its next request. A body
// that fails to arrive (a read timeout, a broken connection, a chunked one
// over the body size limit) closes the connection, as fasthttp does with a
// body left unread.
func (g *bodyGuard) drop(ctx *fasthttp.RequestCtx, stream io.Reader) {
	droppedBodies.Inc()
	turn := time.NewTimer(dropWait)
	select {
	case g.dropping <- struct{}{}:
		defer func() { <-g.dropping }()
	case <-turn.C:
	}
	turn.Stop()
	bp := dropBuffers.Get().(*[]byte)
	defer dropBuffers.Put(bp)
	for total := 0; ; {
		k, err := stream.Read(*bp)
		total += k
		if err == io.EOF {
			return
		}
		if err == nil && total > g.maxBody {
			err = fasthttp.ErrBodyTooLarge
		}
		if err != nil {
			g.log.Debug("http: dropping the body of an answered request", "remote", ctx.RemoteAddr().String(), "err", err)
			ctx.SetConnectionClose()
			return
		}
	}
}

// encodingError is a request body that its Content-Encoding cannot decode;
// its text is fixed or comes from compress/gzip and compress/zlib, which
// quote no byte of the body.
type encodingError struct {
	status int
	msg    string
}

func (e *encodingError) Error() string { return e.msg }

// decompress decodes a body of Content-Encoding enc (gzip or deflate, as
// Triton's clients send them) into a buffer reserved like any body: it
// grows as it fills, and one over --http.max-body-size is refused. An
// empty body stays empty (nil).
func (g *bodyGuard) decompress(enc, src []byte) (*bodyBuffer, error) {
	name := strings.ToLower(strings.TrimSpace(string(enc)))
	if len(src) == 0 {
		return nil, nil
	}
	var r io.Reader
	var err error
	switch name {
	case "gzip", "x-gzip":
		r, err = gzip.NewReader(bytes.NewReader(src))
	case "deflate":
		r, err = zlib.NewReader(bytes.NewReader(src))
	default:
		return nil, &encodingError{fasthttp.StatusUnsupportedMediaType, fmt.Sprintf("Content-Encoding %.40q is not supported: send the body as it is, or gzip or deflate it", name)}
	}
	if err == nil {
		var b *bodyBuffer
		b, err = g.read(r, -1)
		if err == nil || errors.Is(err, fasthttp.ErrBodyTooLarge) || errors.Is(err, errBodyMemory) {
			return b, err
		}
		g.release(b)
	}
	return nil, &encodingError{fasthttp.StatusBadRequest, fmt.Sprintf("request body is not valid %s data (Content-Encoding: %s): %v", name, name, err)}
}

// read reads the body of declared length n (-1: chunked) from r. A nil
// buffer is an empty body.
func (g *bodyGuard) read(r io.Reader, n int) (*bodyBuffer, error) {
	if n == 0 {
		return nil, nil
	}
	size := min(firstBodyBuffer, g.maxBody+1)
	if n > 0 {
		size = min(size, n)
	}
	b, err := g.acquire(size)
	if err != nil {
		return nil, err
	}
	for {
		if len(b.b) == cap(b.b) {
			if n > 0 && len(b.b) >= n {
				return b, nil
			}
			// Grow, up to the declared length or one byte past the limit
			// (a chunked body has no declared length).
			size := min(bodyGrowth*cap(b.b), g.maxBody+1)
			if n > 0 {
				size = min(size, n)
			}
			nb, err := g.acquire(size)
			if err != nil {
				return b, err
			}
			nb.b = append(nb.b, b.b...)
			g.release(b)
			b = nb
		}
		k, err := r.Read(b.b[len(b.b):cap(b.b)])
		b.b = b.b[:len(b.b)+k]
		switch {
		case len(b.b) > g.maxBody: // chunked: refused as soon as it is too large
			return b, fasthttp.ErrBodyTooLarge
		case err == io.EOF && len(b.b) < n:
			return b, io.ErrUnexpectedEOF
		case err == io.EOF:
			return b, nil
		case err != nil:
			return b, err
		}
	}
}

// errBodyMemory is returned by acquire when the budget is spent.
var errBodyMemory = errors.New("request body memory exhausted")

// acquire reserves and returns an empty buffer of capacity ≥ size.
func (g *bodyGuard) acquire(size int) (*bodyBuffer, error) {
	c := int64(bufferSize(size))
	if g.inUse.Add(c) > g.budget {
		g.inUse.Add(-c)
		return nil, errBodyMemory
	}
	bodyBytes.Add(c)
	return getBodyBuffer(size), nil
}

// release returns b (may be nil) to its pool and its memory to the budget.
func (g *bodyGuard) release(b *bodyBuffer) {
	if b == nil {
		return
	}
	c := int64(cap(b.b))
	g.inUse.Add(-c)
	bodyBytes.Add(-c)
	putBodyBuffer(b)
}

func (g *bodyGuard) tooLarge() string {
	return fmt.Sprintf("request body exceeds %d bytes; send smaller batches or raise --http.max-body-size", g.maxBody)
}

// readError answers a request that could not be read, by fasthttp (its
// ErrorHandler) or by serve. The answer never quotes err, whose text may
// hold the request's bytes (its Authorization header, say): each case has
// a fixed message.
func (g *bodyGuard) readError(ctx *fasthttp.RequestCtx, err error) {
	g.log.Debug("http: cannot read request", "remote", ctx.RemoteAddr().String(), "err", err)
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	var chunk fasthttp.ErrBrokenChunk
	var enc *encodingError
	switch {
	case errors.As(err, &enc):
		g.refuse(ctx, enc.status, refusedEncoding, enc.msg)
	case errors.Is(err, errBodyMemory):
		ctx.Response.Header.Set("Retry-After", "1")
		g.refuse(ctx, fasthttp.StatusServiceUnavailable, refusedBodyMemory,
			fmt.Sprintf("server is receiving too many request bodies at once (%d MiB in use, --http.max-body-memory); retry", g.inUse.Load()>>20))
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		g.refuse(ctx, fasthttp.StatusRequestEntityTooLarge, refusedBodyTooLarge, g.tooLarge())
	case errors.As(err, &small):
		g.refuse(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, refusedHeaderTooLarge,
			fmt.Sprintf("request line and header exceed %d bytes (--http.max-header-size)", g.maxHeader))
	case errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		g.refuse(ctx, fasthttp.StatusRequestTimeout, refusedReadTimeout,
			fmt.Sprintf("request not received within %s (--http.read-timeout): is Content-Length longer than the body?", g.readTimeout))
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		g.refuse(ctx, fasthttp.StatusBadRequest, refusedIncomplete, "connection closed before the whole request arrived")
	case errors.As(err, &chunk):
		g.refuse(ctx, fasthttp.StatusBadRequest, refusedMalformed, "malformed chunked body")
	default:
		g.refuse(ctx, fasthttp.StatusBadRequest, refusedMalformed, "malformed HTTP request"+knownProblem(err))
	}
}

// knownProblems are fasthttp's errors whose text is fixed (it quotes no
// request byte), so the answer may name them.
var knownProblems = []error{fasthttp.ErrDuplicateContentLength, fasthttp.ErrUnsupportedTransferEncoding,
	fasthttp.ErrNonNumericChars, fasthttp.ErrMissingRequestMethod, fasthttp.ErrUnsupportedRequestMethod,
	fasthttp.ErrExtraWhitespaceInRequestLine, fasthttp.ErrEmptyRequestURI}

func knownProblem(err error) string {
	for _, k := range knownProblems {
		if errors.Is(err, k) {
			return ": " + strings.TrimPrefix(k.Error(), "fasthttp: ")
		}
	}
	return ""
}

// refuse answers status with msg, counts it under reason and closes the
// connection: the rest of the request, if any, is not read.
func (g *bodyGuard) refuse(ctx *fasthttp.RequestCtx, status int, reason, msg string) {
	refused[reason].Inc()
	ctx.SetConnectionClose()
	WriteError(ctx, status, msg)
}

// framingConflict reports whether the raw header names both Content-Length
// and Transfer-Encoding.
func framingConflict(raw []byte) bool {
	var length, encoding bool
	for len(raw) > 0 {
		var line []byte
		line, raw, _ = bytes.Cut(raw, []byte("\n"))
		name, _, ok := bytes.Cut(line, []byte(":"))
		if !ok || line[0] == ' ' || line[0] == '\t' { // no field, or the continuation of one (obs-fold)
			continue
		}
		name = bytes.TrimSpace(name)
		length = length || bytes.EqualFold(name, []byte("Content-Length"))
		encoding = encoding || bytes.EqualFold(name, []byte("Transfer-Encoding"))
	}
	return length && encoding
}

// bodyBuffer is a pooled request body buffer.
type bodyBuffer struct{ b []byte }

// Body buffers are pooled in power-of-two sizes from 4 KiB to 4 MiB; larger
// ones are left to the garbage collector.
const (
	minBufferShift = 12
	maxBufferShift = 22
)

var bodyPools [maxBufferShift - minBufferShift + 1]sync.Pool

// bufferSize is the capacity getBodyBuffer(n) returns.
func bufferSize(n int) int {
	if n > 1<<maxBufferShift {
		return n
	}
	return 1 << poolIndexShift(n)
}

// poolIndexShift returns the exponent of the smallest pooled size ≥ n.
func poolIndexShift(n int) int {
	s := bits.Len(uint(n - 1))
	if s < minBufferShift {
		s = minBufferShift
	}
	return s
}

func getBodyBuffer(n int) *bodyBuffer {
	if n > 1<<maxBufferShift {
		return &bodyBuffer{b: make([]byte, 0, n)}
	}
	s := poolIndexShift(n)
	if v := bodyPools[s-minBufferShift].Get(); v != nil {
		b := v.(*bodyBuffer)
		b.b = b.b[:0]
		return b
	}
	return &bodyBuffer{b: make([]byte, 0, 1<<s)}
}

func putBodyBuffer(b *bodyBuffer) {
	c := cap(b.b)
	if c > 1<<maxBufferShift || c&(c-1) != 0 {
		return
	}
	bodyPools[bits.Len(uint(c))-1-minBufferShift].Put(b)
}
