package v2codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/ipa-serving/ipa/models"
	"github.com/valyala/fastjson"
)

// parse splits body at headerLen and parses its JSON part, which must be an
// object; what ("request" or "response") names it in errors.
func (d *decoder) parse(body []byte, headerLen int, what string) (*fastjson.Object, []byte, error) {
	jsonPart, binPart, err := d.split(body, headerLen)
	if err != nil {
		return nil, nil, err
	}
	// RFC 8259 lets a parser ignore a byte order mark, which some
	// clients' UTF-8 encoders write.
	jsonPart = bytes.TrimPrefix(jsonPart, utf8BOM)
	root, err := d.p.ParseBytes(jsonPart)
	if err != nil {
		if headerLen >= 0 && strings.Contains(err.Error(), "unexpected tail") {
			return nil, nil, d.errorf("cannot parse the JSON %s: its %d bytes (Inference-Header-Content-Length) go on after the JSON object; is that the JSON header's length? (%s)", what, headerLen, err)
		}
		return nil, nil, d.errorf("cannot parse the JSON %s: %s", what, err)
	}
	obj, err := root.Object()
	if err != nil {
		return nil, nil, d.errorf("the %s must be a JSON object, not %s", what, root.Type())
	}
	return obj, binPart, nil
}

// utf8BOM is the byte order mark a JSON part may start with.
var utf8BOM = []byte("\ufeff")

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
func (d *decoder) tensors(v *fastjson.Value, ts []models.Tensor, binPart []byte, haveHeaderLen bool) ([]models.Tensor, error) {
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
			ts = append(ts, models.Tensor{})
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

func (d *decoder) duplicates(ts []models.Tensor) error {
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
func (d *decoder) tensorHeader(v *fastjson.Value, i int, t *models.Tensor, s *tensorSlot) error {
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
func (d *decoder) binaryData(t *models.Tensor, b []byte) error {
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
func (d *decoder) jsonData(t *models.Tensor, v *fastjson.Value) error {
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
func (d *decoder) fill(t *models.Tensor, vals []*fastjson.Value, idx int) (int, error) {
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
func (d *decoder) leaves(t *models.Tensor, vals []*fastjson.Value, base int) error {
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
func (d *decoder) integer(t *models.Tensor, idx int, v *fastjson.Value, lim limits) (uint64, error) {
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

func (d *decoder) rangeErr(t *models.Tensor, idx int, lim limits) error {
	lo := "0"
	if lim.signed {
		lo = strconv.FormatInt(lim.min, 10)
	}
	return d.errorf("%s %q: data element %d (%s) is out of range for %s [%s, %d]", d.what, t.Name, idx, d.num, t.DataType, lo, lim.max)
}

// float parses a JSON number, or the string spelling of NaN/±Inf, rounded
// once to bits (32 or 64).
func (d *decoder) float(t *models.Tensor, idx int, v *fastjson.Value, bits int) (float64, error) {
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

func (d *decoder) elemErr(t *models.Tensor, idx int, v *fastjson.Value, rule string) error {
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
