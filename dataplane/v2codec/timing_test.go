//go:build !race

// Allocation budgets and benchmarks; the race detector adds allocations of
// its own, so this file is left out of -race runs.

package v2codec

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/models"
)

// imageRequest returns a 1×3×224×224 FP32 request body in JSON or binary
// form and its header length.
func imageRequest(binary bool) ([]byte, int) {
	rng := rand.New(rand.NewPCG(5, 6))
	vals := make([]float32, 3*224*224)
	for i := range vals {
		vals[i] = rng.Float32()*4 - 2 // a normalized image
	}
	req := InferRequest{
		ID:     "bench",
		Inputs: []models.Tensor{tensorOf("data_0", models.FP32, []int64{1, 3, 224, 224}, vals...)},
	}
	body, jsonLen := AppendInferRequest(nil, &req, binary)
	if !binary {
		jsonLen = -1
	}
	return body, jsonLen
}

// classResponse returns a 1×1000 FP32 response, all outputs in binary or JSON.
func classResponse(binary bool) *InferResponse {
	rng := rand.New(rand.NewPCG(7, 8))
	vals := make([]float32, 1000)
	for i := range vals {
		vals[i] = rng.Float32()
	}
	return &InferResponse{
		ModelName: "resnet50", ModelVersion: "1", ID: "bench",
		Outputs:    []models.Tensor{tensorOf("probs", models.FP32, []int64{1, 1000}, vals...)},
		Binary:     []bool{binary},
		Parameters: ResponseParameters{QueueTime: 1234567, InferTime: 7654321, BatchSize: 8},
	}
}

func TestNoRaceCodecAllocs(t *testing.T) {
	f := func(name string, budget float64, run func()) {
		t.Helper()
		run() // warm the reused buffers; fastjson's value cache settles
		run() // on the second parse of a big array
		if got := testing.AllocsPerRun(50, run); got > budget {
			t.Fatalf("%s: %.1f allocations per run; the budget is %v", name, got, budget)
		}
	}
	var req InferRequest
	decode := func(body []byte, headerLen int) func() {
		return func() {
			if err := DecodeInferRequest(body, headerLen, &req); err != nil {
				t.Fatal(err)
			}
		}
	}
	f("decode binary", 0, decode(imageRequest(true)))
	f("decode JSON", 0, decode(imageRequest(false)))
	everything := []byte(`{"id":"x","parameters":{"binary_data_output":true,"timeout":"250ms","deadline":1735830245123456789},` +
		`"outputs":[{"name":"y","parameters":{"binary_data":false}}],"inputs":[` +
		`{"name":"a","datatype":"INT64","shape":[2,2],"data":[[1,-2],[3e2,4]]},{"name":"b","datatype":"BYTES","shape":[2],"data":["x","y\n"]},` +
		`{"name":"c","datatype":"FP16","shape":[2],"data":[0.5,"NaN"]},{"name":"d","datatype":"BOOL","shape":[1],"data":[true]}]}`)
	f("decode every feature", 0, decode(everything, -1))

	var resp InferResponse
	var buf []byte
	for _, binary := range []bool{false, true} {
		r := classResponse(binary)
		var jsonLen int
		f("encode response binary="+strconv.FormatBool(binary), 0, func() {
			buf, jsonLen = AppendInferResponse(buf[:0], r)
		})
		headerLen := -1
		if binary {
			headerLen = jsonLen
		}
		body := append([]byte(nil), buf...)
		f("decode response binary="+strconv.FormatBool(binary), 0, func() {
			if err := DecodeInferResponse(body, headerLen, &resp); err != nil {
				t.Fatal(err)
			}
		})
	}
	msg := `input "x": shape [1] needs 1 elements, got 2`
	f("AppendError", 0, func() { buf = AppendError(buf[:0], msg) })
	in := InferRequest{ID: "x", Timeout: time.Second, Deadline: time.Unix(1, 2).UTC(), Inputs: classResponse(false).Outputs}
	f("encode request", 0, func() { buf, _ = AppendInferRequest(buf[:0], &in, false) })
}

func benchmarkDecodeRequest(b *testing.B, binary bool) {
	body, headerLen := imageRequest(binary)
	var req InferRequest
	// Warm up twice: fastjson's value cache settles on the second parse,
	// when the big array's slot stops moving.
	for range 2 {
		if err := DecodeInferRequest(body, headerLen, &req); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := DecodeInferRequest(body, headerLen, &req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeInferRequestImageJSON(b *testing.B)   { benchmarkDecodeRequest(b, false) }
func BenchmarkDecodeInferRequestImageBinary(b *testing.B) { benchmarkDecodeRequest(b, true) }

func benchmarkEncodeResponse(b *testing.B, binary bool) {
	resp := classResponse(binary)
	buf, _ := AppendInferResponse(nil, resp)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendInferResponse(buf[:0], resp)
	}
}

func BenchmarkAppendInferResponseClassesJSON(b *testing.B)   { benchmarkEncodeResponse(b, false) }
func BenchmarkAppendInferResponseClassesBinary(b *testing.B) { benchmarkEncodeResponse(b, true) }

func benchmarkDecodeResponse(b *testing.B, binary bool) {
	body, jsonLen := AppendInferResponse(nil, classResponse(binary))
	headerLen := -1
	if binary {
		headerLen = jsonLen
	}
	var resp InferResponse
	if err := DecodeInferResponse(body, headerLen, &resp); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := DecodeInferResponse(body, headerLen, &resp); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeInferResponseClassesJSON(b *testing.B)   { benchmarkDecodeResponse(b, false) }
func BenchmarkDecodeInferResponseClassesBinary(b *testing.B) { benchmarkDecodeResponse(b, true) }

// BenchmarkHalf measures the FP16 conversions against float32's, which
// are the baseline for what a conversion costs.
func BenchmarkHalf(b *testing.B) {
	vals := make([]float64, 1024)
	rng := rand.New(rand.NewPCG(9, 10))
	for i := range vals {
		vals[i] = rng.NormFloat64()
	}
	b.Run("f16FromF64", func(b *testing.B) {
		var sink uint16
		for b.Loop() {
			for _, v := range vals {
				h, _ := f16FromF64(v, nearestEven)
				sink ^= h
			}
		}
		_ = sink
	})
	b.Run("float32-baseline", func(b *testing.B) {
		var sink uint32
		for b.Loop() {
			for _, v := range vals {
				sink ^= math.Float32bits(float32(v))
			}
		}
		_ = sink
	})
	b.Run("appendHalf", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf = buf[:0]
			for i := range vals {
				buf = appendHalf(buf, uint16(i*61))
			}
		}
	})
}

// BenchmarkParseFloat32 compares parseFloat's fast path with its baseline,
// strconv.ParseFloat, on shortest-form float32 text as JSON tensors carry it.
func BenchmarkParseFloat32(b *testing.B) {
	rng := rand.New(rand.NewPCG(13, 14))
	nums := make([][]byte, 1024)
	for i := range nums {
		nums[i] = strconv.AppendFloat(nil, float64(rng.Float32()*4-2), 'f', -1, 32)
	}
	b.Run("parseFloat", func(b *testing.B) {
		for b.Loop() {
			for _, s := range nums {
				if _, err := parseFloat(s, 32); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("strconv-baseline", func(b *testing.B) {
		for b.Loop() {
			for _, s := range nums {
				if _, err := strconv.ParseFloat(string(s), 32); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
