package dataplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/models"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// chainSpec is a one-stage pipeline over ocr-cls with tensor glue.
func chainSpec(sla time.Duration) *models.Pipeline {
	return &models.Pipeline{Name: "chain", SLA: sla, Stages: []models.PipelineStage{
		{Name: "angle", Model: "ocr-cls", Input: "tensor", Initial: clsCfg},
	}}
}

type testRouter struct {
	*testServer
	router *Router
}

func startRouter(t testing.TB, pipe *Pipe) *testRouter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := NewRouter(ServerConfig{MaxBodySize: 64 << 20}, []*Pipe{pipe}, nil, "test", nil)
	go r.Serve(ln)
	t.Cleanup(func() { r.Shutdown(t.Context()) })
	return &testRouter{testServer: &testServer{addr: ln.Addr().String(), client: &fasthttp.HostClient{Addr: ln.Addr().String()}}, router: r}
}

func (r *testRouter) infer(t testing.TB, pipeline string, body []byte, headers ...string) (*InferResponse, httpResult) {
	t.Helper()
	res := r.do(t, "POST", "/v2/models/"+pipeline+"/infer", body, headers...)
	if res.status != 200 {
		return nil, res
	}
	hl := -1
	if v, ok := res.header[headerHeaderLen]; ok {
		fmt.Sscan(v, &hl)
	}
	var resp InferResponse
	if err := DecodeInferResponse(res.body, hl, &resp); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return &resp, res
}

func TestRouterChainsInProcessStagesAndReportsStageTimings(t *testing.T) {
	repo, dir := testRepo(t)
	spec := chainSpec(5 * time.Second)
	st := subStage(t, repo, "ocr-cls")
	stage, err := NewStage(st, clsCfg, StageOptions{MaxQueue: 64}, ortOpen(dir, st))
	if err != nil {
		t.Fatal(err)
	}
	defer stage.Close()
	pipe, err := NewPipe(spec, []*PipeStage{{Spec: spec.Stages[0], Meta: st, Client: LocalClient{stage}}})
	if err != nil {
		t.Fatal(err)
	}
	r := startRouter(t, pipe)
	in := randomTensors(stage.inputs, 2, 9)
	want := direct(t, dir, st, st.Variants[0], in)
	body, jl := AppendInferRequest(nil, &InferRequest{ID: "x", Inputs: in, BinaryOutputs: true}, true)
	resp, res := r.infer(t, "chain", body, headerHeaderLen, fmt.Sprint(jl))
	if resp == nil {
		t.Fatalf("status %d: %s", res.status, res.body)
	}
	assertClose(t, "pipeline output", resp.Outputs[0].Data, want[0])
	if resp.ID != "x" || resp.ModelName != "chain" {
		t.Fatalf("response %q %q", resp.ID, resp.ModelName)
	}
	// Per-stage timings are in the JSON parameters.
	hl := 0
	fmt.Sscan(res.header[headerHeaderLen], &hl)
	var head struct{ Parameters map[string]int64 }
	if err := json.Unmarshal(res.body[:hl], &head); err != nil {
		t.Fatal(err)
	}
	if head.Parameters["angle_ns"] <= 0 || head.Parameters["total_ns"] < head.Parameters["angle_ns"] {
		t.Fatalf("timings %v", head.Parameters)
	}
	if got := r.do(t, "POST", "/v2/models/nope/infer", body); got.status != 404 || !strings.Contains(string(got.body), `unknown pipeline \"nope\"`) {
		t.Fatalf("unknown pipeline: %d %s", got.status, got.body)
	}
	if got := r.do(t, "POST", "/v2/models/chain/infer", []byte("\x89PNG garbage")); got.status != 400 {
		t.Fatalf("raw body to a tensor pipeline: %d %s", got.status, got.body)
	}
	rate := r.do(t, "GET", "/router/rate?window=5", nil)
	if rate.status != 200 || !strings.Contains(string(rate.body), `"per_second"`) {
		t.Fatalf("rate: %d %s", rate.status, rate.body)
	}
}

