package repobuild

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ipa-serving/ipa/models"
	mlrt "github.com/ipa-serving/ipa/runtime"
	"github.com/ipa-serving/ipa/runtime/onnxpb"
)

func writeModel(t *testing.T, m *onnxpb.ModelProto) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(p, marshal(t, m), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func acc(v float64) *float64 { return &v }

func spec(file, stage, variant string) AddSpec {
	return AddSpec{File: file, Stage: stage, Variant: variant, Accuracy: acc(70), Metric: "top-1 %"}
}

var fixedNow = func() time.Time { return time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC) }

// concatNet pins its batch like BlazeFace: x[1,4] is concatenated with a
// constant [1,4] along axis 1, which a batch of k cannot match.
func concatNet() *onnxpb.ModelProto {
	g := &onnxpb.GraphProto{
		Name: proto.String("concat"),
		Node: []*onnxpb.NodeProto{
			node("Relu", []string{"x"}, []string{"r"}),
			node("Concat", []string{"r", "c"}, []string{"y"}, &onnxpb.AttributeProto{Name: proto.String("axis"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(1)}),
		},
		Initializer: []*onnxpb.TensorProto{{Name: proto.String("c"), DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), Dims: []int64{1, 4}, FloatData: []float32{1, 2, 3, 4}}},
		Input:       []*onnxpb.ValueInfoProto{floatValueInfo("x", 1, 4)},
		Output:      []*onnxpb.ValueInfoProto{floatValueInfo("y", 1, 8)},
	}
	return model(8, 13, g)
}

// reluNet is x[N,…dims] → Relu → y with the given input/output shapes
// (0 in a dimension means dynamic).
func reluNet(dims ...int64) *onnxpb.ModelProto {
	vi := func(name string) *onnxpb.ValueInfoProto {
		v := floatValueInfo(name, dims...)
		for i, d := range v.GetType().GetTensorType().GetShape().GetDim() {
			if dims[i] == 0 {
				d.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "d" + string(rune('a'+i))}
			}
		}
		return v
	}
	g := &onnxpb.GraphProto{
		Name:   proto.String("relu"),
		Node:   []*onnxpb.NodeProto{node("Relu", []string{"x"}, []string{"y"})},
		Input:  []*onnxpb.ValueInfoProto{vi("x")},
		Output: []*onnxpb.ValueInfoProto{vi("y")},
	}
	return model(8, 13, g)
}

func TestInspectTellsBatchCapabilities(t *testing.T) {
	initORT(t)
	f := func(m *onnxpb.ModelProto, opt CheckOptions, want, note string) {
		t.Helper()
		ins, err := Inspect(context.Background(), writeModel(t, m), opt)
		if err != nil {
			t.Fatal(err)
		}
		if ins.Batch != want || !strings.Contains(ins.BatchNote, note) {
			t.Fatalf("batch %q (%s), want %q with %q", ins.Batch, ins.BatchNote, want, note)
		}
		if ins.IR != 8 && ins.IR != 3 || len(ins.Opsets) != 1 || ins.Opsets[0].Domain != "ai.onnx" || len(ins.Inputs) == 0 || ins.Ops == nil {
			t.Fatalf("inspection incomplete: %+v", ins)
		}
	}
	f(reluNet(0, 5), CheckOptions{}, CapDynamic, "native dynamic batch; self-check batch 4")
	f(convNet(8, 13), CheckOptions{}, CapRewritable, "rewritten to a dynamic batch")
	f(concatNet(), CheckOptions{}, CapFixed, "failed its self-check")
	f(reluNet(2, 5), CheckOptions{}, CapNone, "dimension 0 is fixed at 2")
	f(reluNet(0, 3, 0), CheckOptions{}, CapDynamic, "not self-checked: input \"x\" is [-1,3,-1]")
	f(reluNet(0, 3, 0), CheckOptions{CheckShapes: map[string][]int64{"x": {-1, 3, 7}}}, CapDynamic, "self-check batch 4")
}

