package dataplane

// V2 codec: the Open Inference Protocol (KServe V2) REST request and response
// bodies, including the binary tensor data extension (Triton's
// binary_tensor_data, which KServe adopted unchanged).
//
// Wire layout with the binary extension:
//
//	body = JSON header (Inference-Header-Content-Length bytes) ++ tensor 0 bytes ++ tensor 1 bytes ++ …
//
// where each tensor sent in binary has parameters.binary_data_size in its JSON
// entry and its bytes follow in the order of the entries. Tensor bytes are the
// same in memory and on the wire: little-endian, row-major, and for BYTES each
// element is a 4-byte little-endian length followed by that many bytes.
//
// Behaviours the specification leaves open, decided here:
//
//   - NaN and ±Inf are not JSON numbers. Encoders write them as the JSON
//     strings "NaN", "Infinity" and "-Infinity" (the proto3 JSON mapping);
//     decoders accept those strings, any spelling strconv.ParseFloat reads as
//     non-finite ("inf", "nan", …), and the bare tokens NaN/inf that fastjson
//     lets through, for FP16, FP32 and FP64. NaN payloads survive only in
//     binary form.
//   - A JSON number that overflows the datatype (1e39 for FP32, 65520 for
//     FP16, 300 for UINT8) is an error, not ±Inf or a wrapped value.
//     Underflow rounds to a subnormal or zero, as IEEE 754 does.
//   - Integers must be integral (2, 2.0 and 2e0 are all 2; 2.5 is an error).
//   - BYTES elements with invalid UTF-8 are sent in JSON with each bad byte
//     replaced by U+FFFD, as encoding/json does; ask for binary output to get
//     the bytes exactly.
//   - parameters.timeout is a Go duration string ("250ms") or a number of
//     seconds (note: Triton's "timeout" counts microseconds; ours does not).
//     parameters.deadline is an RFC 3339 string (fractional seconds allowed)
//     or an integer of Unix nanoseconds.
//   - Decoded tensor bytes are bounded by the body: at most 4 bytes per byte
//     of JSON header plus the binary part, so a small body cannot make the
//     decoder allocate much.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/valyala/fastjson"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/runtime"
)

// ErrBadRequest marks a request body that is not a valid V2 inference
// request. Every error returned by DecodeInferRequest wraps it; the message
// alone (err.Error()) says what to fix and is meant for the client.
var ErrBadRequest = errors.New("bad inference request")

// ErrBadResponse marks a body that is not a valid V2 inference response.
// Every error returned by DecodeInferResponse wraps it.
var ErrBadResponse = errors.New("bad inference response")

// codecError is a one-line, client-facing message that wraps a sentinel
// without repeating the sentinel's text.
type codecError struct {
	msg  string
	kind error
}

func (e *codecError) Error() string { return e.msg }
func (e *codecError) Unwrap() error { return e.kind }

// RequestedOutput is one entry of a request's "outputs".
type RequestedOutput struct {
	Name string
	// Binary is the output's parameters.binary_data, or the request's
	// parameters.binary_data_output when the output does not say.
	Binary bool
}

// InferRequest is a decoded V2 inference request.
//
// It owns every byte it holds (nothing aliases the body passed to
// DecodeInferRequest), and it keeps its buffers across calls, so a pooled
// InferRequest decodes a request of the same shape again without allocating.
// Decoding overwrites the Data and Shape buffers of earlier Inputs, also
// beyond len(Inputs): do not put buffers you do not own there, and do not
// keep Data or Shape past the next decode. After an error the fields hold
// whatever was decoded so far. An InferRequest must not be copied after
// first use and is not safe for concurrent use.
type InferRequest struct {
	ID string
	// Inputs holds the tensors in request order. Data holds little-endian
	// element bytes whether the input came as JSON or binary.
	Inputs []runtime.Tensor
	// Outputs lists the requested outputs; empty means all of them.
	Outputs []RequestedOutput
	// BinaryOutputs is the request-level parameters.binary_data_output.
	BinaryOutputs bool
	// Timeout is parameters.timeout; 0 means none.
	Timeout time.Duration
	// Deadline is parameters.deadline; the zero Time means none.
	Deadline time.Time

	// AliasBinary makes the next decodes point binary input data into the
	// body instead of copying it (a 600 KB image costs ~60 µs to copy). The
	// caller must then keep the body unchanged for as long as it uses
	// Inputs. The decoder never writes into aliased memory: a slot whose
	// Data aliased a body gets a fresh buffer when it is decoded again.
	AliasBinary bool

	dec decoder
}

// Reset clears r for reuse and keeps its buffers.
func (r *InferRequest) Reset() {
	r.ID = ""
	r.Inputs = r.Inputs[:0]
	r.Outputs = r.Outputs[:0]
	r.BinaryOutputs = false
	r.Timeout = 0
	r.Deadline = time.Time{}
}

// ResponseParameters are the response-level "parameters" ipa reports.
// Zero fields are left out of the JSON.
type ResponseParameters struct {
	// QueueTime is the time the request waited for a batch ("queue_time_ns").
	QueueTime time.Duration
	// InferTime is the engine's run time for the batch ("infer_time_ns").
	InferTime time.Duration
	// BatchSize is the size of the batch the request ran in ("batch_size").
	BatchSize int
}

// Timing is one extra integer response parameter.
type Timing struct {
	Key string
	NS  int64
}

