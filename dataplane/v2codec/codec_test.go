package v2codec

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ipa-serving/ipa/models"
)

// tensorOf builds a tensor from fixed-size Go values (bool, ints, floats,
// uint16 for FP16) in little-endian order.
func tensorOf[T any](name string, dt models.DataType, shape []int64, vals ...T) models.Tensor {
	data, err := binary.Append(nil, binary.LittleEndian, vals)
	if err != nil {
		panic(err)
	}
	return models.Tensor{Name: name, DataType: dt, Shape: shape, Data: data}
}

// bytesTensor builds a BYTES tensor in Triton's length-prefixed layout.
func bytesTensor(name string, shape []int64, elems ...string) models.Tensor {
	return models.Tensor{Name: name, DataType: models.BYTES, Shape: shape, Data: frameBytes(elems...)}
}

func frameBytes(elems ...string) []byte {
	var b []byte
	for _, e := range elems {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e)))
		b = append(b, e...)
	}
	return b
}

func sameTensor(a, b models.Tensor) bool {
	return a.Name == b.Name && a.DataType == b.DataType && slices.Equal(a.Shape, b.Shape) && bytes.Equal(a.Data, b.Data)
}

func showTensors(ts []models.Tensor) string {
	var b strings.Builder
	for _, t := range ts {
		fmt.Fprintf(&b, "\n  %s:%s%s % x", t.Name, t.DataType, models.FormatShape(t.Shape), t.Data)
	}
	return b.String()
}

func checkTensors(t *testing.T, got, want []models.Tensor) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = sameTensor(got[i], want[i])
	}
	if !ok {
		t.Fatalf("unexpected tensors\ngot:%s\nwant:%s", showTensors(got), showTensors(want))
	}
}

// withBinary builds a body of a JSON header followed by binary parts.
func withBinary(header string, parts ...[]byte) ([]byte, int) {
	body := []byte(header)
	for _, p := range parts {
		body = append(body, p...)
	}
	return body, len(header)
}

func TestDecodeInferRequestJSON(t *testing.T) {
	var req InferRequest // reused across cases on purpose
	f := func(body string, want ...models.Tensor) {
		t.Helper()
		if err := DecodeInferRequest([]byte(body), -1, &req); err != nil {
			t.Fatalf("DecodeInferRequest(%s): %s", body, err)
		}
		checkTensors(t, req.Inputs, want)
	}
	s := func(dims ...int64) []int64 { return dims }

	// Flat and nested arrays are the same row-major data.
	f(`{"inputs":[{"name":"x","datatype":"FP32","shape":[2,3],"data":[1,2,3,4,5,6]}]}`,
		tensorOf("x", models.FP32, s(2, 3), float32(1), 2, 3, 4, 5, 6))
	f(`{"inputs":[{"name":"x","datatype":"FP32","shape":[2,3],"data":[[1,2,3],[4,5,6]]}]}`,
		tensorOf("x", models.FP32, s(2, 3), float32(1), 2, 3, 4, 5, 6))
	f(`{"inputs":[{"name":"x","datatype":"FP32","shape":[2,1,2],"data":[[[1],[2]],[[3,4]]]}]}`,
		tensorOf("x", models.FP32, s(2, 1, 2), float32(1), 2, 3, 4))
	f(` { "inputs" : [ { "shape" : [ 2 ] , "data" : [ 0.1 , -2.5e-3 ] , "datatype" : "fp32", "name" : "x" } ] } `,
		tensorOf("x", models.FP32, s(2), float32(0.1), float32(-2.5e-3)))

	// Every datatype, with its extremes.
	f(`{"inputs":[{"name":"b","datatype":"BOOL","shape":[3],"data":[true,false,true]}]}`,
		tensorOf("b", models.BOOL, s(3), true, false, true))
	f(`{"inputs":[{"name":"u","datatype":"UINT8","shape":[3],"data":[0,255,7]}]}`,
		tensorOf("u", models.UINT8, s(3), uint8(0), 255, 7))
	f(`{"inputs":[{"name":"u","datatype":"UINT16","shape":[2],"data":[0,65535]}]}`,
		tensorOf("u", models.UINT16, s(2), uint16(0), 65535))
	f(`{"inputs":[{"name":"u","datatype":"UINT32","shape":[2],"data":[4294967295,1e3]}]}`,
		tensorOf("u", models.UINT32, s(2), uint32(4294967295), 1000))
	f(`{"inputs":[{"name":"u","datatype":"UINT64","shape":[2],"data":[18446744073709551615,-0]}]}`,
		tensorOf("u", models.UINT64, s(2), uint64(math.MaxUint64), 0))
	f(`{"inputs":[{"name":"i","datatype":"INT8","shape":[2],"data":[-128,127]}]}`,
		tensorOf("i", models.INT8, s(2), int8(-128), 127))
	f(`{"inputs":[{"name":"i","datatype":"INT16","shape":[2],"data":[-32768,32767]}]}`,
		tensorOf("i", models.INT16, s(2), int16(-32768), 32767))
	f(`{"inputs":[{"name":"i","datatype":"INT32","shape":[3],"data":[-2147483648,2147483647,2.0]}]}`,
		tensorOf("i", models.INT32, s(3), int32(-2147483648), 2147483647, 2))
	f(`{"inputs":[{"name":"i","datatype":"INT64","shape":[3],"data":[-9223372036854775808,9223372036854775807,-4e3]}]}`,
		tensorOf("i", models.INT64, s(3), int64(math.MinInt64), math.MaxInt64, -4000))
	f(`{"inputs":[{"name":"h","datatype":"FP16","shape":[6],"data":[1,-2,0.1,65504,5.960464477539063e-8,0]}]}`,
		tensorOf("h", models.FP16, s(6), uint16(0x3c00), 0xc000, 0x2e66, 0x7bff, 0x0001, 0))
	f(`{"inputs":[{"name":"f","datatype":"FP32","shape":[4],"data":[3.4028234663852886e38,1e-46,-0,16777217]}]}`,
		tensorOf("f", models.FP32, s(4), float32(math.MaxFloat32), 0, float32(math.Copysign(0, -1)), 16777216))
	f(`{"inputs":[{"name":"f","datatype":"FP64","shape":[3],"data":[1.7976931348623157e308,5e-324,0.1]}]}`,
		tensorOf("f", models.FP64, s(3), math.MaxFloat64, 5e-324, 0.1))
	f(`{"inputs":[{"name":"f","datatype":"FP64","shape":[3],"data":["NaN","Infinity","-Infinity"]}]}`,
		tensorOf("f", models.FP64, s(3), math.NaN(), math.Inf(1), math.Inf(-1)))
	f(`{"inputs":[{"name":"s","datatype":"BYTES","shape":[2,2],"data":[["a",""],["\"\\\n\u00e9\ud83d\ude00","x\u0000y"]]}]}`,
		bytesTensor("s", s(2, 2), "a", "", "\"\\\né😀", "x\x00y"))

	// Empty and scalar shapes, several inputs, unknown fields.
	f(`{"inputs":[{"name":"e","datatype":"INT32","shape":[0,3],"data":[]},{"name":"s","datatype":"INT32","shape":[],"data":[7]}]}`,
		models.Tensor{Name: "e", DataType: models.INT32, Shape: s(0, 3), Data: []byte{}},
		tensorOf("s", models.INT32, s(), int32(7)))
	f(`{"future":{"x":[1]},"inputs":[{"name":"x","datatype":"UINT8","shape":[1],"data":[1],"parameters":{"content_type":"np"},"extra":null}]}`,
		tensorOf("x", models.UINT8, s(1), uint8(1)))
	// Fewer inputs after more: the reused request is cut back.
	f(`{"inputs":[]}`)
}

