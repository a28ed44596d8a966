package repobuild

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/runtime/onnxpb"
)

// Constant inputs and dropped outputs (`ipa models add --const`,
// `--batch-axis`, `--drop-output`). ipa batches requests along dimension 0
// of every input and output, so a model with a scalar input (Silero VAD's
// `sr`), a recurrent state whose batch is another dimension (`state`
// [2,N,128]) or an output of that kind (`stateN`) cannot be served as
// shipped. When such an input is a constant for the use at hand (one
// sampling rate; a zero state: each request is scored on its own, no state
// is carried between requests), add bakes it into the graph: a fixed shape
// is computed from the batch (see fixedConstant); a shape whose batch is
// dimension k (--batch-axis) becomes ConstantOfShape of [d0, …, N, …] with
// N read from the batch of a remaining input, so the baked tensor follows
// the batch. Outputs the
// client has no use for are dropped from the graph's outputs (their nodes
// stay). What was baked is published in variant.json (constants,
// dropped_outputs).

// bakeConstants rewrites m: every input of consts becomes a constant of
// its value (batchAxis gives the dimension that follows the batch, for
// shapes with a dynamic dimension), and every output of drop stops being
// an output. It returns what variant.json records.
func bakeConstants(m *onnxpb.ModelProto, consts map[string]float64, batchAxis map[string]int, drop []string) ([]models.Constant, error) {
	g := m.GetGraph()
	in := realInputs(g)
	names := make([]string, len(in))
	for i, vi := range in {
		names[i] = vi.GetName()
	}
	for name := range batchAxis {
		if _, ok := consts[name]; !ok {
			return nil, fmt.Errorf("--batch-axis %s: only a constant input (--const %s=VALUE) may have its batch elsewhere than dimension 0", name, name)
		}
	}
	var out []models.Constant
	var nodes []*onnxpb.NodeProto
	used := tensorNames(g)
	batchOf := "" // the input whose dimension 0 gives N
	for _, vi := range in {
		d := vi.GetType().GetTensorType().GetShape().GetDim()
		if _, isConst := consts[vi.GetName()]; !isConst && len(d) > 0 && d[0].GetDimValue() <= 0 {
			batchOf = vi.GetName()
			break
		}
	}
	var n string // N as an INT64 [1], computed once
	batchN := func() string {
		if n == "" {
			shapeOut, zero := uniqueName(used, "baked_shape"), uniqueName(used, "baked_zero")
			n = uniqueName(used, "baked_n")
			g.Initializer = append(g.Initializer, int64Tensor(zero, []int64{1}, 0))
			nodes = append(nodes, bakeNode(used, "Shape", []string{batchOf}, shapeOut), bakeNode(used, "Gather", []string{shapeOut, zero}, n, intAttr("axis", 0)))
		}
		return n
	}
	for _, name := range slices.Sorted(maps.Keys(consts)) {
		i := slices.Index(names, name)
		if i < 0 {
			return nil, fmt.Errorf("--const %s: the model has no input %q (inputs %v)", name, name, names)
		}
		value := consts[name]
		tt := in[i].GetType().GetTensorType()
		if tt == nil {
			return nil, fmt.Errorf("--const %s: input %q is not a tensor", name, name)
		}
		dt := onnxpb.TensorProto_DataType(tt.GetElemType())
		mdt, ok := bakeTypes[dt]
		if !ok {
			return nil, fmt.Errorf("--const %s: input %q has element type %s; constants may be FLOAT, DOUBLE, INT32 or INT64", name, name, dt)
		}
		if mdt != models.FP32 && mdt != models.FP64 && value != math.Trunc(value) {
			return nil, fmt.Errorf("--const %s=%v: input %q is %s, the value must be an integer", name, value, name, mdt)
		}
		if mdt == models.INT32 && (value > math.MaxInt32 || value < math.MinInt32) {
			return nil, fmt.Errorf("--const %s=%v: out of the range of INT32", name, value)
		}
		shape := make([]int64, len(tt.GetShape().GetDim()))
		axis, hasAxis := batchAxis[name]
		if hasAxis && (axis < 0 || axis >= len(shape)) {
			return nil, fmt.Errorf("--batch-axis %s=%d: input %q is %s, the axis must be in [0, %d]", name, axis, name, shapeText(tt.GetShape().GetDim()), len(shape)-1)
		}
		for d, dim := range tt.GetShape().GetDim() {
			switch {
			case hasAxis && d == axis:
				shape[d] = models.Dynamic
			case dim.GetDimValue() > 0:
				shape[d] = dim.GetDimValue()
			case hasAxis:
				return nil, fmt.Errorf("--const %s: input %q is %s: dimension %d has no size (only the batch axis %d may be dynamic)", name, name, shapeText(tt.GetShape().GetDim()), d, axis)
			default:
				return nil, fmt.Errorf("--const %s: input %q is %s: dimension %d has no size; if it is the batch, say so with --batch-axis %s=%d (the constant then follows the batch)", name, name, shapeText(tt.GetShape().GetDim()), d, name, d)
			}
		}
		c := models.Constant{Name: name, DataType: mdt, Shape: shape, Value: value}
		switch {
		case hasAxis && batchOf == "":
			return nil, fmt.Errorf("--batch-axis %s=%d: no other input has a dynamic dimension 0 to take the batch from", name, axis)
		case batchOf != "" && opsetOf(m) < 9:
			return nil, fmt.Errorf("--const %s: the model imports ai.onnx opset %d; a baked constant needs ConstantOfShape (opset 9)", name, opsetOf(m))
		case hasAxis:
			ax := axis
			c.BatchAxis = &ax
			nodes = append(nodes, batchedConstant(g, used, name, dt, mdt, value, shape, axis, batchN())...)
		case batchOf != "":
			// A fixed constant is the batch's ConstantOfShape too ([N] of
			// value, then its first element reshaped): ONNX Runtime must not
			// constant-fold through it. Its folding of the If that Silero
			// VAD branches on sr with leaves a model it cannot load (1.24.3:
			// SaveInitializedTensors, HasExternalDataInMemory).
			nodes = append(nodes, fixedConstant(g, used, name, dt, mdt, value, shape, batchN())...)
		default:
			t := &onnxpb.TensorProto{Name: proto.String(name), DataType: proto.Int32(int32(dt)), Dims: shape, RawData: fill(mdt, value, models.Elements(shape))}
			g.Initializer = append(g.Initializer, t)
		}
		out = append(out, c)
		g.Input = slices.DeleteFunc(g.Input, func(vi *onnxpb.ValueInfoProto) bool { return vi.GetName() == name })
	}
	if len(nodes) > 0 {
		g.Node = append(nodes, g.Node...)
	}
	outs := make([]string, len(g.GetOutput()))
	for i, o := range g.GetOutput() {
		outs[i] = o.GetName()
	}
	for _, name := range drop {
		if !slices.Contains(outs, name) {
			return nil, fmt.Errorf("--drop-output %s: the model has no output %q (outputs %v)", name, name, outs)
		}
	}
	g.Output = slices.DeleteFunc(g.Output, func(vi *onnxpb.ValueInfoProto) bool { return slices.Contains(drop, vi.GetName()) })
	if len(g.GetOutput()) == 0 {
		return nil, fmt.Errorf("--drop-output: %v are all the model's outputs; keep at least one", drop)
	}
	if len(realInputs(g)) == 0 {
		return nil, fmt.Errorf("--const: every input of the model is a constant; keep at least one for the requests")
	}
	return out, nil
}