// InferResponse is a V2 inference response.
//
// For encoding, fill the exported fields; AppendInferResponse only reads
// them. DecodeInferResponse overwrites the Data and Shape buffers of the
// Outputs it finds (also beyond len(Outputs)), so a pooled InferResponse
// decodes without allocating; never decode into one whose Outputs hold
// buffers you do not own, such as an engine's. It is not safe for
// concurrent use.
type InferResponse struct {
	ModelName    string
	ModelVersion string
	ID           string
	Outputs      []runtime.Tensor
	// Binary[i] sends Outputs[i] in binary form; missing entries mean JSON.
	// DecodeInferResponse sets it to how each output arrived.
	Binary     []bool
	Parameters ResponseParameters
	// Timings are extra integer parameters, written after Parameters: the
	// router's per-stage times ("<stage>_ns"). Not decoded.
	Timings []Timing

	dec *decoder
}

// parse splits body at headerLen and parses its JSON part, which must be an
// object; what ("request" or "response") names it in errors.
func (d *decoder) parse(body []byte, headerLen int, what string) (*fastjson.Object, []byte, error) {
	jsonPart, binPart, err := d.split(body, headerLen)
	if err != nil {
		return nil, nil, err
	}
	root, err := d.p.ParseBytes(jsonPart)
	if err != nil {
		return nil, nil, d.errorf("cannot parse the JSON %s: %s", what, err)
	}
	obj, err := root.Object()
	if err != nil {
		return nil, nil, d.errorf("the %s must be a JSON object, not %s", what, root.Type())
	}
	return obj, binPart, nil
}

// decoder is the scratch shared by request and response decoding.
type decoder struct {
	p     fastjson.Parser
	num   []byte // raw text of the number being parsed
	slots []tensorSlot
	kind  error // ErrBadRequest or ErrBadResponse
	what  string
	// last holds the last ID (and model name and version), so that
	// decoding the same one again does not allocate.
	last [3]string
	// alias makes binaryData point into the body; aliased[i] records that
	// tensor i's Data does, so that its buffer is never reused.
	alias   bool
	aliased []bool
}

// tensorSlot remembers where a tensor's data is: a JSON value, or binSize
// bytes of the binary part.
type tensorSlot struct {
	data    *fastjson.Value
	binSize int // -1 when the data is JSON
}

// maxErrorLen keeps error messages short however long the names or shapes
// they quote.
const maxErrorLen = 1024

func (d *decoder) errorf(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if len(msg) > maxErrorLen {
		msg = strings.ToValidUTF8(msg[:maxErrorLen-3], "") + "…"
	}
	return &codecError{msg: msg, kind: d.kind}
}

// DecodeInferRequest decodes a V2 inference request body into req, which it
// resets first. headerLen is the Inference-Header-Content-Length header, or
// -1 when absent (then the whole body is JSON). Every error wraps
// ErrBadRequest. Only protocol-level validation is done here; whether the
// inputs fit the model is checked by the caller.
func DecodeInferRequest(body []byte, headerLen int, req *InferRequest) error {
	req.Reset()
	d := &req.dec
	d.alias = req.AliasBinary
	d.kind = ErrBadRequest
	d.what = "input"
	obj, binPart, err := d.parse(body, headerLen, "request")
	if err != nil {
		return err
	}
	if v := obj.Get("id"); v != nil {
		b, err := v.StringBytes()
		if err != nil {
			return d.errorf(`"id" must be a string, not %s`, v.Type())
		}
		req.ID = intern(d.last[0], b)
		d.last[0] = req.ID
	}
	if v := obj.Get("parameters"); v != nil {
		if err := d.requestParameters(v, req); err != nil {
			return err
		}
	}
	if v := obj.Get("outputs"); v != nil {
		if err := d.requestedOutputs(v, req); err != nil {
			return err
		}
	}
	v := obj.Get("inputs")
	if v == nil {
		return d.errorf(`the request has no "inputs"; send "inputs": [{"name", "datatype", "shape", "data"}, …]`)
	}
	req.Inputs, err = d.tensors(v, req.Inputs, binPart, headerLen >= 0)
	return err
}

// DecodeInferResponse decodes a V2 inference response body into resp.
// headerLen is as for DecodeInferRequest. An error body ({"error": "…"})
// is returned as an error carrying its message. Every error wraps
// ErrBadResponse.
func DecodeInferResponse(body []byte, headerLen int, resp *InferResponse) error {
	if resp.dec == nil {
		resp.dec = new(decoder)
	}
	d := resp.dec
	d.kind = ErrBadResponse
	d.what = "output"
	resp.ModelName, resp.ModelVersion, resp.ID = "", "", ""
	resp.Parameters = ResponseParameters{}
	resp.Outputs = resp.Outputs[:0]
	resp.Binary = resp.Binary[:0]
	obj, binPart, err := d.parse(body, headerLen, "response")
	if err != nil {
		return err
	}
	for i, f := range [...]struct {
		key string
		dst *string
	}{{"id", &resp.ID}, {"model_name", &resp.ModelName}, {"model_version", &resp.ModelVersion}} {
		if v := obj.Get(f.key); v != nil {
			b, err := v.StringBytes()
			if err != nil {
				return d.errorf("%q must be a string, not %s", f.key, v.Type())
			}
			*f.dst = intern(d.last[i], b)
			d.last[i] = *f.dst
		}
	}
	if v := obj.Get("parameters"); v != nil {
		if err := d.responseParameters(v, &resp.Parameters); err != nil {
			return err
		}
	}
	v := obj.Get("outputs")
	if v == nil {
		if e := obj.Get("error"); e != nil && e.Type() == fastjson.TypeString {
			return d.errorf("the response is an error: %s", e.GetStringBytes())
		}
		return d.errorf(`the response has no "outputs"`)
	}
	resp.Outputs, err = d.tensors(v, resp.Outputs, binPart, headerLen >= 0)
	if err != nil {
		return err
	}
	for i := range resp.Outputs {
		resp.Binary = append(resp.Binary, d.slots[i].binSize >= 0)
	}
	return nil
}

