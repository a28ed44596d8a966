package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/batcher"
	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/promtext"
	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
)

// Router is the pipeline entry: it serves each pipeline as a V2 model,
// attaches a deadline, chains the stages, and measures the arrival rate. It
// is safe for concurrent use.
type Router struct {
	cfg     dataplane.ServerConfig
	pipes   map[string]*routedPipe
	names   []string
	log     *slog.Logger
	version string
	srv     *dataplane.HTTPServer
	drain   dataplane.Drainer
	// extra serves paths the router does not know (ipa local mounts the
	// stages' admin API and models there); nil means 404.
	extra fasthttp.RequestHandler
	// Index, if set, lists the models served next to the pipelines (ipa
	// local: the stages' variants) in POST /v2/repository/index.
	Index func() []dataplane.IndexEntry
}

type routedPipe struct {
	pipe *Pipeline
	rate *RateCounter
	set  *metrics.Set
	// arrivals counts every request to the pipeline, served or not: the
	// series a controller reads through Prometheus (ArrivalsMetric).
	arrivals *metrics.Counter
	total    *metrics.PrometheusHistogram
	stage    map[string]*metrics.PrometheusHistogram
	codes    sync.Map // "2xx" → *metrics.Counter
	drops    sync.Map // reason → *metrics.Counter
	// keys and variantKeys are the steps' keys of their timings and
	// variants in responses ("det_ns", "det_variant"), made once.
	keys, variantKeys map[string]string
}

// NewRouter returns a router for pipes. extra, if not nil, handles paths
// outside the router's own.
func NewRouter(cfg dataplane.ServerConfig, pipes []*Pipeline, log *slog.Logger, version string, extra fasthttp.RequestHandler) *Router {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Router{cfg: cfg, pipes: map[string]*routedPipe{}, log: log, version: version, extra: extra}
	for _, p := range pipes {
		name := p.Spec.Name
		rp := &routedPipe{pipe: p, rate: NewRateCounter(time.Now, 600), set: metrics.NewSet(), stage: map[string]*metrics.PrometheusHistogram{}, keys: map[string]string{}, variantKeys: map[string]string{}}
		rp.total = rp.set.NewPrometheusHistogram(fmt.Sprintf(`ipa_router_request_duration_seconds{pipeline=%q}`, name))
		for _, st := range p.Stages {
			rp.stage[st.Spec.Name] = rp.set.NewPrometheusHistogram(fmt.Sprintf(`ipa_router_stage_duration_seconds{pipeline=%q,stage=%q}`, name, st.Spec.Name))
			rp.keys[st.Spec.Name] = st.Spec.Name + "_ns"
			rp.variantKeys[st.Spec.Name] = st.Spec.Name + "_variant"
		}
		rp.arrivals = rp.set.NewCounter(fmt.Sprintf(`ipa_router_arrivals_total{pipeline=%q}`, name))
		p.glueTimes = rp.set.NewHistogram(fmt.Sprintf(`ipa_router_glue_seconds{pipeline=%q}`, name))
		for i, st := range p.Stages {
			// The fan-out's totals (Pipeline.Rows), for a controller that
			// reads the router through Prometheus.
			rp.set.NewGauge(fmt.Sprintf(`ipa_router_step_requests_total{pipeline=%q,step=%q}`, name, st.Spec.Name), func() float64 {
				return float64(p.reached[i].Load())
			})
			rp.set.NewGauge(fmt.Sprintf(`ipa_router_step_rows_total{pipeline=%q,step=%q}`, name, st.Spec.Name), func() float64 {
				return float64(p.rows[i].Load())
			})
		}
		metrics.RegisterSet(rp.set)
		r.pipes[name] = rp
		r.names = append(r.names, name)
	}
	r.srv = dataplane.NewHTTPServer(cfg, r.drain.Gate(r.Handle), log)
	return r
}

// StartDraining turns readiness off and answers new requests 503 with
// Connection: close (see dataplane.Drainer); requests in flight go on.
func (r *Router) StartDraining() { r.drain.Start() }

// Serve accepts connections on ln until Shutdown.
func (r *Router) Serve(ln net.Listener) error { return r.srv.Serve(ln) }

// OpenConns is how many connections the router serves now.
func (r *Router) OpenConns() int { return r.srv.OpenConns() }

// Shutdown stops accepting connections and waits for open requests.
func (r *Router) Shutdown(ctx context.Context) error {
	err := r.srv.ShutdownWithContext(ctx)
	for _, p := range r.pipes {
		metrics.UnregisterSet(p.set, true)
	}
	return err
}

