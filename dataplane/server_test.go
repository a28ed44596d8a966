package dataplane

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/models"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// These tests run real ONNX models from the repository that `make models`
// builds, through the real HTTP server on a loopback port. They fail, never
// skip, when ONNX Runtime or the repository is missing.

func testRepo(t testing.TB) (*models.Repository, string) {
	t.Helper()
	lib := os.Getenv("IPA_ORT_LIB")
	if lib == "" {
		lib = "../.deps/lib/libonnxruntime.so.1"
	}
	if err := mlrt.Init(lib); err != nil {
		t.Fatalf("ONNX Runtime is required (run `make deps`): %v", err)
	}
	dir := os.Getenv("IPA_MODELS_DIR")
	if dir == "" {
		dir = "../.deps/models"
	}
	repo, err := models.ReadRepository(os.DirFS(dir))
	if err != nil || len(repo.Stages) == 0 {
		t.Fatalf("model repository %q is required (run `make models`): %v", dir, err)
	}
	return repo, dir
}

// subStage returns stage name of the repository restricted to variants.
func subStage(t testing.TB, repo *models.Repository, name string, variants ...string) *models.Stage {
	t.Helper()
	st, err := repo.Stage(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(variants) == 0 {
		return st
	}
	sub := &models.Stage{Name: st.Name, Dir: st.Dir}
	for _, v := range variants {
		vv := st.Variant(v)
		if vv == nil {
			t.Fatalf("stage %q has no variant %q", name, v)
		}
		sub.Variants = append(sub.Variants, vv)
	}
	return sub
}

func ortOpen(dir string, st *models.Stage) Opener {
	return func(v *models.Variant, threads int) (mlrt.Engine, error) {
		return mlrt.Open(filepath.Join(dir, st.Dir, v.Name, v.File), v, mlrt.Options{Threads: threads})
	}
}

type testServer struct {
	stage  *Stage
	addr   string
	client *fasthttp.HostClient
}

func startServer(t testing.TB, dir string, st *models.Stage, cfg models.StageConfig, scfg ServerConfig, admin AdminConfig) *testServer {
	t.Helper()
	stage, err := NewStage(st, cfg, StageOptions{MaxQueue: 256}, ortOpen(dir, st))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if scfg.MaxBodySize == 0 {
		scfg.MaxBodySize = 64 << 20
	}
	srv := NewServer(scfg, admin, []*Stage{stage}, nil, "test")
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.srv.Shutdown()
		stage.Close()
	})
	return &testServer{stage: stage, addr: ln.Addr().String(), client: &fasthttp.HostClient{Addr: ln.Addr().String(), MaxConns: 64}}
}

type httpResult struct {
	status int
	header map[string]string
	body   []byte
}

func (s *testServer) do(t testing.TB, method, path string, body []byte, headers ...string) httpResult {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + s.addr + path)
	req.Header.SetMethod(method)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	req.SetBody(body)
	if err := s.client.DoTimeout(req, resp, 30*time.Second); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	h := map[string]string{}
	resp.Header.VisitAll(func(k, v []byte) { h[string(k)] = string(v) })
	return httpResult{resp.StatusCode(), h, append([]byte(nil), resp.Body()...)}
}

func randomTensors(specs []models.TensorSpec, batch int, seed uint64) []mlrt.Tensor {
	rng := rand.New(rand.NewPCG(seed, seed))
	out := make([]mlrt.Tensor, len(specs))
	for i, s := range specs {
		shape := append([]int64(nil), s.Shape...)
		shape[0] = int64(batch)
		data := make([]byte, models.Elements(shape)*4)
		for j := 0; j < len(data); j += 4 {
			binary.LittleEndian.PutUint32(data[j:], math.Float32bits(rng.Float32()))
		}
		out[i] = mlrt.Tensor{Name: s.Name, DataType: s.DataType, Shape: shape, Data: data}
	}
	return out
}

