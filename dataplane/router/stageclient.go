package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/promtext"
	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// StageClient is how the router reaches one stage: in process (LocalClient)
// or over HTTP (RemoteClient). Infer's contract is Stage.Infer's: in stays
// owned by the caller and unchanged until Infer returns; the reply is valid
// until Release.
type StageClient interface {
	Infer(ctx context.Context, in []models.Tensor, deadline time.Time) (*Reply, error)
}

// Reply is a stage's answer to one request.
type Reply struct {
	Outputs   []models.Tensor
	Variant   string
	QueueWait time.Duration
	Compute   time.Duration
	// What Release returns to its pool: the stage's result (in process) or
	// the remote call's state, which holds this Reply.
	local  *dataplane.Result
	remote *remoteState
}

// Release returns the reply's buffers; it must not be used afterwards.
func (r *Reply) Release() {
	switch {
	case r.local != nil:
		r.local.Release()
		*r = Reply{}
		replyPool.Put(r)
	case r.remote != nil:
		remotePool.Put(r.remote)
	}
}

var replyPool = sync.Pool{New: func() any { return new(Reply) }}

// LocalClient hands requests to a Stage in this process: no HTTP, no
// serialization (ipa local).
type LocalClient struct{ Stage *dataplane.Stage }

// Infer implements StageClient.
func (c LocalClient) Infer(ctx context.Context, in []models.Tensor, deadline time.Time) (*Reply, error) {
	res, err := c.Stage.Infer(ctx, in, deadline)
	if err != nil {
		return nil, err
	}
	r := replyPool.Get().(*Reply)
	*r = Reply{Outputs: res.Outputs, Variant: res.Variant, QueueWait: res.QueueWait, Compute: res.Compute, local: res}
	return r, nil
}

// Ready reports whether the stage takes requests.
func (c LocalClient) Ready() bool { return c.Stage.Ready() }

// StageError is an error a remote stage answered with.
type StageError struct {
	Status int
	Msg    string
}

func (e *StageError) Error() string { return fmt.Sprintf("status %d: %s", e.Status, e.Msg) }

// Is maps the remote status onto the local sentinels, so that the router
// treats a remote 504 like a local ErrDeadline.
func (e *StageError) Is(target error) bool {
	switch e.Status {
	case fasthttp.StatusGatewayTimeout:
		return target == dataplane.ErrDeadline
	case fasthttp.StatusServiceUnavailable:
		return target == dataplane.ErrUnavailable
	case fasthttp.StatusBadRequest:
		return target == mlrt.ErrInvalidInput
	case fasthttp.StatusTooManyRequests:
		return target == errQueueFullRemote
	}
	return false
}

var errQueueFullRemote = errors.New("stage queue full")

// RemoteClient calls the replicas of a stage over the Open Inference
// Protocol with binary tensors, on pooled connections. It sends each request
// to the ready replica with the fewest outstanding requests. Inference is
// idempotent, so a request that a replica could not answer (a refused or
// broken connection, 503, 429) is sent again to another replica, each
// replica at most once, while the deadline allows; other answers (4xx, 500,
// 504) are final.
//
// A replica is up or down. It goes down when a connection to it fails or
// when a probe (Probe: its /v2/health/ready) finds it not ready, and comes
// back up when a probe finds it ready; a down replica gets no requests.
// Changes are logged and counted (ipa_router_replica_transitions_total).
// It is safe for concurrent use.
type RemoteClient struct {
	model string
	log   *slog.Logger

	mu        sync.RWMutex // guards endpoints
	endpoints []*endpoint

	active atomic.Pointer[string] // last reported active variant
	polled atomic.Int64           // Unix ns of the last metadata poll
}

type endpoint struct {
	addr        string
	uri         string // the model's infer URI at addr
	client      *fasthttp.HostClient
	probes      *fasthttp.HostClient // its own connection: never waits behind busy ones
	outstanding atomic.Int64
	down        atomic.Bool
}

// NewRemoteClient returns a client for the stage served as model at the
// given host:port addresses.
func NewRemoteClient(model string, addrs []string) *RemoteClient {
	c := &RemoteClient{model: model, log: slog.New(slog.DiscardHandler)}
	c.SetEndpoints(addrs)
	return c
}

// SetLogger sets where replica state changes are logged; call it before
// the client is used.
func (c *RemoteClient) SetLogger(log *slog.Logger) { c.log = log.With("stage", c.model) }