// split cuts body into its JSON header and binary part.
func (d *decoder) split(body []byte, headerLen int) (jsonPart, binPart []byte, err error) {
	switch {
	case headerLen == -1:
		return body, nil, nil
	case headerLen < 0:
		return nil, nil, d.errorf("Inference-Header-Content-Length is %d; it must be the JSON header's length in bytes", headerLen)
	case headerLen > len(body):
		return nil, nil, d.errorf("Inference-Header-Content-Length is %d but the body has only %d bytes", headerLen, len(body))
	}
	return body[:headerLen], body[headerLen:], nil
}

func (d *decoder) requestParameters(v *fastjson.Value, req *InferRequest) error {
	o, err := v.Object()
	if err != nil {
		return d.errorf(`"parameters" must be an object, not %s`, v.Type())
	}
	if p := o.Get("binary_data_output"); p != nil {
		b, err := p.Bool()
		if err != nil {
			return d.errorf(`parameters.binary_data_output must be true or false, not %s`, p.Type())
		}
		req.BinaryOutputs = b
	}
	if p := o.Get("timeout"); p != nil {
		t, err := d.timeout(p)
		if err != nil {
			return err
		}
		req.Timeout = t
	}
	if p := o.Get("deadline"); p != nil {
		t, err := d.deadline(p)
		if err != nil {
			return err
		}
		req.Deadline = t
	}
	return nil
}

// maxTimeoutSeconds keeps a timeout inside time.Duration's range.
const maxTimeoutSeconds = float64(math.MaxInt64/int64(time.Second)) - 1

func (d *decoder) timeout(v *fastjson.Value) (time.Duration, error) {
	switch v.Type() {
	case fastjson.TypeString:
		s := v.GetStringBytes()
		t, err := time.ParseDuration(b2s(s))
		if err != nil || t < 0 {
			return 0, d.errorf(`parameters.timeout %q is not a duration; send a non-negative Go duration such as "250ms" or a number of seconds`, s)
		}
		return t, nil
	case fastjson.TypeNumber:
		f, err := strconv.ParseFloat(b2s(d.rawNumber(v)), 64)
		if err != nil || !(f >= 0 && f <= maxTimeoutSeconds) {
			return 0, d.errorf(`parameters.timeout %s is out of range; send a non-negative number of seconds or a Go duration such as "250ms"`, d.num)
		}
		return time.Duration(math.Round(f * 1e9)), nil
	}
	return 0, d.errorf(`parameters.timeout must be a string such as "250ms" or a number of seconds, not %s`, v.Type())
}

func (d *decoder) deadline(v *fastjson.Value) (time.Time, error) {
	switch v.Type() {
	case fastjson.TypeString:
		s := v.GetStringBytes()
		t, err := time.Parse(time.RFC3339Nano, b2s(s))
		if err != nil {
			return time.Time{}, d.errorf(`parameters.deadline %q is not an RFC 3339 time such as "2025-01-02T15:04:05.999Z"`, s)
		}
		return t, nil
	case fastjson.TypeNumber:
		n, ok := parseInt64(d.rawNumber(v))
		if !ok || n <= 0 {
			return time.Time{}, d.errorf(`parameters.deadline %s must be a positive integer of Unix nanoseconds or an RFC 3339 string`, d.num)
		}
		return time.Unix(0, n), nil
	}
	return time.Time{}, d.errorf(`parameters.deadline must be an RFC 3339 string or integer Unix nanoseconds, not %s`, v.Type())
}

func (d *decoder) responseParameters(v *fastjson.Value, p *ResponseParameters) error {
	o, err := v.Object()
	if err != nil {
		return d.errorf(`"parameters" must be an object, not %s`, v.Type())
	}
	for _, f := range [...]struct {
		key string
		dst *int64
	}{{"queue_time_ns", (*int64)(&p.QueueTime)}, {"infer_time_ns", (*int64)(&p.InferTime)}} {
		if x := o.Get(f.key); x != nil {
			n, ok := int64(0), false
			if x.Type() == fastjson.TypeNumber {
				n, ok = parseInt64(d.rawNumber(x))
			}
			if !ok || n < 0 {
				return d.errorf("parameters.%s must be a non-negative integer", f.key)
			}
			*f.dst = n
		}
	}
	if x := o.Get("batch_size"); x != nil {
		n, ok := int64(0), false
		if x.Type() == fastjson.TypeNumber {
			n, ok = parseInt64(d.rawNumber(x))
		}
		if !ok || n < 0 || n > math.MaxInt32 {
			return d.errorf("parameters.batch_size must be a non-negative integer")
		}
		p.BatchSize = int(n)
	}
	return nil
}

func (d *decoder) requestedOutputs(v *fastjson.Value, req *InferRequest) error {
	arr, err := v.Array()
	if err != nil {
		return d.errorf(`"outputs" must be an array of {"name": …}, not %s`, v.Type())
	}
	for i, ov := range arr {
		o, err := ov.Object()
		if err != nil {
			return d.errorf(`outputs[%d] must be an object such as {"name": "output0"}, not %s`, i, ov.Type())
		}
		nv := o.Get("name")
		if nv == nil || nv.Type() != fastjson.TypeString {
			return d.errorf(`outputs[%d] needs a string "name"`, i)
		}
		name := nv.GetStringBytes()
		binary := req.BinaryOutputs
		if pv := o.Get("parameters"); pv != nil {
			po, err := pv.Object()
			if err != nil {
				return d.errorf(`output %q: "parameters" must be an object, not %s`, name, pv.Type())
			}
			if bv := po.Get("binary_data"); bv != nil {
				binary, err = bv.Bool()
				if err != nil {
					return d.errorf("output %q: parameters.binary_data must be true or false, not %s", name, bv.Type())
				}
			}
		}
		var prev string
		if len(req.Outputs) < cap(req.Outputs) {
			prev = req.Outputs[:len(req.Outputs)+1][len(req.Outputs)].Name
		}
		req.Outputs = append(req.Outputs, RequestedOutput{Name: intern(prev, name), Binary: binary})
	}
	outs := req.Outputs
	if j, i, ok := firstDuplicate(len(outs), func(i int) string { return outs[i].Name }); ok {
		return d.errorf("output %q is requested twice (outputs[%d] and outputs[%d])", outs[i].Name, j, i)
	}
	return nil
}

