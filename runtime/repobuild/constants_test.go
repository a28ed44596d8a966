package repobuild

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/ipa-serving/ipa/models"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// sileroBake is what the wake-word pipeline gives `ipa models add` for
// Silero VAD v5: sr a constant, a zero state that follows the batch on
// dimension 1, no next state.
func sileroBake() Bake {
	return Bake{Consts: map[string]float64{"sr": 16000, "state": 0}, BatchAxis: map[string]int{"state": 1}, Drop: []string{"stateN"}}
}

func sileroFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(rawDir(t), "silero", "silero_vad_v5.onnx")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the Silero VAD models are required (run `make deps`): %v", err)
	}
	return p
}

// TestAddBakesSileroConstants adds Silero VAD v5 with its constants baked
// in and checks the served model against the original run directly in
// ONNX Runtime with sr = 16000 and a zero state [2,k,128]: the same
// probabilities for a batch of k chunks.
func TestAddBakesSileroConstants(t *testing.T) {
	initORT(t)
	file := sileroFile(t)
	s := spec(file, "vad", "v5")
	s.Shapes = map[string][]int64{"input": {-1, 576}}
	s.Check.Bake = sileroBake()
	repo := t.TempDir()
	a, err := Add(context.Background(), s, AddOptions{Repo: repo, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	v := a.Variant
	if got := specList(v.Inputs) + " -> " + specList(v.Outputs); got != "input:FP32[-1,576] -> output:FP32[-1,1]" {
		t.Errorf("interface %s", got)
	}
	if v.MaxBatch != 0 || len(v.Constants) != 2 || v.Constants[0].Name != "sr" || v.Constants[1].Name != "state" ||
		v.Constants[1].BatchAxis == nil || *v.Constants[1].BatchAxis != 1 || len(v.DroppedOutputs) != 1 {
		t.Errorf("metadata: max_batch %d, constants %v, dropped %v", v.MaxBatch, v.Constants, v.DroppedOutputs)
	}
	// variant.json reads back with the constants.
	r, err := models.ReadRepository(os.DirFS(repo))
	if err != nil {
		t.Fatal(err)
	}
	if c := r.Stages["vad"].Variants[0].Constants; len(c) != 2 || c[0].String() != "sr INT64[] = 16000" || c[1].String() != "state FP32[2,-1,128] = 0 (batch on dimension 1)" {
		t.Errorf("variant.json constants %v", c)
	}

	const k = 3
	rng := rand.New(rand.NewPCG(1, 2))
	chunks := make([]float32, k*576)
	for i := range chunks {
		chunks[i] = float32(rng.NormFloat64() * 0.1 * (1 + float64(i/576)))
	}
	// The served model, batch k.
	served, err := mlrt.Open(filepath.Join(a.Dir, ModelFile), v, mlrt.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer served.Close()
	out, err := served.Run(context.Background(), []models.Tensor{{Name: "input", DataType: models.FP32, Shape: []int64{k, 576}, Data: f32bytes(chunks)}})
	if err != nil {
		t.Fatal(err)
	}
	got := f32s(out[0].Data)
	// The original, batch k, with its own sr and state.
	want := runSileroDirect(t, file, chunks, k)
	if len(got) != k {
		t.Fatalf("served answered %d values for %d chunks", len(got), k)
	}
	for i := range got {
		if d := math.Abs(float64(got[i] - want[i])); d > 1e-6 {
			t.Errorf("chunk %d: served %v, original %v", i, got[i], want[i])
		}
	}
}

// runSileroDirect runs the original Silero file with sr 16000 and a zero
// state on k chunks of 576 samples and returns the probabilities.
func runSileroDirect(t *testing.T, file string, chunks []float32, k int) []float32 {
	t.Helper()
	in, err := ort.NewTensor(ort.NewShape(int64(k), 576), chunks)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Destroy()
	state, err := ort.NewEmptyTensor[float32](ort.NewShape(2, int64(k), 128))
	if err != nil {
		t.Fatal(err)
	}
	defer state.Destroy()
	sr, err := ort.NewScalar[int64](16000)
	if err != nil {
		t.Fatal(err)
	}
	defer sr.Destroy()
	sess, err := ort.NewDynamicAdvancedSession(file, []string{"input", "state", "sr"}, []string{"output"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Destroy()
	outs := []ort.Value{nil}
	if err := sess.Run([]ort.Value{in, state, sr}, outs); err != nil {
		t.Fatal(err)
	}
	defer outs[0].Destroy()
	return append([]float32(nil), outs[0].(*ort.Tensor[float32]).GetData()...)
}

func f32bytes(f []float32) []byte {
	b := make([]byte, 4*len(f))
	for i, x := range f {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func f32s(b []byte) []float32 {
	f := make([]float32, len(b)/4)
	for i := range f {
		f[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return f
}

// TestBakeRefusals: each wrong declaration is one error that says what to
// write instead.
func TestBakeRefusals(t *testing.T) {
	initORT(t)
	file := sileroFile(t)
	for _, tc := range []struct {
		name string
		bake Bake
		want string
	}{
		{"none", Bake{}, "--const sr=VALUE"},
		{"no state", Bake{Consts: map[string]float64{"sr": 16000}}, "--const state=VALUE, and --batch-axis state=K"},
		{"state without axis", Bake{Consts: map[string]float64{"sr": 16000, "state": 0}}, "--batch-axis state=1"},
		{"unknown input", Bake{Consts: map[string]float64{"rate": 16000}}, `no input "rate" (inputs [input state sr])`},
		{"fractional int", Bake{Consts: map[string]float64{"sr": 16000.5}}, "must be an integer"},
		{"axis out of range", Bake{Consts: map[string]float64{"sr": 1, "state": 0}, BatchAxis: map[string]int{"state": 3}}, "axis must be in [0, 2]"},
		{"axis on a fixed input", Bake{Consts: map[string]float64{"sr": 1}, BatchAxis: map[string]int{"state": 1}}, "only a constant input"},
		{"drop unknown", Bake{Drop: []string{"nope"}}, `no output "nope"`},
		{"drop all", Bake{Consts: map[string]float64{"sr": 16000, "state": 0}, BatchAxis: map[string]int{"state": 1}, Drop: []string{"output", "stateN"}}, "keep at least one"},
		{"every input", Bake{Consts: map[string]float64{"sr": 16000, "state": 0, "input": 0}, BatchAxis: map[string]int{"state": 1}}, `input "input" is [-1,-1]: dimension 0 has no size; if it is the batch, say so with --batch-axis input=0`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := spec(file, "vad", "v5")
			s.Shapes = map[string][]int64{"input": {-1, 576}}
			s.Check.Bake = tc.bake
			_, err := Add(context.Background(), s, AddOptions{Repo: t.TempDir(), Now: fixedNow})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// A kept next state is caught by the self-check: the variant would be
	// served item by item, and the note says which output is to blame.
	kept := sileroBake()
	kept.Drop = nil
	ins, err := Inspect(context.Background(), file, CheckOptions{Bake: kept, CheckShapes: map[string][]int64{"input": {-1, 576}}})
	if err != nil {
		t.Fatal(err)
	}
	if ins.Batch != CapFixed || !strings.Contains(ins.BatchNote, `output "stateN": batched shape [2,4,128] does not have batch 4`) {
		t.Errorf("stateN kept: batch %s: %s", ins.Batch, ins.BatchNote)
	}
	// Inspect takes the same declarations and shows them.
	opt := CheckOptions{Bake: sileroBake(), CheckShapes: map[string][]int64{"input": {-1, 576}}}
	ins, err = Inspect(context.Background(), file, opt)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := ins.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if ins.Batch != CapDynamic || !strings.Contains(b.String(), "constant  state FP32[2,-1,128] = 0 (batch on dimension 1)") || !strings.Contains(b.String(), "dropped   output stateN") {
		t.Errorf("inspect with the bake: batch %s\n%s", ins.Batch, b.String())
	}
	if _, err := Inspect(context.Background(), file, CheckOptions{}); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "--const sr=VALUE") {
		t.Errorf("inspect without: %v", err)
	}
}

func specList(ts []models.TensorSpec) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = t.String()
	}
	return strings.Join(s, ", ")
}

// TestWakewordExampleManifest adds every variant of the committed
// examples/wakeword/models.yaml (the README's audio walkthrough): Silero v4
// and v5 share the VAD stage's interface once baked, and the features and
// head keep theirs.
func TestWakewordExampleManifest(t *testing.T) {
	initORT(t)
	sileroFile(t)
	b, err := os.ReadFile("../../examples/wakeword/models.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := "../../examples/wakeword"
	if raw := os.Getenv("IPA_RAW_DIR"); raw != "" { // the manifest names ../../.deps/raw; follow IPA_RAW_DIR
		b = []byte(strings.ReplaceAll(string(b), "../../.deps/raw", raw))
	}
	specs, err := ParseManifest(b, dir, CheckOptions{CheckBatch: 4})
	if err != nil {
		t.Fatal(err)
	}
	repo := t.TempDir()
	got := map[string]string{}
	for _, s := range specs {
		a, err := Add(context.Background(), s, AddOptions{Repo: repo, Now: fixedNow})
		if err != nil {
			t.Fatalf("%s/%s: %v", s.Stage, s.Variant, err)
		}
		got[s.Stage+"/"+s.Variant] = specList(a.Variant.Inputs) + " -> " + specList(a.Variant.Outputs)
	}
	want := map[string]string{
		"vad/silero-v4":         "input:FP32[-1,512] -> output:FP32[-1,1]",
		"vad/silero-v5":         "input:FP32[-1,576] -> output:FP32[-1,1]",
		"oww-mel/oww-mel":       "input:FP32[-1,1760] -> output:FP32[-1,1,-1,32]",
		"oww-embed/oww-embed":   "input_1:FP32[-1,76,32,1] -> conv2d_19:FP32[-1,1,1,96]",
		"wake-word/hello-deepa": "onnx::Flatten_0:FP32[-1,25,96] -> 39:FP32[-1,1]",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %s, want %s", k, got[k], w)
		}
	}
}

// A manifest's const, batch_axis and drop_output are checked like the
// flags, before any model is read.
func TestManifestBakeRefusals(t *testing.T) {
	for _, tc := range []struct{ entry, want string }{
		{"const: {sr: .nan}", "a finite value"},
		{"batch_axis: {state: 1}", "only a constant input"},
		{"const: {state: 0}, batch_axis: {state: 99}", "must be a dimension"},
		{"drop_output: [stateN, stateN]", "given twice"},
		{"const: {sr: [1]}", "bad manifest"},
	} {
		b := "stage: s\nmetric: m\nvariants:\n  - {file: a.onnx, accuracy: 1, " + tc.entry + "}\n"
		if _, err := ParseManifest([]byte(b), "/base", CheckOptions{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.entry, err, tc.want)
		}
	}
	specs, err := ParseManifest([]byte("stage: s\nmetric: m\nvariants:\n  - {file: a.onnx, accuracy: 1, const: {sr: 16000, state: 0}, batch_axis: {state: 1}, drop_output: [stateN]}\n"), "/base", CheckOptions{})
	if err != nil || specs[0].Check.Bake.Consts["sr"] != 16000 || specs[0].Check.Bake.BatchAxis["state"] != 1 || specs[0].Check.Bake.Drop[0] != "stateN" {
		t.Fatalf("%v %+v", err, specs)
	}
}
