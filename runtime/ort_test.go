package runtime

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipa-serving/ipa/models"
)

// initORT loads ONNX Runtime for tests. It fails, never skips, when the
// library is missing: `make test` installs it.
func initORT(t testing.TB) {
	t.Helper()
	lib := os.Getenv("IPA_ORT_LIB")
	if lib == "" {
		lib = "../.deps/lib/libonnxruntime.so.1"
	}
	if err := Init(lib); err != nil {
		t.Fatalf("ONNX Runtime is required (run `make deps`): %v", err)
	}
}

func rawModel(t testing.TB, rel string) string {
	t.Helper()
	dir := os.Getenv("IPA_RAW_DIR")
	if dir == "" {
		dir = "../.deps/raw"
	}
	p := filepath.Join(dir, rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("raw model missing (run `make deps`): %v", err)
	}
	return p
}

// inspectVariant builds variant metadata straight from a model file.
func inspectVariant(t testing.TB, path string, maxBatch int) *models.Variant {
	t.Helper()
	in, out, err := Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	return &models.Variant{Name: "v", Stage: "s", File: filepath.Base(path), Inputs: in, Outputs: out, MaxBatch: maxBatch}
}

func randomInputs(v *models.Variant, batch int, rng *rand.Rand) []models.Tensor {
	in := ZeroInputs(v, batch)
	for i := range in {
		d := in[i].Data
		for j := 0; j+4 <= len(d); j += 4 {
			binary.LittleEndian.PutUint32(d[j:], math.Float32bits(rng.Float32()))
		}
	}
	return in
}

func cloneTensors(ts []models.Tensor) []models.Tensor {
	out := make([]models.Tensor, len(ts))
	for i, t := range ts {
		out[i] = models.Tensor{Name: t.Name, DataType: t.DataType, Shape: append([]int64(nil), t.Shape...), Data: append([]byte(nil), t.Data...)}
	}
	return out
}

// runBatchAgainstRows checks that one run of batch k equals k runs of batch 1.
func runBatchAgainstRows(t *testing.T, s *Session, k int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	in := randomInputs(s.Variant(), k, rng)
	got, err := s.Run(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	batched := cloneTensors(got)
	for r := 0; r < k; r++ {
		row := make([]models.Tensor, len(in))
		for i, x := range in {
			n := len(x.Data) / k
			shape := append([]int64(nil), x.Shape...)
			shape[0] = 1
			row[i] = models.Tensor{Name: x.Name, DataType: x.DataType, Shape: shape, Data: x.Data[r*n : (r+1)*n]}
		}
		out, err := s.Run(context.Background(), row)
		if err != nil {
			t.Fatal(err)
		}
		for i := range out {
			if batched[i].Shape[0] != int64(k) {
				t.Fatalf("output %q has batch %d, want %d", out[i].Name, batched[i].Shape[0], k)
			}
			n := len(batched[i].Data) / k
			if len(out[i].Data) != n {
				t.Fatalf("output %q row %d: %d bytes, batched row has %d", out[i].Name, r, len(out[i].Data), n)
			}
			for j := 0; j+4 <= n; j += 4 {
				a := math.Float32frombits(binary.LittleEndian.Uint32(batched[i].Data[r*n+j:]))
				b := math.Float32frombits(binary.LittleEndian.Uint32(out[i].Data[j:]))
				if math.Abs(float64(a-b)) > 1e-4*(1+math.Abs(float64(b))) {
					t.Fatalf("output %q row %d element %d: batched %g, alone %g", out[i].Name, r, j/4, a, b)
				}
			}
		}
	}
}

func TestDynamicBatchMatchesItemByItem(t *testing.T) {
	initORT(t)
	path := rawModel(t, "ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx")
	v := inspectVariant(t, path, 0)
	v.Inputs[0].Shape = []int64{-1, 3, 48, 192}
	v.Outputs[0].Shape = []int64{-1, 2}
	s, err := Open(path, v, Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	runBatchAgainstRows(t, s, 3)
}

func TestFixedBatchModelRunsRowByRow(t *testing.T) {
	initORT(t)
	path := rawModel(t, "imagenet/light_squeezenet.onnx")
	v := inspectVariant(t, path, 1)
	if got := models.FormatShape(v.Inputs[0].Shape); got != "[1,3,224,224]" {
		t.Fatalf("squeezenet input shape %s, want [1,3,224,224]", got)
	}
	v.Inputs[0].Shape[0], v.Outputs[0].Shape[0] = -1, -1
	s, err := Open(path, v, Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	runBatchAgainstRows(t, s, 3)
}

func TestRunRejectsInputsThatDoNotFitTheVariant(t *testing.T) {
	initORT(t)
	path := rawModel(t, "ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx")
	v := inspectVariant(t, path, 0)
	v.Inputs[0].Shape = []int64{-1, 3, 48, 192}
	s, err := Open(path, v, Options{Threads: 1, SkipWarmup: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f := func(mutate func([]models.Tensor), want string) {
		t.Helper()
		in := ZeroInputs(v, 2)
		mutate(in)
		_, err := s.Run(context.Background(), in)
		if !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), want) {
			t.Fatalf("got error %v, want ErrInvalidInput containing %q", err, want)
		}
	}
	f(func(in []models.Tensor) { in[0].Name = "y" }, `expected "x"`)
	f(func(in []models.Tensor) { in[0].DataType = models.FP64 }, "datatype FP64")
	f(func(in []models.Tensor) { in[0].Shape[3] = 100 }, "dimension 3 must be 192")
	f(func(in []models.Tensor) { in[0].Data = in[0].Data[:10] }, "got 10")
	f(func(in []models.Tensor) { in[0].Shape = in[0].Shape[:3] }, "expects 4 dimensions")
}

func TestRunAfterCloseFails(t *testing.T) {
	initORT(t)
	path := rawModel(t, "ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx")
	v := inspectVariant(t, path, 0)
	v.Inputs[0].Shape = []int64{-1, 3, 48, 192}
	s, err := Open(path, v, Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s.Close()
	if _, err := s.Run(context.Background(), ZeroInputs(v, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close: %v, want ErrClosed", err)
	}
}

func TestCancelledContextStopsRun(t *testing.T) {
	initORT(t)
	path := rawModel(t, "ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx")
	v := inspectVariant(t, path, 0)
	v.Inputs[0].Shape = []int64{-1, 3, 48, 192}
	s, err := Open(path, v, Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Run(ctx, ZeroInputs(v, 1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run with a cancelled context: %v, want context.Canceled", err)
	}
	if _, err := s.Run(context.Background(), ZeroInputs(v, 1)); err != nil {
		t.Fatalf("Run after a cancelled run: %v", err)
	}
}
