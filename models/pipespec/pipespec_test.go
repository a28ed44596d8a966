package pipespec

import (
	"strings"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/models"
)

func repo() *models.Repository {
	v := func(stage, name string) *models.Variant {
		return &models.Variant{Name: name, Stage: stage, File: "m.onnx",
			Inputs:  []models.TensorSpec{{Name: "x", DataType: models.FP32, Shape: []int64{-1, 2}}},
			Outputs: []models.TensorSpec{{Name: "y", DataType: models.FP32, Shape: []int64{-1, 2}}}}
	}
	return &models.Repository{Stages: map[string]*models.Stage{
		"det": {Name: "det", Variants: []*models.Variant{v("det", "small"), v("det", "big")}},
		"rec": {Name: "rec", Variants: []*models.Variant{v("rec", "r1")}},
	}}
}

var (
	first = []string{"tensor", "image"}
	next  = []string{"tensor", "lines"}
)

const good = `name: p
sla: 800ms
stages:
  - name: a
    model: det
    input: image
    initial: {variant: big, max_batch: 4, max_wait: 3ms}
  - name: b
    model: rec
    input: lines
`

func TestParseFillsDefaults(t *testing.T) {
	p, err := Parse([]byte(good), repo(), first, next)
	if err != nil {
		t.Fatal(err)
	}
	if p.SLA != 800*time.Millisecond || len(p.Stages) != 2 {
		t.Fatalf("parsed %+v", p)
	}
	a, b := p.Stages[0].Initial, p.Stages[1].Initial
	if a != (models.StageConfig{Variant: "big", MaxBatch: 4, MaxWait: 3 * time.Millisecond, Replicas: 1, Cores: 1}) {
		t.Fatalf("stage a initial %+v", a)
	}
	if b.Variant != "r1" || b.MaxBatch != 1 || b.Replicas != 1 || b.Cores != 1 {
		t.Fatalf("stage b defaults %+v", b)
	}
}

func TestParseErrorsPointAtTheLineAndField(t *testing.T) {
	f := func(spec, want string) {
		t.Helper()
		_, err := Parse([]byte(spec), repo(), first, next)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v, want an error containing %q", err, want)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Fatalf("error is not one line: %q", err)
		}
	}
	f(strings.Replace(good, "variant: big", "variant: huge", 1), `line 7 ($.stages[0].initial.variant): "huge" is not among`)
	f(strings.Replace(good, "model: rec", "model: nope", 1), `line 9 ($.stages[1].model): model "nope"`)
	f(strings.Replace(good, "input: lines", "input: pixels", 1), `line 10 ($.stages[1].input): input "pixels"`)
	f(strings.Replace(good, "sla: 800ms", "sla: 0s", 1), `line 2 ($.sla)`)
	f(strings.Replace(good, "name: b", "name: a", 1), `($.stages[1].name): stage name "a" is used twice`)
	f(strings.Replace(good, "max_batch: 4", "max_batch: 4, maxwait: 2", 1), "unknown field")
	f(strings.Replace(good, "sla: 800ms", "sla: [", 1), "bad pipeline spec")
	f("name: p\nsla: 1s\n", `($.stages): a pipeline needs at least one stage`)
}

