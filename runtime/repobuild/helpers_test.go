package repobuild

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	mlrt "github.com/ipa-serving/ipa/runtime"
	"github.com/ipa-serving/ipa/runtime/onnxpb"
)

// initORT loads ONNX Runtime for tests. It fails, never skips, when the
// library is missing: `make test` installs it (STYLE.md 3.8, bullet 35).
func initORT(t testing.TB) {
	t.Helper()
	lib := os.Getenv("IPA_ORT_LIB")
	if lib == "" {
		lib = "../../.deps/lib/libonnxruntime.so.1"
	}
	if err := mlrt.Init(lib); err != nil {
		t.Fatalf("ONNX Runtime is required (run `make deps` or set IPA_ORT_LIB): %v", err)
	}
}

// rawDir returns the raw models directory, failing when it is missing.
func rawDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("IPA_RAW_DIR")
	if dir == "" {
		dir = "../../.deps/raw"
	}
	if _, err := os.Stat(filepath.Join(dir, "imagenet")); err != nil {
		t.Fatalf("raw models are required (run `make deps` or set IPA_RAW_DIR): %v", err)
	}
	return dir
}

// Builders for small ONNX graphs.

func floatInit(name string, dims []int64, rng *rand.Rand) *onnxpb.TensorProto {
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	f := make([]float32, n)
	for i := range f {
		f[i] = float32(rng.NormFloat64())
	}
	return &onnxpb.TensorProto{Name: proto.String(name), DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), Dims: dims, FloatData: f}
}

func int64Init(name string, v ...int64) *onnxpb.TensorProto {
	return &onnxpb.TensorProto{Name: proto.String(name), DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), Dims: []int64{int64(len(v))}, Int64Data: v}
}

func node(op string, in, out []string, attrs ...*onnxpb.AttributeProto) *onnxpb.NodeProto {
	return &onnxpb.NodeProto{Name: proto.String(out[0] + "_node"), OpType: proto.String(op), Input: in, Output: out, Attribute: attrs}
}

func intsAttr(name string, v ...int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: v}
}

func floatValueInfo(name string, dims ...int64) *onnxpb.ValueInfoProto {
	return valueInfo(name, onnxpb.TensorProto_FLOAT, dims)
}

// model wraps a graph; with IR < 4 every initializer is also a graph input,
// as in the light ImageNet models.
func model(ir int64, opset int64, g *onnxpb.GraphProto) *onnxpb.ModelProto {
	if ir < 4 {
		for _, t := range g.Initializer {
			dt := onnxpb.TensorProto_DataType(t.GetDataType())
			g.Input = append(g.Input, valueInfo(t.GetName(), dt, t.GetDims()))
		}
	}
	return &onnxpb.ModelProto{
		IrVersion:   proto.Int64(ir),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(opset)}},
		Graph:       g,
	}
}

// convNet is a batch-1 model with random weights whose activation Reshape
// shares its shape initializer with a Reshape on the weight path:
//
//	x[1,3,8,8] → Conv → Relu → Reshape(shape) → Add(Reshape(bias, shape)) → MatMul → Softmax → y[1,10]
//
// Rewriting the shared [1,256] in place would turn the weight-path Reshape
// into [0,256], i.e. [256,256], and break the model.
func convNet(ir, opset int64) *onnxpb.ModelProto {
	rng := rand.New(rand.NewPCG(7, 8))
	g := &onnxpb.GraphProto{
		Name: proto.String("convnet"),
		Node: []*onnxpb.NodeProto{
			node("Conv", []string{"x", "w1"}, []string{"c"}, intsAttr("pads", 1, 1, 1, 1), intsAttr("kernel_shape", 3, 3)),
			node("Relu", []string{"c"}, []string{"r"}),
			node("Reshape", []string{"r", "shape"}, []string{"f"}),
			node("Reshape", []string{"bias", "shape"}, []string{"b"}),
			node("Add", []string{"f", "b"}, []string{"a"}),
			node("MatMul", []string{"a", "w2"}, []string{"logits"}),
			node("Softmax", []string{"logits"}, []string{"y"}),
		},
		Initializer: []*onnxpb.TensorProto{
			floatInit("w1", []int64{4, 3, 3, 3}, rng),
			int64Init("shape", 1, 256),
			floatInit("bias", []int64{256}, rng),
			floatInit("w2", []int64{256, 10}, rng),
		},
		Input:     []*onnxpb.ValueInfoProto{floatValueInfo("x", 1, 3, 8, 8)},
		Output:    []*onnxpb.ValueInfoProto{floatValueInfo("y", 1, 10)},
		ValueInfo: []*onnxpb.ValueInfoProto{floatValueInfo("f", 1, 256)},
	}
	return model(ir, opset, g)
}

// poolNet ends in a [1,10,1,1] output like the light squeezenet and
// densenet121: x[1,3,8,8] → Conv → Relu → GlobalAveragePool → Conv 1×1 → out_0[1,10,1,1].
func poolNet(ir, opset int64) *onnxpb.ModelProto {
	rng := rand.New(rand.NewPCG(9, 10))
	g := &onnxpb.GraphProto{
		Name: proto.String("poolnet"),
		Node: []*onnxpb.NodeProto{
			node("Conv", []string{"gpu_0/data_0", "w1"}, []string{"c"}, intsAttr("pads", 1, 1, 1, 1), intsAttr("kernel_shape", 3, 3)),
			node("Relu", []string{"c"}, []string{"r"}),
			node("GlobalAveragePool", []string{"r"}, []string{"p"}),
			node("Conv", []string{"p", "w2"}, []string{"out_0"}, intsAttr("kernel_shape", 1, 1)),
		},
		Initializer: []*onnxpb.TensorProto{
			floatInit("w1", []int64{4, 3, 3, 3}, rng),
			floatInit("w2", []int64{10, 4, 1, 1}, rng),
		},
		Input:  []*onnxpb.ValueInfoProto{floatValueInfo("gpu_0/data_0", 1, 3, 8, 8)},
		Output: []*onnxpb.ValueInfoProto{floatValueInfo("out_0", 1, 10, 1, 1)},
	}
	return model(ir, opset, g)
}

func marshal(t testing.TB, m *onnxpb.ModelProto) []byte {
	t.Helper()
	b, err := marshalModel(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func initializer(g *onnxpb.GraphProto, name string) *onnxpb.TensorProto {
	for _, t := range g.GetInitializer() {
		if t.GetName() == name {
			return t
		}
	}
	return nil
}

func nodeByOutput(g *onnxpb.GraphProto, out string) *onnxpb.NodeProto {
	for _, n := range g.GetNode() {
		if firstOr(n.GetOutput()) == out {
			return n
		}
	}
	return nil
}
