package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/bench"
	"github.com/ipa-serving/ipa/dataplane/dataplanetest"
	"github.com/ipa-serving/ipa/dataplane/router"
	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/orchestrator"
	"github.com/ipa-serving/ipa/orchestrator/promtest"
)

// echoClient is a stage that answers every request at once with zeros of
// its variant's first output: the router's own work, without a model.
type echoClient struct{ out models.TensorSpec }

func (c echoClient) Infer(_ context.Context, in []models.Tensor, _ time.Time) (*router.Reply, error) {
	shape := append([]int64{in[0].Shape[0]}, c.out.Shape[1:]...)
	return &router.Reply{Outputs: []models.Tensor{{Name: c.out.Name, DataType: c.out.DataType, Shape: shape,
		Data: make([]byte, 4*models.Elements(shape))}}, Variant: "echo"}, nil
}

// staticActuator reports one configuration and records what is applied.
type staticActuator struct {
	mu  sync.Mutex
	cur []models.StageConfig
}

func (a *staticActuator) Current(context.Context) ([]models.StageConfig, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]models.StageConfig(nil), a.cur...), nil
}

func (a *staticActuator) Apply(_ context.Context, i int, c models.StageConfig) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cur[i] = c
	return nil
}

// classifyPipeline opens the model repository and the built-in classify
// pipeline.
func classifyPipeline(t *testing.T) (*models.Repository, *models.Pipeline) {
	t.Helper()
	repo, err := RepoFlags{Dir: modelsDir(t)}.Open()
	if err != nil {
		t.Fatal(err)
	}
	spec, err := PipelineFlags{Pipeline: "classify"}.Load(repo)
	if err != nil {
		t.Fatal(err)
	}
	return repo, spec
}

// startRouter serves spec's pipeline on a free port with stages that echo
// zeros, and returns its address.
func startEchoRouter(t *testing.T, spec *models.Pipeline, repo *models.Repository) string {
	t.Helper()
	var steps []*router.Step
	for _, s := range spec.Stages {
		meta, err := s.RepoStage(repo)
		if err != nil {
			t.Fatal(err)
		}
		_, outs := meta.Interface()
		steps = append(steps, &router.Step{Spec: s, Meta: meta, Client: echoClient{outs[0]}})
	}
	pipe, err := router.NewPipeline(spec, steps, router.BuiltinGlues())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := router.NewRouter(dataplane.ServerConfig{MaxBodySize: 64 << 20}, []*router.Pipeline{pipe}, nil, "test", nil)
	go r.Serve(ln)
	t.Cleanup(func() { r.Shutdown(context.Background()) })
	return ln.Addr().String()
}

