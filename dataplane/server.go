package dataplane

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
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/batcher"
	"github.com/ipa-serving/ipa/dataplane/promtext"
	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// ServerConfig configures the HTTP server (see NewHTTPServer). Tags are
// kong's; a zero limit means the default, a zero timeout none.
type ServerConfig struct {
	ListenAddr    string        `name:"listen-addr" default:"127.0.0.1:8080" help:"Address to serve the Open Inference Protocol, admin API and /metrics on."`
	MaxBodySize   int           `name:"max-body-size" default:"67108864" help:"Largest request body in bytes; larger requests get 413."`
	MaxBodyMemory int           `name:"max-body-memory" default:"268435456" help:"Memory in bytes for the request bodies being received or served at once; a request beyond it gets 503 with Retry-After (at least twice --http.max-body-size)."`
	MaxHeaderSize int           `name:"max-header-size" default:"8192" help:"Largest request line plus header in bytes; larger requests get 431."`
	MaxConns      int           `name:"max-conns" default:"4096" help:"Connections served at once (each serves one request at a time, so also the requests in progress); more are refused with 503."`
	MaxConnsPerIP int           `name:"max-conns-per-ip" default:"2048" help:"Connections served at once from one client address; more are refused with 429."`
	ReadTimeout   time.Duration `name:"read-timeout" default:"10s" help:"Time to read a whole request from its first byte (a new connection: from its opening); slower requests get 408."`
	WriteTimeout  time.Duration `name:"write-timeout" default:"10s" help:"Time to write a response; a client that does not read it is disconnected."`
	IdleTimeout   time.Duration `name:"idle-timeout" default:"120s" help:"Keep-alive connections idle longer than this are closed."`
	Timeout       time.Duration `name:"timeout" default:"0s" help:"Default deadline for requests that carry none, counted from their arrival (0: none)."`
}

// Validate refuses negative limits and timeouts (a zero one means the
// default, or none): a negative read timeout would let a client trickle
// a request for ever.
func (c ServerConfig) Validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"max-body-size", int64(c.MaxBodySize)}, {"max-body-memory", int64(c.MaxBodyMemory)}, {"max-header-size", int64(c.MaxHeaderSize)},
		{"max-conns", int64(c.MaxConns)}, {"max-conns-per-ip", int64(c.MaxConnsPerIP)},
	} {
		if f.v < 0 {
			return fmt.Errorf("--http.%s %d: give a positive number (0: the default)", f.name, f.v)
		}
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"read-timeout", c.ReadTimeout}, {"write-timeout", c.WriteTimeout}, {"idle-timeout", c.IdleTimeout}, {"timeout", c.Timeout}} {
		if f.d < 0 {
			return fmt.Errorf("--http.%s %s: give a positive duration (0: none)", f.name, f.d)
		}
	}
	return nil
}

// AdminConfig guards the admin API (see Check).
type AdminConfig struct {
	// Token and TokenFile give the bearer token admin calls need (see
	// ResolveToken; neither: no check).
	Token     string `name:"token" env:"IPA_ADMIN_TOKEN" help:"Bearer token required by admin calls; prefer --admin.token-file or the environment variable, since ps shows a flag to every user of the host."`
	TokenFile []byte `name:"token-file" type:"filecontent" placeholder:"FILE" help:"Read the admin bearer token from FILE (surrounding white space ignored)."`
	// Insecure lets the admin API serve a non-loopback address without a
	// token; Check refuses that otherwise.
	Insecure bool `name:"insecure" help:"Serve the admin API on a non-loopback --http.listen-addr without a token: anyone who reaches the port can reconfigure the stages."`
	// AwaitConfig holds readiness back until the first successful admin
	// reconfiguration or until it has passed, so that a replica started by
	// Kubernetes takes traffic only on the controller's current plan.
	AwaitConfig time.Duration `name:"await-config" placeholder:"DURATION" help:"Report not ready until the controller pushed a configuration through the admin API, or this long at most (0: ready at once)."`
}

