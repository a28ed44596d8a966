package router

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

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/dataplanetest"
	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
)

// chainSpec is a one-stage pipeline over ocr-cls with tensor glue.
func chainSpec(sla time.Duration) *models.Pipeline {
	return &models.Pipeline{Name: "chain", SLA: sla, Stages: []models.Step{
		{Name: "angle", Model: "ocr-cls", Input: "tensor", Initial: clsCfg},
	}}
}

type testRouter struct {
	*dataplanetest.Server
	router *Router
}

func startRouter(t testing.TB, pipe *Pipeline) *testRouter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := NewRouter(dataplane.ServerConfig{MaxBodySize: 64 << 20}, []*Pipeline{pipe}, nil, "test", nil)
	go r.Serve(ln)
	t.Cleanup(func() { r.Shutdown(t.Context()) })
	return &testRouter{Server: &dataplanetest.Server{Addr: ln.Addr().String(), Client: &fasthttp.HostClient{Addr: ln.Addr().String()}}, router: r}
}

func (r *testRouter) Infer(t testing.TB, pipeline string, body []byte, headers ...string) (*v2codec.InferResponse, dataplanetest.Result) {
	t.Helper()
	res := r.Do(t, "POST", "/v2/models/"+pipeline+"/infer", body, headers...)
	return res.Decode(t), res
}

func TestRouterChainsInProcessStagesAndReportsStageTimings(t *testing.T) {
	repo, dir := dataplanetest.Repo(t)
	spec := chainSpec(5 * time.Second)
	st := dataplanetest.SubStage(t, repo, "ocr-cls")
	stage, err := dataplane.NewStage(st, clsCfg, dataplane.StageOptions{MaxQueue: 64}, dataplanetest.ORTOpener(dir, st))
	if err != nil {
		t.Fatal(err)
	}
	defer stage.Close()
	pipe, err := NewPipeline(spec, []*Step{{Spec: spec.Stages[0], Meta: st, Client: LocalClient{stage}}}, BuiltinGlues())
	if err != nil {
		t.Fatal(err)
	}
	r := startRouter(t, pipe)
	in := dataplanetest.RandomTensors(dataplanetest.Inputs(st), 2, 9)
	want := dataplanetest.Direct(t, dir, st, st.Variants[0], in)
	body, jl := v2codec.AppendInferRequest(nil, &v2codec.InferRequest{ID: "x", Inputs: in, BinaryOutputs: true}, true)
	resp, res := r.Infer(t, "chain", body, v2codec.HeaderJSONLength, fmt.Sprint(jl))
	if resp == nil {
		t.Fatalf("status %d: %s", res.Status, res.Body)
	}
	dataplanetest.AssertClose(t, "pipeline output", resp.Outputs[0].Data, want[0])
	if resp.ID != "x" || resp.ModelName != "chain" {
		t.Fatalf("response %q %q", resp.ID, resp.ModelName)
	}
	// Per-stage timings are in the JSON parameters.
	hl := 0
	fmt.Sscan(res.Header[v2codec.HeaderJSONLength], &hl)
	var head struct {
		ModelVersion string `json:"model_version"`
		Parameters   map[string]any
	}
	if err := json.Unmarshal(res.Body[:hl], &head); err != nil {
		t.Fatal(err)
	}
	ns := func(k string) float64 { f, _ := head.Parameters[k].(float64); return f }
	if ns("angle_ns") <= 0 || ns("total_ns") < ns("angle_ns") {
		t.Fatalf("timings %v", head.Parameters)
	}
	// The variant that computed the step, in the answer.
	if head.ModelVersion != clsCfg.Variant || head.Parameters["angle_variant"] != clsCfg.Variant {
		t.Fatalf("model_version %q, parameters %v; want variant %q", head.ModelVersion, head.Parameters, clsCfg.Variant)
	}
	if got := r.Do(t, "POST", "/v2/models/nope/infer", body); got.Status != 404 || !strings.Contains(string(got.Body), `unknown pipeline \"nope\"`) {
		t.Fatalf("unknown pipeline: %d %s", got.Status, got.Body)
	}
	if got := r.Do(t, "POST", "/v2/models/chain/infer", []byte("\x89PNG garbage")); got.Status != 400 {
		t.Fatalf("raw body to a tensor pipeline: %d %s", got.Status, got.Body)
	}
	rate := r.Do(t, "GET", "/router/rate?window=5", nil)
	if rate.Status != 200 || !strings.Contains(string(rate.Body), `"per_second"`) {
		t.Fatalf("rate: %d %s", rate.Status, rate.Body)
	}
}

