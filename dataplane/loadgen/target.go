package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// Kind is the outcome class of one request.
type Kind uint8

const (
	// Succeeded: a 2xx answer.
	Succeeded Kind = iota
	// Dropped: the server shed the request on purpose (504, 429 or 503,
	// with the reason from its {"error": …} body), or the generator did not
	// send it because MaxInflight requests were outstanding ("client
	// overload").
	Dropped
	// Failed: anything else (other statuses, connection errors, client
	// timeouts), with the reason.
	Failed
)

var kindNames = [...]string{Succeeded: "succeeded", Dropped: "dropped", Failed: "failed"}

// String returns "succeeded", "dropped" or "failed".
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Outcome is what became of one request.
type Outcome struct {
	Kind Kind
	// Status is the HTTP status, 0 when there was no answer.
	Status int
	// Reason says why a request was dropped or failed; empty on success.
	Reason string
}

// ReasonClientOverload is the drop reason of a request the generator did
// not send because Runner.MaxInflight requests were outstanding.
const ReasonClientOverload = "client overload: max in-flight requests reached; raise --max-inflight or lower the rate"

// Target answers requests. HTTPTarget is the real one; a simulator supplies
// its own. Do is called concurrently, once per request, and must return
// (not block forever) for the run to end.
type Target interface {
	Do(ctx context.Context, seq int) Outcome
}

// Body is one request body. Data is shared between requests and must not be
// modified once built.
type Body struct {
	Data        []byte
	ContentType string
	// HeaderLen is the Inference-Header-Content-Length of a V2 request with
	// binary tensor data, or -1 when the body has none.
	HeaderLen int
}

// BodyBuilder makes the body of request seq. It is called concurrently
// and must be cheap: build bodies up front and hand out shared ones.
type BodyBuilder interface {
	Body(seq int) (Body, error)
}

// HTTPOptions configure an HTTPTarget.
type HTTPOptions struct {
	// SLA, when positive, is sent as the Ipa-Timeout header of every
	// request (the server's per-request deadline).
	SLA time.Duration
	// Timeout is the client-side limit on one request; 0 means 30 s. A
	// request that hits it fails with reason "client timeout".
	Timeout time.Duration
	// MaxConns bounds the pooled connections; 0 means 1024. Give it at
	// least Runner.MaxInflight, or requests wait for a connection.
	MaxConns int
}

// HTTPTarget POSTs bodies to one URL over pooled keep-alive fasthttp
// connections. It is safe for concurrent use.
type HTTPTarget struct {
	url     string
	body    BodyBuilder
	sla     string
	timeout time.Duration
	client  *fasthttp.HostClient
}

// NewHTTPTarget returns a target that POSTs body's bodies to rawURL, an
// http:// or https:// URL such as http://127.0.0.1:8080/v2/models/ocr/infer.
func NewHTTPTarget(rawURL string, body BodyBuilder, opt HTTPOptions) (*HTTPTarget, error) {
	if !strings.Contains(rawURL, "://") {
		return nil, fmt.Errorf("bad --url %q: want http:// or https://, e.g. http://127.0.0.1:8080/v2/models/ocr/infer", rawURL)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("bad --url %q: %v", rawURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("bad --url %q: want http:// or https://, e.g. http://127.0.0.1:8080/v2/models/ocr/infer", rawURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("bad --url %q: no host", rawURL)
	}
	if body == nil {
		return nil, errors.New("no request body; pass --body FILE or --tensor NAME:DATATYPE:SHAPE")
	}
	addr := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 30 * time.Second
	}
	if opt.MaxConns <= 0 {
		opt.MaxConns = 1024
	}
	t := &HTTPTarget{url: rawURL, body: body, timeout: opt.Timeout}
	if opt.SLA > 0 {
		t.sla = opt.SLA.String()
	}
	t.client = &fasthttp.HostClient{
		Addr:                          addr,
		IsTLS:                         u.Scheme == "https",
		MaxConns:                      opt.MaxConns,
		MaxConnWaitTimeout:            opt.Timeout,
		MaxIdleConnDuration:           10 * time.Second,
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: true,
		// POST is not idempotent: a request that may have reached the
		// server is reported, never sent twice.
		RetryIfErr: func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
	}
	return t, nil
}

// Close closes idle connections.
func (t *HTTPTarget) Close() { t.client.CloseIdleConnections() }

// Do sends request seq and classifies the answer.
func (t *HTTPTarget) Do(_ context.Context, seq int) Outcome {
	b, err := t.body.Body(seq)
	if err != nil {
		return Outcome{Kind: Failed, Reason: "cannot build body: " + err.Error()}
	}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI(t.url)
	if b.ContentType != "" {
		req.Header.SetContentType(b.ContentType)
	}
	if b.HeaderLen >= 0 {
		req.Header.Set("Inference-Header-Content-Length", strconv.Itoa(b.HeaderLen))
	}
	if t.sla != "" {
		req.Header.Set(v2codec.HeaderTimeout, t.sla)
	}
	req.SetBodyRaw(b.Data)
	if err := t.client.DoTimeout(req, resp, t.timeout); err != nil {
		return Outcome{Kind: Failed, Reason: errorReason(err, t.timeout)}
	}
	status := resp.StatusCode()
	switch {
	case status >= 200 && status < 300:
		return Outcome{Kind: Succeeded, Status: status}
	case status == fasthttp.StatusGatewayTimeout || status == fasthttp.StatusTooManyRequests || status == fasthttp.StatusServiceUnavailable:
		return Outcome{Kind: Dropped, Status: status, Reason: statusReason(status, resp.Body())}
	default:
		return Outcome{Kind: Failed, Status: status, Reason: statusReason(status, resp.Body())}
	}
}

// maxReasonLen keeps reasons one short line.
const maxReasonLen = 200

// statusReason is "HTTP 504: <the error body's message>".
func statusReason(status int, body []byte) string {
	msg := fastjson.GetString(body, "error")
	if msg == "" {
		msg = strings.TrimSpace(string(body))
		if msg == "" {
			msg = fasthttp.StatusMessage(status)
		}
	}
	return "HTTP " + strconv.Itoa(status) + ": " + shorten(msg)
}

func shorten(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxReasonLen {
		s = strings.ToValidUTF8(s[:maxReasonLen], "") + "…"
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "?")
	}
	return s
}

// errorReason names a transport error briefly and stably (no ports or
// addresses that change per connection), so reasons group well.
func errorReason(err error, timeout time.Duration) string {
	switch {
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, fasthttp.ErrDialTimeout), errors.Is(err, fasthttp.ErrNoFreeConns):
		return fmt.Sprintf("client timeout: no answer within %s; raise --timeout", timeout)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused: is the server running at --url?"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset by the server"
	case errors.Is(err, fasthttp.ErrConnectionClosed), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.EPIPE):
		return "connection closed by the server before it answered"
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return shorten(op.Op + ": " + op.Err.Error())
	}
	return shorten(err.Error())
}
