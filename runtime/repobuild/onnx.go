package repobuild

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/ipa-serving/ipa/runtime/onnxpb"
)

// batchParam is the dim_param given to a batch dimension made dynamic.
const batchParam = "N"

// parseModel decodes an ONNX model.
func parseModel(b []byte) (*onnxpb.ModelProto, error) {
	m := new(onnxpb.ModelProto)
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("cannot parse ONNX model: %w", err)
	}
	if m.GetGraph() == nil {
		return nil, fmt.Errorf("ONNX model has no graph")
	}
	return m, nil
}

// marshalModel encodes m deterministically, so that the same rewrite of the
// same source always gives the same bytes (and sha256).
func marshalModel(m *onnxpb.ModelProto) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}

// realInputs returns the graph inputs that are not initializers (models of
// IR < 4 list every initializer as a graph input too).
func realInputs(g *onnxpb.GraphProto) []*onnxpb.ValueInfoProto {
	inits := initializerSet(g)
	var in []*onnxpb.ValueInfoProto
	for _, vi := range g.GetInput() {
		if !inits[vi.GetName()] {
			in = append(in, vi)
		}
	}
	return in
}

func initializerSet(g *onnxpb.GraphProto) map[string]bool {
	s := make(map[string]bool, len(g.GetInitializer()))
	for _, t := range g.GetInitializer() {
		s[t.GetName()] = true
	}
	return s
}

// tensorNames returns every value name used in g and its subgraphs.
func tensorNames(g *onnxpb.GraphProto) map[string]bool {
	names := map[string]bool{}
	var walk func(g *onnxpb.GraphProto)
	walk = func(g *onnxpb.GraphProto) {
		for _, vi := range slices.Concat(g.GetInput(), g.GetOutput(), g.GetValueInfo()) {
			names[vi.GetName()] = true
		}
		for _, t := range g.GetInitializer() {
			names[t.GetName()] = true
		}
		for _, n := range g.GetNode() {
			for _, s := range slices.Concat(n.GetInput(), n.GetOutput()) {
				names[s] = true
			}
			for _, sg := range subgraphs(n) {
				walk(sg)
			}
		}
	}
	walk(g)
	return names
}

// subgraphs returns the graphs held in n's attributes (If, Loop, Scan).
func subgraphs(n *onnxpb.NodeProto) []*onnxpb.GraphProto {
	var gs []*onnxpb.GraphProto
	for _, a := range n.GetAttribute() {
		if a.GetG() != nil {
			gs = append(gs, a.GetG())
		}
		gs = append(gs, a.GetGraphs()...)
	}
	return gs
}

// subgraphRefs returns the names n's subgraphs read, including the ones they
// define themselves (an over-approximation of their outer-scope references).
func subgraphRefs(n *onnxpb.NodeProto) []string {
	var refs []string
	for _, sg := range subgraphs(n) {
		for name := range tensorNames(sg) {
			refs = append(refs, name)
		}
	}
	return refs
}

// uniqueName returns base, or base with a numeric suffix, not in used; it
// records the result in used.
func uniqueName(used map[string]bool, base string) string {
	name := base
	for i := 2; used[name]; i++ {
		name = fmt.Sprintf("%s_%d", base, i)
	}
	used[name] = true
	return name
}

// renameValue renames the value old to new in g: node inputs and outputs
// (subgraphs included, for outer-scope references), graph inputs, outputs
// and value_info.
func renameValue(g *onnxpb.GraphProto, old, new string) {
	for _, vi := range slices.Concat(g.GetInput(), g.GetOutput(), g.GetValueInfo()) {
		if vi.GetName() == old {
			vi.Name = proto.String(new)
		}
	}
	for _, n := range g.GetNode() {
		for i, s := range n.Input {
			if s == old {
				n.Input[i] = new
			}
		}
		for i, s := range n.Output {
			if s == old {
				n.Output[i] = new
			}
		}
		for _, sg := range subgraphs(n) {
			renameValue(sg, old, new)
		}
	}
}

