package v2codec

import (
	"encoding/binary"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/ipa-serving/ipa/models"
)

// AppendInferResponse appends resp as a V2 inference response body to dst.
// jsonLen is the length of the JSON header it appended; outputs with
// Binary[i] set follow it as raw bytes, in output order, so the server must
// send Inference-Header-Content-Length: jsonLen when any output is binary.
// With none, jsonLen == len(out)-len(dst).
//
// The encoder does not validate: a tensor whose Data does not fit its Shape
// produces a body that DecodeInferResponse rejects. Floats are written in the
// shortest form that reads back to the same value at their width; NaN and
// ±Inf as the strings "NaN", "Infinity", "-Infinity".
func AppendInferResponse(dst []byte, resp *InferResponse) (out []byte, jsonLen int) {
	start := len(dst)
	dst = append(dst, `{"model_name":`...)
	dst = appendJSONString(dst, resp.ModelName)
	if resp.ModelVersion != "" {
		dst = append(dst, `,"model_version":`...)
		dst = appendJSONString(dst, resp.ModelVersion)
	}
	if resp.ID != "" {
		dst = append(dst, `,"id":`...)
		dst = appendJSONString(dst, resp.ID)
	}
	if p := resp.Parameters; p != (ResponseParameters{}) || len(resp.Timings) > 0 || len(resp.Labels) > 0 {
		dst = append(dst, `,"parameters":{`...)
		sep := false
		key := func(k string) {
			if sep {
				dst = append(dst, ',')
			}
			sep = true
			dst = appendJSONString(dst, k)
			dst = append(dst, ':')
		}
		for _, t := range resp.Timings {
			key(t.Key)
			dst = strconv.AppendInt(dst, t.NS, 10)
		}
		for _, l := range resp.Labels {
			key(l.Key)
			dst = appendJSONString(dst, l.Value)
		}
		for _, f := range [...]struct {
			key string
			n   int64
		}{{"queue_time_ns", int64(p.QueueTime)}, {"infer_time_ns", int64(p.InferTime)}, {"batch_size", int64(p.BatchSize)}} {
			if f.n != 0 {
				key(f.key)
				dst = strconv.AppendInt(dst, f.n, 10)
			}
		}
		dst = append(dst, '}')
	}
	dst = append(dst, `,"outputs":[`...)
	for i := range resp.Outputs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendTensor(dst, &resp.Outputs[i], i < len(resp.Binary) && resp.Binary[i])
	}
	dst = append(dst, "]}"...)
	jsonLen = len(dst) - start
	for i := range resp.Outputs {
		if i < len(resp.Binary) && resp.Binary[i] {
			dst = append(dst, resp.Outputs[i].Data...)
		}
	}
	return dst, jsonLen
}

// AppendInferRequest appends req as a V2 inference request body to dst, the
// inputs' data all in binary form when binary is set (then send
// Inference-Header-Content-Length: jsonLen), else all as JSON. It is the
// inverse of DecodeInferRequest; it writes a timeout as a duration string
// and a deadline as an RFC 3339 string.
func AppendInferRequest(dst []byte, req *InferRequest, binary bool) (out []byte, jsonLen int) {
	start := len(dst)
	dst = appendInferRequestJSON(dst, req, binary)
	jsonLen = len(dst) - start
	if binary {
		for i := range req.Inputs {
			dst = append(dst, req.Inputs[i].Data...)
		}
	}
	return dst, jsonLen
}

// AppendInferRequestHeader appends the JSON part of req with binary tensors,
// as AppendInferRequest(dst, req, true) does, without the tensors' bytes:
// the caller sends them after it, input by input, from where they are.
func AppendInferRequestHeader(dst []byte, req *InferRequest) []byte {
	return appendInferRequestJSON(dst, req, true)
}

