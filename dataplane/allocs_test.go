//go:build !race

package dataplane_test

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/dataplanetest"
	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
)

// The race detector allocates on its own, so allocation budgets are checked
// only without it (make test runs the TestNoRace* tests a second time,
// without -race). The engine is dataplanetest.CopyEngine, which does not
// allocate: ONNX Runtime's Go binding allocates per tensor on every run.

// TestNoRaceBinaryInferDoesNotAllocate sends binary-tensor requests of a
// classify-sized input (FP32[1,3,224,224], 600 KB) through fasthttp (an
// in-memory listener; client and server both counted) to a stage with max
// batch 1, one at a time: handler, decode, stage, engine hand-off, encode.
func TestNoRaceBinaryInferDoesNotAllocate(t *testing.T) {
	f := func(name string, cfg models.StageConfig, header ...string) {
		t.Helper()
		meta, open := dataplanetest.CopyStage(3, 224, 224)
		st, err := dataplane.NewStage(meta, cfg, dataplane.StageOptions{MaxQueue: 16}, open)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		srv := dataplane.NewServer(dataplane.ServerConfig{MaxBodySize: 64 << 20}, dataplane.AdminConfig{}, []*dataplane.Stage{st}, nil, "test")
		client := dataplanetest.InMemory(t, srv.Handle)
		in := dataplanetest.RandomTensors(dataplanetest.Inputs(meta), 1, 1)
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		dataplanetest.BinaryRequest(req, "http://inmemory/v2/models/copy/infer", in)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		do := func() {
			if err := client.Do(req, resp); err != nil || resp.StatusCode() != fasthttp.StatusOK {
				t.Fatalf("%s: %v, status %d: %.200s", name, err, resp.StatusCode(), resp.Body())
			}
		}
		for range 50 { // warm the pools
			do()
		}
		if got, want := len(resp.Body()), len(in[0].Data); got < want {
			t.Fatalf("%s: answer of %d bytes, want at least the %d of the output", name, got, want)
		}
		if allocs := testing.AllocsPerRun(200, do); allocs > dataplanetest.StreamAllocs {
			t.Errorf("%s: %.1f allocations per request; want none but fasthttp's %d", name, allocs, dataplanetest.StreamAllocs)
		}
	}
	f("max batch 1", models.StageConfig{Variant: "a", MaxBatch: 1, MaxWait: time.Millisecond, Replicas: 1, Cores: 1})
	f("max batch 4, no wait", models.StageConfig{Variant: "a", MaxBatch: 4, MaxWait: 0, Replicas: 1, Cores: 1})
	f("max batch 4, waits for a batch", models.StageConfig{Variant: "a", MaxBatch: 4, MaxWait: 50 * time.Microsecond, Replicas: 1, Cores: 1})
	f("with a deadline", models.StageConfig{Variant: "a", MaxBatch: 1, MaxWait: time.Millisecond, Replicas: 2, Cores: 1}, v2codec.HeaderTimeout, "10s")
}
