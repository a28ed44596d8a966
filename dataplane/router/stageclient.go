package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/dataplane"
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
// to the replica with the fewest outstanding requests and, when a replica
// cannot be reached, retries the (idempotent) call on another one while the
// deadline allows. It is safe for concurrent use.
type RemoteClient struct {
	model string

	mu        sync.RWMutex // guards endpoints
	endpoints []*endpoint

	active atomic.Pointer[string] // last reported active variant
	polled atomic.Int64           // Unix ns of the last metadata poll
}

type endpoint struct {
	addr        string
	uri         string // the model's infer URI at addr
	client      *fasthttp.HostClient
	outstanding atomic.Int64
}

// NewRemoteClient returns a client for the stage served as model at the
// given host:port addresses.
func NewRemoteClient(model string, addrs []string) *RemoteClient {
	c := &RemoteClient{model: model}
	c.SetEndpoints(addrs)
	return c
}

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
		eps = append(eps, &endpoint{addr: a, uri: "http://" + a + "/v2/models/" + c.model + "/infer", client: &fasthttp.HostClient{Addr: a, MaxConns: 512,
			MaxIdleConnDuration: time.Minute, ReadTimeout: time.Minute, WriteTimeout: time.Minute}})
	}
	c.endpoints = eps
}

// Ready reports whether the step has a replica to call (discovery lists
// only ready ones).
func (c *RemoteClient) Ready() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.endpoints) > 0
}

// pick returns the endpoint with the fewest outstanding requests among those
// not in tried, breaking ties at random.
func (c *RemoteClient) pick(tried []*endpoint) *endpoint {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var best *endpoint
	ties := 0
	for _, e := range c.endpoints {
		skip := false
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
	body  []byte
	hreq  *fasthttp.Request
	hres  *fasthttp.Response
	reply Reply
}

var remotePool = sync.Pool{New: func() any {
	return &remoteState{hreq: new(fasthttp.Request), hres: new(fasthttp.Response)}
}}

// Infer implements StageClient.
func (c *RemoteClient) Infer(ctx context.Context, in []models.Tensor, deadline time.Time) (*Reply, error) {
	st := remotePool.Get().(*remoteState)
	var triedBuf [4]*endpoint // replicas tried, on the stack for up to 4
	st.req.Inputs, st.req.BinaryOutputs, st.req.Deadline = in, true, deadline
	var jsonLen int
	st.body, jsonLen = v2codec.AppendInferRequest(st.body[:0], &st.req, true)
	st.req.Inputs = nil
	tried := triedBuf[:0]
	for {
		e := c.pick(tried)
		if e == nil {
			remotePool.Put(st)
			if len(tried) == 0 {
				return nil, fmt.Errorf("%w: stage %q has no replicas", dataplane.ErrUnavailable, c.model)
			}
			return nil, fmt.Errorf("%w: no replica of stage %q reachable (tried %d)", dataplane.ErrUnavailable, c.model, len(tried))
		}
		tried = append(tried, e)
		err := c.do(e, st, jsonLen, deadline)
		if err == nil {
			break
		}
		var se *StageError
		if errors.As(err, &se) || ctx.Err() != nil || (!deadline.IsZero() && time.Now().After(deadline)) {
			remotePool.Put(st)
			return nil, err
		}
		// Transport failure (replica down or connection reset): try another.
	}
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

func (c *RemoteClient) do(e *endpoint, st *remoteState, jsonLen int, deadline time.Time) error {
	e.outstanding.Add(1)
	defer e.outstanding.Add(-1)
	st.hreq.Reset()
	st.hreq.SetRequestURI(e.uri)
	st.hreq.Header.SetMethod(fasthttp.MethodPost)
	st.hreq.Header.SetContentType("application/octet-stream")
	var n [20]byte
	st.hreq.Header.SetBytesV(v2codec.HeaderJSONLength, strconv.AppendInt(n[:0], int64(jsonLen), 10))
	st.hreq.SetBodyRaw(st.body)
	var err error
	if deadline.IsZero() {
		err = e.client.Do(st.hreq, st.hres)
	} else {
		err = e.client.DoDeadline(st.hreq, st.hres, deadline)
	}
	if err != nil {
		// fasthttp reports the deadline as ErrTimeout, or as the socket's
		// i/o timeout when it hits while reading the answer.
		var ne net.Error
		if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
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