// ioNormalization renames a model's only input and only output.
type ioNormalization struct {
	// Input is the new name of the only graph input; "" keeps the inputs
	// as they are (and allows several).
	Input string
	// Output is the new name of the only graph output; "" keeps the outputs
	// (and allows several). A rank-4 output [N,C,1,1] is flattened to [N,C]
	// by an appended Flatten node.
	Output string
}

// normalizeIO applies n to m and returns what it did, for the batch note.
func normalizeIO(m *onnxpb.ModelProto, n ioNormalization) (string, error) {
	g := m.GetGraph()
	in := realInputs(g)
	if n.Input != "" && len(in) != 1 {
		return "", fmt.Errorf("cannot rename the input of a model with %d inputs; want 1", len(in))
	}
	if n.Output != "" && len(g.GetOutput()) != 1 {
		return "", fmt.Errorf("cannot rename the output of a model with %d outputs; want 1", len(g.GetOutput()))
	}
	used := tensorNames(g)
	var did []string
	if old := firstName(in); n.Input != "" && old != n.Input {
		if used[n.Input] {
			return "", fmt.Errorf("cannot rename input %q to %q: the name is taken", old, n.Input)
		}
		renameValue(g, old, n.Input)
		did = append(did, fmt.Sprintf("input %q→%q", old, n.Input))
	}
	if n.Output == "" {
		return strings.Join(did, ", "), nil
	}
	out := g.GetOutput()[0]
	old := out.GetName()
	tt := out.GetType().GetTensorType()
	dims := tt.GetShape().GetDim()
	switch {
	case old == n.Output && len(dims) == 2:
	case len(dims) == 2:
		if used[n.Output] {
			return "", fmt.Errorf("cannot rename output %q to %q: the name is taken", old, n.Output)
		}
		renameValue(g, old, n.Output)
		did = append(did, fmt.Sprintf("output %q→%q", old, n.Output))
	case len(dims) == 4 && dims[2].GetDimValue() == 1 && dims[3].GetDimValue() == 1:
		if used[n.Output] {
			return "", fmt.Errorf("cannot flatten output %q into %q: the name is taken", old, n.Output)
		}
		g.Node = append(g.Node, &onnxpb.NodeProto{
			Name:   proto.String(uniqueName(used, n.Output+"_flatten")),
			OpType: proto.String("Flatten"),
			Input:  []string{old},
			Output: []string{n.Output},
			Attribute: []*onnxpb.AttributeProto{{
				Name: proto.String("axis"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(1),
			}},
		})
		g.Output[0] = &onnxpb.ValueInfoProto{
			Name: proto.String(n.Output),
			Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
				ElemType: proto.Int32(tt.GetElemType()),
				Shape:    &onnxpb.TensorShapeProto{Dim: []*onnxpb.TensorShapeProto_Dimension{proto.CloneOf(dims[0]), proto.CloneOf(dims[1])}},
			}}},
		}
		did = append(did, fmt.Sprintf("output %q %s flattened into %q", old, formatDims(dims), n.Output))
	case old != n.Output:
		if used[n.Output] {
			return "", fmt.Errorf("cannot rename output %q to %q: the name is taken", old, n.Output)
		}
		renameValue(g, old, n.Output)
		did = append(did, fmt.Sprintf("output %q→%q", old, n.Output))
	}
	return strings.Join(did, ", "), nil
}

func firstName(vis []*onnxpb.ValueInfoProto) string {
	if len(vis) == 0 {
		return ""
	}
	return vis[0].GetName()
}

func formatDims(dims []*onnxpb.TensorShapeProto_Dimension) string {
	s := make([]string, len(dims))
	for i, d := range dims {
		if d.GetDimParam() != "" {
			s[i] = d.GetDimParam()
		} else {
			s[i] = fmt.Sprint(d.GetDimValue())
		}
	}
	return "[" + strings.Join(s, ",") + "]"
}