func TestDecodeFP16RoundsOnceToNearestEven(t *testing.T) {
	var req InferRequest
	f := func(num string, want uint16) {
		t.Helper()
		body := `{"inputs":[{"name":"h","datatype":"FP16","shape":[1],"data":[` + num + `]}]}`
		if err := DecodeInferRequest([]byte(body), -1, &req); err != nil {
			t.Fatalf("%s: %s", num, err)
		}
		if got := binary.LittleEndian.Uint16(req.Inputs[0].Data); got != want {
			t.Fatalf("%s: got %#04x, want %#04x", num, got, want)
		}
	}
	f("1.00048828125", 0x3c00) // halfway between 0x3c00 and 0x3c01: to even
	f("1.00146484375", 0x3c02) // halfway between 0x3c01 and 0x3c02: to even
	// Beyond float64 precision: the decimal is off the midpoint even though
	// its nearest float64 is on it, so one rounding must not go to even.
	f("1.000488281250000000000001", 0x3c01)
	f("-1.000488281250000000000001", 0xbc01)
	f("1.00146484374999999999999", 0x3c01)
	f("65519.99999", 0x7bff)
	f("65519.9999999999999999999", 0x7bff) // float64 rounds this to 65520, the overflow midpoint
	f("2.98023223876953125e-8", 0)         // half of the smallest subnormal: to even (0)
	f("2.98023223876953126e-8", 1)
	f("8.940696716308594e-8", 2) // 1.5 × smallest subnormal: to even (2)
	f("6.103515625e-5", 0x0400)  // smallest normal
	f("6.1e-5", 0x03ff)
	f("-0", 0x8000)
	f(`"-Infinity"`, 0xfc00)
	f(`"NaN"`, 0x7e00)
}

// TestHalfConversionMatchesReference checks the binary16 conversions: every
// binary16 value survives f16 → f32 → f64 → f16, and random float64 values
// round to the nearest binary16 found by search (ties to even).
func TestHalfConversionMatchesReference(t *testing.T) {
	var finite []float64 // non-negative finite binary16 values, ascending
	for h := range 1 << 16 {
		f := f16ToF32(uint16(h))
		back, _ := f16FromF64(float64(f), nearestEven)
		if math.IsNaN(float64(f)) {
			if back&0x7c00 != 0x7c00 || back&0x3ff == 0 {
				t.Fatalf("%#04x: NaN came back as %#04x", h, back)
			}
			continue
		}
		if back != uint16(h) {
			t.Fatalf("%#04x → %v → %#04x", h, f, back)
		}
		if h < 0x7c00 {
			finite = append(finite, float64(f))
		}
	}
	if !sort.Float64sAreSorted(finite) {
		t.Fatal("binary16 values are not ascending")
	}
	reference := func(x float64) uint16 {
		a := math.Abs(x)
		var h uint16
		if a >= 65520 {
			h = 0x7c00
		} else {
			i := sort.SearchFloat64s(finite, a) // finite[i] >= a
			switch {
			case i == 0:
				h = 0
			case i == len(finite): // between 65504 and the overflow midpoint
				h = 0x7bff
			case finite[i] == a:
				h = uint16(i)
			default:
				lo, hi := a-finite[i-1], finite[i]-a
				h = uint16(i)
				if lo < hi || lo == hi && (i-1)%2 == 0 {
					h = uint16(i - 1)
				}
			}
		}
		if math.Signbit(x) {
			h |= 0x8000
		}
		return h
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		var x float64
		switch rng.IntN(3) {
		case 0: // anywhere in binary16's range, including subnormals
			x = math.Ldexp(rng.Float64(), rng.IntN(44)-27)
		case 1: // exactly on a midpoint or next to one
			i := rng.IntN(len(finite) - 1)
			x = (finite[i] + finite[i+1]) / 2
			x = math.Nextafter(x, x+float64(rng.IntN(3)-1))
		default:
			x = rng.Float64() * 70000
		}
		if rng.IntN(2) == 0 {
			x = -x
		}
		got, _ := f16FromF64(x, nearestEven)
		if want := reference(x); got != want {
			t.Fatalf("f16FromF64(%v) = %#04x, want %#04x", x, got, want)
		}
	}
}

func TestDecodeInferRequestBinary(t *testing.T) {
	var req InferRequest
	f := func(body []byte, headerLen int, want ...models.Tensor) {
		t.Helper()
		if err := DecodeInferRequest(body, headerLen, &req); err != nil {
			t.Fatalf("DecodeInferRequest: %s", err)
		}
		checkTensors(t, req.Inputs, want)
		for i := range req.Inputs {
			if len(req.Inputs[i].Data) > 0 && &req.Inputs[i].Data[0] == &body[len(body)-1] {
				t.Fatalf("input %d aliases the body", i)
			}
		}
	}
	x := tensorOf("x", models.FP32, []int64{1, 3}, float32(1.5), -2, 3)
	b := bytesTensor("s", []int64{2}, "hello", "\x00\xff")
	m := tensorOf("m", models.BOOL, []int64{2}, true, false)

	// Single binary input.
	body, n := withBinary(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"parameters":{"binary_data_size":12}}]}`, x.Data)
	f(body, n, x)
	// With a byte order mark in the JSON header (counted in its length).
	body, n = withBinary("\ufeff"+`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"parameters":{"binary_data_size":12}}]}`, x.Data)
	f(body, n, x)
	// Several binary inputs, in order, BYTES among them.
	body, n = withBinary(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"parameters":{"binary_data_size":12}},`+
		`{"name":"s","datatype":"BYTES","shape":[2],"parameters":{"binary_data_size":15}},`+
		`{"name":"m","datatype":"BOOL","shape":[2],"parameters":{"binary_data_size":2}}]}`, x.Data, b.Data, m.Data)
	f(body, n, x, b, m)
	// Mixed JSON and binary inputs.
	body, n = withBinary(`{"inputs":[{"name":"m","datatype":"BOOL","shape":[2],"data":[true,false]},`+
		`{"name":"x","datatype":"FP32","shape":[1,3],"parameters":{"binary_data_size":12}},`+
		`{"name":"s","datatype":"BYTES","shape":[2],"data":["hello","\u0000\u00ff"]}]}`, x.Data)
	f(body, n, m, x, bytesTensor("s", []int64{2}, "hello", "\x00\u00ff"))
	// A header length equal to the body length: no binary part at all.
	body = []byte(`{"inputs":[{"name":"m","datatype":"BOOL","shape":[2],"data":[true,false]}]}`)
	f(body, len(body), m)
	// Zero-size binary input.
	body, n = withBinary(`{"inputs":[{"name":"e","datatype":"INT64","shape":[0],"parameters":{"binary_data_size":0}}]}`)
	f(body, n, models.Tensor{Name: "e", DataType: models.INT64, Shape: []int64{0}, Data: []byte{}})
}

