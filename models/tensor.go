package models

import (
	"fmt"
	"strings"
)

// DataType is a tensor element type, named as in the Open Inference Protocol
// (KServe V2) "datatype" field.
type DataType uint8

// The element types ipa can carry. BYTES (strings) is accepted by the protocol
// layer for image payloads but never handed to an ONNX engine.
const (
	Invalid DataType = iota
	BOOL
	UINT8
	UINT16
	UINT32
	UINT64
	INT8
	INT16
	INT32
	INT64
	FP16
	FP32
	FP64
	BYTES
)

var dataTypeNames = [...]string{
	Invalid: "INVALID",
	BOOL:    "BOOL",
	UINT8:   "UINT8",
	UINT16:  "UINT16",
	UINT32:  "UINT32",
	UINT64:  "UINT64",
	INT8:    "INT8",
	INT16:   "INT16",
	INT32:   "INT32",
	INT64:   "INT64",
	FP16:    "FP16",
	FP32:    "FP32",
	FP64:    "FP64",
	BYTES:   "BYTES",
}

var dataTypeSizes = [...]int{
	BOOL: 1, UINT8: 1, UINT16: 2, UINT32: 4, UINT64: 8,
	INT8: 1, INT16: 2, INT32: 4, INT64: 8, FP16: 2, FP32: 4, FP64: 8,
}

// String returns the protocol name of t, e.g. "FP32".
func (t DataType) String() string {
	if int(t) < len(dataTypeNames) {
		return dataTypeNames[t]
	}
	return fmt.Sprintf("DataType(%d)", uint8(t))
}

// Size returns the size of one element in bytes, or 0 for BYTES and Invalid.
func (t DataType) Size() int {
	if int(t) < len(dataTypeSizes) {
		return dataTypeSizes[t]
	}
	return 0
}

// ParseDataType parses a protocol datatype name such as "FP32" (case-insensitive).
func ParseDataType(s string) (DataType, error) {
	for i, n := range dataTypeNames {
		if i != int(Invalid) && strings.EqualFold(n, s) {
			return DataType(i), nil
		}
	}
	return Invalid, fmt.Errorf("unknown datatype %q; use one of BOOL, UINT8…UINT64, INT8…INT64, FP16, FP32, FP64, BYTES", s)
}

// MarshalText implements encoding.TextMarshaler.
func (t DataType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (t *DataType) UnmarshalText(b []byte) error {
	v, err := ParseDataType(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// Dynamic marks a dimension whose size is chosen per request (-1 in shapes).
const Dynamic = -1

// TensorSpec describes one input or output of a model variant. Shape uses
// Dynamic (-1) for dimensions that vary; dimension 0 is the batch dimension.
type TensorSpec struct {
	Name     string   `json:"name"`
	DataType DataType `json:"datatype"`
	Shape    []int64  `json:"shape"`
}

// String formats s as name:FP32[-1,3,224,224].
func (s TensorSpec) String() string {
	return fmt.Sprintf("%s:%s%s", s.Name, s.DataType, FormatShape(s.Shape))
}

// FormatShape formats a shape as [a,b,c].
func FormatShape(shape []int64) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, d := range shape {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, d)
	}
	b.WriteByte(']')
	return b.String()
}

// Elements returns the number of elements of a concrete shape, or -1 when a
// dimension is negative or the count overflows int.
func Elements(shape []int64) int {
	n := 1
	for _, d := range shape {
		if d < 0 {
			return -1
		}
		if d != 0 && n > (1<<53)/int(d) {
			return -1
		}
		n *= int(d)
	}
	return n
}

// Check reports whether a concrete tensor of type dt and shape fits the spec,
// with an error that says what to fix.
func (s TensorSpec) Check(dt DataType, shape []int64) error {
	if dt != s.DataType {
		return fmt.Errorf("input %q has datatype %s; the model expects %s", s.Name, dt, s.DataType)
	}
	if len(shape) != len(s.Shape) {
		return fmt.Errorf("input %q has shape %s; the model expects %d dimensions %s", s.Name, FormatShape(shape), len(s.Shape), FormatShape(s.Shape))
	}
	for i, d := range shape {
		if d < 0 {
			return fmt.Errorf("input %q has negative dimension %d in shape %s", s.Name, i, FormatShape(shape))
		}
		if i == 0 && d == 0 {
			return fmt.Errorf("input %q has an empty batch (shape %s)", s.Name, FormatShape(shape))
		}
		if s.Shape[i] >= 0 && s.Shape[i] != d {
			return fmt.Errorf("input %q has shape %s; the model expects %s (dimension %d must be %d)", s.Name, FormatShape(shape), FormatShape(s.Shape), i, s.Shape[i])
		}
	}
	return nil
}

// Tensor is a dense tensor whose Data holds the elements in row-major order as
// little-endian bytes (the Open Inference Protocol's binary layout).
type Tensor struct {
	Name     string
	DataType DataType
	Shape    []int64
	Data     []byte
}

// Batch returns dimension 0 of t (the batch size), or 0 for a scalar.
func (t *Tensor) Batch() int {
	if len(t.Shape) == 0 {
		return 0
	}
	return int(t.Shape[0])
}

// TensorNames returns the names of specs, in order.
func TensorNames(specs []TensorSpec) []string {
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	return names
}
