package router

import (
	"context"
	"fmt"
	"slices"
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
	run := func(b *testing.B, addr, path string) {
		client := &fasthttp.HostClient{Addr: addr}
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://" + addr + path)
		req.Header.SetMethod("POST")
		req.Header.Set(v2codec.HeaderJSONLength, fmt.Sprint(jl))
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
	b.Run("direct", func(b *testing.B) { run(b, s.Addr, "/v2/models/ocr-cls/infer") })
	b.Run("router", func(b *testing.B) { run(b, rr.Addr, "/v2/models/chain/infer") })
	b.Run("local", func(b *testing.B) { run(b, lr.Addr, "/v2/models/local/infer") })
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