// reshapeChange records one Reshape pointed at a new shape initializer.
type reshapeChange struct {
	Node     string  // node name (or its output when unnamed)
	OldShape string  // name of the original shape constant, left untouched
	NewShape string  // name of the new initializer
	Shape    []int64 // its value
}

// rewriteResult says what makeBatchDynamic changed.
type rewriteResult struct {
	Reshapes []reshapeChange
	// Relabelled lists the graph inputs and outputs whose dim 0 became N.
	Relabelled []string
}

func (r rewriteResult) String() string {
	shapes := map[string]bool{}
	var list []string
	for _, c := range r.Reshapes {
		s := fmtInts(c.Shape)
		if !shapes[s] {
			shapes[s] = true
			list = append(list, s)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d activation Reshape(s)", len(r.Reshapes))
	if len(list) > 0 {
		const show = 3
		if len(list) > show {
			list = append(list[:show], "…")
		}
		fmt.Fprintf(&b, " now %s", strings.Join(list, " "))
	}
	fmt.Fprintf(&b, ", dim 0 of %d graph input(s)/output(s) relabelled %s", len(r.Relabelled), batchParam)
	return b.String()
}

func fmtInts(v []int64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprint(x)
	}
	return "[" + strings.Join(s, ",") + "]"
}

// activations returns the values that depend on a real graph input (not on
// initializers or constants alone). Nodes should be topologically sorted, as
// ONNX requires; the loop still runs to a fixed point in case they are not.
func activations(g *onnxpb.GraphProto) map[string]bool {
	act := map[string]bool{}
	for _, vi := range realInputs(g) {
		act[vi.GetName()] = true
	}
	for changed := true; changed; {
		changed = false
		for _, n := range g.GetNode() {
			if act[firstOr(n.GetOutput())] {
				continue
			}
			live := slices.ContainsFunc(n.GetInput(), func(s string) bool { return act[s] }) ||
				slices.ContainsFunc(subgraphRefs(n), func(s string) bool { return act[s] })
			if !live {
				continue
			}
			for _, o := range n.GetOutput() {
				if o != "" && !act[o] {
					act[o] = true
					changed = true
				}
			}
		}
	}
	return act
}

func firstOr(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// constants maps the names of constant tensors of g (initializers and the
// outputs of Constant nodes holding a tensor) to their value.
func constants(g *onnxpb.GraphProto) map[string]*onnxpb.TensorProto {
	c := map[string]*onnxpb.TensorProto{}
	for _, t := range g.GetInitializer() {
		c[t.GetName()] = t
	}
	for _, n := range g.GetNode() {
		if n.GetOpType() != "Constant" || n.GetDomain() != "" || len(n.GetOutput()) != 1 {
			continue
		}
		for _, a := range n.GetAttribute() {
			if a.GetName() == "value" && a.GetT() != nil {
				c[n.GetOutput()[0]] = a.GetT()
			}
		}
	}
	return c
}

// int64Values decodes an INT64 tensor.
func int64Values(t *onnxpb.TensorProto) ([]int64, error) {
	if t.GetDataType() != int32(onnxpb.TensorProto_INT64) {
		return nil, fmt.Errorf("tensor %q has data type %d, not INT64", t.GetName(), t.GetDataType())
	}
	if t.GetDataLocation() == onnxpb.TensorProto_EXTERNAL {
		return nil, fmt.Errorf("tensor %q is stored outside the model file", t.GetName())
	}
	if raw := t.GetRawData(); len(raw) > 0 {
		if len(raw)%8 != 0 {
			return nil, fmt.Errorf("tensor %q: raw data of %d bytes is not a multiple of 8", t.GetName(), len(raw))
		}
		v := make([]int64, len(raw)/8)
		for i := range v {
			v[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
		}
		return v, nil
	}
	return slices.Clone(t.GetInt64Data()), nil
}

// makeBatchDynamic makes dimension 0 of m dynamic by the rule of MODELS.md §3:
//
//  1. Values reachable from a real graph input are activations.
//  2. Each Reshape whose data is an activation and whose shape is a constant
//     starting with 1 is pointed at a new int64 initializer with 0 in front
//     ("copy dimension 0 from the input"). The original constant may be shared
//     with a weight-path Reshape, so it is never edited. Models of IR < 4 list
//     initializers as graph inputs, so the new one is appended there too.
//  3. Graph inputs and outputs whose dim 0 is the value 1 get dim_param "N",
//     and graph.value_info (static shapes now stale) is dropped.
//
// Anything else that pins the batch (a Concat with a constant [1,…] tensor, an
// Expand, an If on a 1-element condition) is left alone: the caller must
// self-check the result by running batch k against k runs of batch 1.
func makeBatchDynamic(m *onnxpb.ModelProto) (rewriteResult, error) {
	var res rewriteResult
	g := m.GetGraph()
	act := activations(g)
	consts := constants(g)
	used := tensorNames(g)
	type copied struct {
		name  string
		shape []int64
	}
	replaced := map[string]copied{} // original shape constant → its batch-dynamic copy
	for _, n := range g.GetNode() {
		if n.GetOpType() != "Reshape" || n.GetDomain() != "" || len(n.GetInput()) < 2 || !act[n.GetInput()[0]] {
			continue
		}
		shapeName := n.GetInput()[1]
		t, ok := consts[shapeName]
		if !ok {
			continue // computed shape, e.g. from Shape: follows the batch already
		}
		shape, err := int64Values(t)
		if err != nil {
			return res, fmt.Errorf("reshape %q: %w", n.GetName(), err)
		}
		if len(shape) == 0 || shape[0] != 1 {
			continue
		}
		lead := int64(0) // Reshape: 0 copies the input's dimension
		if allowZero(n) {
			// With allowzero=1 a 0 is a literal zero; -1 (infer) works
			// unless the shape already infers another dimension.
			if slices.Contains(shape, -1) {
				return res, fmt.Errorf("reshape %q has allowzero=1 and a -1 in %s: cannot make its batch dynamic", n.GetName(), fmtInts(shape))
			}
			lead = -1
		}
		cp, ok := replaced[shapeName]
		if !ok {
			newShape := slices.Clone(shape)
			newShape[0] = lead
			name := uniqueName(used, shapeName+"_dynbatch")
			cp = copied{name, newShape}
			replaced[shapeName] = cp
			g.Initializer = append(g.Initializer, &onnxpb.TensorProto{
				Name:      proto.String(name),
				DataType:  proto.Int32(int32(onnxpb.TensorProto_INT64)),
				Dims:      []int64{int64(len(newShape))},
				Int64Data: newShape,
			})
			if m.GetIrVersion() < 4 {
				g.Input = append(g.Input, valueInfo(name, onnxpb.TensorProto_INT64, []int64{int64(len(newShape))}))
			}
		}
		n.Input[1] = cp.name
		nodeName := n.GetName()
		if nodeName == "" {
			nodeName = firstOr(n.GetOutput())
		}
		res.Reshapes = append(res.Reshapes, reshapeChange{Node: nodeName, OldShape: shapeName, NewShape: cp.name, Shape: cp.shape})
	}
	for _, vi := range slices.Concat(realInputs(g), g.GetOutput()) {
		dims := vi.GetType().GetTensorType().GetShape().GetDim()
		if len(dims) > 0 && dims[0].GetDimParam() == "" && dims[0].GetDimValue() == 1 {
			dims[0].Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: batchParam}
			res.Relabelled = append(res.Relabelled, vi.GetName())
		}
	}
	g.ValueInfo = nil
	return res, nil
}

func allowZero(n *onnxpb.NodeProto) bool {
	for _, a := range n.GetAttribute() {
		if a.GetName() == "allowzero" {
			return a.GetI() != 0
		}
	}
	return false
}

// probeOutputs returns internal activations worth comparing in a
// self-check besides the graph outputs:
//
//   - the outputs of the rewritten Reshapes;
//   - the tensors a graph output is computed from through shape-only or
//     normalising ops (Flatten, Reshape, Softmax, Dropout, Identity), e.g. the
//     logits under a softmax, which keep differences a softmax can hide;
//   - the unmasked input of a masked output (see maskedOutputs).
func probeOutputs(m *onnxpb.ModelProto, res rewriteResult) []string {
	g := m.GetGraph()
	act := activations(g)
	isOut := map[string]bool{}
	for _, o := range g.GetOutput() {
		isOut[o.GetName()] = true
	}
	rewritten := map[string]bool{}
	for _, c := range res.Reshapes {
		rewritten[c.NewShape] = true
	}
	var probes []string
	add := func(s string) {
		if s != "" && act[s] && !isOut[s] && !slices.Contains(probes, s) {
			probes = append(probes, s)
		}
	}
	producer := map[string]*onnxpb.NodeProto{}
	for _, n := range g.GetNode() {
		for _, o := range n.GetOutput() {
			producer[o] = n
		}
		if n.GetOpType() == "Reshape" && len(n.GetInput()) > 1 && rewritten[n.GetInput()[1]] {
			add(firstOr(n.GetOutput()))
		}
	}
	for _, o := range g.GetOutput() {
		for n := producer[o.GetName()]; n != nil; n = producer[firstOr(n.GetInput())] {
			switch n.GetOpType() {
			case "Flatten", "Reshape", "Softmax", "Dropout", "Identity":
				add(firstOr(n.GetInput()))
				continue
			}
			break
		}
	}
	for _, unmasked := range maskedOutputs(g) {
		add(unmasked)
	}
	return probes
}

// maskedOutputs finds graph outputs computed as Mul(x, Cast(Equal(…))): a
// 0/1 mask such as M-LSD's centre-point NMS, scores * (MaxPool(scores) ==
// scores). A rounding difference of one ulp in x can flip an Equal, so such
// an output is compared element by element allowing mask flips, and x itself
// is compared as a probe. It maps output name to x.
func maskedOutputs(g *onnxpb.GraphProto) map[string]string {
	producer := map[string]*onnxpb.NodeProto{}
	for _, n := range g.GetNode() {
		for _, o := range n.GetOutput() {
			producer[o] = n
		}
	}
	isMask := func(s string) bool {
		n := producer[s]
		if n != nil && n.GetOpType() == "Cast" {
			n = producer[firstOr(n.GetInput())]
		}
		return n != nil && slices.Contains([]string{"Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"}, n.GetOpType())
	}
	masked := map[string]string{}
	for _, o := range g.GetOutput() {
		n := producer[o.GetName()]
		if n == nil || n.GetOpType() != "Mul" || len(n.GetInput()) != 2 {
			continue
		}
		a, b := n.GetInput()[0], n.GetInput()[1]
		switch {
		case isMask(b) && !isMask(a):
			masked[o.GetName()] = a
		case isMask(a) && !isMask(b):
			masked[o.GetName()] = b
		}
	}
	return masked
}

// withOutputs returns a copy of m that also outputs the named values. Their
// type is left to ONNX Runtime's shape inference.
func withOutputs(m *onnxpb.ModelProto, names []string) *onnxpb.ModelProto {
	c := proto.CloneOf(m)
	for _, s := range names {
		c.Graph.Output = append(c.Graph.Output, &onnxpb.ValueInfoProto{Name: proto.String(s)})
	}
	return c
}

// randomizeWeights replaces the ConstantOfShape placeholder weights of m (the
// light ImageNet models fill every weight with 0.02) by deterministic
// pseudo-random initializers, the way MODELS.md §3 verified the rewrite:
// He-normal for tensors of rank ≥ 2 (fan-in = product of dims 1…), uniform
// [0.5, 1.5) for vectors (batch-norm variances stay positive). With constant
// weights every item gets the same softmax and deep BN stacks wash out the
// differences between items, so a batch self-check would prove little.
// Placeholders of more than maxElems elements (the big fully connected
// layers) stay constant: the items still differ through them. It returns the
// number of tensors replaced.
//
// The values are cut from pools of poolLen numbers, one per distribution,
// starting at an offset hashed from the tensor's name: copying is cheap even
// under the race detector (drawing 25 M numbers for resnet50 one by one took
// 6 s there), and poolLen is prime, so no two output channels repeat.
func randomizeWeights(m *onnxpb.ModelProto, maxElems int64) (int, error) {
	g := m.GetGraph()
	consts := constants(g)
	pools := map[float64][]byte{} // std (0: uniform [0.5,1.5)) → poolLen float32s
	var keep []*onnxpb.NodeProto
	n := 0
	for _, node := range g.GetNode() {
		shapeT, ok := consts[firstOr(node.GetInput())]
		if node.GetOpType() != "ConstantOfShape" || node.GetDomain() != "" || !ok || len(node.GetOutput()) != 1 || !floatValue(node) {
			keep = append(keep, node)
			continue
		}
		dims, err := int64Values(shapeT)
		if err != nil {
			return n, err
		}
		count := int64(1)
		for _, d := range dims {
			count *= d
		}
		if count <= 0 || count > maxElems {
			keep = append(keep, node)
			continue
		}
		std := 0.0
		if len(dims) > 1 {
			std = math.Sqrt(2 / float64(max(count/max(dims[0], 1), 1)))
		}
		pool, ok := pools[std]
		if !ok {
			pool = randomPool(std)
			pools[std] = pool
		}
		name := node.GetOutput()[0]
		data := make([]byte, 4*count)
		for rest, off := data, int(fnv64(name)%poolLen)*4; len(rest) > 0; off = 0 {
			rest = rest[copy(rest, pool[off:]):]
		}
		g.Initializer = append(g.Initializer, &onnxpb.TensorProto{
			Name: proto.String(name), DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
			Dims: slices.Clone(dims), RawData: data,
		})
		if m.GetIrVersion() < 4 {
			g.Input = append(g.Input, valueInfo(name, onnxpb.TensorProto_FLOAT, dims))
		}
		n++
	}
	g.Node = keep
	return n, nil
}

// poolLen is the length of a random pool, a prime.
const poolLen = 65521

// randomPool returns poolLen little-endian float32s: normal with standard
// deviation std, or uniform in [0.5, 1.5) when std is 0.
func randomPool(std float64) []byte {
	rng := rand.New(rand.NewPCG(uint64(math.Float64bits(std)), 0x9e3779b97f4a7c15))
	b := make([]byte, 4*poolLen)
	for i := range poolLen {
		x := 0.5 + rng.Float64()
		if std > 0 {
			x = rng.NormFloat64() * std
		}
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(x)))
	}
	return b
}

// floatValue reports whether a ConstantOfShape node fills FLOAT values (its
// default, without a value attribute, is float 0).
func floatValue(n *onnxpb.NodeProto) bool {
	for _, a := range n.GetAttribute() {
		if a.GetName() == "value" {
			return a.GetT().GetDataType() == int32(onnxpb.TensorProto_FLOAT)
		}
	}
	return true
}

func valueInfo(name string, dt onnxpb.TensorProto_DataType, dims []int64) *onnxpb.ValueInfoProto {
	shape := &onnxpb.TensorShapeProto{}
	for _, d := range dims {
		shape.Dim = append(shape.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}})
	}
	return &onnxpb.ValueInfoProto{
		Name: proto.String(name),
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(dt)), Shape: shape,
		}}},
	}
}

func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