func appendInferRequestJSON(dst []byte, req *InferRequest, binary bool) []byte {
	dst = append(dst, '{')
	if req.ID != "" {
		dst = append(dst, `"id":`...)
		dst = appendJSONString(dst, req.ID)
		dst = append(dst, ',')
	}
	if req.BinaryOutputs || req.Timeout != 0 || !req.Deadline.IsZero() {
		dst = append(dst, `"parameters":{`...)
		sep := ""
		if req.BinaryOutputs {
			dst = append(dst, `"binary_data_output":true`...)
			sep = ","
		}
		if req.Timeout != 0 {
			dst = append(dst, sep+`"timeout":"`...)
			dst = appendDuration(dst, req.Timeout)
			dst = append(dst, '"')
			sep = ","
		}
		if !req.Deadline.IsZero() {
			dst = append(dst, sep+`"deadline":"`...)
			dst = req.Deadline.AppendFormat(dst, time.RFC3339Nano)
			dst = append(dst, '"')
		}
		dst = append(dst, "},"...)
	}
	dst = append(dst, `"inputs":[`...)
	for i := range req.Inputs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendTensor(dst, &req.Inputs[i], binary)
	}
	dst = append(dst, ']')
	if len(req.Outputs) > 0 {
		dst = append(dst, `,"outputs":[`...)
		for i, o := range req.Outputs {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"name":`...)
			dst = appendJSONString(dst, o.Name)
			if o.Binary != req.BinaryOutputs {
				dst = append(dst, `,"parameters":{"binary_data":`...)
				dst = strconv.AppendBool(dst, o.Binary)
				dst = append(dst, '}')
			}
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	dst = append(dst, '}')
	return dst
}

// appendDuration writes d exactly in the largest of ms, us and ns that
// divides it, in time.ParseDuration syntax, without allocating.
func appendDuration(dst []byte, d time.Duration) []byte {
	switch {
	case d%time.Millisecond == 0:
		return append(strconv.AppendInt(dst, int64(d/time.Millisecond), 10), "ms"...)
	case d%time.Microsecond == 0:
		return append(strconv.AppendInt(dst, int64(d/time.Microsecond), 10), "us"...)
	}
	return append(strconv.AppendInt(dst, int64(d), 10), "ns"...)
}

// AppendError appends the V2 error body {"error": msg} to dst.
func AppendError(dst []byte, msg string) []byte {
	dst = append(dst, `{"error":`...)
	dst = appendJSONString(dst, msg)
	return append(dst, '}')
}

// appendTensor writes one tensor's JSON entry: its data inline, or its size
// in parameters when the bytes go in the binary part.
func appendTensor(dst []byte, t *models.Tensor, binary bool) []byte {
	dst = append(dst, `{"name":`...)
	dst = appendJSONString(dst, t.Name)
	dst = append(dst, `,"datatype":"`...)
	dst = append(dst, t.DataType.String()...)
	dst = append(dst, `","shape":[`...)
	for i, n := range t.Shape {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendInt(dst, n, 10)
	}
	dst = append(dst, ']')
	if binary {
		dst = append(dst, `,"parameters":{"binary_data_size":`...)
		dst = strconv.AppendInt(dst, int64(len(t.Data)), 10)
		return append(dst, "}}"...)
	}
	dst = append(dst, `,"data":[`...)
	dst = appendData(dst, t)
	return append(dst, "]}"...)
}

// appendData writes a tensor's elements as a flat JSON array body (without
// brackets). Trailing bytes that do not make a whole element are left out.
func appendData(dst []byte, t *models.Tensor) []byte {
	data := t.Data
	le := binary.LittleEndian
	size := t.DataType.Size()
	if t.DataType == models.BYTES {
		for i := 0; len(data) >= 4; i++ {
			l := le.Uint32(data)
			if uint64(l) > uint64(len(data)-4) {
				break
			}
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, data[4:4+l])
			data = data[4+l:]
		}
		return dst
	}
	if size == 0 {
		return dst
	}
	n := len(data) / size
	for i := range n {
		if i > 0 {
			dst = append(dst, ',')
		}
		switch t.DataType {
		case models.BOOL:
			dst = strconv.AppendBool(dst, data[i] != 0)
		case models.UINT8:
			dst = strconv.AppendUint(dst, uint64(data[i]), 10)
		case models.UINT16:
			dst = strconv.AppendUint(dst, uint64(le.Uint16(data[i*2:])), 10)
		case models.UINT32:
			dst = strconv.AppendUint(dst, uint64(le.Uint32(data[i*4:])), 10)
		case models.UINT64:
			dst = strconv.AppendUint(dst, le.Uint64(data[i*8:]), 10)
		case models.INT8:
			dst = strconv.AppendInt(dst, int64(int8(data[i])), 10)
		case models.INT16:
			dst = strconv.AppendInt(dst, int64(int16(le.Uint16(data[i*2:]))), 10)
		case models.INT32:
			dst = strconv.AppendInt(dst, int64(int32(le.Uint32(data[i*4:]))), 10)
		case models.INT64:
			dst = strconv.AppendInt(dst, int64(le.Uint64(data[i*8:])), 10)
		case models.FP16:
			dst = appendHalf(dst, le.Uint16(data[i*2:]))
		case models.FP32:
			dst = appendFloat(dst, float64(math.Float32frombits(le.Uint32(data[i*4:]))), 32)
		case models.FP64:
			dst = appendFloat(dst, math.Float64frombits(le.Uint64(data[i*8:])), 64)
		}
	}
	return dst
}

// appendFloat writes f in the shortest form that reads back to the same
// float of the given width, formatted as encoding/json does (exponent only
// for very small or large magnitudes), and non-finite values as strings.
func appendFloat(dst []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(dst, `"Infinity"`...)
	case math.IsInf(f, -1):
		return append(dst, `"-Infinity"`...)
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	dst = strconv.AppendFloat(dst, f, format, -1, bits)
	if format == 'e' {
		// Clean up e-09 to e-9, as encoding/json does.
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// appendJSONString writes s as a JSON string: quotes, backslashes and control
// characters escaped, U+2028/U+2029 escaped for JavaScript, and each byte of
// invalid UTF-8 replaced by U+FFFD (as encoding/json does, without its HTML
// escaping).
func appendJSONString[S string | []byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		end := min(i+utf8.UTFMax, len(s))
		r, size := utf8.DecodeRuneInString(string(s[i:end]))
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