func TestDecodeInferRequestParameters(t *testing.T) {
	var req InferRequest
	f := func(body string, want InferRequest) {
		t.Helper()
		if err := DecodeInferRequest([]byte(body), -1, &req); err != nil {
			t.Fatalf("DecodeInferRequest(%s): %s", body, err)
		}
		if req.ID != want.ID || req.BinaryOutputs != want.BinaryOutputs || req.Timeout != want.Timeout ||
			!req.Deadline.Equal(want.Deadline) || !slices.Equal(req.Outputs, want.Outputs) {
			t.Fatalf("%s:\ngot  id=%q binary=%v timeout=%v deadline=%v outputs=%v\nwant id=%q binary=%v timeout=%v deadline=%v outputs=%v", body,
				req.ID, req.BinaryOutputs, req.Timeout, req.Deadline, req.Outputs,
				want.ID, want.BinaryOutputs, want.Timeout, want.Deadline, want.Outputs)
		}
	}
	const in = `"inputs":[]`
	f(`{`+in+`}`, InferRequest{})
	f(`{"id":"42",`+in+`}`, InferRequest{ID: "42"})
	f(`{"id":"\u00e9\"",`+in+`}`, InferRequest{ID: "é\""})
	f(`{"parameters":{"timeout":"250ms"},`+in+`}`, InferRequest{Timeout: 250 * time.Millisecond})
	f(`{"parameters":{"timeout":1.5},`+in+`}`, InferRequest{Timeout: 1500 * time.Millisecond})
	f(`{"parameters":{"timeout":0},`+in+`}`, InferRequest{})
	f(`{"parameters":{"deadline":"2025-01-02T15:04:05.123456789Z"},`+in+`}`,
		InferRequest{Deadline: time.Date(2025, 1, 2, 15, 4, 5, 123456789, time.UTC)})
	f(`{"parameters":{"deadline":"2025-01-02T16:04:05+01:00"},`+in+`}`,
		InferRequest{Deadline: time.Date(2025, 1, 2, 15, 4, 5, 0, time.UTC)})
	f(`{"parameters":{"deadline":1735830245123456789},`+in+`}`,
		InferRequest{Deadline: time.Unix(0, 1735830245123456789)})
	f(`{"parameters":{"binary_data_output":true,"other":[1,{}]},`+in+`}`, InferRequest{BinaryOutputs: true})
	// A UTF-8 byte order mark before the JSON is ignored (RFC 8259 allows it).
	f("\ufeff"+`{"id":"bom",`+in+`}`, InferRequest{ID: "bom"})
	// Per-output binary_data overrides the request-level default either way.
	f(`{"parameters":{"binary_data_output":true},"outputs":[{"name":"a"},{"name":"b","parameters":{"binary_data":false}}],`+in+`}`,
		InferRequest{BinaryOutputs: true, Outputs: []RequestedOutput{{"a", true}, {"b", false}}})
	f(`{"outputs":[{"name":"a","parameters":{"binary_data":true}},{"name":"b"}],`+in+`}`,
		InferRequest{Outputs: []RequestedOutput{{"a", true}, {"b", false}}})
}