// Rate returns the per-second arrival counts of pipeline over the last n
// complete seconds, oldest first.
func (r *Router) Rate(pipeline string, n int) ([]int64, error) {
	p, ok := r.pipes[pipeline]
	if !ok {
		return nil, fmt.Errorf("unknown pipeline %q", pipeline)
	}
	return p.rate.Last(n), nil
}

// GlueCost returns what the pipeline's glue (image decoding, resizing,
// crops, post-processing) cost the router in total, and over how many
// requests.
func (r *Router) GlueCost(pipeline string) (time.Duration, int64, error) {
	p, ok := r.pipes[pipeline]
	if !ok {
		return 0, 0, fmt.Errorf("unknown pipeline %q", pipeline)
	}
	total, n := p.pipe.GlueCost()
	return total, n, nil
}

// Rows returns, per step of pipeline, the requests that reached it and the
// batch rows it was sent for them (Pipeline.Rows).
func (r *Router) Rows(pipeline string) (reached, rows []int64, err error) {
	p, ok := r.pipes[pipeline]
	if !ok {
		return nil, nil, fmt.Errorf("unknown pipeline %q", pipeline)
	}
	reached, rows = p.pipe.Rows()
	return reached, rows, nil
}

// Handle routes one request.
func (r *Router) Handle(ctx *fasthttp.RequestCtx) {
	if p := r.inferPipe(ctx); p != nil {
		r.infer(ctx, p)
		return
	}
	path := string(ctx.Path())
	switch {
	case path == "/metrics":
		ctx.SetContentType("text/plain; version=0.0.4")
		promtext.Write(ctx, true)
	case path == "/v2/health/live":
		ctx.SetStatusCode(fasthttp.StatusOK)
	case path == "/v2/health/ready":
		for _, name := range r.names {
			if step := r.pipes[name].pipe.NotReady(); step != "" {
				dataplane.WriteError(ctx, fasthttp.StatusServiceUnavailable, fmt.Sprintf("pipeline %q: no ready replica of step %q", name, step))
				return
			}
		}
		ctx.SetStatusCode(fasthttp.StatusOK)
	case path == "/v2" || path == "/v2/":
		ext := []string{"binary_tensor_data", "model_repository", "ipa_pipelines"}
		if r.extra != nil {
			ext = append(ext, "ipa_admin") // ipa local serves the stages' admin API too
		}
		dataplane.WriteJSON(ctx, fasthttp.StatusOK, map[string]any{"name": "ipa-router", "version": r.version,
			"extensions": ext, "pipelines": r.names})
	case strings.HasPrefix(path, "/v2/repository/"):
		dataplane.ServeRepository(ctx, r.repositoryIndex, r.serves)
	case path == "/router/rate":
		r.serveRate(ctx)
	case strings.HasPrefix(path, "/v2/models/"):
		rest := strings.TrimPrefix(path, "/v2/models/")
		name, action, _ := strings.Cut(rest, "/")
		p, ok := r.pipes[name]
		if !ok {
			if r.extra != nil {
				r.extra(ctx)
				var e struct{ Error string }
				if ctx.Response.StatusCode() == fasthttp.StatusNotFound && json.Unmarshal(ctx.Response.Body(), &e) == nil && strings.HasPrefix(e.Error, "unknown model") {
					// The stages' server does not know the pipelines.
					dataplane.WriteError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("%s, and pipelines %v", e.Error, r.names))
				}
				return
			}
			dataplane.WriteError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("unknown pipeline %q; this router serves %v", name, r.names))
			return
		}
		if rest, ok := strings.CutPrefix(action, "versions/"); ok {
			// A pipeline's one version is what its steps run now.
			var v string
			v, action, _ = strings.Cut(rest, "/")
			if now := p.pipe.Version(); v != now {
				dataplane.WriteError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("pipeline %q has no version %q; its version is %q (the variants its steps run now), or omit the version", name, v, now))
				return
			}
		}
		if action != "infer" && !dataplane.IsRead(ctx) {
			dataplane.WriteError(ctx, fasthttp.StatusMethodNotAllowed, fmt.Sprintf("%s takes GET", path))
			return
		}
		switch action {
		case "":
			r.metadata(ctx, p)
		case "ready":
			if step := p.pipe.NotReady(); step != "" {
				dataplane.WriteError(ctx, fasthttp.StatusServiceUnavailable, fmt.Sprintf("pipeline %q: no ready replica of step %q", name, step))
				return
			}
			ctx.SetStatusCode(fasthttp.StatusOK)
		case "infer":
			if string(ctx.Method()) != fasthttp.MethodPost {
				dataplane.WriteError(ctx, fasthttp.StatusMethodNotAllowed, "infer takes POST")
				return
			}
			r.infer(ctx, p)
		default:
			dataplane.WriteError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("no route for %s", path))
		}
	default:
		if r.extra != nil {
			r.extra(ctx)
			return
		}
		dataplane.WriteError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("no route for %s %s; see /v2/models/{pipeline}/infer, /router/rate, /metrics", ctx.Method(), path))
	}
}