func TestRouterDropsARequestThatCannotMeetItsDeadlineWith504(t *testing.T) {
	repo, dir := dataplanetest.Repo(t)
	spec := chainSpec(time.Nanosecond)
	st := dataplanetest.SubStage(t, repo, "ocr-cls")
	stage, err := dataplane.NewStage(st, clsCfg, dataplane.StageOptions{MaxQueue: 64}, dataplanetest.ORTOpener(dir, st))
	if err != nil {
		t.Fatal(err)
	}
	defer stage.Close()
	pipe, _ := NewPipeline(spec, []*Step{{Spec: spec.Stages[0], Meta: st, Client: LocalClient{stage}}}, BuiltinGlues())
	r := startRouter(t, pipe)
	body, jl := v2codec.AppendInferRequest(nil, &v2codec.InferRequest{Inputs: dataplanetest.RandomTensors(dataplanetest.Inputs(st), 1, 9)}, true)
	res := r.Do(t, "POST", "/v2/models/chain/infer", body, v2codec.HeaderJSONLength, fmt.Sprint(jl))
	if res.Status != 504 || !strings.Contains(string(res.Body), `before stage \"angle\"`) {
		t.Fatalf("1ns SLA: %d %s", res.Status, res.Body)
	}
	// A client budget replaces the SLA.
	res = r.Do(t, "POST", "/v2/models/chain/infer", body, v2codec.HeaderJSONLength, fmt.Sprint(jl), v2codec.HeaderTimeout, "10s")
	if res.Status != 200 {
		t.Fatalf("with a 10s budget: %d %s", res.Status, res.Body)
	}
	m := r.Do(t, "GET", "/metrics", nil)
	if !strings.Contains(string(m.Body), `ipa_router_dropped_total{pipeline="chain",reason="deadline_router"} 1`) {
		t.Fatalf("drop not counted:\n%s", grep(string(m.Body), "ipa_router"))
	}
}

func TestRemoteStageClientRetriesOnAnotherReplicaWhenOneIsDown(t *testing.T) {
	repo, dir := dataplanetest.Repo(t)
	st := dataplanetest.SubStage(t, repo, "ocr-cls")
	s := dataplanetest.StartServer(t, dir, st, clsCfg, dataplane.ServerConfig{}, dataplane.AdminConfig{})
	// A port that refuses connections: listen, note it, close.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	spec := chainSpec(5 * time.Second)
	client := NewRemoteClient("ocr-cls", []string{dead, s.Addr})
	pipe, _ := NewPipeline(spec, []*Step{{Spec: spec.Stages[0], Meta: st, Client: client}}, BuiltinGlues())
	r := startRouter(t, pipe)
	in := dataplanetest.RandomTensors(s.Inputs(), 1, 11)
	want := dataplanetest.Direct(t, dir, st, st.Variants[0], in)
	body, jl := v2codec.AppendInferRequest(nil, &v2codec.InferRequest{Inputs: in, BinaryOutputs: true}, true)
	for i := 0; i < 6; i++ {
		resp, res := r.Infer(t, "chain", body, v2codec.HeaderJSONLength, fmt.Sprint(jl))
		if resp == nil {
			t.Fatalf("request %d with one replica down: %d %s", i, res.Status, res.Body)
		}
		dataplanetest.AssertClose(t, "remote output", resp.Outputs[0].Data, want[0])
	}
	// All replicas down: an explicit 503, not a hang.
	client.SetEndpoints([]string{dead})
	res := r.Do(t, "POST", "/v2/models/chain/infer", body, v2codec.HeaderJSONLength, fmt.Sprint(jl))
	if res.Status != 503 || !strings.Contains(string(res.Body), `no ready replica of stage \"ocr-cls\"`) {
		t.Fatalf("all replicas down: %d %s", res.Status, res.Body)
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
	in := []models.Tensor{{Name: "x", DataType: models.FP32, Shape: []int64{1}, Data: make([]byte, 4)}}
	for _, d := range []time.Duration{50 * time.Millisecond, 300 * time.Millisecond} {
		_, err := client.Infer(context.Background(), in, time.Now().Add(d))
		if !errors.Is(err, dataplane.ErrDeadline) {
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

var clsCfg = models.StageConfig{Variant: "cls-mobile-v2", MaxBatch: 4, MaxWait: 2 * time.Millisecond, Replicas: 1, Cores: 1}

// TestJSONBodiesAreToldFromImages: a V2 JSON request (after white space,
// or a UTF-8 byte order mark some encoders write) from a raw image body.
func TestJSONBodiesAreToldFromImages(t *testing.T) {
	for body, want := range map[string]bool{
		`{"inputs":[]}`:         true,
		" \r\n\t{}":             true,
		"\ufeff{\"inputs\":[]}": true,
		"\ufeff \n{}":           true,
		"\x89PNG\r\n\x1a\n":     false,
		"\xff\xd8\xff\xe0":      false,
		"":                      false,
		"\ufeff":                false,
		"[]":                    false,
		"\ufeff\ufeff{}":        false,
	} {
		if got := isJSONBody([]byte(body)); got != want {
			t.Errorf("isJSONBody(%q) = %v, want %v", body, got, want)
		}
	}
}