// Server serves stages over the Open Inference Protocol (KServe V2) REST API.
// It is safe for concurrent use.
type Server struct {
	cfg     ServerConfig
	admin   AdminConfig
	auth    adminAuth
	stages  map[string]*Stage
	names   []string
	log     *slog.Logger
	version string
	srv     *HTTPServer
	drain   Drainer
	// awaitUntil is when readiness stops waiting for the controller's plan
	// (zero: not waiting); configured is set by the first admin POST.
	awaitUntil time.Time
	configured atomic.Bool
}

// NewServer returns a server for the given stages.
func NewServer(cfg ServerConfig, admin AdminConfig, stages []*Stage, log *slog.Logger, version string) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, admin: admin, auth: newAdminAuth(admin), stages: map[string]*Stage{}, log: log, version: version}
	if admin.AwaitConfig > 0 {
		s.awaitUntil = time.Now().Add(admin.AwaitConfig)
	}
	for _, st := range stages {
		s.stages[st.Name()] = st
		s.names = append(s.names, st.Name())
	}
	s.srv = NewHTTPServer(cfg, s.drain.Gate(s.Handle), log)
	s.srv.SetPreflight(s)
	return s
}

// StartDraining turns readiness off and answers new inference requests 503
// with Connection: close (see Drainer); requests in flight go on.
func (s *Server) StartDraining() { s.drain.Start() }

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.srv.Serve(ln) }

// OpenConns is how many connections the server serves now.
func (s *Server) OpenConns() int { return s.srv.OpenConns() }

// Shutdown stops accepting connections and waits for open requests.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.ShutdownWithContext(ctx) }

// Handle routes one request.
func (s *Server) Handle(ctx *fasthttp.RequestCtx) {
	if st := s.inferStage(ctx); st != nil {
		s.infer(ctx, st)
		return
	}
	path := string(ctx.Path())
	method := string(ctx.Method())
	switch {
	case path == "/metrics":
		ctx.SetContentType("text/plain; version=0.0.4")
		promtext.Write(ctx, true)
		return
	case path == "/v2/health/live":
		ctx.SetStatusCode(fasthttp.StatusOK)
		return
	case path == "/v2/health/ready":
		if !s.awaitUntil.IsZero() && !s.configured.Load() && time.Now().Before(s.awaitUntil) {
			WriteError(ctx, fasthttp.StatusServiceUnavailable, fmt.Sprintf("waiting up to %s for the controller's configuration (--admin.await-config)", time.Until(s.awaitUntil).Round(time.Second)))
			return
		}
		for _, st := range s.stages {
			if !st.Ready() {
				WriteError(ctx, fasthttp.StatusServiceUnavailable, fmt.Sprintf("stage %q is not ready", st.Name()))
				return
			}
		}
		ctx.SetStatusCode(fasthttp.StatusOK)
		return
	case path == "/v2" || path == "/v2/":
		WriteJSON(ctx, fasthttp.StatusOK, map[string]any{
			"name": "ipa", "version": s.version,
			"extensions": []string{"binary_tensor_data", "model_repository", "ipa_admin"},
		})
		return
	case strings.HasPrefix(path, "/v2/repository/"):
		ServeRepository(ctx, s.RepositoryIndex, func(name string) bool { return s.stages[name] != nil })
		return
	case strings.HasPrefix(path, "/v2/models/"):
		s.model(ctx, method, strings.TrimPrefix(path, "/v2/models/"))
		return
	case strings.HasPrefix(path, "/admin/stages/"):
		s.adminStage(ctx, method, strings.TrimPrefix(path, "/admin/stages/"))
		return
	}
	WriteError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("no route for %s %s; see /v2, /v2/models/{model}/infer, /v2/repository/index, /admin/stages/{stage}, /metrics", method, path))
}

// inferStage returns the stage of a POST /v2/models/{stage}/infer, the hot
// path, without allocating; nil for every other request, which Handle
// routes the general way.
func (s *Server) inferStage(ctx *fasthttp.RequestCtx) *Stage {
	if name := InferModel(ctx); name != nil {
		return s.stages[string(name)]
	}
	return nil
}