func (s *testServer) infer(t testing.TB, in []mlrt.Tensor, binaryIn bool, headers ...string) (*InferResponse, httpResult) {
	t.Helper()
	body, jsonLen := AppendInferRequest(nil, &InferRequest{ID: "req-1", Inputs: in, BinaryOutputs: binaryIn}, binaryIn)
	if binaryIn {
		headers = append(headers, headerHeaderLen, fmt.Sprint(jsonLen))
	}
	r := s.do(t, "POST", "/v2/models/"+s.stage.Name()+"/infer", body, headers...)
	if r.status != 200 {
		return nil, r
	}
	hl := -1
	if v, ok := r.header[headerHeaderLen]; ok {
		fmt.Sscan(v, &hl)
	}
	var resp InferResponse
	if err := DecodeInferResponse(r.body, hl, &resp); err != nil {
		t.Fatalf("cannot decode response: %v\n%s", err, r.body)
	}
	return &resp, r
}

func assertClose(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	for j := 0; j+4 <= len(got); j += 4 {
		a := math.Float32frombits(binary.LittleEndian.Uint32(got[j:]))
		b := math.Float32frombits(binary.LittleEndian.Uint32(want[j:]))
		if math.Abs(float64(a-b)) > 1e-4*(1+math.Abs(float64(b))) {
			t.Fatalf("%s: element %d is %g, want %g", what, j/4, a, b)
		}
	}
}

// direct runs in on a fresh session of v: the reference for served outputs.
func direct(t testing.TB, dir string, st *models.Stage, v *models.Variant, in []mlrt.Tensor) [][]byte {
	t.Helper()
	e, err := mlrt.Open(filepath.Join(dir, st.Dir, v.Name, v.File), v, mlrt.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	out, err := e.Run(t.Context(), in)
	if err != nil {
		t.Fatal(err)
	}
	var res [][]byte
	for _, o := range out {
		res = append(res, append([]byte(nil), o.Data...))
	}
	return res
}

var clsCfg = models.StageConfig{Variant: "cls-mobile-v2", MaxBatch: 4, MaxWait: 2 * time.Millisecond, Replicas: 1, Cores: 1}

func TestServedOutputsEqualDirectONNXRuntimeRunsInJSONAndBinary(t *testing.T) {
	repo, dir := testRepo(t)
	st := subStage(t, repo, "ocr-cls")
	s := startServer(t, dir, st, clsCfg, ServerConfig{}, AdminConfig{})
	in := randomTensors(s.stage.inputs, 2, 1)
	want := direct(t, dir, st, st.Variants[0], in)
	for _, bin := range []bool{false, true} {
		resp, r := s.infer(t, in, bin)
		if resp == nil {
			t.Fatalf("binary=%v: status %d: %s", bin, r.status, r.body)
		}
		if resp.ModelName != "ocr-cls" || resp.ModelVersion != "cls-mobile-v2" || resp.ID != "req-1" {
			t.Fatalf("binary=%v: response names %q %q %q", bin, resp.ModelName, resp.ModelVersion, resp.ID)
		}
		if len(resp.Outputs) != len(want) {
			t.Fatalf("binary=%v: %d outputs, want %d", bin, len(resp.Outputs), len(want))
		}
		for i := range want {
			if resp.Outputs[i].Shape[0] != 2 {
				t.Fatalf("binary=%v: output shape %v, want batch 2", bin, resp.Outputs[i].Shape)
			}
			assertClose(t, fmt.Sprintf("binary=%v output %q", bin, resp.Outputs[i].Name), resp.Outputs[i].Data, want[i])
		}
		if got := r.header["Content-Type"]; bin != (got == "application/octet-stream") {
			t.Fatalf("binary=%v: content type %q", bin, got)
		}
	}
}

func TestConcurrentHTTPRequestsAreBatchedAndAnsweredWithTheirOwnRows(t *testing.T) {
	repo, dir := testRepo(t)
	st := subStage(t, repo, "ocr-cls")
	cfg := clsCfg
	cfg.MaxWait = 30 * time.Millisecond
	s := startServer(t, dir, st, cfg, ServerConfig{}, AdminConfig{})
	const n = 8
	ins := make([][]mlrt.Tensor, n)
	wants := make([][][]byte, n)
	for i := range ins {
		ins[i] = randomTensors(s.stage.inputs, 1, uint64(10+i))
		wants[i] = direct(t, dir, st, st.Variants[0], ins[i])
	}
	var wg sync.WaitGroup
	var maxBatch atomic.Int64
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			resp, r := s.infer(t, ins[i], true)
			if resp == nil {
				t.Errorf("request %d: status %d: %s", i, r.status, r.body)
				return
			}
			for j := range wants[i] {
				assertClose(t, fmt.Sprintf("request %d output %d", i, j), resp.Outputs[j].Data, wants[i][j])
			}
			for cur := maxBatch.Load(); int64(resp.Parameters.BatchSize) > cur && !maxBatch.CompareAndSwap(cur, int64(resp.Parameters.BatchSize)); cur = maxBatch.Load() {
			}
		}(i)
	}
	wg.Wait()
	if b := maxBatch.Load(); b < 2 || b > 4 {
		t.Fatalf("largest batch reported %d; 8 concurrent requests with max batch 4 and 30ms max wait should batch (2..4)", b)
	}
}

