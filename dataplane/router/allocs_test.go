//go:build !race

package router

import (
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/dataplanetest"
	"github.com/ipa-serving/ipa/models"
)

// Router allocation budgets: allocations per binary-tensor request (600 KB
// in, as classify's input) through a one-step tensor pipeline, counted over
// every goroutine of the process: the router's fasthttp server (an
// in-memory listener) and client, the pipeline, and the stage, called in
// process (ipa local) or over loopback HTTP (ipa router). The stage engine
// is dataplanetest.CopyEngine, which does not allocate (ONNX Runtime's Go
// binding does). Lower a budget when a change lowers the count. What
// fasthttp allocates per server a request passes (StreamAllocs) is not
// ipa's: one server in process, two over HTTP.
const (
	localBudget  = dataplanetest.StreamAllocs
	remoteBudget = 2 * dataplanetest.StreamAllocs
)

func TestNoRaceRouterAllocationsStayWithinBudget(t *testing.T) {
	meta, open := dataplanetest.CopyStage(3, 224, 224)
	cfg := models.StageConfig{Variant: "a", MaxBatch: 1, MaxWait: time.Millisecond, Replicas: 1, Cores: 1}
	stage, err := dataplane.NewStage(meta, cfg, dataplane.StageOptions{MaxQueue: 16}, open)
	if err != nil {
		t.Fatal(err)
	}
	defer stage.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := dataplane.NewServer(dataplane.ServerConfig{MaxBodySize: 64 << 20}, dataplane.AdminConfig{}, []*dataplane.Stage{stage}, nil, "test")
	go srv.Serve(ln)
	defer srv.Shutdown(t.Context())

	in := dataplanetest.RandomTensors(dataplanetest.Inputs(meta), 1, 1)
	f := func(name string, client StageClient, budget float64) {
		t.Helper()
		spec := &models.Pipeline{Name: "chain", SLA: time.Minute, Stages: []models.Step{{Name: "copy", Model: "copy", Input: "tensor", Initial: cfg}}}
		pipe, err := NewPipeline(spec, []*Step{{Spec: spec.Stages[0], Meta: meta, Client: client}}, BuiltinGlues())
		if err != nil {
			t.Fatal(err)
		}
		r := NewRouter(dataplane.ServerConfig{MaxBodySize: 64 << 20}, []*Pipeline{pipe}, nil, "test", nil)
		defer r.Shutdown(t.Context())
		hc := dataplanetest.InMemory(t, r.Handle)
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		dataplanetest.BinaryRequest(req, "http://inmemory/v2/models/chain/infer", in)
		do := func() {
			if err := hc.Do(req, resp); err != nil || resp.StatusCode() != fasthttp.StatusOK {
				t.Fatalf("%s: %v, status %d: %.200s", name, err, resp.StatusCode(), resp.Body())
			}
		}
		for range 50 {
			do()
		}
		allocs := testing.AllocsPerRun(200, do)
		t.Logf("%s: %.1f allocations per request (budget %.0f)", name, allocs, budget)
		if allocs > budget {
			t.Errorf("%s: %.1f allocations per request; budget %.0f", name, allocs, budget)
		}
	}
	f("in process (ipa local)", LocalClient{stage}, localBudget)
	f("over HTTP (ipa router)", NewRemoteClient("copy", []string{ln.Addr().String()}), remoteBudget)
}