func TestDecodeInferRequestErrors(t *testing.T) {
	var req InferRequest
	f := func(body []byte, headerLen int, want string) {
		t.Helper()
		err := DecodeInferRequest(body, headerLen, &req)
		if err == nil {
			t.Fatalf("no error for %.200q; want one containing %q", body, want)
		}
		if !errors.Is(err, ErrBadRequest) {
			t.Fatalf("error %q does not wrap ErrBadRequest", err)
		}
		msg := err.Error()
		if !strings.Contains(msg, want) {
			t.Fatalf("error for %.200q:\n%s\nwant it to contain %q", body, msg, want)
		}
		if strings.ContainsAny(msg, "\n\r") {
			t.Fatalf("error is not one line: %q", msg)
		}
	}
	j := func(body string, want string) {
		t.Helper()
		f([]byte(body), -1, want)
	}
	input := func(fields string) string { return `{"inputs":[{` + fields + `}]}` }

	// The whole request.
	j(`{"inputs":[`, "cannot parse the JSON request")
	j("\ufeff\ufeff{}", "cannot parse the JSON request") // one mark is skipped, not any number
	// A header length that takes in binary bytes says so.
	hdr := `{"inputs":[{"name":"x","datatype":"UINT8","shape":[2],"parameters":{"binary_data_size":2}}]}`
	f([]byte(hdr+"\x01\x02"), len(hdr)+1, "go on after the JSON object; is that the JSON header's length?")
	j(``, "cannot parse the JSON request")
	j(`[]`, "must be a JSON object, not array")
	j(`{"id":5,"inputs":[]}`, `"id" must be a string, not number`)
	j(`{}`, `the request has no "inputs"`)
	j(`{"inputs":{}}`, `"inputs" must be an array, not object`)
	j(`{"inputs":[5]}`, `inputs[0] must be an object`)
	j(`{"parameters":[],"inputs":[]}`, `"parameters" must be an object`)
	j(`{"parameters":{"binary_data_output":"yes"},"inputs":[]}`, `parameters.binary_data_output must be true or false`)
	j(`{"parameters":{"timeout":"soon"},"inputs":[]}`, `parameters.timeout "soon" is not a duration`)
	j(`{"parameters":{"timeout":"-1s"},"inputs":[]}`, `parameters.timeout "-1s" is not a duration`)
	j(`{"parameters":{"timeout":-1},"inputs":[]}`, `parameters.timeout -1 is out of range`)
	j(`{"parameters":{"timeout":1e300},"inputs":[]}`, `parameters.timeout 1e300 is out of range`)
	j(`{"parameters":{"timeout":true},"inputs":[]}`, `parameters.timeout must be a string such as "250ms" or a number of seconds, not true`)
	j(`{"parameters":{"deadline":"tomorrow"},"inputs":[]}`, `parameters.deadline "tomorrow" is not an RFC 3339 time`)
	j(`{"parameters":{"deadline":1.5},"inputs":[]}`, `parameters.deadline 1.5 must be a positive integer of Unix nanoseconds`)
	j(`{"parameters":{"deadline":{}},"inputs":[]}`, `parameters.deadline must be an RFC 3339 string or integer Unix nanoseconds, not object`)

	// Requested outputs.
	j(`{"outputs":{},"inputs":[]}`, `"outputs" must be an array`)
	j(`{"outputs":["a"],"inputs":[]}`, `outputs[0] must be an object such as {"name": "output0"}, not string`)
	j(`{"outputs":[{"name":"a"},{}],"inputs":[]}`, `outputs[1] needs a string "name"`)
	j(`{"outputs":[{"name":1}],"inputs":[]}`, `outputs[0] needs a string "name"`)
	j(`{"outputs":[{"name":"a"},{"name":"a"}],"inputs":[]}`, `output "a" is requested twice (outputs[0] and outputs[1])`)
	j(`{"outputs":[{"name":"a","parameters":1}],"inputs":[]}`, `output "a": "parameters" must be an object`)
	j(`{"outputs":[{"name":"a","parameters":{"binary_data":1}}],"inputs":[]}`, `output "a": parameters.binary_data must be true or false, not number`)

	// Input headers.
	j(input(`"datatype":"FP32","shape":[1],"data":[1]`), `inputs[0] has no "name"`)
	j(input(`"name":["x"],"datatype":"FP32","shape":[1],"data":[1]`), `inputs[0]: "name" must be a string, not array`)
	j(input(`"name":"x","shape":[1],"data":[1]`), `input "x" has no "datatype"`)
	j(input(`"name":"x","datatype":32,"shape":[1],"data":[1]`), `input "x": "datatype" must be a string, not number`)
	j(input(`"name":"x","datatype":"FP33","shape":[1],"data":[1]`), `input "x": unknown datatype "FP33"; use one of BOOL`)
	j(input(`"name":"x","datatype":"FP32","data":[1]`), `input "x" has no "shape"`)
	j(input(`"name":"x","datatype":"FP32","shape":3,"data":[1]`), `input "x": "shape" must be an array of non-negative integers, not number`)
	j(input(`"name":"x","datatype":"FP32","shape":[1,-1],"data":[1]`), `input "x": shape[1] is -1; dimensions must be non-negative integers`)
	j(input(`"name":"x","datatype":"FP32","shape":[1.5],"data":[1]`), `input "x": shape[0] is 1.5`)
	j(input(`"name":"x","datatype":"FP32","shape":["1"],"data":[1]`), `input "x": shape[0] is "1"`)
	j(input(`"name":"x","datatype":"FP32","shape":[1e9,1e9],"data":[1]`), `input "x": shape [1000000000,1000000000] has too many elements`)
	j(input(`"name":"x","datatype":"FP32","shape":[99999999999999999999],"data":[1]`), `input "x": shape[0] is 99999999999999999999`)
	j(input(`"name":"x","datatype":"FP32","shape":[1]`), `input "x" has no "data" (and no parameters.binary_data_size)`)
	j(input(`"name":"x","datatype":"FP32","shape":[1],"parameters":{}`), `input "x" has no "data"`)
	j(input(`"name":"x","datatype":"FP32","shape":[1],"parameters":[]`), `input "x": "parameters" must be an object, not array`)
	j(input(`"name":"x","datatype":"FP32","shape":[1],"data":{}`), `input "x": "data" must be an array (flat or nested), not object`)
	j(input(`"name":"x","datatype":"FP32","shape":[1],"data":1`), `input "x": "data" must be an array`)
	j(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]},{"name":"x","datatype":"FP32","shape":[1],"data":[1]}]}`,
		`input "x" appears twice (inputs 0 and 1)`)
	many := make([]string, 40)
	for i := range many {
		many[i] = fmt.Sprintf(`{"name":"i%d","datatype":"BOOL","shape":[0],"data":[]}`, i%39)
	}
	j(`{"inputs":[`+strings.Join(many, ",")+`]}`, `input "i0" appears twice (inputs 0 and 39)`)

	// Element counts: the key facts are both counts.
	j(input(`"name":"data_0","datatype":"FP32","shape":[1,3,224,224],"data":[`+strings.Repeat("0.5,", 149999)+`1]`),
		`input "data_0": shape [1,3,224,224] needs 150528 elements, got 150000`)
	j(input(`"name":"x","datatype":"INT32","shape":[2,2],"data":[[1,2],[3]]`), `input "x": shape [2,2] needs 4 elements, got 3`)
	j(input(`"name":"x","datatype":"INT32","shape":[],"data":[]`), `input "x": shape [] needs 1 elements, got 0`)
	// A huge shape with little data fails on the count, before allocating.
	j(input(`"name":"x","datatype":"FP64","shape":[1000000,1000000,1000],"data":[1]`), `needs 1000000000000000 elements, got 1`)

	// Element values.
	j(input(`"name":"x","datatype":"UINT8","shape":[3],"data":[1,2,300]`), `input "x": data element 2 (300) is out of range for UINT8 [0, 255]`)
	j(input(`"name":"x","datatype":"UINT8","shape":[1],"data":[-1]`), `data element 0 (-1) is out of range for UINT8 [0, 255]`)
	j(input(`"name":"x","datatype":"INT8","shape":[2],"data":[[0],[-129]]`), `data element 1 (-129) is out of range for INT8 [-128, 127]`)
	j(input(`"name":"x","datatype":"INT16","shape":[1],"data":[32768]`), `(32768) is out of range for INT16 [-32768, 32767]`)
	j(input(`"name":"x","datatype":"UINT32","shape":[1],"data":[4294967296]`), `is out of range for UINT32`)
	j(input(`"name":"x","datatype":"INT64","shape":[1],"data":[9223372036854775808]`), `is out of range for INT64`)
	j(input(`"name":"x","datatype":"INT64","shape":[1],"data":[-9223372036854775809]`), `is out of range for INT64`)
	j(input(`"name":"x","datatype":"INT64","shape":[1],"data":[1e19]`), `(1e19) is out of range for INT64`)
	j(input(`"name":"x","datatype":"UINT64","shape":[1],"data":[18446744073709551616]`), `is out of range for UINT64`)
	j(input(`"name":"x","datatype":"UINT64","shape":[1],"data":[1e400]`), `(1e400) is out of range for UINT64`)
	j(input(`"name":"x","datatype":"INT32","shape":[2],"data":[1,1.5]`), `input "x": data element 1 is 1.5, not an integer`)
	j(input(`"name":"x","datatype":"INT32","shape":[1],"data":[NaN]`), `data element 0 is NaN, not an integer; INT32 data must be integers`)
	j(input(`"name":"x","datatype":"INT32","shape":[1],"data":["5"]`), `data element 0 is "5"; INT32 data must be integers`)
	j(input(`"name":"x","datatype":"INT32","shape":[1],"data":[null]`), `data element 0 is null; INT32 data must be integers`)
	j(input(`"name":"x","datatype":"BOOL","shape":[2],"data":[true,1]`), `data element 1 is 1; BOOL data must be true or false`)
	j(input(`"name":"x","datatype":"FP32","shape":[1],"data":["abc"]`), `data element 0 is the string "abc"; FP32 data must be numbers`)
	j(input(`"name":"x","datatype":"FP32","shape":[1],"data":["1.5"]`), `data element 0 is the string "1.5"`)
	j(input(`"name":"x","datatype":"FP32","shape":[1],"data":[{}]`), `data element 0 is {}; FP32 data must be numbers`)
	j(input(`"name":"x","datatype":"FP32","shape":[2],"data":[1,1e39]`), `data element 1 (1e39) overflows FP32`)
	j(input(`"name":"x","datatype":"FP64","shape":[1],"data":[1e309]`), `data element 0 (1e309) overflows FP64`)
	j(input(`"name":"x","datatype":"FP32","shape":[1],"data":[1.2.3]`), `data element 0 (1.2.3) is not a number`)
	j(input(`"name":"x","datatype":"FP16","shape":[1],"data":[65520]`), `data element 0 (65520) overflows FP16 (largest finite value 65504)`)
	j(input(`"name":"x","datatype":"FP16","shape":[1],"data":[-1e5]`), `(-1e5) overflows FP16`)
	j(input(`"name":"x","datatype":"BYTES","shape":[2],"data":["a",5]`), `data element 1 is 5; BYTES data must be strings`)
	j(input(`"name":"x","datatype":"BYTES","shape":[1],"data":[["a"],"b"]`), `shape [1] needs 1 elements, got 2`)
	j(input(`"name":"x","datatype":"BYTES","shape":[1],"data":["`+strings.Repeat("v", 60)+`",]`), `cannot parse the JSON request`)
	j(input(`"name":"x","datatype":"FP32","shape":[1],"data":[`+strings.Repeat("7", 60)+`e400]`), `(777777777777777777777777777777777777777777777777777777777777e400) overflows FP32`)

	// Binary data.
	b := func(header string, headerLen int, tail string, want string) {
		t.Helper()
		if headerLen == 0 {
			headerLen = len(header)
		}
		f([]byte(header+tail), headerLen, want)
	}
	fp32x3 := func(params string) string {
		return `{"inputs":[{"name":"x","datatype":"FP32","shape":[3],"parameters":` + params + `}]}`
	}
	b(fp32x3(`{"binary_data_size":12}`), -1, "", `input "x" has parameters.binary_data_size but there is no Inference-Header-Content-Length header`)
	b(fp32x3(`{"binary_data_size":12}`), 1000, "", `Inference-Header-Content-Length is 1000 but the body has only 92 bytes`)
	b(fp32x3(`{"binary_data_size":12}`), -2, "", `Inference-Header-Content-Length is -2`)
	b(fp32x3(`{"binary_data_size":12}`), 0, "12345678", `input "x": parameters.binary_data_size is 12 but only 8 of the 8 bytes after the JSON header are left for it`)
	b(fp32x3(`{"binary_data_size":12}`), 0, "1234567890123456", `the binary_data_size values add up to 12 bytes but the body has 16 bytes after the JSON header`)
	b(fp32x3(`{"binary_data_size":8}`), 0, "12345678", `input "x": shape [3] of FP32 needs 3×4 = 12 bytes, but binary_data_size is 8`)
	b(fp32x3(`{"binary_data_size":-1}`), 0, "", `input "x": parameters.binary_data_size is -1; it must be a non-negative integer`)
	b(fp32x3(`{"binary_data_size":"12"}`), 0, "", `parameters.binary_data_size is "12"`)
	b(fp32x3(`{"binary_data_size":1.5}`), 0, "", `parameters.binary_data_size is 1.5`)
	b(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1],"parameters":{"binary_data_size":4}}]}`, 0, "1234",
		`input "x" has both "data" and parameters.binary_data_size; send one of them`)
	b(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]}]}`, 0, "1234",
		`the body has 4 bytes after the JSON header (Inference-Header-Content-Length) but no input has parameters.binary_data_size`)
	b(`{"inputs":[{"name":"a","datatype":"UINT8","shape":[1],"parameters":{"binary_data_size":1}},{"name":"b","datatype":"UINT8","shape":[2],"parameters":{"binary_data_size":3}}]}`, 0, "abc",
		`input "b": parameters.binary_data_size is 3 but only 2 of the 3 bytes after the JSON header are left for it`)
	b(`{"inputs":[{"name":"s","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":6}}]}`, 0, "\x05\x00\x00\x00ab",
		`input "s": the 6 bytes of BYTES data are not a sequence of 4-byte little-endian lengths`)
	b(`{"inputs":[{"name":"s","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":3}}]}`, 0, "\x00\x00\x00",
		`input "s": the 3 bytes of BYTES data are not a sequence`)
	b(`{"inputs":[{"name":"s","datatype":"BYTES","shape":[3],"parameters":{"binary_data_size":10}}]}`, 0, "\x01\x00\x00\x00a\x01\x00\x00\x00b",
		`input "s": shape [3] needs 3 elements, got 2 in the binary data`)
	b(`{"inputs":[{"name":"m","datatype":"BOOL","shape":[3],"parameters":{"binary_data_size":3}}]}`, 0, "\x00\x01\x02",
		`input "m": BOOL element 2 is byte 2; use 0 or 1`)
}

func TestInferResponseRoundTrip(t *testing.T) {
	outputs := []models.Tensor{
		tensorOf("probs", models.FP32, []int64{1, 4}, float32(0.1), float32(math.Inf(-1)), float32(-3.4028235e38), float32(1e-45)),
		tensorOf("f64", models.FP64, []int64{3}, math.Inf(1), 5e-324, math.Copysign(0, -1)),
		tensorOf("half", models.FP16, []int64{2, 2}, uint16(0x2e66), 0x7bff, 0x0001, 0xfc00),
		tensorOf("label", models.INT64, []int64{2}, int64(math.MinInt64), math.MaxInt64),
		tensorOf("u64", models.UINT64, []int64{1}, uint64(math.MaxUint64)),
		tensorOf("i8", models.INT8, []int64{2}, int8(-128), 127),
		tensorOf("u16", models.UINT16, []int64{1}, uint16(65535)),
		tensorOf("i16", models.INT16, []int64{1}, int16(-32768)),
		tensorOf("u32", models.UINT32, []int64{1}, uint32(math.MaxUint32)),
		tensorOf("i32", models.INT32, []int64{1}, int32(math.MinInt32)),
		tensorOf("u8", models.UINT8, []int64{1}, uint8(255)),
		tensorOf("mask", models.BOOL, []int64{2}, true, false),
		bytesTensor("text", []int64{3}, "a\"b\\c\n", "", "é😀\u2028\x7f"),
		{Name: "empty", DataType: models.FP32, Shape: []int64{0, 2}, Data: []byte{}},
	}
	var got InferResponse // reused across cases on purpose
	f := func(binaryOutputs []bool) {
		t.Helper()
		resp := InferResponse{ModelName: "resnet", ModelVersion: "2", ID: "req-1", Outputs: outputs, Binary: binaryOutputs,
			Parameters: ResponseParameters{QueueTime: 1500 * time.Microsecond, InferTime: 7 * time.Millisecond, BatchSize: 4}}
		prefix := []byte("prefix")
		out, jsonLen := AppendInferResponse(prefix, &resp)
		if !bytes.HasPrefix(out, []byte("prefix")) {
			t.Fatal("AppendInferResponse dropped dst")
		}
		body := out[len(prefix):]
		if !json.Valid(body[:jsonLen]) {
			t.Fatalf("JSON header is not valid JSON: %s", body[:jsonLen])
		}
		headerLen := -1
		if slices.Contains(binaryOutputs, true) {
			headerLen = jsonLen
		} else if jsonLen != len(body) {
			t.Fatalf("jsonLen %d != body length %d without binary outputs", jsonLen, len(body))
		}
		if err := DecodeInferResponse(body, headerLen, &got); err != nil {
			t.Fatalf("DecodeInferResponse: %s\n%s", err, body)
		}
		if got.ModelName != "resnet" || got.ModelVersion != "2" || got.ID != "req-1" || got.Parameters != resp.Parameters {
			t.Fatalf("got model %q version %q id %q parameters %+v", got.ModelName, got.ModelVersion, got.ID, got.Parameters)
		}
		checkTensors(t, got.Outputs, outputs)
		for i := range outputs {
			if want := i < len(binaryOutputs) && binaryOutputs[i]; got.Binary[i] != want {
				t.Fatalf("output %d: Binary = %v, want %v", i, got.Binary[i], want)
			}
		}
	}
	f(nil)
	all := make([]bool, len(outputs))
	for i := range all {
		all[i] = true
	}
	f(all)
	f([]bool{true, false, true, false, false, false, false, false, false, false, false, true, true})
}

func TestAppendInferResponseJSON(t *testing.T) {
	f := func(resp InferResponse, want string, wantBinary string) {
		t.Helper()
		out, jsonLen := AppendInferResponse(nil, &resp)
		if got := string(out[:jsonLen]); got != want {
			t.Fatalf("got\n%s\nwant\n%s", got, want)
		}
		if got := string(out[jsonLen:]); got != wantBinary {
			t.Fatalf("binary part %q, want %q", got, wantBinary)
		}
	}
	f(InferResponse{ModelName: "m"}, `{"model_name":"m","outputs":[]}`, "")
	// NaN and ±Inf are strings; float32 values print as float32, shortest.
	f(InferResponse{ModelName: "m", Outputs: []models.Tensor{
		tensorOf("y", models.FP32, []int64{2, 4}, float32(0.1), float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)),
			float32(1e-7), float32(1e21), float32(123456.79), float32(math.Copysign(0, -1))),
	}}, `{"model_name":"m","outputs":[{"name":"y","datatype":"FP32","shape":[2,4],"data":[0.1,"NaN","Infinity","-Infinity",1e-7,1e+21,123456.79,-0]}]}`, "")
	f(InferResponse{ModelName: "m", Outputs: []models.Tensor{
		tensorOf("h", models.FP16, []int64{6}, uint16(0x2e66), 0x3c00, 0x7bff, 0x0001, 0x7e00, 0x3555),
		tensorOf("d", models.FP64, []int64{3}, 0.1, 1e21, 1e-7),
		tensorOf("b", models.BOOL, []int64{2}, true, false),
	}}, `{"model_name":"m","outputs":[{"name":"h","datatype":"FP16","shape":[6],"data":[0.1,1,65500,6e-8,"NaN",0.3333]},`+
		`{"name":"d","datatype":"FP64","shape":[3],"data":[0.1,1e+21,1e-7]},`+
		`{"name":"b","datatype":"BOOL","shape":[2],"data":[true,false]}]}`, "")
	// Binary outputs: the size in parameters, the bytes after the JSON, in order.
	f(InferResponse{ModelName: "m", ModelVersion: "v", ID: "7", Binary: []bool{true, false, true},
		Parameters: ResponseParameters{BatchSize: 8},
		Outputs: []models.Tensor{
			tensorOf("a", models.UINT8, []int64{2}, uint8('h'), 'i'),
			tensorOf("b", models.INT16, []int64{1}, int16(-2)),
			bytesTensor("c", []int64{1}, "x"),
		}}, `{"model_name":"m","model_version":"v","id":"7","parameters":{"batch_size":8},"outputs":[`+
		`{"name":"a","datatype":"UINT8","shape":[2],"parameters":{"binary_data_size":2}},`+
		`{"name":"b","datatype":"INT16","shape":[1],"data":[-2]},`+
		`{"name":"c","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":5}}]}`, "hi\x01\x00\x00\x00x")
	// Invalid UTF-8 in BYTES becomes U+FFFD; names are escaped too.
	f(InferResponse{ModelName: "m\"", Outputs: []models.Tensor{bytesTensor("t\n", []int64{1}, "a\xffb")}},
		`{"model_name":"m\"","outputs":[{"name":"t\n","datatype":"BYTES","shape":[1],"data":["a\ufffdb"]}]}`, "")
}

func TestDecodeInferResponseErrors(t *testing.T) {
	var resp InferResponse
	f := func(body string, headerLen int, want string) {
		t.Helper()
		err := DecodeInferResponse([]byte(body), headerLen, &resp)
		if err == nil || !errors.Is(err, ErrBadResponse) || errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), want) {
			t.Fatalf("DecodeInferResponse(%s) = %v; want an ErrBadResponse containing %q", body, err, want)
		}
	}
	f(`{"error":"model \"x\" is not loaded"}`, -1, `the response is an error: model "x" is not loaded`)
	f(`{"model_name":"m"}`, -1, `the response has no "outputs"`)
	f(`{"model_name":1,"outputs":[]}`, -1, `"model_name" must be a string, not number`)
	f(`{"outputs":[],"parameters":{"batch_size":-1}}`, -1, `parameters.batch_size must be a non-negative integer`)
	f(`{"outputs":[],"parameters":{"queue_time_ns":"1"}}`, -1, `parameters.queue_time_ns must be a non-negative integer`)
	f(`{"outputs":[{"name":"y","datatype":"FP32","shape":[2],"data":[1]}]}`, -1, `output "y": shape [2] needs 2 elements, got 1`)
	f(`{"outputs":[{"name":"y","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":4}}]}`, -1, `output "y" has parameters.binary_data_size`)
	f(`nope`, -1, `cannot parse the JSON response`)
}

func TestInferRequestRoundTrip(t *testing.T) {
	req := InferRequest{
		ID: "abc\u2029",
		Inputs: []models.Tensor{
			tensorOf("x", models.FP32, []int64{1, 3}, float32(1), float32(math.NaN()), -2),
			bytesTensor("s", []int64{1}, "payload"),
		},
		Outputs:       []RequestedOutput{{"y", true}, {"z", false}},
		BinaryOutputs: true,
		Timeout:       1500 * time.Microsecond,
		Deadline:      time.Date(2030, 5, 6, 7, 8, 9, 10, time.UTC),
	}
	var got InferRequest
	for _, binaryInputs := range []bool{false, true} {
		body, jsonLen := AppendInferRequest(nil, &req, binaryInputs)
		if !json.Valid(body[:jsonLen]) {
			t.Fatalf("JSON header is not valid JSON: %s", body[:jsonLen])
		}
		headerLen := -1
		if binaryInputs {
			headerLen = jsonLen
		}
		if err := DecodeInferRequest(body, headerLen, &got); err != nil {
			t.Fatalf("DecodeInferRequest: %s\n%s", err, body)
		}
		if got.ID != req.ID || got.BinaryOutputs != req.BinaryOutputs || got.Timeout != req.Timeout ||
			!got.Deadline.Equal(req.Deadline) || !slices.Equal(got.Outputs, req.Outputs) {
			t.Fatalf("got %+v\nwant %+v", got, req)
		}
		// NaN travels as "NaN" in JSON and comes back as the canonical NaN.
		checkTensors(t, got.Inputs, req.Inputs)
	}
	for _, d := range []time.Duration{time.Hour, 3 * time.Microsecond, 7, 0} {
		req := InferRequest{Timeout: d}
		body, _ := AppendInferRequest(nil, &req, false)
		if err := DecodeInferRequest(body, -1, &got); err != nil || got.Timeout != d {
			t.Fatalf("timeout %v: %s decodes as %v, %v", d, body, got.Timeout, err)
		}
	}
}

func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	f := func(s string) {
		t.Helper()
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		wantS := strings.TrimSuffix(want.String(), "\n")
		if got := string(appendJSONString(nil, s)); got != wantS {
			t.Fatalf("appendJSONString(%q) = %s, want %s", s, got, wantS)
		}
		if got := string(appendJSONString(nil, []byte(s))); got != wantS {
			t.Fatalf("appendJSONString([]byte(%q)) = %s, want %s", s, got, wantS)
		}
		// And it reads back through the request decoder.
		if utf8.ValidString(s) {
			body := AppendError(nil, s)
			var back struct{ Error string }
			if err := json.Unmarshal(body, &back); err != nil || back.Error != s {
				t.Fatalf("AppendError(%q) = %s: reads back as %q, %v", s, body, back.Error, err)
			}
		}
	}
	f("")
	f("plain ascii")
	f(`quote " backslash \ slash /`)
	f("\x00\x01\x07\b\t\n\v\f\r\x1b\x1f\x7f")
	f("<html>&amp;</html>")
	f("é ü 日本 😀")
	f("\u2028 line and paragraph \u2029 separators")
	f("bad \xff utf8 \xc3 \xe2\x82 and \xed\xa0\x80 surrogate")
	f(strings.Repeat("x\"", 100))
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		f(string(b))
	}
}