func TestBadRequestsGetA4xxWithAOneLineErrorAndTheServerStaysLive(t *testing.T) {
	repo, dir := testRepo(t)
	st := subStage(t, repo, "ocr-cls")
	s := startServer(t, dir, st, clsCfg, ServerConfig{}, AdminConfig{})
	in := randomTensors(s.stage.inputs, 1, 3)
	inName := in[0].Name
	good, jsonLen := AppendInferRequest(nil, &InferRequest{Inputs: in}, true)
	infer := "/v2/models/ocr-cls/infer"
	f := func(method, path string, body []byte, wantStatus int, wantMsg string, headers ...string) {
		t.Helper()
		s := s
		if wantStatus == 413 {
			// A server with a small limit, so that the client's whole body
			// fits in the socket buffers before the server answers and closes.
			s = startServer(t, dir, st, clsCfg, ServerConfig{MaxBodySize: 4 << 10}, AdminConfig{})
		}
		r := s.do(t, method, path, body, headers...)
		if r.status != wantStatus {
			t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, wantStatus, r.body)
		}
		var e struct{ Error string }
		if err := json.Unmarshal(r.body, &e); err != nil || e.Error == "" || strings.Contains(e.Error, "\n") {
			t.Fatalf("%s %s: body %q is not a one-line V2 error", method, path, r.body)
		}
		if !strings.Contains(e.Error, wantMsg) {
			t.Fatalf("%s %s: error %q does not mention %q", method, path, e.Error, wantMsg)
		}
		if live := s.do(t, "GET", "/v2/health/live", nil); live.status != 200 {
			t.Fatalf("server not live after a bad request: %d", live.status)
		}
	}
	f("POST", infer, []byte(`{"inputs":[`), 400, "")
	f("POST", "/v2/models/nope/infer", good, 404, `unknown model "nope"`)
	f("POST", infer, []byte(`{"inputs":[{"name":"`+inName+`","shape":[1,3,48,192],"datatype":"INT64","data":[1]}]}`), 400, "")
	f("POST", infer, []byte(`{"inputs":[{"name":"`+inName+`","shape":[1,3,48,100],"datatype":"FP32","data":[1]}]}`), 400, "")
	f("POST", infer, []byte(`{"inputs":[{"name":"`+inName+`","shape":[1,1],"datatype":"FP32","data":[1,2,3]}]}`), 400, "")
	f("POST", infer, []byte(`{"inputs":[{"name":"wrong","shape":[1,1],"datatype":"FP32","data":[1]}]}`), 400, inName)
	f("POST", infer, good[:len(good)-7], 400, "", headerHeaderLen, fmt.Sprint(jsonLen))
	f("POST", infer, good, 400, headerHeaderLen, headerHeaderLen, "x12")
	f("POST", infer, make([]byte, 16<<10), 413, "--http.max-body-size")
	f("GET", infer, nil, 405, "POST")
	f("POST", infer, []byte(`{"inputs":[{"name":"`+inName+`","shape":[1,3,48,192],"datatype":"FP32","data":[1]}],"outputs":[{"name":"nope"}]}`), 400, "")
	f("POST", "/v2/models/ocr-cls/versions/nope/infer", good, 404, `no version "nope"`)
	f("POST", "/admin/stages/ocr-cls", []byte(`{"replicaz":2}`), 400, "replicaz")
	f("POST", "/admin/stages/ocr-cls", []byte(`{"variant":"nope"}`), 400, `no variant "nope"`)
	f("POST", "/admin/stages/ocr-cls", []byte(`{"max_batch":0}`), 400, "max_batch")
	f("GET", "/nope", nil, 404, "no route")
}