// batchedConstant returns the nodes computing name = ConstantOfShape(shape
// with dimension axis set to n, the batch).
func batchedConstant(g *onnxpb.GraphProto, used map[string]bool, name string, dt onnxpb.TensorProto_DataType, mdt models.DataType, value float64, shape []int64, axis int, n string) []*onnxpb.NodeProto {
	var concat []string
	if axis > 0 {
		before := uniqueName(used, name+"_before")
		g.Initializer = append(g.Initializer, int64Tensor(before, []int64{int64(axis)}, shape[:axis]...))
		concat = append(concat, before)
	}
	concat = append(concat, n)
	if axis+1 < len(shape) {
		after := uniqueName(used, name+"_after")
		g.Initializer = append(g.Initializer, int64Tensor(after, []int64{int64(len(shape) - axis - 1)}, shape[axis+1:]...))
		concat = append(concat, after)
	}
	target := uniqueName(used, name+"_shape")
	return []*onnxpb.NodeProto{
		bakeNode(used, "Concat", concat, target, intAttr("axis", 0)),
		bakeNode(used, "ConstantOfShape", []string{target}, name, valueAttr(dt, mdt, value)),
	}
}

// fixedConstant returns the nodes computing name, of the fixed shape, from
// the batch n: ConstantOfShape(n) gives [N] of value, Slice keeps one
// element, Reshape gives it the shape... or Expand does for a tensor.
func fixedConstant(g *onnxpb.GraphProto, used map[string]bool, name string, dt onnxpb.TensorProto_DataType, mdt models.DataType, value float64, shape []int64, n string) []*onnxpb.NodeProto {
	row, one, zero, first, target := uniqueName(used, name+"_row"), uniqueName(used, name+"_one"), uniqueName(used, name+"_start"), uniqueName(used, name+"_first"), uniqueName(used, name+"_shape")
	g.Initializer = append(g.Initializer, int64Tensor(zero, []int64{1}, 0), int64Tensor(one, []int64{1}, 1), int64Tensor(target, []int64{int64(len(shape))}, shape...))
	last := bakeNode(used, "Reshape", []string{first, target}, name)
	if len(shape) > 0 {
		last = bakeNode(used, "Expand", []string{first, target}, name)
	}
	return []*onnxpb.NodeProto{
		bakeNode(used, "ConstantOfShape", []string{n}, row, valueAttr(dt, mdt, value)),
		bakeNode(used, "Slice", []string{row, zero, one}, first),
		last,
	}
}