func TestAppendErrorEscapes(t *testing.T) {
	f := func(msg, want string) {
		t.Helper()
		if got := string(AppendError([]byte("x"), msg)); got != "x"+want {
			t.Fatalf("AppendError(%q) = %s, want %s", msg, got[1:], want)
		}
	}
	f("", `{"error":""}`)
	f(`input "x": bad`, `{"error":"input \"x\": bad"}`)
	f("tab\there\x01", `{"error":"tab\there\u0001"}`)
}

// TestDecodeReusesBuffers checks the contract pooled callers rely on: a
// smaller request after a larger one reuses the buffers and does not leak
// the larger one's tensors or fields.
func TestDecodeReusesBuffers(t *testing.T) {
	var req InferRequest
	big := `{"id":"a","parameters":{"timeout":"1s","binary_data_output":true},"outputs":[{"name":"o"}],"inputs":[` +
		`{"name":"x","datatype":"FP32","shape":[4],"data":[1,2,3,4]},{"name":"y","datatype":"UINT8","shape":[1],"data":[1]}]}`
	small := `{"inputs":[{"name":"z","datatype":"FP32","shape":[1],"data":[9]}]}`
	if err := DecodeInferRequest([]byte(big), -1, &req); err != nil {
		t.Fatal(err)
	}
	first := &req.Inputs[0].Data[0]
	if err := DecodeInferRequest([]byte(small), -1, &req); err != nil {
		t.Fatal(err)
	}
	if &req.Inputs[0].Data[0] != first {
		t.Fatal("the data buffer was not reused")
	}
	if req.ID != "" || req.Timeout != 0 || req.BinaryOutputs || len(req.Outputs) != 0 {
		t.Fatalf("fields of the previous request leaked: %+v", req)
	}
	checkTensors(t, req.Inputs, []models.Tensor{tensorOf("z", models.FP32, []int64{1}, float32(9))})
	// A failed decode leaves no stale inputs behind for a careless caller
	// to read as valid beyond what it had decoded.
	if err := DecodeInferRequest([]byte(`{"inputs":5}`), -1, &req); err == nil || len(req.Inputs) != 0 {
		t.Fatalf("err %v, %d inputs", err, len(req.Inputs))
	}
}