func TestRequestPastItsDeadlineGets504(t *testing.T) {
	repo, dir := testRepo(t)
	st := subStage(t, repo, "ocr-cls")
	s := startServer(t, dir, st, clsCfg, ServerConfig{}, AdminConfig{})
	in := randomTensors(s.stage.inputs, 1, 4)
	for _, h := range [][]string{
		{HeaderTimeout, "1ns"},
		{HeaderDeadline, fmt.Sprint(time.Now().Add(-time.Second).UnixNano())},
	} {
		_, r := s.infer(t, in, true, h...)
		if r.status != 504 || !strings.Contains(string(r.body), "deadline") {
			t.Fatalf("%s: %s → status %d %s, want 504", h[0], h[1], r.status, r.body)
		}
	}
	if resp, r := s.infer(t, in, true, HeaderTimeout, "10s"); resp == nil {
		t.Fatalf("generous timeout: status %d %s", r.status, r.body)
	}
	_, r := s.infer(t, in, true, HeaderTimeout, "soon")
	if r.status != 400 {
		t.Fatalf("bad timeout header: status %d, want 400", r.status)
	}
}

func TestAdminCallsNeedTheBearerTokenWhenOneIsSet(t *testing.T) {
	repo, dir := testRepo(t)
	st := subStage(t, repo, "ocr-cls")
	s := startServer(t, dir, st, clsCfg, ServerConfig{}, AdminConfig{Token: "s3cret"})
	for _, auth := range []string{"", "Bearer wrong", "s3cret"} {
		r := s.do(t, "POST", "/admin/stages/ocr-cls", []byte(`{"max_batch":2}`), "Authorization", auth)
		if r.status != 401 {
			t.Fatalf("Authorization %q: status %d, want 401", auth, r.status)
		}
	}
	r := s.do(t, "POST", "/admin/stages/ocr-cls", []byte(`{"max_batch":2,"max_wait":"7ms"}`), "Authorization", "Bearer s3cret")
	if r.status != 200 {
		t.Fatalf("with the token: status %d %s", r.status, r.body)
	}
	if c := s.stage.Config(); c.MaxBatch != 2 || c.MaxWait != 7*time.Millisecond {
		t.Fatalf("config after admin call: %+v", c)
	}
	if r := s.do(t, "GET", "/v2/health/ready", nil); r.status != 200 {
		t.Fatalf("inference endpoints must not need the token: ready %d", r.status)
	}
}