// SetEndpoints replaces the replica addresses (discovery calls it); calls in
// flight finish on the old ones.
func (c *RemoteClient) SetEndpoints(addrs []string) {
	eps := make([]*endpoint, 0, len(addrs))
	c.mu.Lock()
	defer c.mu.Unlock()
	old := map[string]*endpoint{}
	for _, e := range c.endpoints {
		old[e.addr] = e
	}
	for _, a := range addrs {
		if e, ok := old[a]; ok {
			eps = append(eps, e)
			continue
		}
		eps = append(eps, &endpoint{addr: a, uri: "http://" + a + "/v2/models/" + c.model + "/infer", client: &fasthttp.HostClient{Addr: a, MaxConns: maxConnsPerReplica,
			MaxIdleConnDuration: time.Minute, ReadTimeout: time.Minute, WriteTimeout: time.Minute},
			probes: &fasthttp.HostClient{Addr: a, MaxConns: 1, ReadTimeout: probeTimeout, WriteTimeout: probeTimeout}})
	}
	c.endpoints = eps
}

// Ready reports whether the step has a replica up.
func (c *RemoteClient) Ready() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, e := range c.endpoints {
		if !e.down.Load() {
			return true
		}
	}
	return false
}

// Replica states, as logged and as the label of
// ipa_router_replica_transitions_total.
const (
	stateUp   = "up"
	stateDown = "down"
)

// setDown marks e down (or up) and, if that changed its state, logs and
// counts the change.
func (c *RemoteClient) setDown(e *endpoint, down bool, why string) {
	if e.down.Swap(down) == down {
		return
	}
	to := stateUp
	if down {
		to = stateDown
	}
	metrics.GetOrCreateCounter(fmt.Sprintf(`ipa_router_replica_transitions_total{stage=%q,to=%q}`, c.model, to)).Inc()
	if down {
		// Its idle connections would be dead (or would keep a draining
		// replica from exiting until its grace period ends).
		e.client.CloseIdleConnections()
		c.log.Warn("replica down", "addr", e.addr, "reason", why)
	} else {
		c.log.Info("replica up", "addr", e.addr)
	}
}

// maxConnsPerReplica bounds the requests outstanding to one replica (one
// per connection); beyond it the replica counts as busy (429).
const maxConnsPerReplica = 512

// probeTimeout is how long a replica has to answer a probe: a busy one
// (its cores computing) may take a while, and is not down for it.
const probeTimeout = 2 * time.Second

// Probe checks every replica's readiness (GET /v2/health/ready) now and
// then every interval until ctx ends, marking each up or down.
func (c *RemoteClient) Probe(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		c.mu.RLock()
		eps := slices.Clone(c.endpoints)
		c.mu.RUnlock()
		for _, e := range eps {
			c.probe(e, probeTimeout)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probe asks e whether it is ready, within timeout.
func (c *RemoteClient) probe(e *endpoint, timeout time.Duration) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + e.addr + "/v2/health/ready")
	switch err := e.probes.DoTimeout(req, resp, timeout); {
	case err != nil:
		c.setDown(e, true, "probe: "+err.Error())
	case resp.StatusCode() != fasthttp.StatusOK:
		c.setDown(e, true, fmt.Sprintf("probe: not ready (%d %s)", resp.StatusCode(), bytes.TrimSpace(resp.Body())))
	default:
		c.setDown(e, false, "")
	}
}

// pick returns the endpoint up with the fewest outstanding requests among
// those not in tried, breaking ties at random.
func (c *RemoteClient) pick(tried []*endpoint) *endpoint {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var best *endpoint
	ties := 0
	for _, e := range c.endpoints {
		skip := e.down.Load()
		for _, t := range tried {
			skip = skip || t == e
		}
		if skip {
			continue
		}
		switch n, b := e.outstanding.Load(), int64(-1); {
		case best != nil:
			b = best.outstanding.Load()
			if n < b {
				best, ties = e, 1
			} else if n == b {
				ties++
				if rand.IntN(ties) == 0 {
					best = e
				}
			}
		default:
			best, ties = e, 1
		}
	}
	return best
}

type remoteState struct {
	req   v2codec.InferRequest
	resp  v2codec.InferResponse
	head  []byte          // the request's JSON part
	in    []models.Tensor // the inputs, whose bytes follow it
	body  requestBody
	hreq  *fasthttp.Request
	hres  *fasthttp.Response
	reply Reply
}