// TestParseFloatMatchesStrconv checks parseFloat's fast path bit for bit
// against strconv.ParseFloat, on random decimals and on the float32 and
// float64 midpoints where rounding twice would go wrong.
func TestParseFloatMatchesStrconv(t *testing.T) {
	f := func(s string) {
		t.Helper()
		for _, bits := range []int{32, 64} {
			got, gotErr := parseFloat([]byte(s), bits)
			want, wantErr := strconv.ParseFloat(s, bits)
			if math.Float64bits(got) != math.Float64bits(want) || (gotErr == nil) != (wantErr == nil) {
				t.Fatalf("parseFloat(%q, %d) = %v, %v; strconv says %v, %v", s, bits, got, gotErr, want, wantErr)
			}
		}
	}
	f("0")
	f("-0")
	f("0.0")
	f("1")
	f("-1.5e-3")
	f("1E+2")
	f("9007199254740993")       // 2^53+1: beyond the fast path
	f("9007199254740992")       // 2^53
	f("1.0000000596046448")     // just above the float32 midpoint 1+2^-24
	f("1.00000005960464477539") // exactly 1+2^-24: a float32 tie, to even
	f("3.4028235677973366e38")  // float32 overflow midpoint
	f("1e-40")                  // float32 subnormal
	f("1e23")
	f("1e22")
	f("123456789012345678901") // 21 digits
	f("0.000000000000000000000000000001")
	f("1.")
	f(".5")
	f("1e")
	f("--1")
	f("1e-")
	f("")
	f("-")
	rng := rand.New(rand.NewPCG(11, 12))
	for range 100000 {
		var b strings.Builder
		if rng.IntN(2) == 0 {
			b.WriteByte('-')
		}
		switch rng.IntN(4) {
		case 0: // shortest float32
			b.WriteString(strconv.FormatFloat(float64(math.Float32frombits(rng.Uint32()&0x7fffffff)), 'g', -1, 32))
		case 1: // a float32 midpoint, shortest as float64
			x := float64(math.Float32frombits(rng.Uint32() & 0x7f7fffff))
			mid := x + (float64(math.Nextafter32(float32(x), float32(math.Inf(1))))-x)/2
			b.WriteString(strconv.FormatFloat(mid, 'g', -1, 64))
		default: // random digits and exponent
			for range 1 + rng.IntN(20) {
				b.WriteByte(byte('0' + rng.IntN(10)))
			}
			if rng.IntN(2) == 0 {
				b.WriteByte('.')
				for range 1 + rng.IntN(10) {
					b.WriteByte(byte('0' + rng.IntN(10)))
				}
			}
			if rng.IntN(2) == 0 {
				fmt.Fprintf(&b, "e%d", rng.IntN(80)-40)
			}
		}
		f(b.String())
	}
}

