package repobuild

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

const sampleManifest = `# two ImageNet variants under one interface
stage: my-classify
metric: ImageNet top-1 %
license: Apache-2.0
variants:
  - file: light_squeezenet.onnx
    variant: squeezenet
    accuracy: 56.85
    source: ONNX model zoo
    input: data
    output: prob
    files: [labels.txt]
  - file: /abs/light_ResNet50.onnx
    accuracy: 74.93
    metric: top-1
    stage: other
    shape: {x: [-1, 3, 640, 640]}
    check_shape: {y: [-1, 3, 48, 320]}
    tolerance: 0
`

func TestParseManifestFillsDefaultsAndResolvesPaths(t *testing.T) {
	specs, err := ParseManifest([]byte(sampleManifest), "/m", CheckOptions{CheckBatch: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 2 {
		t.Fatalf("%d specs", len(specs))
	}
	a, b := specs[0], specs[1]
	if a.File != "/m/light_squeezenet.onnx" || a.Stage != "my-classify" || a.Variant != "squeezenet" || *a.Accuracy != 56.85 ||
		a.Metric != "ImageNet top-1 %" || a.License != "Apache-2.0" || a.Input != "data" || a.Output != "prob" ||
		len(a.Files) != 1 || a.Files[0] != "/m/labels.txt" || a.Check.CheckBatch != 3 || a.Check.Tolerance != nil {
		t.Fatalf("entry 0: %+v", a)
	}
	if b.File != "/abs/light_ResNet50.onnx" || b.Stage != "other" || b.Variant != "light_resnet50" || b.Metric != "top-1" ||
		b.Shapes["x"][3] != 640 || b.Check.CheckShapes["y"][3] != 320 || b.Check.Tolerance == nil || *b.Check.Tolerance != 0 {
		t.Fatalf("entry 1: %+v", b)
	}
}

func TestParseManifestRefusals(t *testing.T) {
	f := func(src, msg string, want error) {
		t.Helper()
		_, err := ParseManifest([]byte(src), ".", CheckOptions{})
		if err == nil || !strings.Contains(err.Error(), msg) || want != nil && !errors.Is(err, want) {
			t.Fatalf("%q: got %v, want %q", src, err, msg)
		}
	}
	f("", "no variants", nil)
	f("stage: s\nvariants: []\n", "no variants", nil)
	f("stage: s\nvariants:\n  - file: a.onnx\n    metric: m\n", "needs --accuracy", ErrAccuracy)
	f("stage: s\nvariants:\n  - file: a.onnx\n    accuracy: 1\n", "needs --metric", ErrAccuracy)
	f("stage: s\nvariants:\n  - file: a.onnx\n    accuracy: .nan\n    metric: m\n", "not a number", ErrAccuracy)
	f("stage: s\nmetric: m\nvariants:\n  - accuracy: 1\n", "file is required", nil)
	f("stage: s\nmetric: m\nvariants:\n  - file: a.onnx\n    accuracy: 1\n    colour: red\n", "colour", nil)
	f("stage: S!\nmetric: m\nvariants:\n  - file: a.onnx\n    accuracy: 1\n", "stage name", nil)
	f("stage: s\nmetric: m\nvariants:\n  - {file: a.onnx, accuracy: 1}\n  - {file: b/a.onnx, accuracy: 2}\n", "also variants[0]", ErrDuplicate)
	f("stage: s\nmetric: m\nvariants:\n  - {file: a.onnx, accuracy: 1, shape: {x: [0, 3]}}\n", "--shape", nil)
	f("stage: s\nmetric: m\nvariants:\n  - {file: a.onnx, accuracy: 1, files: [model.onnx]}\n", "taken", nil)
	f("variants: [", "bad manifest", nil)
}

func TestVariantName(t *testing.T) {
	f := func(file, want string) {
		t.Helper()
		if got := VariantName(file); got != want {
			t.Fatalf("VariantName(%q) = %q, want %q", file, got, want)
		}
	}
	f("dir/light_squeezenet.onnx", "light_squeezenet")
	f("My Model v2.onnx", "my-model-v2")
	f("_x.onnx", "x")
	f(strings.Repeat("a", 80)+".onnx", strings.Repeat("a", 63))
}

// FuzzParseManifest: any input gives specs that Add's own validation
// accepts, or an error; never a panic.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(sampleManifest))
	f.Add([]byte("stage: s\nmetric: m\nvariants:\n  - {file: a.onnx, accuracy: 1}\n"))
	f.Add([]byte("variants:\n  - file: a.onnx\n    shape: {x: [-1, 3]}\n    accuracy: -1e309\n"))
	f.Add([]byte("stage: s\nvariants: [{file: 'x', accuracy: 1, metric: m, files: ['../../etc/passwd']}]"))
	f.Add([]byte("stage: s\nmetric: m\nvariants:\n  - {file: a.onnx, accuracy: 1, const: {sr: 16000, state: 0}, batch_axis: {state: 1}, drop_output: [stateN]}\n"))
	f.Add([]byte("stage: s\nmetric: m\nvariants:\n  - {file: a.onnx, accuracy: 1, const: {sr: .nan}, batch_axis: {h: 1}, drop_output: [x, x]}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<14 {
			return
		}
		specs, err := ParseManifest(b, "/base", CheckOptions{})
		if err != nil {
			return
		}
		for _, s := range specs {
			if err := s.validate(); err != nil {
				t.Fatalf("ParseManifest accepted %+v: %v", s, err)
			}
			if !filepath.IsAbs(s.File) {
				t.Fatalf("file %q not resolved", s.File)
			}
		}
	})
}