// TestControllerSeesRouterArrivalsThroughPrometheus is `ipa controller
// --prometheus` end to end: a real router's /metrics, scraped every second
// by the real Prometheus, read by the controller's Prometheus observer. A
// step from idle to 40 requests per second must reach the controller's
// decision, and the plan must grow with it.
func TestControllerSeesRouterArrivalsThroughPrometheus(t *testing.T) {
	bin := promtest.Bin(t)
	repo, spec := classifyPipeline(t)
	addr := startEchoRouter(t, spec, repo)
	prom := promtest.Start(t, bin, addr)
	obs := orchestrator.PrometheusObserver{URL: prom, Pipeline: spec.Name, Client: &http.Client{Timeout: 5 * time.Second}, Steps: spec.StepNames()}
	act := &staticActuator{cur: []models.StageConfig{spec.Stages[0].Initial}}
	flags := ControllerFlags{Profile: "profiles/measured/classify.json", Predictor: "reactive", Solver: "exact",
		Alpha: 1, Beta: 0.05, CoreCapacity: 16, ScalingCap: 16,
		Loop: orchestrator.Config{Interval: time.Second, History: 6, Margin: 1.1}}
	ctl, closer, err := flags.controller(spec, repo, obs, act, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	defer ctl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Idle: the counter is exposed (at 0) before any request comes.
	promtest.WaitFor(t, ctx, "Prometheus to scrape the router for 6 s", func() error {
		rates, err := obs.Rates(ctx, 6)
		if err == nil && len(rates) < 6 {
			err = fmt.Errorf("%d seconds so far", len(rates))
		}
		return err
	})
	idle := ctl.Step(ctx)
	if idle.Error != "" || idle.Plan == nil || idle.PeakSeen != 0 {
		t.Fatalf("idle decision: error %q, peak %g, plan %v", idle.Error, idle.PeakSeen, idle.Plan)
	}

	// The step: 40 requests per second of a V2 tensor request of two
	// images (two rows for the step: its fan-out).
	const rate = 40
	meta, err := spec.Stages[0].RepoStage(repo)
	if err != nil {
		t.Fatal(err)
	}
	in := dataplanetest.RandomTensors(dataplanetest.Inputs(meta), 2, 1)
	body, jsonLen := v2codec.AppendInferRequest(nil, &v2codec.InferRequest{Inputs: in}, true)
	client := &fasthttp.HostClient{Addr: addr}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var failed sync.Map
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second / rate)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				defer fasthttp.ReleaseRequest(req)
				defer fasthttp.ReleaseResponse(resp)
				if err := bench.Post(client, body, jsonLen, req, resp); err != nil {
					failed.Store(err.Error(), true)
				}
			}()
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	loaded := time.Now()
	var d orchestrator.Decision
	promtest.WaitFor(t, ctx, "the controller to see the step load", func() error {
		if time.Since(loaded) < 8*time.Second {
			return fmt.Errorf("loading")
		}
		d = ctl.Step(ctx)
		if d.Error != "" {
			return fmt.Errorf("%s", d.Error)
		}
		if d.Observed < 0.8*rate {
			return fmt.Errorf("observed %.1f/s, peak %.1f/s", d.Observed, d.PeakSeen)
		}
		if len(d.Fanout) != 1 || d.Fanout[0] != 2 {
			return fmt.Errorf("fanout %v, want [2] (two rows a request)", d.Fanout)
		}
		return nil
	})
	failed.Range(func(k, _ any) bool { t.Errorf("request failed: %v", k); return true })
	if d.Observed > 1.3*rate || d.PeakSeen > 1.5*rate {
		t.Errorf("observed %.1f/s (peak %.1f/s) for %d/s sent", d.Observed, d.PeakSeen, rate)
	}
	// The plan must serve the step that the idle plan could not. Whether it
	// buys cores (inception-v2 on 4) or a faster variant on the one it has
	// (shufflenet) is the objective's call: at 40/s the two differ by 0.005,
	// and a prediction 5 % above 40/s tips it (CI saw 42/s).
	if d.Plan == nil || d.Plan.Throughput < rate || idle.Plan.Throughput >= rate {
		t.Errorf("plan at %.1f/s: %+v; idle plan %+v: want a plan that serves the load the idle one cannot", d.Observed, d.Plan, idle.Plan)
	}
	t.Logf("idle plan %d cores (%v); at %.1f/s observed (peak %.1f): %d cores, throughput %.0f/s (%v)",
		idle.Plan.Cost, idle.Plan.Stages, d.Observed, d.PeakSeen, d.Plan.Cost, d.Plan.Throughput, d.Plan.Stages)
}

// TestRouterObserverReadsTheRoutersFanout is the fan-out `ipa controller
// --router` plans with: the requests a real router ran and the rows it sent
// its step, read over /router/rate.
func TestRouterObserverReadsTheRoutersFanout(t *testing.T) {
	repo, spec := classifyPipeline(t)
	addr := startEchoRouter(t, spec, repo)
	obs := orchestrator.RouterObserver{URL: "http://" + addr, Pipeline: spec.Name}
	var _ orchestrator.FanoutObserver = obs
	ctx := context.Background()
	if reached, rows, err := obs.Fanout(ctx); err != nil || fmt.Sprint(reached, rows) != "[0] [0]" {
		t.Fatalf("before any request: reached %v, rows %v, %v", reached, rows, err)
	}
	meta, err := spec.Stages[0].RepoStage(repo)
	if err != nil {
		t.Fatal(err)
	}
	in := dataplanetest.RandomTensors(dataplanetest.Inputs(meta), 2, 1) // two images per request
	body, jsonLen := v2codec.AppendInferRequest(nil, &v2codec.InferRequest{Inputs: in}, true)
	client := &fasthttp.HostClient{Addr: addr}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	for range 3 {
		if err := bench.Post(client, body, jsonLen, req, resp); err != nil {
			t.Fatal(err)
		}
	}
	if reached, rows, err := obs.Fanout(ctx); err != nil || fmt.Sprint(reached, rows) != "[3] [6]" {
		t.Fatalf("after 3 requests of 2 rows: reached %v, rows %v, %v; want [3], [6]", reached, rows, err)
	}
	if _, _, err := (orchestrator.RouterObserver{URL: "http://" + addr, Pipeline: "nope"}).Fanout(ctx); err == nil {
		t.Error("fan-out of an unknown pipeline: no error")
	}
}