// repositoryIndex lists the pipelines (version: the variants serving them
// now, as in model_version) and, in ipa local, the stages' variants.
func (r *Router) repositoryIndex() []dataplane.IndexEntry {
	list := []dataplane.IndexEntry{}
	for _, name := range r.names {
		e := dataplane.IndexEntry{Name: name, Version: r.pipes[name].pipe.Version(), State: dataplane.StateReady, Active: true}
		if step := r.pipes[name].pipe.NotReady(); step != "" {
			e.State, e.Reason = dataplane.StateUnavailable, fmt.Sprintf("no ready replica of step %q", step)
		}
		list = append(list, e)
	}
	if r.Index != nil {
		list = append(list, r.Index()...)
	}
	return list
}

// serves reports whether name is a pipeline of the router or, in ipa
// local, a stage it serves.
func (r *Router) serves(name string) bool {
	if _, ok := r.pipes[name]; ok {
		return true
	}
	if r.Index != nil {
		for _, e := range r.Index() {
			if e.Name == name {
				return true
			}
		}
	}
	return false
}

// inferPipe returns the pipeline of a POST /v2/models/{pipeline}/infer, the
// hot path, without allocating; nil for every other request, which Handle
// routes the general way.
func (r *Router) inferPipe(ctx *fasthttp.RequestCtx) *routedPipe {
	if name := dataplane.InferModel(ctx); name != nil {
		return r.pipes[string(name)]
	}
	return nil
}

func (r *Router) metadata(ctx *fasthttp.RequestCtx, p *routedPipe) {
	var stages []map[string]any
	for _, st := range p.pipe.Stages {
		stages = append(stages, map[string]any{"name": st.Spec.Name, "model": st.Spec.Model, "input": st.Spec.Input,
			"variants": st.Meta.VariantNames(), "active_variant": st.Variant().Name})
	}
	params := map[string]any{"sla": p.pipe.Spec.SLA.String(), "stages": stages}
	in := p.pipe.Inputs()
	if first, _ := p.pipe.Stages[0].Meta.Interface(); in[0].Name != first[0].Name {
		params["raw_body"] = "POST one PNG or JPEG image as the body, or send input " + in[0].Name + " in a V2 request"
		if p.pipe.TensorInputs() {
			params["tensor_inputs"] = v2codec.TensorMetadataOf(first) // the classifier's own tensor is accepted too
		}
	}
	dataplane.WriteJSON(ctx, fasthttp.StatusOK, map[string]any{"name": p.pipe.Spec.Name, "versions": []string{p.pipe.Version()},
		"platform": "ipa_pipeline", "inputs": v2codec.TensorMetadataOf(in), "outputs": v2codec.TensorMetadataOf(p.pipe.Outputs()),
		"parameters": params})
}

func (r *Router) serveRate(ctx *fasthttp.RequestCtx) {
	name := string(ctx.QueryArgs().Peek("pipeline"))
	if name == "" && len(r.names) == 1 {
		name = r.names[0]
	}
	n, err := strconv.Atoi(string(ctx.QueryArgs().Peek("window")))
	if err != nil || n <= 0 {
		n = 60
	}
	rates, err := r.Rate(name, min(n, 600))
	if err != nil {
		dataplane.WriteError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("%v; pass ?pipeline= one of %v", err, r.names))
		return
	}
	reached, rows, _ := r.Rows(name)
	steps := make([]map[string]any, len(rows))
	for i, n := range rows {
		steps[i] = map[string]any{"step": r.pipes[name].pipe.Stages[i].Spec.Name, "requests_total": reached[i], "rows_total": n}
	}
	dataplane.WriteJSON(ctx, fasthttp.StatusOK, map[string]any{"pipeline": name, "now_unix": time.Now().Unix(), "per_second": rates, "steps": steps})
}