// TestFP16JSONRoundTripsEveryValue sends every binary16 value through JSON
// and back: the shortest decimal chosen by the encoder must decode to the
// same value (NaNs to a NaN).
func TestFP16JSONRoundTripsEveryValue(t *testing.T) {
	vals := make([]uint16, 1<<16)
	for i := range vals {
		vals[i] = uint16(i)
	}
	resp := InferResponse{ModelName: "m", Outputs: []models.Tensor{tensorOf("h", models.FP16, []int64{1 << 16}, vals...)}}
	body, _ := AppendInferResponse(nil, &resp)
	var back InferResponse
	if err := DecodeInferResponse(body, -1, &back); err != nil {
		t.Fatal(err)
	}
	if !equivalentTensors(resp.Outputs[0], back.Outputs[0], true) {
		for i := range vals {
			got := binary.LittleEndian.Uint16(back.Outputs[0].Data[2*i:])
			if got != vals[i] && (vals[i]&0x7fff <= 0x7c00 || got&0x7fff <= 0x7c00) {
				t.Fatalf("%#04x came back as %#04x", vals[i], got)
			}
		}
		t.Fatal("the data came back changed")
	}
	// And the decimals are short: 0.1 is "0.1", 65504 is "65500" (5 digits
	// are not needed to tell it from 65472 and Inf).
	for _, c := range []struct {
		h    uint16
		want string
	}{{0x2e66, "0.1"}, {0x7bff, "65500"}, {0x3c00, "1"}, {0x0001, "6e-8"}, {0xbc01, "-1.001"}, {0x8000, "-0"}} {
		if got := string(appendHalf(nil, c.h)); got != c.want {
			t.Fatalf("appendHalf(%#04x) = %s, want %s", c.h, got, c.want)
		}
	}
}