// requestBody is a request's body in its parts, the JSON part and then each
// input's bytes where they already are, which WriteTo hands to the
// connection one by one: a 600 KB tensor is not first copied into one
// buffer (fasthttp's client writes a body stream of known size with its
// WriterTo). It is reset before each attempt.
type requestBody struct {
	head      []byte
	in        []models.Tensor
	part, off int // the next byte: part 0 is head, part i+1 in[i].Data
}

// forgetInputs drops the references to the caller's inputs, which are not
// the state's to keep once its request is sent (before it goes back to the
// pool).
func (st *remoteState) forgetInputs() {
	st.in = nil
	st.body.reset(nil, nil)
}

func (b *requestBody) reset(head []byte, in []models.Tensor) {
	*b = requestBody{head: head, in: in}
}

// size returns the body's length.
func (b *requestBody) size() int {
	n := len(b.head)
	for _, t := range b.in {
		n += len(t.Data)
	}
	return n
}

// rest returns what is left of the current part, moving past the parts
// used up; nil at the end.
func (b *requestBody) rest() []byte {
	for ; b.part <= len(b.in); b.part, b.off = b.part+1, 0 {
		p := b.head
		if b.part > 0 {
			p = b.in[b.part-1].Data
		}
		if b.off < len(p) {
			return p[b.off:]
		}
	}
	return nil
}

// Read implements io.Reader.
func (b *requestBody) Read(p []byte) (int, error) {
	r := b.rest()
	if r == nil {
		return 0, io.EOF
	}
	n := copy(p, r)
	b.off += n
	return n, nil
}