// routerState is the per-request state of the infer handler, pooled with
// its buffers: the decoded request, the pipeline's Request (with the tensor
// glue's copies of stage outputs), the response and the timings.
type routerState struct {
	v2       v2codec.InferRequest
	req      Request
	resp     v2codec.InferResponse
	tim      []StepTiming
	variants []string // the variant per step, for model_version
}

var routerPool = sync.Pool{New: func() any { return new(routerState) }}

func (r *Router) infer(ctx *fasthttp.RequestCtx, p *routedPipe) {
	arrival := dataplane.Arrival(ctx) // before the body was read: the upload counts against the deadline
	p.rate.Add(1)
	p.arrivals.Inc()
	st := routerPool.Get().(*routerState)
	defer routerPool.Put(st)
	req := &st.req
	req.Reset()
	body := ctx.PostBody()
	hdr := ctx.Request.Header.Peek(v2codec.HeaderJSONLength)
	if len(hdr) > 0 || isJSONBody(body) {
		headerLen := -1
		if len(hdr) > 0 {
			n, err := strconv.Atoi(string(hdr))
			if err != nil || n < 0 {
				r.fail(ctx, p, fasthttp.StatusBadRequest, fmt.Sprintf("header %s: %q is not a non-negative integer", v2codec.HeaderJSONLength, hdr))
				return
			}
			headerLen = n
		}
		st.v2.AliasBinary = true
		if err := v2codec.DecodeInferRequest(body, headerLen, &st.v2); err != nil {
			r.fail(ctx, p, fasthttp.StatusBadRequest, err.Error())
			return
		}
		req.V2 = &st.v2
	} else {
		req.Raw = body
	}
	if req.V2 != nil && len(req.V2.Outputs) > 0 {
		declared := p.pipe.Outputs()
		for _, o := range req.V2.Outputs {
			if !slices.ContainsFunc(declared, func(s models.TensorSpec) bool { return s.Name == o.Name }) {
				r.fail(ctx, p, fasthttp.StatusBadRequest, fmt.Sprintf("pipeline %q has no output %q (outputs are %v)", p.pipe.Spec.Name, o.Name, models.TensorNames(declared)))
				return
			}
		}
	}
	// The deadline: the client's budget if it sends one, else arrival + SLA.
	deadline := arrival.Add(p.pipe.Spec.SLA)
	if client, err := v2codec.ClientDeadline(ctx.Request.Header.Peek(v2codec.HeaderTimeout), ctx.Request.Header.Peek(v2codec.HeaderDeadline), req.V2, arrival); err != nil {
		r.fail(ctx, p, fasthttp.StatusBadRequest, err.Error())
		return
	} else if !client.IsZero() {
		deadline = client
	}
	outs, tim, err := p.pipe.Run(context.Background(), req, deadline, st.tim[:0])
	st.tim = tim
	for _, t := range tim {
		p.stage[t.Stage].Update(t.Duration.Seconds())
	}
	if err != nil {
		status, msg := dataplane.StatusOf(err)
		if status == fasthttp.StatusGatewayTimeout || status == fasthttp.StatusTooManyRequests || status == fasthttp.StatusServiceUnavailable || errors.Is(err, errQueueFullRemote) {
			p.counter(&p.drops, `ipa_router_dropped_total{pipeline=%q,reason=%q}`, dropReason(err)).Inc()
		}
		if errors.Is(err, errQueueFullRemote) || errors.Is(err, batcher.ErrQueueFull) {
			status = fasthttp.StatusTooManyRequests
		}
		if status == fasthttp.StatusTooManyRequests {
			var n [20]byte
			ctx.Response.Header.SetBytesV("Retry-After", strconv.AppendInt(n[:0], int64(dataplane.RetryAfter(err)), 10))
		}
		r.fail(ctx, p, status, fmt.Sprintf("pipeline %q: %s", p.pipe.Spec.Name, msg))
		return
	}
	resp := &st.resp
	resp.ModelName, resp.Outputs, resp.Parameters = p.pipe.Spec.Name, resp.Outputs[:0], v2codec.ResponseParameters{}
	resp.ID = ""
	resp.Binary = resp.Binary[:0]
	for _, t := range outs {
		binary := req.V2 != nil && req.V2.BinaryOutputs
		if req.V2 != nil && len(req.V2.Outputs) > 0 {
			i := slices.IndexFunc(req.V2.Outputs, func(o v2codec.RequestedOutput) bool { return o.Name == t.Name })
			if i < 0 {
				continue
			}
			binary = req.V2.Outputs[i].Binary
		}
		resp.Outputs = append(resp.Outputs, t)
		resp.Binary = append(resp.Binary, binary)
	}
	if req.V2 != nil {
		resp.ID = req.V2.ID
	}
	resp.Timings, resp.Labels = resp.Timings[:0], resp.Labels[:0]
	variants := st.variants[:0]
	for i, s := range p.pipe.Stages {
		if i < len(tim) {
			variants = append(variants, tim[i].Variant)
		} else {
			variants = append(variants, s.Variant().Name) // a step without work (nothing found upstream): its active variant
		}
	}
	st.variants = variants
	for _, t := range tim {
		resp.Timings = append(resp.Timings, v2codec.Timing{Key: p.keys[t.Stage], NS: int64(t.Duration)})
		resp.Labels = append(resp.Labels, v2codec.Label{Key: p.variantKeys[t.Stage], Value: t.Variant})
	}
	// model_version names the variants that computed the answer, step by
	// step, joined by "+": the pipeline's version (Pipeline.Version).
	resp.ModelVersion = strings.Join(variants, "+")
	total := time.Since(arrival)
	resp.Timings = append(resp.Timings, v2codec.Timing{Key: "total_ns", NS: int64(total)})
	dataplane.WriteInferResponse(ctx, resp)
	p.total.Update(total.Seconds())
	p.counter(&p.codes, `ipa_router_requests_total{pipeline=%q,code=%q}`, "2xx").Inc()
}