// tensors decodes a JSON array of tensors ("inputs" or "outputs") into ts,
// reusing its elements' buffers, then takes binary data from binPart.
func (d *decoder) tensors(v *fastjson.Value, ts []runtime.Tensor, binPart []byte, haveHeaderLen bool) ([]runtime.Tensor, error) {
	arr, err := v.Array()
	if err != nil {
		return ts, d.errorf(`"%ss" must be an array, not %s`, d.what, v.Type())
	}
	d.slots = d.slots[:0]
	binTotal := 0
	for i, tv := range arr {
		if len(ts) < cap(ts) {
			ts = ts[:len(ts)+1]
		} else {
			ts = append(ts, runtime.Tensor{})
		}
		t := &ts[i]
		if i < len(d.aliased) && d.aliased[i] {
			t.Data, d.aliased[i] = nil, false // points into an old body
		}
		d.slots = append(d.slots, tensorSlot{binSize: -1})
		if err := d.tensorHeader(tv, i, t, &d.slots[i]); err != nil {
			return ts, err
		}
		if n := d.slots[i].binSize; n >= 0 {
			if !haveHeaderLen {
				return ts, d.errorf("%s %q has parameters.binary_data_size but there is no Inference-Header-Content-Length header; set it to the JSON header's length", d.what, t.Name)
			}
			if n > len(binPart)-binTotal {
				return ts, d.errorf("%s %q: parameters.binary_data_size is %d but only %d of the %d bytes after the JSON header are left for it; check the sizes and Inference-Header-Content-Length",
					d.what, t.Name, n, len(binPart)-binTotal, len(binPart))
			}
			binTotal += n
		}
	}
	if binTotal != len(binPart) {
		if binTotal == 0 {
			return ts, d.errorf("the body has %d bytes after the JSON header (Inference-Header-Content-Length) but no %s has parameters.binary_data_size", len(binPart), d.what)
		}
		return ts, d.errorf("the binary_data_size values add up to %d bytes but the body has %d bytes after the JSON header; they must match", binTotal, len(binPart))
	}
	if err := d.duplicates(ts); err != nil {
		return ts, err
	}
	off := 0
	for i := range ts {
		t, s := &ts[i], &d.slots[i]
		if s.binSize >= 0 {
			err = d.binaryData(t, binPart[off:off+s.binSize])
			if err == nil && d.alias {
				t.Data = binPart[off : off+s.binSize : off+s.binSize]
				for len(d.aliased) <= i {
					d.aliased = append(d.aliased, false)
				}
				d.aliased[i] = true
			}
			off += s.binSize
		} else {
			err = d.jsonData(t, s.data)
		}
		if err != nil {
			return ts, err
		}
		s.data = nil
	}
	return ts, nil
}

func (d *decoder) duplicates(ts []runtime.Tensor) error {
	if j, i, ok := firstDuplicate(len(ts), func(i int) string { return ts[i].Name }); ok {
		return d.errorf("%s %q appears twice (%ss %d and %d); names must be unique", d.what, ts[i].Name, d.what, j, i)
	}
	return nil
}

// firstDuplicate finds indexes j < i of two equal names among n, comparing
// pairs when n is small and using a map only when it is not, so that many
// names cannot make the check quadratic.
func firstDuplicate(n int, name func(int) string) (j, i int, ok bool) {
	if n <= 16 {
		for i := range n {
			for j := range i {
				if name(i) == name(j) {
					return j, i, true
				}
			}
		}
		return 0, 0, false
	}
	seen := make(map[string]int, n)
	for i := range n {
		if j, ok := seen[name(i)]; ok {
			return j, i, true
		}
		seen[name(i)] = i
	}
	return 0, 0, false
}

