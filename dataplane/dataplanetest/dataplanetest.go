// Package dataplanetest holds what the tests of the stage server and the
// router share: the real model repository and ONNX Runtime (they fail, never
// skip, when missing), a stage server on a loopback port, reference runs
// straight on ONNX Runtime, and tensor helpers.
package dataplanetest

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
	mlrt "github.com/ipa-serving/ipa/runtime"
	"github.com/valyala/fasthttp"
)

// Repo loads ONNX Runtime ($IPA_ORT_LIB) and the model repository
// ($IPA_MODELS_DIR), defaulting to .deps/ at the repository root, and returns
// the repository and its directory. It fails the test when either is missing.
func Repo(t testing.TB) (*models.Repository, string) {
	t.Helper()
	lib := os.Getenv("IPA_ORT_LIB")
	if lib == "" {
		lib = filepath.Join(root(t), ".deps/lib/libonnxruntime.so.1")
	}
	if err := mlrt.Init(lib); err != nil {
		t.Fatalf("ONNX Runtime is required (run `make deps`): %v", err)
	}
	dir := os.Getenv("IPA_MODELS_DIR")
	if dir == "" {
		dir = filepath.Join(root(t), ".deps/models")
	}
	repo, err := models.ReadRepository(os.DirFS(dir))
	if err != nil || len(repo.Stages) == 0 {
		t.Fatalf("model repository %q is required (run `make models`): %v", dir, err)
	}
	return repo, dir
}

// SubStage returns stage name of the repository restricted to variants.
func SubStage(t testing.TB, repo *models.Repository, name string, variants ...string) *models.Stage {
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

// ORTOpener opens st's variants from dir on ONNX Runtime.
func ORTOpener(dir string, st *models.Stage) dataplane.Opener {
	return func(v *models.Variant, threads int) (mlrt.Engine, error) {
		return mlrt.Open(filepath.Join(dir, st.Dir, v.Name, v.File), v, mlrt.Options{Threads: threads})
	}
}

// Server is a stage server on a loopback port with a client for it.
type Server struct {
	Stage  *dataplane.Stage
	Addr   string
	Client *fasthttp.HostClient
}

// StartServer serves st (configured as cfg) on a loopback port until the
// test ends.
func StartServer(t testing.TB, dir string, st *models.Stage, cfg models.StageConfig, scfg dataplane.ServerConfig, admin dataplane.AdminConfig) *Server {
	t.Helper()
	stage, err := dataplane.NewStage(st, cfg, dataplane.StageOptions{MaxQueue: 256}, ORTOpener(dir, st))
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
	srv := dataplane.NewServer(scfg, admin, []*dataplane.Stage{stage}, nil, "test")
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Shutdown(context.Background())
		stage.Close()
	})
	return &Server{Stage: stage, Addr: ln.Addr().String(), Client: &fasthttp.HostClient{Addr: ln.Addr().String(), MaxConns: 64}}
}

// Result is an HTTP answer.
type Result struct {
	Status int
	Header map[string]string
	Body   []byte
}

// Do sends one HTTP request to the server (headers as name, value pairs).
func (s *Server) Do(t testing.TB, method, path string, body []byte, headers ...string) Result {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + s.Addr + path)
	req.Header.SetMethod(method)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	req.SetBody(body)
	if err := s.Client.DoTimeout(req, resp, 30*time.Second); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	h := map[string]string{}
	for k, v := range resp.Header.All() {
		h[string(k)] = string(v)
	}
	return Result{resp.StatusCode(), h, append([]byte(nil), resp.Body()...)}
}

// RandomTensors returns FP32 tensors of specs with batch size batch and
// pseudo-random values from seed.
func RandomTensors(specs []models.TensorSpec, batch int, seed uint64) []models.Tensor {
	rng := rand.New(rand.NewPCG(seed, seed))
	out := make([]models.Tensor, len(specs))
	for i, s := range specs {
		shape := append([]int64(nil), s.Shape...)
		shape[0] = int64(batch)
		data := make([]byte, models.Elements(shape)*4)
		for j := 0; j < len(data); j += 4 {
			binary.LittleEndian.PutUint32(data[j:], math.Float32bits(rng.Float32()))
		}
		out[i] = models.Tensor{Name: s.Name, DataType: s.DataType, Shape: shape, Data: data}
	}
	return out
}

// Infer sends in to the stage's infer endpoint (binary or JSON) and
// decodes a 200 answer; other answers come back as the Result only.
func (s *Server) Infer(t testing.TB, in []models.Tensor, binaryIn bool, headers ...string) (*v2codec.InferResponse, Result) {
	t.Helper()
	body, jsonLen := v2codec.AppendInferRequest(nil, &v2codec.InferRequest{ID: "req-1", Inputs: in, BinaryOutputs: binaryIn}, binaryIn)
	if binaryIn {
		headers = append(headers, v2codec.HeaderJSONLength, fmt.Sprint(jsonLen))
	}
	r := s.Do(t, "POST", "/v2/models/"+s.Stage.Name()+"/infer", body, headers...)
	return r.Decode(t), r
}

// Decode decodes a 200 answer as a V2 inference response (binary outputs
// included); any other status gives nil.
func (r Result) Decode(t testing.TB) *v2codec.InferResponse {
	t.Helper()
	if r.Status != 200 {
		return nil
	}
	hl := -1
	if v, ok := r.Header[v2codec.HeaderJSONLength]; ok {
		fmt.Sscan(v, &hl)
	}
	var resp v2codec.InferResponse
	if err := v2codec.DecodeInferResponse(r.Body, hl, &resp); err != nil {
		t.Fatalf("cannot decode response: %v\n%s", err, r.Body)
	}
	return &resp
}

// AssertClose fails the test unless got and want hold FP32 values equal to
// within 1e-4 relative.
func AssertClose(t testing.TB, what string, got, want []byte) {
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

// Direct runs in on a fresh session of v: the reference for served outputs.
func Direct(t testing.TB, dir string, st *models.Stage, v *models.Variant, in []models.Tensor) [][]byte {
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

// Input returns one FP32 tensor "x" of shape [len(vals)/2, 2].
func Input(vals ...float32) []models.Tensor {
	data := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	return []models.Tensor{{Name: "x", DataType: models.FP32, Shape: []int64{int64(len(vals) / 2), 2}, Data: data}}
}

// Floats returns t's FP32 elements.
func Floats(t models.Tensor) []float32 {
	out := make([]float32, len(t.Data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return out
}

// WaitFor polls cond until it returns nil or timeout passes.
func WaitFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// root is the repository's root: the nearest directory above the test's
// working directory that holds go.mod.
func root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Inputs returns the inputs the stage accepts.
func (s *Server) Inputs() []models.TensorSpec {
	in, _ := s.Stage.Interface()
	return in
}

// Inputs returns the inputs every variant of st accepts.
func Inputs(st *models.Stage) []models.TensorSpec {
	in, _ := st.Interface()
	return in
}