// InferModel returns {model} of a POST /v2/models/{model}/infer without
// allocating (the bytes are ctx's), or nil for any other request.
func InferModel(ctx *fasthttp.RequestCtx) []byte {
	const prefix, suffix = "/v2/models/", "/infer"
	path := ctx.Path()
	if !ctx.IsPost() || !bytes.HasPrefix(path, []byte(prefix)) || !bytes.HasSuffix(path, []byte(suffix)) || len(path) <= len(prefix)+len(suffix) {
		return nil
	}
	name := path[len(prefix) : len(path)-len(suffix)]
	if bytes.IndexByte(name, '/') >= 0 {
		return nil
	}
	return name
}

// model serves /v2/models/{m}[/versions/{v}][/ready|/infer].
func (s *Server) model(ctx *fasthttp.RequestCtx, method, rest string) {
	parts := strings.Split(rest, "/")
	name, version, action := parts[0], "", ""
	parts = parts[1:]
	if len(parts) >= 2 && parts[0] == "versions" {
		version, parts = parts[1], parts[2:]
	}
	switch len(parts) {
	case 0:
	case 1:
		action = parts[0]
	default:
		WriteError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("no route for %s", ctx.Path()))
		return
	}
	st, ok := s.stages[name]
	if !ok {
		WriteError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("unknown model %q; this server serves %v", name, s.names))
		return
	}
	if version != "" && st.Meta().Variant(version) == nil {
		WriteError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("model %q has no version %q; versions are its variants %v", name, version, st.Meta().VariantNames()))
		return
	}
	if action != "infer" && !IsRead(ctx) {
		WriteError(ctx, fasthttp.StatusMethodNotAllowed, fmt.Sprintf("%s takes GET", ctx.Path()))
		return
	}
	switch action {
	case "":
		s.modelMetadata(ctx, st, version)
	case "ready":
		if !st.Ready() || (version != "" && st.Meta().Variant(version) == nil) {
			WriteError(ctx, fasthttp.StatusServiceUnavailable, fmt.Sprintf("model %q is not ready", name))
			return
		}
		ctx.SetStatusCode(fasthttp.StatusOK)
	case "infer":
		if method != fasthttp.MethodPost {
			WriteError(ctx, fasthttp.StatusMethodNotAllowed, "infer takes POST")
			return
		}
		if version != "" && version != st.Config().Variant {
			WriteError(ctx, fasthttp.StatusConflict, fmt.Sprintf("version %q of model %q is loaded but not active (active: %q); switch with POST /admin/stages/%s or omit the version", version, name, st.Config().Variant, name))
			return
		}
		s.infer(ctx, st)
	default:
		WriteError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("no route for %s", ctx.Path()))
	}
}

// modelMetadata answers GET /v2/models/{stage}[/versions/{v}]. The stage's
// inputs and outputs are those of its active variant (what a request must
// match now), with a dynamic batch dimension since the stage batches rows;
// parameters.common_inputs and common_outputs give what every variant
// shares (-1 where they differ), which stays valid across switches.
func (s *Server) modelMetadata(ctx *fasthttp.RequestCtx, st *Stage, version string) {
	commonIn, commonOut := st.Interface()
	cfg := st.Config()
	in, out := commonIn, commonOut
	if v := st.Meta().Variant(cfg.Variant); v != nil {
		in, out = batchDynamic(v.Inputs), batchDynamic(v.Outputs)
	}
	params := map[string]any{"active_variant": cfg.Variant, "config": configJSON(cfg),
		"common_inputs": v2codec.TensorMetadataOf(commonIn), "common_outputs": v2codec.TensorMetadataOf(commonOut)}
	if version != "" {
		v := st.Meta().Variant(version)
		in, out = v.Inputs, v.Outputs
		params = map[string]any{"variant": v, "active": version == cfg.Variant}
	}
	WriteJSON(ctx, fasthttp.StatusOK, map[string]any{
		"name":       st.Name(),
		"versions":   st.Meta().VariantNames(),
		"platform":   "onnxruntime_onnx",
		"inputs":     v2codec.TensorMetadataOf(in),
		"outputs":    v2codec.TensorMetadataOf(out),
		"parameters": params,
	})
}