// tensorHeader reads name, datatype, shape and where the data is.
func (d *decoder) tensorHeader(v *fastjson.Value, i int, t *runtime.Tensor, s *tensorSlot) error {
	o, err := v.Object()
	if err != nil {
		return d.errorf("%ss[%d] must be an object, not %s", d.what, i, v.Type())
	}
	nv := o.Get("name")
	if nv == nil {
		return d.errorf(`%ss[%d] has no "name"`, d.what, i)
	}
	name, err := nv.StringBytes()
	if err != nil {
		return d.errorf(`%ss[%d]: "name" must be a string, not %s`, d.what, i, nv.Type())
	}
	t.Name = intern(t.Name, name)

	dv := o.Get("datatype")
	if dv == nil {
		return d.errorf(`%s %q has no "datatype"; use one of BOOL, UINT8…UINT64, INT8…INT64, FP16, FP32, FP64, BYTES`, d.what, t.Name)
	}
	dts, err := dv.StringBytes()
	if err != nil {
		return d.errorf(`%s %q: "datatype" must be a string, not %s`, d.what, t.Name, dv.Type())
	}
	t.DataType, err = models.ParseDataType(b2s(dts))
	if err != nil {
		return d.errorf("%s %q: %s", d.what, t.Name, err)
	}

	sv := o.Get("shape")
	if sv == nil {
		return d.errorf(`%s %q has no "shape"; send the dimensions, e.g. "shape": [1, 3]`, d.what, t.Name)
	}
	dims, err := sv.Array()
	if err != nil {
		return d.errorf(`%s %q: "shape" must be an array of non-negative integers, not %s`, d.what, t.Name, sv.Type())
	}
	t.Shape = t.Shape[:0]
	for k, dim := range dims {
		n, ok := int64(-1), false
		if dim.Type() == fastjson.TypeNumber {
			n, ok = parseInt64(d.rawNumber(dim))
		}
		if !ok || n < 0 {
			return d.errorf(`%s %q: shape[%d] is %s; dimensions must be non-negative integers`, d.what, t.Name, k, d.text(dim))
		}
		t.Shape = append(t.Shape, n)
	}
	if models.Elements(t.Shape) < 0 {
		return d.errorf("%s %q: shape %s has too many elements (more than 2^53)", d.what, t.Name, models.FormatShape(t.Shape))
	}

	data := o.Get("data")
	if pv := o.Get("parameters"); pv != nil {
		po, err := pv.Object()
		if err != nil {
			return d.errorf(`%s %q: "parameters" must be an object, not %s`, d.what, t.Name, pv.Type())
		}
		if bv := po.Get("binary_data_size"); bv != nil {
			n, ok := int64(-1), false
			if bv.Type() == fastjson.TypeNumber {
				n, ok = parseInt64(d.rawNumber(bv))
			}
			if !ok || n < 0 || uint64(n) > math.MaxInt {
				return d.errorf("%s %q: parameters.binary_data_size is %s; it must be a non-negative integer number of bytes", d.what, t.Name, d.text(bv))
			}
			if data != nil {
				return d.errorf(`%s %q has both "data" and parameters.binary_data_size; send one of them`, d.what, t.Name)
			}
			s.binSize = int(n)
			return nil
		}
	}
	if data == nil {
		return d.errorf(`%s %q has no "data" (and no parameters.binary_data_size)`, d.what, t.Name)
	}
	s.data = data
	return nil
}

// binaryData checks and copies a tensor's binary bytes.
func (d *decoder) binaryData(t *runtime.Tensor, b []byte) error {
	want := models.Elements(t.Shape)
	if t.DataType == models.BYTES {
		n, ok := countBytesElements(b)
		if !ok {
			return d.errorf("%s %q: the %d bytes of BYTES data are not a sequence of 4-byte little-endian lengths each followed by that many bytes", d.what, t.Name, len(b))
		}
		if n != want {
			return d.errorf("%s %q: shape %s needs %d elements, got %d in the binary data", d.what, t.Name, models.FormatShape(t.Shape), want, n)
		}
	} else {
		size := t.DataType.Size()
		if len(b) != want*size {
			return d.errorf("%s %q: shape %s of %s needs %d×%d = %d bytes, but binary_data_size is %d", d.what, t.Name, models.FormatShape(t.Shape), t.DataType, want, size, want*size, len(b))
		}
		if t.DataType == models.BOOL {
			for i, c := range b {
				if c > 1 {
					return d.errorf("%s %q: BOOL element %d is byte %d; use 0 or 1", d.what, t.Name, i, c)
				}
			}
		}
	}
	if !d.alias { // else tensors points t.Data into the body
		t.Data = append(t.Data[:0], b...)
	}
	return nil
}

// countBytesElements counts BYTES elements framed as length-prefixed strings.
func countBytesElements(b []byte) (int, bool) {
	n := 0
	for len(b) > 0 {
		if len(b) < 4 {
			return n, false
		}
		l := binary.LittleEndian.Uint32(b)
		b = b[4:]
		if uint64(l) > uint64(len(b)) {
			return n, false
		}
		b = b[l:]
		n++
	}
	return n, true
}

// jsonData converts a tensor's JSON "data" (flat or nested arrays) into
// little-endian bytes.
func (d *decoder) jsonData(t *runtime.Tensor, v *fastjson.Value) error {
	if v.Type() != fastjson.TypeArray {
		return d.errorf(`%s %q: "data" must be an array (flat or nested), not %s`, d.what, t.Name, v.Type())
	}
	want := models.Elements(t.Shape)
	got := countLeaves(v.GetArray())
	if got != want {
		return d.errorf("%s %q: shape %s needs %d elements, got %d", d.what, t.Name, models.FormatShape(t.Shape), want, got)
	}
	if t.DataType == models.BYTES {
		t.Data = t.Data[:0]
	} else {
		// got is at most the JSON length, so this is bounded by the body.
		n := got * t.DataType.Size()
		if cap(t.Data) < n {
			t.Data = make([]byte, n)
		}
		t.Data = t.Data[:n]
	}
	_, err := d.fill(t, v.GetArray(), 0)
	return err
}

func countLeaves(vals []*fastjson.Value) int {
	n := 0
	for _, v := range vals {
		if v.Type() == fastjson.TypeArray {
			n += countLeaves(v.GetArray())
		} else {
			n++
		}
	}
	return n
}

// fill converts the leaves of vals, starting at flat element index idx, and
// returns the index after the last one.
func (d *decoder) fill(t *runtime.Tensor, vals []*fastjson.Value, idx int) (int, error) {
	for i := 0; i < len(vals); {
		if vals[i].Type() == fastjson.TypeArray {
			var err error
			if idx, err = d.fill(t, vals[i].GetArray(), idx); err != nil {
				return idx, err
			}
			i++
			continue
		}
		j := i + 1
		for j < len(vals) && vals[j].Type() != fastjson.TypeArray {
			j++
		}
		if err := d.leaves(t, vals[i:j], idx); err != nil {
			return idx, err
		}
		idx += j - i
		i = j
	}
	return idx, nil
}