func TestRouterDropsARequestThatCannotMeetItsDeadlineWith504(t *testing.T) {
	repo, dir := testRepo(t)
	spec := chainSpec(time.Nanosecond)
	st := subStage(t, repo, "ocr-cls")
	stage, err := NewStage(st, clsCfg, StageOptions{MaxQueue: 64}, ortOpen(dir, st))
	if err != nil {
		t.Fatal(err)
	}
	defer stage.Close()
	pipe, _ := NewPipe(spec, []*PipeStage{{Spec: spec.Stages[0], Meta: st, Client: LocalClient{stage}}})
	r := startRouter(t, pipe)
	body, jl := AppendInferRequest(nil, &InferRequest{Inputs: randomTensors(stage.inputs, 1, 9)}, true)
	res := r.do(t, "POST", "/v2/models/chain/infer", body, headerHeaderLen, fmt.Sprint(jl))
	if res.status != 504 || !strings.Contains(string(res.body), `before stage \"angle\"`) {
		t.Fatalf("1ns SLA: %d %s", res.status, res.body)
	}
	// A client budget replaces the SLA.
	res = r.do(t, "POST", "/v2/models/chain/infer", body, headerHeaderLen, fmt.Sprint(jl), HeaderTimeout, "10s")
	if res.status != 200 {
		t.Fatalf("with a 10s budget: %d %s", res.status, res.body)
	}
	m := r.do(t, "GET", "/metrics", nil)
	if !strings.Contains(string(m.body), `ipa_router_dropped_total{pipeline="chain",reason="deadline_router"} 1`) {
		t.Fatalf("drop not counted:\n%s", grep(string(m.body), "ipa_router"))
	}
}

func TestRemoteStageClientRetriesOnAnotherReplicaWhenOneIsDown(t *testing.T) {
	repo, dir := testRepo(t)
	st := subStage(t, repo, "ocr-cls")
	s := startServer(t, dir, st, clsCfg, ServerConfig{}, AdminConfig{})
	// A port that refuses connections: listen, note it, close.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	spec := chainSpec(5 * time.Second)
	client := NewRemoteClient("ocr-cls", []string{dead, s.addr})
	pipe, _ := NewPipe(spec, []*PipeStage{{Spec: spec.Stages[0], Meta: st, Client: client}})
	r := startRouter(t, pipe)
	in := randomTensors(s.stage.inputs, 1, 11)
	want := direct(t, dir, st, st.Variants[0], in)
	body, jl := AppendInferRequest(nil, &InferRequest{Inputs: in, BinaryOutputs: true}, true)
	for i := 0; i < 6; i++ {
		resp, res := r.infer(t, "chain", body, headerHeaderLen, fmt.Sprint(jl))
		if resp == nil {
			t.Fatalf("request %d with one replica down: %d %s", i, res.status, res.body)
		}
		assertClose(t, "remote output", resp.Outputs[0].Data, want[0])
	}
	// All replicas down: an explicit 503, not a hang.
	client.SetEndpoints([]string{dead})
	res := r.do(t, "POST", "/v2/models/chain/infer", body, headerHeaderLen, fmt.Sprint(jl))
	if res.status != 503 || !strings.Contains(string(res.body), "no replica") {
		t.Fatalf("all replicas down: %d %s", res.status, res.body)
	}
}

// A replica that accepts the request but answers after the deadline is a
// deadline drop (504), not a server error, however the transport reports it.
func TestRemoteStageClientReportsASilentReplicaAsADeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { // read the request, send half a header, then nothing
				buf := make([]byte, 1<<16)
				c.Read(buf)
				c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Len"))
				time.Sleep(2 * time.Second)
				c.Close()
			}()
		}
	}()
	client := NewRemoteClient("m", []string{ln.Addr().String()})
	in := []mlrt.Tensor{{Name: "x", DataType: models.FP32, Shape: []int64{1}, Data: make([]byte, 4)}}
	for _, d := range []time.Duration{50 * time.Millisecond, 300 * time.Millisecond} {
		_, err := client.Infer(context.Background(), in, time.Now().Add(d))
		if !errors.Is(err, ErrDeadline) {
			t.Fatalf("deadline %s: %v, want ErrDeadline", d, err)
		}
	}
}

func TestRateCounterCountsWholeSeconds(t *testing.T) {
	now := time.Unix(1000, 0)
	c := NewRateCounter(func() time.Time { return now }, 10)
	c.Add(3)
	now = now.Add(time.Second)
	c.Add(1)
	c.Add(1)
	now = now.Add(2 * time.Second)
	if got := fmt.Sprint(c.Last(4)); got != "[0 3 2 0]" {
		t.Fatalf("Last(4) = %s, want [0 3 2 0]", got)
	}
	now = now.Add(20 * time.Second) // the window wrapped: old counts must not reappear
	if got := fmt.Sprint(c.Last(3)); got != "[0 0 0]" {
		t.Fatalf("after wrapping: %s", got)
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