// A replica started by Kubernetes must not take traffic before the
// controller pushed the current plan: readiness waits for the first admin
// reconfiguration, or for --admin.await-config to pass.
func TestReadinessAwaitsTheControllersConfiguration(t *testing.T) {
	repo, dir := testRepo(t)
	st := subStage(t, repo, "ocr-cls")
	s := startServer(t, dir, st, clsCfg, ServerConfig{}, AdminConfig{AwaitConfig: time.Minute})
	if r := s.do(t, "GET", "/v2/health/ready", nil); r.status != 503 || !strings.Contains(string(r.body), "controller") {
		t.Fatalf("ready before any configuration: %d %s, want 503 naming the controller", r.status, r.body)
	}
	if r := s.do(t, "GET", "/v2/health/live", nil); r.status != 200 {
		t.Fatalf("live while awaiting: %d", r.status)
	}
	if r := s.do(t, "POST", "/admin/stages/ocr-cls", []byte(`{"max_batch":0}`)); r.status != 400 {
		t.Fatalf("bad configuration: %d", r.status)
	}
	if r := s.do(t, "GET", "/v2/health/ready", nil); r.status != 503 {
		t.Fatalf("a refused configuration made the stage ready: %d", r.status)
	}
	if r := s.do(t, "POST", "/admin/stages/ocr-cls", []byte(`{"max_batch":2}`)); r.status != 200 {
		t.Fatalf("configure: %d %s", r.status, r.body)
	}
	if r := s.do(t, "GET", "/v2/health/ready", nil); r.status != 200 {
		t.Fatalf("ready after the configuration: %d %s", r.status, r.body)
	}
	// Without a controller the wait ends on its own.
	s = startServer(t, dir, st, clsCfg, ServerConfig{}, AdminConfig{AwaitConfig: 300 * time.Millisecond})
	if r := s.do(t, "GET", "/v2/health/ready", nil); r.status != 503 {
		t.Fatalf("ready at once: %d", r.status)
	}
	time.Sleep(400 * time.Millisecond)
	if r := s.do(t, "GET", "/v2/health/ready", nil); r.status != 200 {
		t.Fatalf("still not ready after the wait: %d %s", r.status, r.body)
	}
}