// leaves converts scalar JSON values into t.Data at element index base.
func (d *decoder) leaves(t *runtime.Tensor, vals []*fastjson.Value, base int) error {
	data := t.Data
	le := binary.LittleEndian
	switch t.DataType {
	case models.BOOL:
		for i, v := range vals {
			switch v.Type() {
			case fastjson.TypeTrue:
				data[base+i] = 1
			case fastjson.TypeFalse:
				data[base+i] = 0
			default:
				return d.elemErr(t, base+i, v, "BOOL data must be true or false")
			}
		}
	case models.FP32:
		for i, v := range vals {
			f, err := d.float(t, base+i, v, 32)
			if err != nil {
				return err
			}
			le.PutUint32(data[(base+i)*4:], math.Float32bits(float32(f)))
		}
	case models.FP64:
		for i, v := range vals {
			f, err := d.float(t, base+i, v, 64)
			if err != nil {
				return err
			}
			le.PutUint64(data[(base+i)*8:], math.Float64bits(f))
		}
	case models.FP16:
		for i, v := range vals {
			h, err := d.half(t, base+i, v)
			if err != nil {
				return err
			}
			le.PutUint16(data[(base+i)*2:], h)
		}
	case models.BYTES:
		for i, v := range vals {
			if v.Type() != fastjson.TypeString {
				return d.elemErr(t, base+i, v, "BYTES data must be strings")
			}
			s := v.GetStringBytes()
			if uint64(len(s)) > math.MaxUint32 {
				return d.errorf("%s %q: data element %d is longer than 4 GiB", d.what, t.Name, base+i)
			}
			data = le.AppendUint32(data, uint32(len(s)))
			data = append(data, s...)
		}
		t.Data = data
	default:
		lim := intLimits[t.DataType]
		size := t.DataType.Size()
		for i, v := range vals {
			u, err := d.integer(t, base+i, v, lim)
			if err != nil {
				return err
			}
			off := (base + i) * size
			switch size {
			case 1:
				data[off] = byte(u)
			case 2:
				le.PutUint16(data[off:], uint16(u))
			case 4:
				le.PutUint32(data[off:], uint32(u))
			default:
				le.PutUint64(data[off:], u)
			}
		}
	}
	return nil
}

// limits is an integer datatype's range. Values travel as the uint64 bit
// pattern of their two's complement.
type limits struct {
	signed bool
	min    int64
	max    uint64
}

var intLimits = [...]limits{
	models.UINT8:  {max: math.MaxUint8},
	models.UINT16: {max: math.MaxUint16},
	models.UINT32: {max: math.MaxUint32},
	models.UINT64: {max: math.MaxUint64},
	models.INT8:   {signed: true, min: math.MinInt8, max: math.MaxInt8},
	models.INT16:  {signed: true, min: math.MinInt16, max: math.MaxInt16},
	models.INT32:  {signed: true, min: math.MinInt32, max: math.MaxInt32},
	models.INT64:  {signed: true, min: math.MinInt64, max: math.MaxInt64},
}

// integer parses an integral JSON number within lim.
func (d *decoder) integer(t *runtime.Tensor, idx int, v *fastjson.Value, lim limits) (uint64, error) {
	if v.Type() != fastjson.TypeNumber {
		return 0, d.elemErr(t, idx, v, t.DataType.String()+" data must be integers")
	}
	raw := d.rawNumber(v)
	if neg, mag, ok := parseDecimal(raw); ok {
		switch {
		case !neg && mag <= lim.max:
			return mag, nil
		case neg && (mag == 0 || lim.signed && mag <= uint64(-(lim.min+1))+1):
			return -mag, nil
		}
		return 0, d.rangeErr(t, idx, lim)
	}
	f, err := strconv.ParseFloat(b2s(raw), 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange):
		return 0, d.elemErr(t, idx, v, t.DataType.String()+" data must be integers")
	case f != math.Trunc(f) || math.IsInf(f, 0):
		if err == nil && !math.IsInf(f, 0) {
			return 0, d.errorf("%s %q: data element %d is %s, not an integer; %s data must be integers", d.what, t.Name, idx, raw, t.DataType)
		}
	case f < 0:
		if f == 0 || lim.signed && f >= float64(lim.min) {
			return uint64(int64(f)), nil
		}
	case f < 1<<64 && uint64(f) <= lim.max:
		return uint64(f), nil
	}
	return 0, d.rangeErr(t, idx, lim)
}

func (d *decoder) rangeErr(t *runtime.Tensor, idx int, lim limits) error {
	lo := "0"
	if lim.signed {
		lo = strconv.FormatInt(lim.min, 10)
	}
	return d.errorf("%s %q: data element %d (%s) is out of range for %s [%s, %d]", d.what, t.Name, idx, d.num, t.DataType, lo, lim.max)
}

// float parses a JSON number, or the string spelling of NaN/±Inf, rounded
// once to bits (32 or 64).
func (d *decoder) float(t *runtime.Tensor, idx int, v *fastjson.Value, bits int) (float64, error) {
	switch v.Type() {
	case fastjson.TypeNumber:
		raw := d.rawNumber(v)
		f, err := parseFloat(raw, bits)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return 0, d.errorf("%s %q: data element %d (%s) overflows %s", d.what, t.Name, idx, raw, t.DataType)
			}
			return 0, d.errorf("%s %q: data element %d (%s) is not a number", d.what, t.Name, idx, raw)
		}
		return f, nil
	case fastjson.TypeString:
		s := v.GetStringBytes()
		if f, err := strconv.ParseFloat(b2s(s), 64); err == nil && (math.IsNaN(f) || math.IsInf(f, 0)) {
			return f, nil
		}
		return 0, d.errorf(`%s %q: data element %d is the string %q; %s data must be numbers, or "NaN", "Infinity", "-Infinity"`, d.what, t.Name, idx, s, t.DataType)
	}
	return 0, d.elemErr(t, idx, v, t.DataType.String()+` data must be numbers, or "NaN", "Infinity", "-Infinity"`)
}

