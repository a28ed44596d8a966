package dataplane_test

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

// The three benchmarks below run one squeezenet request at a time (batch 1,
// one replica, one thread) on the same machine in the same go test run: the
// differences of their ns/op are what the stage and the HTTP layer add.
// `ipa bench` prints the same comparison as ratios.

func benchStage(b testing.TB) (*dataplanetest.Server, []models.Tensor, *models.Stage, string) {
	repo, dir := dataplanetest.Repo(b)
	st := dataplanetest.SubStage(b, repo, "classify", "squeezenet")
	cfg := models.StageConfig{Variant: "squeezenet", MaxBatch: 1, MaxWait: 2 * time.Millisecond, Replicas: 1, Cores: 1}
	s := dataplanetest.StartServer(b, dir, st, cfg, dataplane.ServerConfig{}, dataplane.AdminConfig{})
	return s, dataplanetest.RandomTensors(s.Inputs(), 1, 1), st, dir
}

func BenchmarkSqueezenetRawEngine(b *testing.B) {
	_, in, st, dir := benchStage(b)
	e, err := dataplanetest.ORTOpener(dir, st)(st.Variants[0], 1)
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
		res, err := s.Stage.Infer(context.Background(), in, time.Time{})
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
	body, jsonLen := v2codec.AppendInferRequest(nil, &v2codec.InferRequest{Inputs: in, BinaryOutputs: true}, true)
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.SetRequestURI("http://" + s.Addr + "/v2/models/classify/infer")
	req.Header.SetMethod("POST")
	req.Header.Set(v2codec.HeaderJSONLength, fmt.Sprint(jsonLen))
	req.SetBody(body)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
			b.Fatal(err, resp.StatusCode())
		}
	}
}