func TestAddRefusesWhatItCannotServe(t *testing.T) {
	initORT(t)
	repo := filepath.Join(t.TempDir(), "repo")
	ctx := context.Background()
	add := func(s AddSpec) error {
		t.Helper()
		_, err := Add(ctx, s, AddOptions{Repo: repo, Now: fixedNow})
		return err
	}
	f := func(s AddSpec, want error, msg string) {
		t.Helper()
		before, _ := models.ReadRepository(os.DirFS(repo))
		err := add(s)
		if !errors.Is(err, want) || !strings.Contains(err.Error(), msg) {
			t.Fatalf("got %v, want %v with %q", err, want, msg)
		}
		after, _ := models.ReadRepository(os.DirFS(repo))
		if before != nil && after != nil && len(after.Stages) != len(before.Stages) {
			t.Fatalf("a refused add changed the repository: %v → %v", before.StageNames(), after.StageNames())
		}
	}
	text := filepath.Join(t.TempDir(), "notes.onnx")
	os.WriteFile(text, []byte("these are not the weights you are looking for\n"), 0o644)
	f(spec(text, "s", "v"), ErrNotONNX, "not an ONNX model")
	empty := filepath.Join(t.TempDir(), "empty.onnx")
	os.WriteFile(empty, nil, 0o644)
	f(spec(empty, "s", "v"), ErrNotONNX, "empty")

	custom := reluNet(0, 4)
	custom.Graph.Node[0].OpType = proto.String("FancyRelu")
	custom.Graph.Node[0].Domain = proto.String("com.example")
	custom.OpsetImport = append(custom.OpsetImport, &onnxpb.OperatorSetIdProto{Domain: proto.String("com.example"), Version: proto.Int64(1)})
	f(spec(writeModel(t, custom), "s", "v"), ErrUnsupported, "[com.example]")
	unknown := reluNet(0, 4)
	unknown.Graph.Node[0].OpType = proto.String("NoSuchOp")
	f(spec(writeModel(t, unknown), "s", "v"), ErrUnsupported, "ONNX Runtime cannot load it")
	external := convNet(8, 13)
	external.Graph.Initializer[0].DataLocation = onnxpb.TensorProto_EXTERNAL.Enum()
	f(spec(writeModel(t, external), "s", "v"), ErrUnsupported, "external data")
	scalar := reluNet(0)
	scalar.Graph.Input[0].Type.GetTensorType().Shape.Dim = nil
	scalar.Graph.Output[0].Type.GetTensorType().Shape.Dim = nil
	f(spec(writeModel(t, scalar), "s", "v"), ErrUnsupported, "scalar")
	f(spec(writeModel(t, reluNet(2, 4)), "s", "v"), ErrBatch, "fixed at 2")

	good := writeModel(t, convNet(8, 13))
	noAcc := spec(good, "s", "v")
	noAcc.Accuracy = nil
	f(noAcc, ErrAccuracy, "needs --accuracy")
	noMetric := spec(good, "s", "v")
	noMetric.Metric = " "
	f(noMetric, ErrAccuracy, "needs --metric")

	if err := add(spec(good, "s", "conv")); err != nil {
		t.Fatal(err)
	}
	f(spec(good, "s", "conv"), ErrDuplicate, "already has a variant \"conv\"")
	// poolNet's input and output have other names and rank: refused, until
	// renamed (and flattened) into convNet's interface.
	pool := writeModel(t, poolNet(8, 13))
	f(spec(pool, "s", "pool"), ErrInterface, "variants of a stage must share names")
	renamed := spec(pool, "s", "pool")
	renamed.Input, renamed.Output = "x", "y"
	if err := add(renamed); err != nil {
		t.Fatal(err)
	}
	// A variant of another repository served with this one counts too.
	other, err := models.ReadRepositoryDirs(repo)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Add(ctx, spec(good, "s", "pool"), AddOptions{Repo: t.TempDir(), Others: []*models.Repository{other}})
	if !errors.Is(err, ErrDuplicate) {
		t.Fatalf("duplicate across repositories: %v", err)
	}
	_, err = Add(ctx, spec(writeModel(t, reluNet(0, 4)), "s", "relu"), AddOptions{Repo: t.TempDir(), Others: []*models.Repository{other}})
	if !errors.Is(err, ErrInterface) {
		t.Fatalf("interface across repositories: %v", err)
	}
}

func TestAddWritesAServableVariant(t *testing.T) {
	initORT(t)
	repo := filepath.Join(t.TempDir(), "repo")
	ctx := context.Background()
	labels := filepath.Join(t.TempDir(), "labels.txt")
	os.WriteFile(labels, []byte("a\nb\n"), 0o644)
	s := spec(writeModel(t, convNet(8, 13)), "my-stage", "conv")
	s.Files = []string{labels}
	s.Source, s.License = "my evaluation", "MIT"
	a, err := Add(ctx, s, AddOptions{Repo: repo, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	if a.Report.Batch != BatchRewritten || a.Variant.MaxBatch != 0 || !a.Report.Verified {
		t.Fatalf("report %+v", a.Report)
	}
	fixed, err := Add(ctx, spec(writeModel(t, concatNet()), "my-fixed", "concat"), AddOptions{Repo: repo, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	if fixed.Variant.MaxBatch != 1 || !strings.Contains(fixed.Variant.BatchNote, "run item by item") {
		t.Fatalf("a model whose rewrite fails is served item by item: %+v", fixed.Variant)
	}
	r, err := models.ReadRepositoryDirs(repo)
	if err != nil {
		t.Fatal(err)
	}
	v := r.Stages["my-stage"].Variant("conv")
	if v == nil || v.Accuracy.Value != 70 || v.Accuracy.Source != "my evaluation" || v.License != "MIT" || v.Latency1 <= 0 ||
		!strings.Contains(v.Origin, "2026-12-01") {
		t.Fatalf("variant.json: %+v", v)
	}
	if b, err := os.ReadFile(filepath.Join(v.Dir, "labels.txt")); err != nil || string(b) != "a\nb\n" {
		t.Fatalf("extra file: %q %v", b, err)
	}
	// The written model runs a batch of 3 in one go.
	sess, err := mlrt.Open(v.Path("", ""), v, mlrt.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	out, err := sess.Run(ctx, mlrt.ZeroInputs(v, 3))
	if err != nil || out[0].Shape[0] != 3 {
		t.Fatalf("batch 3: %v %v", out, err)
	}

	// --replace swaps the variant; nothing hidden is left behind.
	s.Accuracy = acc(71)
	a, err = Add(ctx, s, AddOptions{Repo: repo, Replace: true, Now: fixedNow})
	if err != nil || !a.Replaced || a.Variant.Accuracy.Value != 71 {
		t.Fatalf("replace: %+v %v", a, err)
	}
	entries, _ := os.ReadDir(filepath.Join(repo, "my-stage"))
	if len(entries) != 1 || entries[0].Name() != "conv" {
		t.Fatalf("stage directory holds %v", entries)
	}

	if err := Remove(repo, "my-stage", "conv"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(repo, "my-stage")); !os.IsNotExist(err) {
		t.Fatalf("the stage's last variant went, its directory stayed: %v", err)
	}
	if err := Remove(repo, "my-stage", "conv"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "my-fixed/concat") {
		t.Fatalf("removing twice: %v", err)
	}
}