func TestBuiltinPipelinesParse(t *testing.T) {
	names := BuiltinNames()
	if len(names) < 3 {
		t.Fatalf("built-in pipelines %v", names)
	}
	for _, n := range names {
		b, err := Builtin(n)
		if err != nil {
			t.Fatal(err)
		}
		p, err := Parse(b, nil, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if p.Name != n {
			t.Fatalf("built-in %q is named %q", n, p.Name)
		}
	}
	if _, err := Builtin("nope"); err == nil || !strings.Contains(err.Error(), "ocr") {
		t.Fatalf("unknown built-in: %v", err)
	}
}

const declarative = `name: p
sla: 1s
stages:
  - name: a
    model: det
    image: {resize: letterbox, size: [32, 64], layout: NHWC, channels: BGR, scale: 127.5, mean: [1], pad: [114, 114, 114]}
  - name: b
    model: rec
    crops:
      boxes: y
      format: cxcywh
      normalized: true
      threshold: 0.25
      nms: 0.45
      max: 10
      margin: 0.1
      image: {resize: shorter-side, shorter: 40, size: [32, 32], mean: [0.5, 0.5, 0.5], std: [0.25]}
  - name: c
    model: rec
    from: {x: a.y}
output:
  softmax: [y]
  topk: {from: y, k: 2, labels: labels.txt}
  rename: {label: name}
  select: [name, class, item]
`

func TestParseDeclarativeGlue(t *testing.T) {
	p, err := Parse([]byte(declarative), repo(), first, next)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := p.Stages[0], p.Stages[1], p.Stages[2]
	if !a.Declarative() || a.Image.ResizeMode() != models.ResizeLetterbox || a.Image.Pad[0] != 114 || b.Crops.Image.Shorter != 40 ||
		b.Crops.NMS != 0.45 || c.From["x"] != "a.y" || p.Output.TopK.K != 2 || p.Output.Rename["label"] != "name" {
		t.Fatalf("parsed %+v %+v %+v %+v", a.Image, b.Crops, c.From, p.Output)
	}
	f := func(old, new, want string) {
		t.Helper()
		_, err := Parse([]byte(strings.Replace(declarative, old, new, 1)), repo(), first, next)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Fatalf("%q → %q: got %v, want %q", old, new, err, want)
		}
	}
	f("resize: letterbox", "resize: squash", `line 6 ($.stages[0].image.resize): resize "squash"`)
	f("layout: NHWC", "layout: CHW", `($.stages[0].image.layout): layout "CHW" is not one of [NCHW NHWC]`)
	f("size: [32, 64]", "size: [32]", "($.stages[0].image.size)")
	f("std: [0.25]", "std: [0]", "($.stages[1].crops.image.std)")
	f("mean: [0.5, 0.5, 0.5]", "mean: [0.5, 0.5]", "give 1 or 3")
	f("boxes: y", "boxes: z", `($.stages[1].crops.boxes): "z" is not an output of step "a"`)
	f("boxes: y", "decoder: blazeface", "format and normalized describe boxes")
	f("nms: 0.45", "nms: 2", "($.stages[1].crops.nms)")
	f("x: a.y", "x: b.q", `"q" is not an output of step "b"`)
	f("x: a.y", "x: c.y", "must be STEP.OUTPUT with STEP an earlier step [a b]")
	f("x: a.y", "w: a.y", `"w" is not an input of model "rec"`)
	f("k: 2", "k: 5000", "($.output.topk.k)")
	f("select: [name, class, item]", "select: [name, name]", `"name" is selected twice`)
	f("    model: rec\n    from", "    model: rec\n    input: tensor\n    from", "use one or the other")
	f("    image: {resize: letterbox, size: [32, 64], layout: NHWC, channels: BGR, scale: 127.5, mean: [1], pad: [114, 114, 114]}", "    crops: {decoder: x, image: {}}", "the first step has no earlier step")
	f("    image: {resize: letterbox, size: [32, 64], layout: NHWC, channels: BGR, scale: 127.5, mean: [1], pad: [114, 114, 114]}", "    image: {resize: letterbox}\n    crops: {decoder: x, image: {}}", "either the request's image")
}

func FuzzParsePipeline(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte(declarative))
	for _, n := range BuiltinNames() {
		b, _ := Builtin(n)
		f.Add(b)
	}
	f.Add([]byte("name: [\n"))
	f.Add([]byte("stages: {a: 1}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<14 {
			return
		}
		p, err := Parse(b, repo(), first, next)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		if err := p.Validate(repo(), first, next); err != nil {
			t.Fatalf("parsed spec fails validation: %v", err)
		}
	})
}