func (r *Router) fail(ctx *fasthttp.RequestCtx, p *routedPipe, status int, msg string) {
	p.counter(&p.codes, `ipa_router_requests_total{pipeline=%q,code=%q}`, fmt.Sprintf("%dxx", status/100)).Inc()
	if status == fasthttp.StatusTooManyRequests && len(ctx.Response.Header.Peek("Retry-After")) == 0 {
		ctx.Response.Header.Set("Retry-After", "1")
	}
	dataplane.WriteError(ctx, status, msg)
}

func (p *routedPipe) counter(m *sync.Map, format, label string) *metrics.Counter {
	if c, ok := m.Load(label); ok {
		return c.(*metrics.Counter)
	}
	c := p.set.GetOrCreateCounter(fmt.Sprintf(format, p.pipe.Spec.Name, label))
	m.Store(label, c)
	return c
}

func dropReason(err error) string {
	switch {
	case errors.Is(err, ErrDropped):
		return "deadline_router"
	case errors.Is(err, dataplane.ErrCannotMeetDeadline):
		return "cannot_meet_deadline"
	case errors.Is(err, dataplane.ErrDeadline):
		return "deadline_stage"
	case errors.Is(err, errQueueFullRemote), errors.Is(err, batcher.ErrQueueFull):
		return "queue_full"
	case errors.Is(err, dataplane.ErrUnavailable):
		return "unavailable"
	}
	return "other"
}

// isJSONBody reports whether body looks like a V2 JSON request.
func isJSONBody(b []byte) bool {
	for _, c := range bytes.TrimPrefix(b, []byte("\ufeff")) { // a UTF-8 byte order mark, then white space
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return true
		}
		return false
	}
	return false
}

// RateCounter counts events per second over a sliding window of whole
// seconds. It is safe for concurrent use.
type RateCounter struct {
	now func() time.Time

	mu     sync.Mutex // guards slots, stamps
	slots  []int64
	stamps []int64 // the Unix second each slot counts
}

// NewRateCounter keeps the last n seconds, reading time from now (injectable
// so that a simulator can run it in virtual time).
func NewRateCounter(now func() time.Time, n int) *RateCounter {
	return &RateCounter{now: now, slots: make([]int64, n), stamps: make([]int64, n)}
}

// Add counts k events now.
func (c *RateCounter) Add(k int64) {
	sec := c.now().Unix()
	i := int(sec % int64(len(c.slots)))
	c.mu.Lock()
	if c.stamps[i] != sec {
		c.stamps[i], c.slots[i] = sec, 0
	}
	c.slots[i] += k
	c.mu.Unlock()
}

// Last returns the counts of the n complete seconds before the current one,
// oldest first.
func (c *RateCounter) Last(n int) []int64 {
	n = min(n, len(c.slots)-1)
	now := c.now().Unix()
	out := make([]int64, n)
	c.mu.Lock()
	defer c.mu.Unlock()
	for j := 0; j < n; j++ {
		sec := now - int64(n-j)
		if i := int(sec % int64(len(c.slots))); c.stamps[i] == sec {
			out[j] = c.slots[i]
		}
	}
	return out
}
