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

func FuzzParsePipeline(f *testing.F) {
	f.Add([]byte(good))
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