// IndexEntry is one model version of POST /v2/repository/index (Triton's
// repository extension): a stage's variant, or a pipeline.
type IndexEntry struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	State   string `json:"state"`
	Reason  string `json:"reason,omitempty"`
	Active  bool   `json:"active"`
}

// RepositoryIndex returns every (stage, variant) the server serves: READY
// when every replica holds the variant (a switch to it is instant, or it is
// the one serving), LOADING while it loads (in the background, or for a
// reconfiguration), UNAVAILABLE when the stage is not ready or the variant
// is not preloaded (--stage.preload: it loads when a switch asks for it).
func (s *Server) RepositoryIndex() []IndexEntry {
	list := []IndexEntry{}
	for _, name := range s.names {
		st := s.stages[name]
		active := st.Config().Variant
		loads := st.Loads()
		for _, v := range st.Meta().Variants {
			e := IndexEntry{Name: name, Version: v.Name, State: StateReady, Active: v.Name == active}
			everywhere, loading := len(loads.Replicas) > 0, false
			for _, r := range loads.Replicas {
				everywhere = everywhere && slices.Contains(r.Loaded, v.Name)
				loading = loading || slices.Contains(r.Loading, v.Name)
			}
			switch {
			case !st.Ready():
				e.State, e.Reason = StateUnavailable, "the stage is not ready"
			case e.Active || everywhere:
			case loading:
				e.State, e.Reason = StateLoading, "loading on the replicas"
			default:
				e.State, e.Reason = StateUnavailable, "not preloaded (--stage.preload): loads when a switch asks for it"
			}
			list = append(list, e)
		}
	}
	return list
}

// inferState is the per-request scratch of the infer handler, pooled.
type inferState struct {
	req  v2codec.InferRequest
	resp v2codec.InferResponse
}

var inferPool = sync.Pool{New: func() any { return new(inferState) }}

func (s *Server) infer(ctx *fasthttp.RequestCtx, st *Stage) {
	is := inferPool.Get().(*inferState)
	defer inferPool.Put(is)
	headerLen := -1
	if h := ctx.Request.Header.Peek(v2codec.HeaderJSONLength); len(h) > 0 {
		n, err := strconv.Atoi(string(h))
		if err != nil || n < 0 {
			WriteError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("header %s: %q is not a non-negative integer", v2codec.HeaderJSONLength, h))
			return
		}
		headerLen = n
	}
	// Binary inputs point into the request body: it stays valid until this
	// handler returns, and Infer returns before that (a call whose worker
	// already reads its inputs cannot be abandoned; see Stage.Infer).
	is.req.AliasBinary = true
	if err := v2codec.DecodeInferRequest(ctx.PostBody(), headerLen, &is.req); err != nil {
		st.m.outcome(outcomeBadRequest)
		WriteError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	deadline, err := s.deadline(ctx, &is.req)
	if err != nil {
		st.m.outcome(outcomeBadRequest)
		WriteError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	_, outSpecs := st.Interface()
	for _, o := range is.req.Outputs {
		if !hasSpec(outSpecs, o.Name) {
			st.m.outcome(outcomeBadRequest)
			WriteError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("model %q has no output %q (outputs are %v)", st.Name(), o.Name, models.TensorNames(outSpecs)))
			return
		}
	}
	keep(ctx)
	res, err := st.Infer(context.Background(), is.req.Inputs, deadline)
	if err != nil {
		writeInferError(ctx, err)
		return
	}
	defer res.Release()
	r := &is.resp
	r.ModelName, r.ModelVersion, r.ID = st.Name(), res.Variant, is.req.ID
	r.Outputs, r.Binary = r.Outputs[:0], r.Binary[:0]
	r.Parameters = v2codec.ResponseParameters{QueueTime: res.QueueWait, InferTime: res.Compute, BatchSize: res.Batch}
	for _, t := range res.Outputs {
		binary := is.req.BinaryOutputs
		if len(is.req.Outputs) > 0 {
			i := indexRequested(is.req.Outputs, t.Name)
			if i < 0 {
				continue
			}
			binary = is.req.Outputs[i].Binary
		}
		r.Outputs = append(r.Outputs, t)
		r.Binary = append(r.Binary, binary)
	}
	WriteInferResponse(ctx, r)
}