// float64pow10 holds the powers of ten that float64 represents exactly.
var float64pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// parseFloat is strconv.ParseFloat(string(b), bits) with a fast path for
// the numbers JSON tensors are made of: up to 19 significant digits and a
// small exponent. There, mantissa and power of ten are exact float64s, so one
// multiplication or division rounds the decimal correctly to float64
// (Clinger's fast path). For bits == 32 the float64 is rounded again, which
// gives the correctly rounded float32 unless the float64 sits exactly on a
// float32 midpoint (float32 midpoints are float64s, and rounding is
// monotonic); that case, subnormals and overflow go to strconv.
func parseFloat(b []byte, bits int) (float64, error) {
	if f, ok := parseFloatFast(b, bits); ok {
		return f, nil
	}
	return strconv.ParseFloat(b2s(b), bits)
}

func parseFloatFast(b []byte, bits int) (float64, bool) {
	i, neg := 0, false
	if len(b) > 0 && b[0] == '-' {
		i, neg = 1, true
	}
	var mant uint64
	nd, exp, intDigits := 0, 0, 0
	for ; i < len(b) && b[i]-'0' <= 9; i++ {
		if mant != 0 || b[i] != '0' {
			if nd == 19 {
				return 0, false
			}
			mant = mant*10 + uint64(b[i]-'0')
			nd++
		}
		intDigits++
	}
	if intDigits == 0 {
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		frac := 0
		for ; i < len(b) && b[i]-'0' <= 9; i++ {
			if mant != 0 || b[i] != '0' {
				if nd == 19 {
					return 0, false
				}
				mant = mant*10 + uint64(b[i]-'0')
				nd++
			}
			exp--
			frac++
		}
		if frac == 0 {
			return 0, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		eneg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			eneg = b[i] == '-'
			i++
		}
		e, ed := 0, 0
		for ; i < len(b) && b[i]-'0' <= 9; i++ {
			if e < 10000 {
				e = e*10 + int(b[i]-'0')
			}
			ed++
		}
		if ed == 0 {
			return 0, false
		}
		if eneg {
			e = -e
		}
		exp += e
	}
	if i != len(b) || mant > 1<<53 {
		return 0, false
	}
	f := float64(mant)
	switch {
	case mant == 0:
	case exp == 0:
	case exp > 0 && exp <= 22:
		f *= float64pow10[exp]
	case exp < 0 && exp >= -22:
		f /= float64pow10[-exp]
	default:
		return 0, false
	}
	if neg {
		f = -f
	}
	if bits == 32 && f != 0 {
		a := math.Abs(f)
		if a > math.MaxFloat32 || a < 0x1p-126 || math.Float64bits(f)&(1<<29-1) == 1<<28 {
			return 0, false
		}
		f = float64(float32(f))
	}
	return f, true
}

// maxTieText bounds the number text whose exact value is worked out with
// math/big when it parses to a float64 exactly halfway between two FP16
// values. A tie needs a magnitude within FP16's range, so the text's exponent
// is bounded by its length and big.Rat stays cheap.
const maxTieText = 100

// half parses a JSON number into IEEE 754 binary16, rounded once to nearest
// even.
func (d *decoder) half(t *runtime.Tensor, idx int, v *fastjson.Value) (uint16, error) {
	if v.Type() != fastjson.TypeNumber {
		f, err := d.float(t, idx, v, 64)
		if err != nil {
			return 0, err
		}
		h, _ := f16FromF64(f, nearestEven)
		return h, nil
	}
	f, err := d.float(t, idx, v, 64)
	if err != nil {
		return 0, err
	}
	h, tie := f16FromF64(f, nearestEven)
	if tie && len(d.num) <= maxTieText {
		// Decimal → float64 → binary16 rounds twice; the first rounding
		// can land exactly on a binary16 midpoint only from a decimal
		// that is not exactly there, so look at the decimal itself.
		if r, ok := new(big.Rat).SetString(b2s(d.num)); ok {
			m := new(big.Rat).SetFloat64(f)
			switch r.Abs(r).Cmp(m.Abs(m)) {
			case 1:
				h, _ = f16FromF64(f, awayFromZero)
			case -1:
				h, _ = f16FromF64(f, towardZero)
			}
		}
	}
	if h&0x7fff == 0x7c00 && !math.IsInf(f, 0) {
		return 0, d.errorf("%s %q: data element %d (%s) overflows FP16 (largest finite value 65504)", d.what, t.Name, idx, d.num)
	}
	return h, nil
}

func (d *decoder) elemErr(t *runtime.Tensor, idx int, v *fastjson.Value, rule string) error {
	return d.errorf("%s %q: data element %d is %s; %s", d.what, t.Name, idx, d.text(v), rule)
}

// text shows a JSON value in an error message, shortened.
func (d *decoder) text(v *fastjson.Value) string {
	b := v.MarshalTo(nil)
	if len(b) > 40 {
		return string(b[:37]) + "…"
	}
	return string(b)
}

// rawNumber returns the text of a JSON number in d.num, valid until the next
// call.
func (d *decoder) rawNumber(v *fastjson.Value) []byte {
	d.num = v.MarshalTo(d.num[:0])
	return d.num
}