func bakeNode(used map[string]bool, op string, in []string, out string, attrs ...*onnxpb.AttributeProto) *onnxpb.NodeProto {
	return &onnxpb.NodeProto{Name: proto.String(uniqueName(used, out+"_"+strings.ToLower(op))), OpType: proto.String(op), Input: in, Output: []string{out}, Attribute: attrs}
}

func intAttr(name string, v int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

func valueAttr(dt onnxpb.TensorProto_DataType, mdt models.DataType, value float64) *onnxpb.AttributeProto {
	t := &onnxpb.TensorProto{Name: proto.String("value"), DataType: proto.Int32(int32(dt)), Dims: []int64{1}, RawData: fill(mdt, value, 1)}
	return &onnxpb.AttributeProto{Name: proto.String("value"), Type: onnxpb.AttributeProto_TENSOR.Enum(), T: t}
}

func int64Tensor(name string, dims []int64, v ...int64) *onnxpb.TensorProto {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
	}
	return &onnxpb.TensorProto{Name: proto.String(name), DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), Dims: dims, RawData: b}
}

var bakeTypes = map[onnxpb.TensorProto_DataType]models.DataType{
	onnxpb.TensorProto_FLOAT: models.FP32, onnxpb.TensorProto_DOUBLE: models.FP64,
	onnxpb.TensorProto_INT32: models.INT32, onnxpb.TensorProto_INT64: models.INT64,
}

// fill returns n elements of value as dt's little-endian bytes.
func fill(dt models.DataType, value float64, n int) []byte {
	size := dt.Size()
	b := make([]byte, size*n)
	for i := 0; i < n; i++ {
		p := b[i*size:]
		switch dt {
		case models.FP32:
			binary.LittleEndian.PutUint32(p, math.Float32bits(float32(value)))
		case models.FP64:
			binary.LittleEndian.PutUint64(p, math.Float64bits(value))
		case models.INT32:
			binary.LittleEndian.PutUint32(p, uint32(int32(value)))
		case models.INT64:
			binary.LittleEndian.PutUint64(p, uint64(int64(value)))
		}
	}
	return b
}

func opsetOf(m *onnxpb.ModelProto) int64 {
	for _, o := range m.GetOpsetImport() {
		if d := o.GetDomain(); d == "" || d == "ai.onnx" {
			return o.GetVersion()
		}
	}
	return 0
}

// shapeText writes dims as ipa does: -1 for a dimension without a size.
func shapeText(dims []*onnxpb.TensorShapeProto_Dimension) string {
	s := make([]int64, len(dims))
	for i, d := range dims {
		s[i] = models.Dynamic
		if d.GetDimValue() > 0 {
			s[i] = d.GetDimValue()
		}
	}
	return models.FormatShape(s)
}