// writeInferError answers an inference request Stage.Infer refused or
// failed (StatusOf), a 429 with its Retry-After.
func writeInferError(ctx *fasthttp.RequestCtx, err error) {
	status, msg := StatusOf(err)
	if status == fasthttp.StatusTooManyRequests {
		var n [20]byte
		ctx.Response.Header.SetBytesV("Retry-After", strconv.AppendInt(n[:0], int64(RetryAfter(err)), 10))
	}
	WriteError(ctx, status, msg)
}

// WriteInferResponse encodes r straight into ctx's response body buffer
// (fasthttp's, pooled by it: no copy of the outputs after encoding) and sets
// the content type and, for binary outputs, the JSON header's length.
func WriteInferResponse(ctx *fasthttp.RequestCtx, r *v2codec.InferResponse) {
	body, jsonLen := v2codec.AppendInferResponse(ctx.Response.SwapBody(nil)[:0], r)
	ctx.Response.SwapBody(body)
	if jsonLen < len(body) {
		var n [20]byte
		ctx.Response.Header.SetBytesV(v2codec.HeaderJSONLength, strconv.AppendInt(n[:0], int64(jsonLen), 10))
		ctx.SetContentType("application/octet-stream")
	} else {
		ctx.SetContentType("application/json")
	}
}

// batchDynamic returns specs with dimension 0 dynamic.
func batchDynamic(specs []models.TensorSpec) []models.TensorSpec {
	out := make([]models.TensorSpec, len(specs))
	for i, t := range specs {
		t.Shape = append([]int64(nil), t.Shape...)
		if len(t.Shape) > 0 {
			t.Shape[0] = models.Dynamic
		}
		out[i] = t
	}
	return out
}

// IsRead reports whether the request is a GET or HEAD, the methods of the
// metadata and health endpoints.
func IsRead(ctx *fasthttp.RequestCtx) bool { return ctx.IsGet() || ctx.IsHead() }

func hasSpec(specs []models.TensorSpec, name string) bool {
	for _, s := range specs {
		if s.Name == name {
			return true
		}
	}
	return false
}

func indexRequested(outs []v2codec.RequestedOutput, name string) int {
	for i := range outs {
		if outs[i].Name == name {
			return i
		}
	}
	return -1
}

// deadline combines the server default, the headers and the parameters.
// Relative ones (Ipa-Timeout, "timeout", --http.timeout) count from the
// request's arrival (see Arrival: before its body was read). A nil req
// (the body not read yet) leaves out the parameters.
func (s *Server) deadline(ctx *fasthttp.RequestCtx, req *v2codec.InferRequest) (time.Time, error) {
	arrival := Arrival(ctx)
	d, err := v2codec.ClientDeadline(ctx.Request.Header.Peek(v2codec.HeaderTimeout), ctx.Request.Header.Peek(v2codec.HeaderDeadline), req, arrival)
	if err != nil {
		return d, err
	}
	if s.cfg.Timeout > 0 {
		if def := arrival.Add(s.cfg.Timeout); d.IsZero() || def.Before(d) {
			d = def
		}
	}
	return d, nil
}