func TestVariantSwitchOverTheAdminAPIUnderLoadFailsNoRequest(t *testing.T) {
	repo, dir := testRepo(t)
	st := subStage(t, repo, "classify", "squeezenet", "shufflenet")
	cfg := models.StageConfig{Variant: "squeezenet", MaxBatch: 4, MaxWait: time.Millisecond, Replicas: 1, Cores: 1}
	s := startServer(t, dir, st, cfg, ServerConfig{}, AdminConfig{})
	in := randomTensors(s.stage.inputs, 1, 5)
	var failed, ok atomic.Int64
	versions := sync.Map{}
	stop := hammer(func() {
		resp, r := s.infer(t, in, true)
		if resp == nil {
			failed.Add(1)
			t.Errorf("request failed during switches: %d %s", r.status, r.body)
			return
		}
		ok.Add(1)
		versions.Store(resp.ModelVersion, true)
	})
	var maxPause float64
	for i := 0; i < 20; i++ {
		v := []string{"shufflenet", "squeezenet"}[i%2]
		r := s.do(t, "POST", "/admin/stages/classify", []byte(`{"variant":"`+v+`"}`))
		if r.status != 200 {
			t.Fatalf("switch to %s: %d %s", v, r.status, r.body)
		}
		var res struct {
			PauseSeconds float64 `json:"pause_seconds"`
		}
		json.Unmarshal(r.body, &res)
		maxPause = max(maxPause, res.PauseSeconds)
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	_, sq := versions.Load("squeezenet")
	_, sh := versions.Load("shufflenet")
	if failed.Load() != 0 || !sq || !sh {
		t.Fatalf("ok=%d failed=%d, served by squeezenet=%v shufflenet=%v", ok.Load(), failed.Load(), sq, sh)
	}
	// The 1 ms target is measured by `ipa bench` on a quiet machine; here,
	// under the race detector and parallel packages, the bound only catches
	// a switch that waits for in-flight batches (≥ 4 squeezenet runs).
	if maxPause > 0.015 {
		t.Errorf("switch pause %.6fs: the switch waited for something", maxPause)
	}
	t.Logf("%d requests over 20 switches, none failed; max pause %.1fµs", ok.Load(), maxPause*1e6)
}

func TestMetadataEndpointsDescribeTheStage(t *testing.T) {
	repo, dir := testRepo(t)
	st := subStage(t, repo, "classify", "squeezenet", "resnet50")
	cfg := models.StageConfig{Variant: "squeezenet", MaxBatch: 1, Replicas: 1, Cores: 1}
	s := startServer(t, dir, st, cfg, ServerConfig{}, AdminConfig{})
	get := func(method, path string, v any) {
		t.Helper()
		r := s.do(t, method, path, nil)
		if r.status != 200 {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
		if v != nil {
			if err := json.Unmarshal(r.body, v); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
		}
	}
	get("GET", "/v2/health/live", nil)
	get("GET", "/v2/health/ready", nil)
	get("GET", "/v2/models/classify/ready", nil)
	var server struct {
		Name       string
		Extensions []string
	}
	get("GET", "/v2", &server)
	if server.Name != "ipa" || !strings.Contains(strings.Join(server.Extensions, ","), "binary_tensor_data") {
		t.Fatalf("server metadata %+v", server)
	}
	var meta struct {
		Name     string
		Versions []string
		Platform string
		Inputs   []tensorMeta
		Outputs  []tensorMeta
	}
	get("GET", "/v2/models/classify", &meta)
	if meta.Name != "classify" || len(meta.Versions) != 2 || meta.Platform != "onnxruntime_onnx" ||
		len(meta.Inputs) != 1 || meta.Inputs[0].DataType != "FP32" || models.FormatShape(meta.Inputs[0].Shape) != "[-1,3,224,224]" {
		t.Fatalf("model metadata %+v", meta)
	}
	get("GET", "/v2/models/classify/versions/resnet50", &meta)
	var index []struct {
		Name, Version, State string
		Active               bool
	}
	get("POST", "/v2/repository/index", &index)
	if len(index) != 2 || index[0].State != "READY" {
		t.Fatalf("repository index %+v", index)
	}
	for _, e := range index {
		if e.Active != (e.Version == "squeezenet") {
			t.Fatalf("repository index marks %+v", e)
		}
	}
}

func TestMetricsCountRequestsBatchesAndInferenceTimePerVariant(t *testing.T) {
	repo, dir := testRepo(t)
	st := subStage(t, repo, "ocr-cls")
	s := startServer(t, dir, st, clsCfg, ServerConfig{}, AdminConfig{})
	in := randomTensors(s.stage.inputs, 1, 6)
	for i := 0; i < 3; i++ {
		if resp, r := s.infer(t, in, true); resp == nil {
			t.Fatalf("status %d %s", r.status, r.body)
		}
	}
	s.do(t, "POST", "/v2/models/ocr-cls/infer", []byte("{"))
	r := s.do(t, "GET", "/metrics", nil)
	body := string(r.body)
	for _, want := range []string{
		`ipa_stage_requests_total{stage="ocr-cls",outcome="ok"} 3`,
		`ipa_stage_requests_total{stage="ocr-cls",outcome="bad_request"} 1`,
		`ipa_stage_batch_size_count{stage="ocr-cls"} 3`,
		`ipa_stage_inference_duration_seconds_count{stage="ocr-cls",variant="cls-mobile-v2"} 3`,
		`ipa_stage_queue_wait_seconds_count{stage="ocr-cls"} 3`,
		`ipa_stage_queue_length{stage="ocr-cls"} 0`,
		`ipa_stage_active_variant{stage="ocr-cls",variant="cls-mobile-v2"} 1`,
		`ipa_stage_replicas{stage="ocr-cls"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