// WriteTo implements io.WriterTo: each part in one Write.
func (b *requestBody) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for r := b.rest(); r != nil; r = b.rest() {
		k, err := w.Write(r)
		n += int64(k)
		b.off += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

var remotePool = sync.Pool{New: func() any {
	return &remoteState{hreq: new(fasthttp.Request), hres: new(fasthttp.Response)}
}}

// Infer implements StageClient.
func (c *RemoteClient) Infer(ctx context.Context, in []models.Tensor, deadline time.Time) (*Reply, error) {
	st := remotePool.Get().(*remoteState)
	var triedBuf [4]*endpoint // replicas tried, on the stack for up to 4
	st.req.Inputs, st.req.BinaryOutputs, st.req.Deadline = in, true, deadline
	st.head, st.in = v2codec.AppendInferRequestHeader(st.head[:0], &st.req), in
	jsonLen := len(st.head)
	st.req.Inputs = nil
	tried := triedBuf[:0]
	var last error
	for {
		e := c.pick(tried)
		if e == nil {
			st.forgetInputs()
			remotePool.Put(st)
			var se *StageError
			switch {
			case len(tried) == 0:
				return nil, &unavailableError{fmt.Sprintf("no ready replica of stage %q", c.model)}
			case errors.As(last, &se) && se.Status == fasthttp.StatusTooManyRequests:
				return nil, last // every replica's queue is full: the client should back off
			}
			return nil, &unavailableError{fmt.Sprintf("no ready replica of stage %q answered (tried %d; last: %v)", c.model, len(tried), last)}
		}
		tried = append(tried, e)
		last = c.do(e, st, jsonLen, deadline)
		if last == nil {
			break
		}
		if !retryable(last) || ctx.Err() != nil || (!deadline.IsZero() && !time.Now().Before(deadline)) {
			st.forgetInputs()
			remotePool.Put(st)
			return nil, last
		}
		retries.Inc()
		if !errors.As(last, new(*StageError)) {
			// The connection failed: the replica is gone (or going) until a
			// probe finds it ready.
			c.setDown(e, true, last.Error())
		}
	}
	st.forgetInputs()
	hl := -1
	if h := st.hres.Header.Peek(v2codec.HeaderJSONLength); len(h) > 0 {
		hl, _ = strconv.Atoi(string(h))
	}
	if err := v2codec.DecodeInferResponse(st.hres.Body(), hl, &st.resp); err != nil {
		remotePool.Put(st)
		return nil, fmt.Errorf("stage %q answered badly: %w", c.model, err)
	}
	p := st.resp.Parameters
	st.reply = Reply{Outputs: st.resp.Outputs, Variant: st.resp.ModelVersion, QueueWait: p.QueueTime, Compute: p.InferTime, remote: st}
	return &st.reply, nil
}

// unavailableError is a step without a replica to answer: a 503
// (dataplane.ErrUnavailable) with its own message.
type unavailableError struct{ msg string }

func (e *unavailableError) Error() string        { return e.msg }
func (e *unavailableError) Is(target error) bool { return target == dataplane.ErrUnavailable }

// retries counts the requests sent again to another replica.
var retries = metrics.NewCounter("ipa_router_retries_total")

func init() {
	promtext.SetHelp("ipa_router_step_requests_total", "Requests that reached a step of the pipeline (not dropped before it), since start: with ipa_router_step_rows_total, the step's fan-out.")
	promtext.SetHelp("ipa_router_step_rows_total", "Batch rows the router sent a step of the pipeline, since start (a page's text lines at the recognizer).")
	promtext.SetHelp("ipa_router_retries_total", "Stage requests sent again to another replica after a refused or broken connection, 503 or 429.")
	promtext.SetHelp("ipa_router_replica_transitions_total", "Stage replicas that went down (a failed connection, or a probe of /v2/health/ready) or came back up.")
}

// retryable reports whether err, from one replica, lets the request go to
// another: a transport failure (not the deadline), 503 or 429.
func retryable(err error) bool {
	var se *StageError
	if errors.As(err, &se) {
		return se.Status == fasthttp.StatusServiceUnavailable || se.Status == fasthttp.StatusTooManyRequests
	}
	return !errors.Is(err, dataplane.ErrDeadline)
}

func (c *RemoteClient) do(e *endpoint, st *remoteState, jsonLen int, deadline time.Time) error {
	e.outstanding.Add(1)
	defer e.outstanding.Add(-1)
	st.hreq.Reset()
	st.hreq.SetRequestURI(e.uri)
	st.hreq.Header.SetMethod(fasthttp.MethodPost)
	st.hreq.Header.SetContentType("application/octet-stream")
	var n [20]byte
	st.hreq.Header.SetBytesV(v2codec.HeaderJSONLength, strconv.AppendInt(n[:0], int64(jsonLen), 10))
	st.body.reset(st.head, st.in)
	st.hreq.SetBodyStream(&st.body, st.body.size())
	var err error
	if deadline.IsZero() {
		err = e.client.Do(st.hreq, st.hres)
	} else {
		err = e.client.DoDeadline(st.hreq, st.hres, deadline)
	}
	if err != nil {
		if errors.Is(err, fasthttp.ErrNoFreeConns) {
			// The replica has maxConnsPerReplica requests outstanding: busy,
			// not down.
			return &StageError{Status: fasthttp.StatusTooManyRequests, Msg: fmt.Sprintf("stage %q at %s has %d requests outstanding", c.model, e.addr, maxConnsPerReplica)}
		}
		// fasthttp reports the deadline as ErrTimeout, as the socket's i/o
		// timeout when it hits while reading the answer, or as
		// ErrDialTimeout when it hits while connecting.
		var ne net.Error
		if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) ||
			(!deadline.IsZero() && !time.Now().Before(deadline)) {
			return fmt.Errorf("%w: stage %q at %s did not answer before the deadline", dataplane.ErrDeadline, c.model, e.addr)
		}
		return fmt.Errorf("stage %q at %s: %w", c.model, e.addr, err)
	}
	if code := st.hres.StatusCode(); code != fasthttp.StatusOK {
		var er v2codec.InferResponse
		msg := string(st.hres.Body())
		if err := v2codec.DecodeInferResponse(st.hres.Body(), -1, &er); err != nil {
			msg = err.Error()
		}
		return &StageError{Status: code, Msg: msg}
	}
	return nil
}

// ActiveVariant returns the variant the stage's replicas reported last (from
// their model metadata, refreshed at most once a second in the background);
// "" until the first answer.
func (c *RemoteClient) ActiveVariant() string {
	now := time.Now().UnixNano()
	if last := c.polled.Load(); now-last > int64(time.Second) && c.polled.CompareAndSwap(last, now) {
		go c.pollActive()
	}
	if v := c.active.Load(); v != nil {
		return *v
	}
	return ""
}

func (c *RemoteClient) pollActive() {
	e := c.pick(nil)
	if e == nil {
		return
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + e.addr + "/v2/models/" + c.model)
	if err := e.client.DoTimeout(req, resp, 2*time.Second); err != nil || resp.StatusCode() != fasthttp.StatusOK {
		return
	}
	var meta struct {
		Parameters struct {
			ActiveVariant string `json:"active_variant"`
		} `json:"parameters"`
	}
	if json.Unmarshal(resp.Body(), &meta) == nil && meta.Parameters.ActiveVariant != "" {
		v := meta.Parameters.ActiveVariant
		c.active.Store(&v)
	}
}
