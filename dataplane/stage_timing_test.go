package dataplane

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/models"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// The three benchmarks below run one squeezenet request at a time (batch 1,
// one replica, one thread) on the same machine in the same go test run: the
// differences of their ns/op are what the stage and the HTTP layer add.
// `ipa bench` prints the same comparison as ratios.

func benchStage(b testing.TB) (*testServer, []mlrt.Tensor, *models.Stage, string) {
	repo, dir := testRepo(b)
	st := subStage(b, repo, "classify", "squeezenet")
	cfg := models.StageConfig{Variant: "squeezenet", MaxBatch: 1, MaxWait: 2 * time.Millisecond, Replicas: 1, Cores: 1}
	s := startServer(b, dir, st, cfg, ServerConfig{}, AdminConfig{})
	return s, randomTensors(s.stage.inputs, 1, 1), st, dir
}

func BenchmarkSqueezenetRawEngine(b *testing.B) {
	_, in, st, dir := benchStage(b)
	e, err := ortOpen(dir, st)(st.Variants[0], 1)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Run(context.Background(), in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSqueezenetStageInfer also reports what the stage adds to each
// request in process (queue, hand-off to the worker and back, validation):
// latency minus the engine time of the request's batch, p50 in µs.
func BenchmarkSqueezenetStageInfer(b *testing.B) {
	s, in, _, _ := benchStage(b)
	b.ReportAllocs()
	var over []time.Duration
	for b.Loop() {
		t := time.Now()
		res, err := s.stage.Infer(context.Background(), in, time.Time{})
		if err != nil {
			b.Fatal(err)
		}
		over = append(over, time.Since(t)-res.Compute)
		res.Release()
	}
	slices.Sort(over)
	b.ReportMetric(float64(over[len(over)/2].Microseconds()), "overhead-µs-p50")
}

func BenchmarkSqueezenetHTTPBinary(b *testing.B) {
	s, in, _, _ := benchStage(b)
	body, jsonLen := AppendInferRequest(nil, &InferRequest{Inputs: in, BinaryOutputs: true}, true)
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.SetRequestURI("http://" + s.addr + "/v2/models/classify/infer")
	req.Header.SetMethod("POST")
	req.Header.Set(headerHeaderLen, fmt.Sprint(jsonLen))
	req.SetBody(body)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
			b.Fatal(err, resp.StatusCode())
		}
	}
}