// parseDecimal parses an optionally negative run of decimal digits that fits
// uint64; ok is false for anything else (fractions, exponents, overflow).
func parseDecimal(b []byte) (neg bool, mag uint64, ok bool) {
	if len(b) > 0 && b[0] == '-' {
		neg, b = true, b[1:]
	}
	if len(b) == 0 || len(b) > 20 {
		return neg, 0, false
	}
	for _, c := range b {
		c -= '0'
		if c > 9 || mag > (math.MaxUint64-uint64(c))/10 {
			return neg, 0, false
		}
		mag = mag*10 + uint64(c)
	}
	return neg, mag, true
}

// parseInt64 parses an integral JSON number (1, 1.0 and 1e0 alike) that fits
// int64.
func parseInt64(b []byte) (int64, bool) {
	if neg, mag, ok := parseDecimal(b); ok {
		if neg {
			if mag > 1<<63 {
				return 0, false
			}
			return int64(-mag), true
		}
		if mag > math.MaxInt64 {
			return 0, false
		}
		return int64(mag), true
	}
	f, err := strconv.ParseFloat(b2s(b), 64)
	if err != nil || f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63 {
		return 0, false
	}
	return int64(f), true
}

// intern returns prev when b spells it, so that decoding the same names again
// does not allocate.
func intern(prev string, b []byte) string {
	if prev == string(b) {
		return prev
	}
	return string(b)
}

// b2s views b as a string without copying. The result must not outlive the
// call it is passed to, nor b be changed while it is in use.
func b2s(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// roundMode selects how f16FromF64 rounds.
type roundMode uint8

const (
	nearestEven roundMode = iota
	towardZero
	awayFromZero
)

// f16FromF64 converts f to IEEE 754 binary16 bits. tie reports that f lies
// exactly halfway between two binary16 values. Overflow gives ±Inf (or the
// largest finite value toward zero); NaN stays NaN with its sign and the top
// of its payload, and quiet.
func f16FromF64(f float64, mode roundMode) (h uint16, tie bool) {
	b := math.Float64bits(f)
	sign := uint16(b>>48) & 0x8000
	exp := int(b>>52) & 0x7ff
	mant := b & (1<<52 - 1)
	if exp == 0x7ff {
		if mant != 0 {
			return sign | 0x7e00 | uint16(mant>>42), false
		}
		return sign | 0x7c00, false
	}
	if exp == 0 && mant == 0 {
		return sign, false
	}
	e := exp - 1023
	if e >= 16 { // ≥ 65536
		if mode == towardZero {
			return sign | 0x7bff, false
		}
		return sign | 0x7c00, false
	}
	sig := 1<<52 | mant
	var m uint64 // result magnitude bits before rounding
	var shift uint
	if e >= -14 { // normal binary16
		shift = 42
		m = uint64(e+15)<<10 | mant>>42
	} else { // subnormal binary16: units of 2^-24
		shift = uint(28 - e)
		if shift > 63 || exp == 0 { // far below half of 2^-24
			if mode == awayFromZero {
				return sign | 1, false
			}
			return sign, false
		}
		m = sig >> shift
	}
	rest := sig & (1<<shift - 1)
	halfway := uint64(1) << (shift - 1)
	tie = rest == halfway
	switch mode {
	case nearestEven:
		if rest > halfway || tie && m&1 == 1 {
			m++ // a carry moves into the exponent, up to 0x7c00 (Inf)
		}
	case awayFromZero:
		if rest != 0 {
			m++
		}
	}
	return sign | uint16(m), tie
}

// f16ToF32 converts IEEE 754 binary16 bits to float32 exactly.
func f16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch exp {
	case 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case 0:
		f := float32(mant) / (1 << 24) // exact: a power-of-two scaling
		if sign != 0 {
			f = -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

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
	if p := resp.Parameters; p != (ResponseParameters{}) || len(resp.Timings) > 0 {
		dst = append(dst, `,"parameters":{`...)
		sep := false
		for _, t := range resp.Timings {
			if sep {
				dst = append(dst, ',')
			}
			sep = true
			dst = appendJSONString(dst, t.Key)
			dst = append(dst, ':')
			dst = strconv.AppendInt(dst, t.NS, 10)
		}
		for _, f := range [...]struct {
			key string
			n   int64
		}{{"queue_time_ns", int64(p.QueueTime)}, {"infer_time_ns", int64(p.InferTime)}, {"batch_size", int64(p.BatchSize)}} {
			if f.n != 0 {
				if sep {
					dst = append(dst, ',')
				}
				sep = true
				dst = append(dst, '"')
				dst = append(dst, f.key...)
				dst = append(dst, `":`...)
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
	jsonLen = len(dst) - start
	if binary {
		for i := range req.Inputs {
			dst = append(dst, req.Inputs[i].Data...)
		}
	}
	return dst, jsonLen
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
func appendTensor(dst []byte, t *runtime.Tensor, binary bool) []byte {
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
func appendData(dst []byte, t *runtime.Tensor) []byte {
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

// appendHalf writes binary16 h with the fewest significant digits (at most 5)
// that read back to h, so 0.1 stays "0.1" instead of float32's 0.099975586.
func appendHalf(dst []byte, h uint16) []byte {
	f := float64(f16ToF32(h))
	if h&0x7c00 == 0x7c00 || f == 0 {
		return appendFloat(dst, f, 64)
	}
	var buf [32]byte
	for prec := 0; prec < 5; prec++ {
		s := strconv.AppendFloat(buf[:0], f, 'e', prec, 64)
		g, err := strconv.ParseFloat(b2s(s), 64)
		if err != nil {
			break
		}
		if back, tie := f16FromF64(g, nearestEven); back == h && !tie {
			// g is the float64 nearest a ≤5-digit decimal, so its
			// shortest float64 form is that decimal.
			return appendFloat(dst, g, 64)
		}
	}
	return appendFloat(dst, f, 32)
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
