package v2codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/ipa-serving/ipa/models"
)

var updateFuzzSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite testdata/fuzz/FuzzDecodeInferRequest/seed-* from fuzzSeeds")

type fuzzSeed struct {
	name      string
	body      []byte
	headerLen int
}

// fuzzSeeds are real-looking requests: JSON flat and nested, every
// datatype, BYTES, binary and mixed bodies, parameters, and near misses.
func fuzzSeeds() []fuzzSeed {
	j := func(name, body string) fuzzSeed { return fuzzSeed{name, []byte(body), -1} }
	b := func(name, header string, parts ...[]byte) fuzzSeed {
		body, n := withBinary(header, parts...)
		return fuzzSeed{name, body, n}
	}
	fp32 := tensorOf("x", models.FP32, []int64{1, 3}, float32(0.5), float32(math.NaN()), -1e-3).Data
	text := frameBytes("hello", "", "wörld\x00")
	return []fuzzSeed{
		j("json-fp32-flat", `{"id":"1","inputs":[{"name":"input0","shape":[1,4],"datatype":"FP32","data":[1.5,-2,3e-3,0]}]}`),
		j("json-uint32-bool-spec-example", `{"id":"42","inputs":[{"name":"input0","shape":[2,2],"datatype":"UINT32","data":[1,2,3,4]},`+
			`{"name":"input1","shape":[3],"datatype":"BOOL","data":[true,false,true]}],"outputs":[{"name":"output0"}]}`),
		j("json-int64-nested", `{"inputs":[{"name":"ids","datatype":"INT64","shape":[2,2,1],"data":[[[-9223372036854775808],[1]],[[2],[9223372036854775807]]]}]}`),
		j("json-bytes", `{"inputs":[{"name":"text","datatype":"BYTES","shape":[3],"data":["hello","","\"esc\\aped\"\n\u00e9\ud83d\ude00"]}]}`),
		j("json-fp16-fp64", `{"inputs":[{"name":"h","datatype":"FP16","shape":[3],"data":[0.1,65504,"NaN"]},{"name":"d","datatype":"FP64","shape":[2],"data":["-Infinity",5e-324]}]}`),
		j("json-small-ints", `{"inputs":[{"name":"a","datatype":"UINT8","shape":[2],"data":[0,255]},{"name":"b","datatype":"INT8","shape":[1],"data":[-128]},`+
			`{"name":"c","datatype":"UINT16","shape":[1],"data":[65535]},{"name":"d","datatype":"INT16","shape":[1],"data":[-1]},`+
			`{"name":"e","datatype":"UINT64","shape":[1],"data":[18446744073709551615]},{"name":"f","datatype":"INT32","shape":[0],"data":[]}]}`),
		j("json-parameters", `{"id":"p","parameters":{"binary_data_output":true,"timeout":"250ms","deadline":"2025-01-02T15:04:05.5Z","content_type":"np"},`+
			`"inputs":[{"name":"x","datatype":"FP32","shape":[],"data":[1],"parameters":{"content_type":"np"}}],`+
			`"outputs":[{"name":"y","parameters":{"binary_data":false}},{"name":"z"}]}`),
		j("json-timeout-seconds", `{"parameters":{"timeout":0.25,"deadline":1735830245123456789},"inputs":[{"name":"x","datatype":"UINT8","shape":[1],"data":[7]}]}`),
		j("json-count-mismatch", `{"inputs":[{"name":"data_0","datatype":"FP32","shape":[1,3,2,2],"data":[1,2,3,4,5,6,7,8,9,10,11]}]}`),
		b("binary-fp32", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"parameters":{"binary_data_size":12}}]}`, fp32),
		b("binary-multi", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"parameters":{"binary_data_size":12}},`+
			`{"name":"s","datatype":"BYTES","shape":[3],"parameters":{"binary_data_size":24}}],"parameters":{"binary_data_output":true}}`, fp32, text),
		b("binary-mixed", `{"inputs":[{"name":"m","datatype":"BOOL","shape":[2],"data":[true,false]},`+
			`{"name":"x","datatype":"FP32","shape":[1,3],"parameters":{"binary_data_size":12}},`+
			`{"name":"h","datatype":"FP16","shape":[2],"parameters":{"binary_data_size":4}}]}`, fp32, []byte{0x00, 0x3c, 0x00, 0x7e}),
		b("binary-size-mismatch", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"parameters":{"binary_data_size":16}}]}`, fp32),
	}
}

// fuzzPool holds reused requests, so the fuzzer also exercises decoding into
// buffers left by earlier inputs.
var fuzzPool = sync.Pool{New: func() any { return new(InferRequest) }}

func FuzzDecodeInferRequest(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s.body, s.headerLen)
	}
	f.Fuzz(func(t *testing.T, body []byte, headerLen int) {
		if len(body) > 1<<16 {
			return
		}
		req := fuzzPool.Get().(*InferRequest)
		defer fuzzPool.Put(req)
		err := DecodeInferRequest(body, headerLen, req)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error does not wrap ErrBadRequest: %v", err)
			}
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		total := 0
		for _, in := range req.Inputs {
			want := models.Elements(in.Shape)
			if in.DataType == models.BYTES {
				if n, ok := countBytesElements(in.Data); !ok || n != want {
					t.Fatalf("input %q: BYTES framing holds %d elements (ok=%v), shape says %d", in.Name, n, ok, want)
				}
			} else if len(in.Data) != want*in.DataType.Size() {
				t.Fatalf("input %q: %d bytes for %d elements of %s", in.Name, len(in.Data), want, in.DataType)
			}
			total += len(in.Data)
		}
		if total > 4*len(body) {
			t.Fatalf("%d decoded bytes from a %d-byte body", total, len(body))
		}
		if !validNames(req) {
			return // JSON re-encoding replaces invalid UTF-8, so names would not match
		}

		// Re-encode the inputs as a response, as JSON and as binary, and
		// decode that: the same tensors must come back.
		var back InferResponse
		for _, asBinary := range []bool{false, true} {
			resp := InferResponse{ModelName: "m", ID: req.ID, Outputs: req.Inputs, Binary: make([]bool, len(req.Inputs))}
			for i := range resp.Binary {
				resp.Binary[i] = asBinary
			}
			out, jsonLen := AppendInferResponse(nil, &resp)
			hl := -1
			if asBinary {
				hl = jsonLen
			}
			if err := DecodeInferResponse(out, hl, &back); err != nil {
				t.Fatalf("response (binary=%v) does not decode: %v\n%q", asBinary, err, out)
			}
			if back.ID != req.ID || len(back.Outputs) != len(req.Inputs) {
				t.Fatalf("response (binary=%v): id %q, %d outputs; want %q, %d", asBinary, back.ID, len(back.Outputs), req.ID, len(req.Inputs))
			}
			for i := range req.Inputs {
				if !equivalentTensors(req.Inputs[i], back.Outputs[i], !asBinary) {
					t.Fatalf("response (binary=%v): tensor %d changed\nsent:%s\ngot: %s", asBinary, i,
						showTensors(req.Inputs[i:i+1]), showTensors(back.Outputs[i:i+1]))
				}
			}
		}

		// And as a request, with binary inputs: everything comes back exactly.
		out, jsonLen := AppendInferRequest(nil, req, true)
		var again InferRequest
		if err := DecodeInferRequest(out, jsonLen, &again); err != nil {
			t.Fatalf("re-encoded request does not decode: %v\n%q", err, out)
		}
		if again.ID != req.ID || again.BinaryOutputs != req.BinaryOutputs || again.Timeout != req.Timeout ||
			!again.Deadline.Equal(req.Deadline) || fmt.Sprint(again.Outputs) != fmt.Sprint(req.Outputs) {
			t.Fatalf("request fields changed:\n%+v\n%+v", again, req)
		}
		for i := range req.Inputs {
			if !sameTensor(req.Inputs[i], again.Inputs[i]) {
				t.Fatalf("request tensor %d changed\nsent:%s\ngot: %s", i, showTensors(req.Inputs[i:i+1]), showTensors(again.Inputs[i:i+1]))
			}
		}
	})
}

func validNames(req *InferRequest) bool {
	if !utf8.ValidString(req.ID) {
		return false
	}
	for _, in := range req.Inputs {
		if !utf8.ValidString(in.Name) {
			return false
		}
	}
	for _, o := range req.Outputs {
		if !utf8.ValidString(o.Name) {
			return false
		}
	}
	return true
}

// equivalentTensors compares a tensor with its re-decoded copy. Through
// JSON, NaNs keep only their NaN-ness and invalid UTF-8 in BYTES becomes
// U+FFFD, byte by byte.
func equivalentTensors(a, b models.Tensor, viaJSON bool) bool {
	if a.Name != b.Name || a.DataType != b.DataType || fmt.Sprint(a.Shape) != fmt.Sprint(b.Shape) {
		return false
	}
	if !viaJSON || bytes.Equal(a.Data, b.Data) {
		return bytes.Equal(a.Data, b.Data)
	}
	le := binary.LittleEndian
	switch a.DataType {
	case models.FP16, models.FP32, models.FP64:
		size := a.DataType.Size()
		if len(a.Data) != len(b.Data) {
			return false
		}
		for i := 0; i < len(a.Data); i += size {
			x, y := a.Data[i:i+size], b.Data[i:i+size]
			var nx, ny bool
			switch size {
			case 2:
				nx, ny = le.Uint16(x)&0x7fff > 0x7c00, le.Uint16(y)&0x7fff > 0x7c00
			case 4:
				nx, ny = math.IsNaN(float64(math.Float32frombits(le.Uint32(x)))), math.IsNaN(float64(math.Float32frombits(le.Uint32(y))))
			default:
				nx, ny = math.IsNaN(math.Float64frombits(le.Uint64(x))), math.IsNaN(math.Float64frombits(le.Uint64(y)))
			}
			if nx != ny || !nx && !bytes.Equal(x, y) {
				return false
			}
		}
		return true
	case models.BYTES:
		var want []byte
		for d := a.Data; len(d) >= 4; {
			l := le.Uint32(d)
			want = le.AppendUint32(want, 0)
			start := len(want)
			for s := d[4 : 4+l]; len(s) > 0; {
				r, size := utf8.DecodeRune(s)
				if r == utf8.RuneError && size == 1 {
					want = append(want, "\uFFFD"...)
				} else {
					want = append(want, s[:size]...)
				}
				s = s[size:]
			}
			le.PutUint32(want[start-4:], uint32(len(want)-start))
			d = d[4+l:]
		}
		return bytes.Equal(want, b.Data)
	}
	return false
}

// TestFuzzSeedsAreCommitted keeps testdata/fuzz/FuzzDecodeInferRequest in
// step with fuzzSeeds; regenerate with -update-fuzz-seeds.
func TestFuzzSeedsAreCommitted(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeInferRequest")
	for _, s := range fuzzSeeds() {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nint(%d)\n", s.body, s.headerLen)
		path := filepath.Join(dir, "seed-"+s.name)
		if *updateFuzzSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Fatalf("%s is missing or stale (%v); run go test ./dataplane -run TestFuzzSeedsAreCommitted -update-fuzz-seeds", path, err)
		}
	}
}