// StatusOf maps an error to its HTTP status; the one place that does.
func StatusOf(err error) (int, string) {
	switch {
	case errors.Is(err, v2codec.ErrBadRequest), errors.Is(err, mlrt.ErrInvalidInput):
		return fasthttp.StatusBadRequest, err.Error()
	case errors.Is(err, models.ErrNotFound):
		return fasthttp.StatusNotFound, err.Error()
	case errors.Is(err, batcher.ErrQueueFull):
		return fasthttp.StatusTooManyRequests, err.Error()
	case errors.Is(err, ErrCannotMeetDeadline):
		// Busy: the work ahead makes it late, and a retry after the
		// predicted wait (RetryAfter) can make it; else waiting won't help.
		var ae *AdmissionError
		if errors.As(err, &ae) && ae.Busy {
			return fasthttp.StatusTooManyRequests, err.Error()
		}
		return fasthttp.StatusGatewayTimeout, err.Error()
	case errors.Is(err, ErrDeadline), errors.Is(err, context.DeadlineExceeded):
		return fasthttp.StatusGatewayTimeout, err.Error()
	case errors.Is(err, ErrUnavailable):
		return fasthttp.StatusServiceUnavailable, err.Error()
	}
	return fasthttp.StatusInternalServerError, err.Error()
}

func WriteError(ctx *fasthttp.RequestCtx, status int, msg string) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(v2codec.AppendError(ctx.Response.Body()[:0], msg))
}

func WriteJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		WriteError(ctx, fasthttp.StatusInternalServerError, "BUG: cannot encode response: "+err.Error())
		return
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// configJSON is a StageConfig as the admin API shows it.
type configView struct {
	Variant  string `json:"variant"`
	MaxBatch int    `json:"max_batch"`
	MaxWait  string `json:"max_wait"`
	Replicas int    `json:"replicas"`
	Cores    int    `json:"cores"`
}

func configJSON(c models.StageConfig) configView {
	return configView{c.Variant, c.MaxBatch, c.MaxWait.String(), c.Replicas, c.Cores}
}

// adminStage serves GET and POST /admin/stages/{stage}.
func (s *Server) adminStage(ctx *fasthttp.RequestCtx, method, name string) {
	if !s.auth.allows(ctx.Request.Header.Peek("Authorization")) {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="ipa admin"`)
		WriteError(ctx, fasthttp.StatusUnauthorized, "admin calls need header Authorization: Bearer <token> (the server's --admin.token-file or IPA_ADMIN_TOKEN)")
		return
	}
	st, ok := s.stages[name]
	if !ok {
		WriteError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("unknown stage %q; this server serves %v", name, s.names))
		return
	}
	switch method {
	case fasthttp.MethodGet:
		WriteJSON(ctx, fasthttp.StatusOK, map[string]any{"stage": name, "config": configJSON(st.Config()), "variants": st.Meta().VariantNames(), "loads": st.Loads()})
	case fasthttp.MethodPost, fasthttp.MethodPatch, fasthttp.MethodPut:
		patch, err := ParseConfigPatch(ctx.PostBody())
		if err != nil {
			WriteError(ctx, fasthttp.StatusBadRequest, err.Error())
			return
		}
		start := time.Now()
		cfg := patch.Apply(st.Target()) // a pending change the patch does not name stays
		pause, err := st.Reconfigure(cfg)
		if err != nil {
			status := fasthttp.StatusBadRequest
			if errors.Is(err, ErrUnavailable) {
				status = fasthttp.StatusServiceUnavailable
			}
			if errors.Is(err, ErrOverLimit) {
				status = fasthttp.StatusUnprocessableEntity
			}
			if errors.Is(err, ErrSuperseded) {
				status = fasthttp.StatusConflict
			}
			WriteError(ctx, status, fmt.Sprintf("cannot reconfigure stage %q: %v", name, err))
			return
		}
		s.configured.Store(true)
		WriteJSON(ctx, fasthttp.StatusOK, map[string]any{"stage": name, "config": configJSON(st.Config()),
			"seconds": time.Since(start).Seconds(), "pause_seconds": pause.Seconds()})
	default:
		WriteError(ctx, fasthttp.StatusMethodNotAllowed, "use GET or POST /admin/stages/{stage}")
	}
}
