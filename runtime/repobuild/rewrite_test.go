package repobuild

import (
	"context"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/runtime/onnxpb"
)

func TestMakeBatchDynamicLeavesSharedShapeInitializerAlone(t *testing.T) {
	f := func(ir int64) {
		t.Helper()
		m := convNet(ir, 9)
		nInputs := len(m.Graph.Input)
		res, err := makeBatchDynamic(m)
		if err != nil {
			t.Fatalf("IR %d: %v", ir, err)
		}
		g := m.Graph
		if len(res.Reshapes) != 1 || res.Reshapes[0].OldShape != "shape" {
			t.Fatalf("IR %d: rewritten reshapes %+v; want only the activation one", ir, res.Reshapes)
		}
		newName := res.Reshapes[0].NewShape
		if got := nodeByOutput(g, "f").Input[1]; got != newName {
			t.Errorf("IR %d: activation Reshape reads shape %q; want %q", ir, got, newName)
		}
		if got := nodeByOutput(g, "b").Input[1]; got != "shape" {
			t.Errorf("IR %d: weight-path Reshape reads shape %q; want the original %q", ir, got, "shape")
		}
		if v, _ := int64Values(initializer(g, "shape")); !slices.Equal(v, []int64{1, 256}) {
			t.Errorf("IR %d: shared initializer edited to %v", ir, v)
		}
		if v, _ := int64Values(initializer(g, newName)); !slices.Equal(v, []int64{0, 256}) {
			t.Errorf("IR %d: new initializer %v; want [0 256]", ir, v)
		}
		inInputs := slices.ContainsFunc(g.Input, func(vi *onnxpb.ValueInfoProto) bool { return vi.GetName() == newName })
		if wantIn := ir < 4; inInputs != wantIn {
			t.Errorf("IR %d: new initializer listed in graph.input: %v; want %v", ir, inInputs, wantIn)
		}
		if ir >= 4 && len(g.Input) != nInputs {
			t.Errorf("IR %d: graph.input grew from %d to %d", ir, nInputs, len(g.Input))
		}
		if len(g.ValueInfo) != 0 {
			t.Errorf("IR %d: value_info kept (%d entries)", ir, len(g.ValueInfo))
		}
		if !slices.Equal(res.Relabelled, []string{"x", "y"}) {
			t.Errorf("IR %d: relabelled %v; want [x y]", ir, res.Relabelled)
		}
		for _, vi := range []*onnxpb.ValueInfoProto{realInputs(g)[0], g.Output[0]} {
			if d := vi.GetType().GetTensorType().GetShape().GetDim()[0]; d.GetDimParam() != batchParam {
				t.Errorf("IR %d: %s dim 0 is %v; want dim_param %q", ir, vi.GetName(), d, batchParam)
			}
		}
	}
	f(3)
	f(8)
}

