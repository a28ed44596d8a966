package router

import (
	"context"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/dataplanetest"
	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
)

// startHopStage serves ocr-cls with max batch 1 (at one request in flight a
// larger batch would only add its max wait) and returns one input for it.
func startHopStage(b *testing.B) (*models.Stage, *dataplanetest.Server, []models.Tensor) {
	repo, dir := dataplanetest.Repo(b)
	st := dataplanetest.SubStage(b, repo, "ocr-cls")
	cfg := clsCfg
	cfg.MaxBatch = 1
	s := dataplanetest.StartServer(b, dir, st, cfg, dataplane.ServerConfig{}, dataplane.AdminConfig{})
	return st, s, dataplanetest.RandomTensors(s.Inputs(), 1, 1)
}

// BenchmarkRouterHop measures, in one run, one request at a time through
// ocr-cls (≈1 ms, binary tensors) three ways: straight to the stage server,
// through a router calling that stage server (the router hop), and through
// a router calling the stage in process (ipa local). Each sub-benchmark
// reports its p50 latency; compare them (this machine is noisy).
func BenchmarkRouterHop(b *testing.B) {
	st, s, in := startHopStage(b)
	body, jl := v2codec.AppendInferRequest(nil, &v2codec.InferRequest{Inputs: in, BinaryOutputs: true}, true)
	spec := chainSpec(10 * time.Second)
	remote, _ := NewPipeline(spec, []*Step{{Spec: spec.Stages[0], Meta: st, Client: NewRemoteClient("ocr-cls", []string{s.Addr})}}, BuiltinGlues())
	rr := startRouter(b, remote)
	spec2 := chainSpec(10 * time.Second)
	spec2.Name = "local"
	local, _ := NewPipeline(spec2, []*Step{{Spec: spec2.Stages[0], Meta: st, Client: LocalClient{s.Stage}}}, BuiltinGlues())
	lr := startRouter(b, local)
	b.Run("direct", func(b *testing.B) { oneInFlight(b, s.Addr, "/v2/models/ocr-cls/infer", body, jl) })
	b.Run("router", func(b *testing.B) { oneInFlight(b, rr.Addr, "/v2/models/chain/infer", body, jl) })
	b.Run("local", func(b *testing.B) { oneInFlight(b, lr.Addr, "/v2/models/local/infer", body, jl) })
}

// oneInFlight posts body (a binary-tensor request whose JSON part is jl
// bytes) to addr+path, one request at a time, and reports the p50 latency.
func oneInFlight(b *testing.B, addr, path string, body []byte, jl int) {
	client := &fasthttp.HostClient{Addr: addr}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.SetRequestURI("http://" + addr + path)
	req.Header.SetMethod("POST")
	req.Header.Set(v2codec.HeaderJSONLength, strconv.Itoa(jl))
	req.SetBody(body)
	var lat []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		t := time.Now()
		if err := client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
			b.Fatal(err, resp.StatusCode(), string(resp.Body()))
		}
		lat = append(lat, time.Since(t))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
}

// BenchmarkInProcessHop is the in-process hop of ipa local on its own: a
// LocalClient call against the stage it wraps (target: ≤ 10 µs added).
func BenchmarkInProcessHop(b *testing.B) {
	_, s, in := startHopStage(b)
	c := LocalClient{s.Stage}
	measure := func(b *testing.B, call func() time.Duration) {
		var over []time.Duration
		for b.Loop() {
			over = append(over, call())
		}
		slices.Sort(over)
		b.ReportMetric(float64(over[len(over)/2].Nanoseconds())/1e3, "overhead-µs-p50")
	}
	b.Run("stage", func(b *testing.B) {
		measure(b, func() time.Duration {
			t := time.Now()
			res, err := s.Stage.Infer(context.Background(), in, time.Time{})
			if err != nil {
				b.Fatal(err)
			}
			d := time.Since(t) - res.Compute
			res.Release()
			return d
		})
	})
	b.Run("client", func(b *testing.B) {
		measure(b, func() time.Duration {
			t := time.Now()
			rep, err := c.Infer(context.Background(), in, time.Time{})
			if err != nil {
				b.Fatal(err)
			}
			d := time.Since(t) - rep.Compute
			rep.Release()
			return d
		})
	})
}

// BenchmarkRouterHopStub compares, one request at a time, a bare fasthttp
// reverse proxy with the router in front of a stub stage that answers a
// canned V2 response at once, so that only the hop's own cost is left (the
// router's CPU profile without ONNX Runtime in it). The stage's input is
// classify's 602 KB tensor and ocr-cls's 110 KB one.
func BenchmarkRouterHopStub(b *testing.B) {
	repo, _ := dataplanetest.Repo(b)
	for _, name := range []string{"classify", "ocr-cls"} {
		st := dataplanetest.SubStage(b, repo, name)
		v := st.Variants[0]
		in := dataplanetest.RandomTensors(dataplanetest.Inputs(st), 1, 1)
		var outs []models.Tensor
		for _, o := range v.Outputs {
			shape := slices.Clone(o.Shape)
			for i := range shape {
				if shape[i] < 0 {
					shape[i] = 1
				}
			}
			n := int64(4)
			for _, d := range shape {
				n *= d
			}
			outs = append(outs, models.Tensor{Name: o.Name, DataType: o.DataType, Shape: shape, Data: make([]byte, n)})
		}
		canned, cl := v2codec.AppendInferResponse(nil, &v2codec.InferResponse{ModelName: st.Name, ModelVersion: v.Name, Outputs: outs, Binary: []bool{true, true, true}})
		stub := listen(b, func(ctx *fasthttp.RequestCtx) {
			ctx.Response.Header.Set(v2codec.HeaderJSONLength, strconv.Itoa(cl))
			ctx.SetContentType("application/octet-stream")
			ctx.SetBody(canned)
		})
		pc := &fasthttp.HostClient{Addr: stub}
		proxy := listen(b, func(ctx *fasthttp.RequestCtx) {
			ctx.Request.SetHost(stub)
			if err := pc.Do(&ctx.Request, &ctx.Response); err != nil {
				ctx.Error(err.Error(), fasthttp.StatusBadGateway)
			}
		})
		spec := &models.Pipeline{Name: "hop", SLA: 10 * time.Second, Stages: []models.Step{{Name: "step", Model: st.Name, Input: "tensor", Initial: models.StageConfig{Variant: v.Name, MaxBatch: 1, Replicas: 1, Cores: 1}}}}
		pipe, err := NewPipeline(spec, []*Step{{Spec: spec.Stages[0], Meta: st, Client: NewRemoteClient(st.Name, []string{stub})}}, BuiltinGlues())
		if err != nil {
			b.Fatal(err)
		}
		rr := startRouter(b, pipe)
		body, jl := v2codec.AppendInferRequest(nil, &v2codec.InferRequest{Inputs: in, BinaryOutputs: true}, true)
		b.Run(name+"/proxy", func(b *testing.B) { oneInFlight(b, proxy, "/v2/models/"+st.Name+"/infer", body, jl) })
		b.Run(name+"/router", func(b *testing.B) { oneInFlight(b, rr.Addr, "/v2/models/hop/infer", body, jl) })
	}
}

func listen(b *testing.B, h fasthttp.RequestHandler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &fasthttp.Server{Handler: h}
	go s.Serve(ln)
	b.Cleanup(func() { s.Shutdown() })
	return ln.Addr().String()
}