func TestLongNamesKeepErrorsShort(t *testing.T) {
	var req InferRequest
	long := strings.Repeat("n", 5000)
	outs := make([]string, 20)
	for i := range outs {
		outs[i] = fmt.Sprintf(`{"name":"o%d"}`, i%19)
	}
	for body, want := range map[string]string{
		`{"inputs":[{"name":"` + long + `","datatype":"FP32","shape":[1],"data":[]}]}`:                         `input "nnnn`,
		`{"inputs":[{"name":"x","datatype":"FP32","shape":[` + strings.Repeat("1,", 3000) + `2],"data":[1]}]}`: `input "x": shape [1,1,1`,
		`{"outputs":[` + strings.Join(outs, ",") + `],"inputs":[]}`:                                            `output "o0" is requested twice (outputs[0] and outputs[19])`,
	} {
		err := DecodeInferRequest([]byte(body), -1, &req)
		if err == nil || !strings.HasPrefix(err.Error(), want) || len(err.Error()) > maxErrorLen || !utf8.ValidString(err.Error()) {
			t.Fatalf("got error %.200q (%d bytes); want a short one starting %q", err, len(err.Error()), want)
		}
	}
}

func TestAliasedBinaryInputsPointIntoTheBodyAndAreNeverWrittenLater(t *testing.T) {
	in := []models.Tensor{{Name: "a", DataType: models.UINT8, Shape: []int64{1, 4}, Data: []byte{1, 2, 3, 4}}}
	body, jsonLen := AppendInferRequest(nil, &InferRequest{Inputs: in}, true)
	var req InferRequest
	req.AliasBinary = true
	if err := DecodeInferRequest(body, jsonLen, &req); err != nil {
		t.Fatal(err)
	}
	if &req.Inputs[0].Data[0] != &body[jsonLen] {
		t.Fatal("binary input was copied although AliasBinary is set")
	}
	saved := append([]byte(nil), body...)
	// The same slot decoded again from JSON must not write into the old body.
	if err := DecodeInferRequest([]byte(`{"inputs":[{"name":"a","datatype":"UINT8","shape":[1,4],"data":[9,9,9,9]}]}`), -1, &req); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body, saved) {
		t.Fatal("decoding into a slot that aliased a body wrote into that body")
	}
	if !bytes.Equal(req.Inputs[0].Data, []byte{9, 9, 9, 9}) {
		t.Fatalf("JSON decode after an aliased one: %v", req.Inputs[0].Data)
	}
}