func TestMakeBatchDynamicSkipsReshapesThatKeepTheBatch(t *testing.T) {
	f := func(shape []int64, allowZero bool, want []int64, wantErr bool) {
		t.Helper()
		m := convNet(8, 14)
		initializer(m.Graph, "shape").Int64Data = shape
		if allowZero {
			nodeByOutput(m.Graph, "f").Attribute = []*onnxpb.AttributeProto{{
				Name: proto.String("allowzero"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(1)}}
		}
		res, err := makeBatchDynamic(m)
		if wantErr {
			if err == nil {
				t.Fatalf("shape %v allowzero %v: no error", shape, allowZero)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if want == nil {
			if len(res.Reshapes) != 0 {
				t.Fatalf("shape %v: rewritten %+v; want untouched", shape, res.Reshapes)
			}
			return
		}
		if len(res.Reshapes) != 1 || !slices.Equal(res.Reshapes[0].Shape, want) {
			t.Fatalf("shape %v allowzero %v: rewritten %+v; want %v", shape, allowZero, res.Reshapes, want)
		}
	}
	f([]int64{-1, 256}, false, nil, false) // already follows the batch
	f([]int64{4, 64}, false, nil, false)   // does not start with 1
	f([]int64{1, 256}, false, []int64{0, 256}, false)
	f([]int64{1, 256}, true, []int64{-1, 256}, false) // 0 would be a literal zero
	f([]int64{1, -1}, true, nil, true)
}

func TestMakeBatchDynamicReadsConstantNodeShapes(t *testing.T) {
	m := convNet(8, 11)
	g := m.Graph
	// Move the activation Reshape's shape into a Constant node with raw data.
	c := int64Init("shape_c", 1, 256)
	c.RawData = []byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	c.Int64Data = nil
	g.Node = append([]*onnxpb.NodeProto{node("Constant", nil, []string{"shape_c"}, &onnxpb.AttributeProto{
		Name: proto.String("value"), Type: onnxpb.AttributeProto_TENSOR.Enum(), T: c})}, g.Node...)
	nodeByOutput(g, "f").Input[1] = "shape_c"
	res, err := makeBatchDynamic(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Reshapes) != 1 || res.Reshapes[0].OldShape != "shape_c" || !slices.Equal(res.Reshapes[0].Shape, []int64{0, 256}) {
		t.Fatalf("rewritten %+v; want shape_c → [0 256]", res.Reshapes)
	}
}

func TestNormalizeIOFlattensRank4Output(t *testing.T) {
	m := poolNet(3, 9)
	did, err := normalizeIO(m, ioNormalization{Input: "data", Output: "prob"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(did, "flattened") {
		t.Errorf("normalizeIO said %q; want a flatten", did)
	}
	g := m.Graph
	if in := realInputs(g); len(in) != 1 || in[0].GetName() != "data" {
		t.Fatalf("inputs %v; want data", in)
	}
	if nodeByOutput(g, "c").Input[0] != "data" {
		t.Errorf("first Conv still reads %q", nodeByOutput(g, "c").Input[0])
	}
	last := g.Node[len(g.Node)-1]
	if last.GetOpType() != "Flatten" || last.Input[0] != "out_0" || last.Output[0] != "prob" {
		t.Errorf("last node %v; want Flatten(out_0) → prob", last)
	}
	if len(g.Output) != 1 || g.Output[0].GetName() != "prob" || formatDims(g.Output[0].GetType().GetTensorType().GetShape().GetDim()) != "[1,10]" {
		t.Errorf("outputs %v; want prob [1,10]", g.Output)
	}

	// A rank-2 output is renamed, not flattened.
	m = convNet(8, 11)
	if _, err := normalizeIO(m, ioNormalization{Input: "data", Output: "prob"}); err != nil {
		t.Fatal(err)
	}
	if g := m.Graph; g.Output[0].GetName() != "prob" || nodeByOutput(g, "prob").GetOpType() != "Softmax" {
		t.Errorf("output %q; want the Softmax renamed to prob", g.Output[0].GetName())
	}
	// Names already taken are refused.
	if _, err := normalizeIO(convNet(8, 11), ioNormalization{Input: "r", Output: "prob"}); err == nil {
		t.Error("renaming the input onto an existing value succeeded")
	}
}

func TestMaskedOutputsFindsNMSMask(t *testing.T) {
	g := &onnxpb.GraphProto{
		Node: []*onnxpb.NodeProto{
			node("Sigmoid", []string{"x"}, []string{"h"}),
			node("MaxPool", []string{"h"}, []string{"mp"}, intsAttr("kernel_shape", 3, 3), intsAttr("pads", 1, 1, 1, 1)),
			node("Equal", []string{"h", "mp"}, []string{"eq"}),
			node("Cast", []string{"eq"}, []string{"mask"}),
			node("Mul", []string{"h", "mask"}, []string{"scores"}),
			node("Mul", []string{"h", "h"}, []string{"squared"}),
		},
		Input:  []*onnxpb.ValueInfoProto{floatValueInfo("x", 1, 1, 8, 8)},
		Output: []*onnxpb.ValueInfoProto{floatValueInfo("scores", 1, 1, 8, 8), floatValueInfo("squared", 1, 1, 8, 8)},
	}
	got := maskedOutputs(g)
	if len(got) != 1 || got["scores"] != "h" {
		t.Fatalf("maskedOutputs = %v; want scores → h", got)
	}
	probes := probeOutputs(&onnxpb.ModelProto{Graph: g}, rewriteResult{})
	if !slices.Equal(probes, []string{"h"}) {
		t.Errorf("probes %v; want [h]", probes)
	}
}

func TestRandomizeWeightsReplacesPlaceholders(t *testing.T) {
	// Placeholders as in the light models: ConstantOfShape(shape initializer).
	g := &onnxpb.GraphProto{
		Node: []*onnxpb.NodeProto{
			node("ConstantOfShape", []string{"w__SHAPE"}, []string{"w"}),
			node("ConstantOfShape", []string{"v__SHAPE"}, []string{"v"}),
			node("ConstantOfShape", []string{"big__SHAPE"}, []string{"big"}),
		},
		Initializer: []*onnxpb.TensorProto{int64Init("w__SHAPE", 8, 3, 3, 3), int64Init("v__SHAPE", 8), int64Init("big__SHAPE", 1000, 1000)},
	}
	m := model(3, 9, g)
	n, err := randomizeWeights(m, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("replaced %d placeholders; want 2 (big stays)", n)
	}
	if len(g.Node) != 1 || g.Node[0].Output[0] != "big" {
		t.Errorf("nodes left %v; want only big's ConstantOfShape", g.Node)
	}
	w, v := initializer(g, "w"), initializer(g, "v")
	if w == nil || v == nil || len(w.RawData) != 4*8*27 || len(v.RawData) != 4*8 {
		t.Fatalf("initializers w=%v v=%v", w, v)
	}
	for _, x := range floats(models.FP32, v.RawData) {
		if x < 0.5 || x >= 1.5 {
			t.Errorf("vector weight %v outside [0.5, 1.5)", x)
		}
	}
	if !slices.ContainsFunc(g.Input, func(vi *onnxpb.ValueInfoProto) bool { return vi.GetName() == "w" }) {
		t.Error("IR 3: new initializer w not listed in graph.input")
	}
	// Deterministic: the same names give the same weights.
	m2 := model(3, 9, &onnxpb.GraphProto{
		Node:        []*onnxpb.NodeProto{node("ConstantOfShape", []string{"w__SHAPE"}, []string{"w"})},
		Initializer: []*onnxpb.TensorProto{int64Init("w__SHAPE", 8, 3, 3, 3)},
	})
	if _, err := randomizeWeights(m2, 1000); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(initializer(m2.Graph, "w").RawData, w.RawData) {
		t.Error("randomizeWeights is not deterministic")
	}
}

// TestRewrittenBatchMatchesItemByItem is the proof of the rewrite code: on a
// graph with random weights, a batch-1 Reshape and a shape initializer shared
// with the weight path, one run of the rewritten model on a batch of k
// distinct inputs must give bit-for-bit the outputs of k runs of the original
// model, for IR 3 (initializers listed as inputs) and IR 8.
func TestRewrittenBatchMatchesItemByItem(t *testing.T) {
	initORT(t)
	ss := newSessions(t.TempDir(), 1)
	defer ss.reset()
	f := func(name string, base *onnxpb.ModelProto) {
		t.Helper()
		if _, err := normalizeIO(base, ioNormalization{Input: "data", Output: "prob"}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		rw := proto.CloneOf(base)
		rr, err := makeBatchDynamic(rw)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		probes := probeOutputs(rw, rr)
		ref, err := ss.get(marshal(t, withOutputs(base, probes)))
		if err != nil {
			t.Fatalf("%s: original: %v", name, err)
		}
		chk, err := ss.get(marshal(t, withOutputs(rw, probes)))
		if err != nil {
			t.Fatalf("%s: rewritten: %v", name, err)
		}
		for _, k := range []int{2, 5} {
			res := selfCheck(context.Background(), chk, ref, k, nil, 0, nil)
			if res.Err != nil {
				t.Fatalf("%s: batch %d: %v", name, k, res.Err)
			}
			if !res.Identical || len(res.Constant) != 0 {
				t.Errorf("%s: batch %d: identical %v, outputs equal for every item %v; want identical, all varying", name, k, res.Identical, res.Constant)
			}
			if len(res.Compared) != 1+len(probes) {
				t.Errorf("%s: compared %v; want prob and the probes %v", name, res.Compared, probes)
			}
		}
		in, out, err := ss.inspect(marshal(t, rw))
		if err != nil {
			t.Fatal(err)
		}
		if in[0].String() != "data:FP32[-1,3,8,8]" || out[0].Name != "prob" || len(out[0].Shape) != 2 || out[0].Shape[0] != -1 {
			t.Errorf("%s: ONNX Runtime sees %v → %v; want data:FP32[-1,3,8,8] → prob:FP32[-1,…]", name, in, out)
		}
	}
	f("convnet IR 3", convNet(3, 9))
	f("convnet IR 8", convNet(8, 13))
	f("poolnet IR 3", poolNet(3, 9))
}

// TestEditingSharedShapeInPlaceBreaksTheWeightPath shows why the rewrite adds
// a new initializer: editing the shared one turns the weight-path Reshape of
// a [256] vector into [0,256] = [256,256], which ONNX Runtime rejects.
func TestEditingSharedShapeInPlaceBreaksTheWeightPath(t *testing.T) {
	initORT(t)
	ss := newSessions(t.TempDir(), 1)
	defer ss.reset()
	m := convNet(8, 13)
	initializer(m.Graph, "shape").Int64Data = []int64{0, 256}
	m.Graph.Input[0].Type.GetTensorType().Shape.Dim[0].Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}
	m.Graph.ValueInfo = nil
	cs, err := ss.get(marshal(t, m))
	if err == nil {
		res := selfCheck(context.Background(), cs, cs, 2, nil, 0, nil)
		err = res.Err
	}
	if err == nil {
		t.Fatal("the naive in-place edit ran; the test graph no longer exercises shared initializers")
	}
	t.Logf("in-place edit fails as expected: %v", err)
}

// TestSelfCheckCatchesItemsThatMix checks that the self-check sees a model
// whose items influence each other in a batch: y = x - mean over the batch.
func TestSelfCheckCatchesItemsThatMix(t *testing.T) {
	initORT(t)
	ss := newSessions(t.TempDir(), 1)
	defer ss.reset()
	g := &onnxpb.GraphProto{
		Node: []*onnxpb.NodeProto{
			node("ReduceMean", []string{"x"}, []string{"mean"}, intsAttr("axes", 0)),
			node("Sub", []string{"x", "mean"}, []string{"y"}),
		},
		Input:  []*onnxpb.ValueInfoProto{floatValueInfo("x", 1, 4)},
		Output: []*onnxpb.ValueInfoProto{floatValueInfo("y", 1, 4)},
	}
	m := model(8, 13, g)
	if _, err := makeBatchDynamic(m); err != nil {
		t.Fatal(err)
	}
	cs, err := ss.get(marshal(t, m))
	if err != nil {
		t.Fatal(err)
	}
	if res := selfCheck(context.Background(), cs, cs, 3, nil, 1e-4, nil); res.Err == nil {
		t.Fatalf("self-check passed a model that mixes items (max diff %g)", res.MaxDiff)
	}
}
