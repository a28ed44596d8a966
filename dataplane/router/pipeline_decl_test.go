package router

import (
	"context"
	"encoding/binary"
	"image"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/dataplane/dataplanetest"
	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/models/pipespec"
)

// fakeClient is a stage that computes its outputs with a Go function.
type fakeClient func(in []models.Tensor) []models.Tensor

func (f fakeClient) Infer(_ context.Context, in []models.Tensor, _ time.Time) (*Reply, error) {
	return &Reply{Outputs: f(in), Variant: "v"}, nil
}

func fakeStage(t *testing.T, name string, in, out []models.TensorSpec, files map[string]string) *models.Stage {
	t.Helper()
	dir := t.TempDir()
	for n, text := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return &models.Stage{Name: name, Variants: []*models.Variant{{Name: "v", Stage: name, File: "m.onnx", Inputs: in, Outputs: out, Dir: dir}}}
}

func spec(name string, dt models.DataType, shape ...int64) models.TensorSpec {
	return models.TensorSpec{Name: name, DataType: dt, Shape: shape}
}

func f32(name string, shape []int64, v ...float32) models.Tensor {
	t := models.Tensor{Name: name, DataType: models.FP32, Shape: shape, Data: make([]byte, 4*models.Elements(shape))}
	for i, x := range v {
		binary.LittleEndian.PutUint32(t.Data[4*i:], math.Float32bits(x))
	}
	return t
}

// parseSpec parses a spec against the stages' interfaces.
func parseSpec(t *testing.T, src string, stages ...*models.Stage) *models.Pipeline {
	t.Helper()
	repo := &models.Repository{Stages: map[string]*models.Stage{}}
	for _, s := range stages {
		repo.Stages[s.Name] = s
	}
	first, next := BuiltinGlues().Names()
	p, err := pipespec.Parse([]byte(src), repo, first, next)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func build(spec *models.Pipeline, stages []*models.Stage, clients ...StageClient) (*Pipeline, error) {
	steps := make([]*Step, len(stages))
	for i, s := range stages {
		steps[i] = &Step{Spec: spec.Stages[i], Meta: s, Client: clients[i]}
	}
	return NewPipeline(spec, steps, BuiltinGlues())
}

// halves is a w×h image, red left of x = w/2 and blue right of it.
func halves(w, h int) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			c := color.RGBA{255, 0, 0, 255}
			if x >= w/2 {
				c = color.RGBA{0, 0, 255, 255}
			}
			img.Set(x, y, c)
		}
	}
	return img
}

const detectClassify = `name: colours
sla: 5s
stages:
  - name: det
    model: det
    image: {size: [20, 40]}
  - name: cls
    model: cls
    crops:
      boxes: boxes
      scores: scores
      normalized: true
      threshold: 0.3
      nms: 0.5
      image: {interpolation: nearest}
output:
  softmax: [logits]
  topk: {from: logits, k: 1, labels: colours.txt}
  rename: {label: colour, score: det_score}
  select: [boxes, det_score, class, class_prob, colour, item]
`

// A detector's boxes (normalised xyxy) fan out into crops of the request
// image: thresholded, suppressed, mapped back, preprocessed, classified,
// answered row by row with labels.
func TestDeclarativeCropsFanOutAndAnswerRows(t *testing.T) {
	det := fakeStage(t, "det", []models.TensorSpec{spec("img", models.FP32, -1, 3, -1, -1)},
		[]models.TensorSpec{spec("boxes", models.FP32, -1, 4, 4), spec("scores", models.FP32, -1, 4)}, nil)
	cls := fakeStage(t, "cls", []models.TensorSpec{spec("x", models.FP32, -1, 3, 8, 8)},
		[]models.TensorSpec{spec("logits", models.FP32, -1, 3)}, map[string]string{"colours.txt": "red\ngreen\nblue\n"})
	detector := fakeClient(func(in []models.Tensor) []models.Tensor {
		if s := in[0].Shape; !slices.Equal(s, []int64{1, 3, 20, 40}) {
			t.Errorf("detector input %v", s)
		}
		return []models.Tensor{
			f32("boxes", []int64{1, 4, 4},
				0, 0, 0.5, 1, // the red half, 0.9
				0.5, 0, 1, 1, // the blue half, 0.8
				0.05, 0, 0.5, 1, // overlaps the red box by IoU 0.9: suppressed
				0, 0, 1, 1), // under the threshold
			f32("scores", []int64{1, 4}, 0.9, 0.8, 0.7, 0.1),
		}
	})
	classifier := fakeClient(func(in []models.Tensor) []models.Tensor {
		px := func(c int) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(in[0].Data[4*c*64:])) }
		return []models.Tensor{f32("logits", []int64{1, 3}, 5*px(0), 5*px(1), 5*px(2))}
	})
	stages := []*models.Stage{det, cls}
	p, err := build(parseSpec(t, detectClassify, stages...), stages, detector, classifier)
	if err != nil {
		t.Fatal(err)
	}
	if got := models.TensorNames(p.Outputs()); strings.Join(got, ",") != "boxes,det_score,class,class_prob,colour,item" {
		t.Fatalf("declared outputs %v", got)
	}
	if in := p.Inputs(); len(in) != 1 || in[0].Name != "image" || in[0].DataType != models.BYTES {
		t.Fatalf("declared inputs %v", in)
	}
	// Two images: the second is the first at twice the size.
	out, _, err := p.Run(context.Background(), &Request{Images: []image.Image{halves(40, 20), halves(80, 40)}}, time.Time{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := tensorNames(out); strings.Join(got, ",") != "boxes,det_score,class,class_prob,colour,item" {
		t.Fatalf("answered %v", got)
	}
	ints := func(t models.Tensor) []int32 {
		v := make([]int32, len(t.Data)/4)
		for i := range v {
			v[i] = int32(binary.LittleEndian.Uint32(t.Data[4*i:]))
		}
		return v
	}
	if got := ints(out[0]); !slices.Equal(got, []int32{0, 0, 20, 20, 20, 0, 40, 20, 0, 0, 40, 40, 40, 0, 80, 40}) {
		t.Fatalf("boxes %v", got)
	}
	if got := dataplanetest.Floats(out[1]); !slices.Equal(got, []float32{0.9, 0.8, 0.9, 0.8}) {
		t.Fatalf("scores %v", got)
	}
	if got := ints(out[2]); !slices.Equal(got, []int32{0, 2, 0, 2}) {
		t.Fatalf("classes %v: the crops' colours did not reach the classifier", got)
	}
	if p := dataplanetest.Floats(out[3])[0]; math.Abs(float64(p)-0.9867) > 1e-3 {
		t.Fatalf("class_prob %v is not softmax(5, 0, 0)[0]", p)
	}
	if got := bytesElements(out[4].DataType, out[4].Data); strings.Join(got, ",") != "red,blue,red,blue" {
		t.Fatalf("labels %v", got)
	}
	if got := ints(out[5]); !slices.Equal(got, []int32{0, 0, 1, 1}) {
		t.Fatalf("items %v", got)
	}

	// No box above the threshold: empty rows of the declared shapes.
	none := fakeClient(func([]models.Tensor) []models.Tensor {
		return []models.Tensor{f32("boxes", []int64{1, 1, 4}, 0, 0, 1, 1), f32("scores", []int64{1, 1}, 0.1)}
	})
	p, err = build(parseSpec(t, detectClassify, stages...), stages, none, classifier)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err = p.Run(context.Background(), &Request{Images: []image.Image{halves(40, 20)}}, time.Time{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range out {
		if o.Shape[0] != 0 || len(o.Data) != 0 && o.DataType != models.BYTES {
			t.Fatalf("no detection: %s %v %d bytes", o.Name, o.Shape, len(o.Data))
		}
	}
}

// Tensors travel by name: from the request, and from any earlier step.
func TestDeclarativeRoutesTensorsByName(t *testing.T) {
	a := fakeStage(t, "a", []models.TensorSpec{spec("u", models.FP32, -1, 2)}, []models.TensorSpec{spec("junk", models.FP32, -1, 1), spec("y", models.FP32, -1, 2)}, nil)
	b := fakeStage(t, "b", []models.TensorSpec{spec("p", models.FP32, -1, 2)}, []models.TensorSpec{spec("z", models.FP32, -1, 2)}, nil)
	c := fakeStage(t, "c", []models.TensorSpec{spec("m", models.FP32, -1, 2), spec("n", models.FP32, -1, 2), spec("o", models.FP32, -1, 2)},
		[]models.TensorSpec{spec("sum", models.FP32, -1, 2)}, nil)
	add := func(k float32, outs ...string) fakeClient {
		return func(in []models.Tensor) []models.Tensor {
			v := dataplanetest.Floats(in[0])
			var res []models.Tensor
			for _, o := range outs {
				res = append(res, f32(o, []int64{1, 2}, v[0]+k, v[1]+k))
			}
			return res
		}
	}
	summer := fakeClient(func(in []models.Tensor) []models.Tensor {
		if in[0].Name != "m" || in[1].Name != "n" || in[2].Name != "o" {
			t.Errorf("inputs %v", tensorNames(in))
		}
		s := make([]float32, 2)
		for _, x := range in {
			for i, v := range dataplanetest.Floats(x) {
				s[i] += v * []float32{1, 10, 100}[slices.IndexFunc(in, func(y models.Tensor) bool { return y.Name == x.Name })]
			}
		}
		return []models.Tensor{f32("sum", []int64{1, 2}, s...)}
	})
	src := `name: route
sla: 5s
stages:
  - name: a
    model: a
    from: {u: request.values}
  - name: b
    model: b
    from: {p: a.y}
  - name: c
    model: c
    from: {m: a.y, n: b.z, o: request.values}
`
	stages := []*models.Stage{a, b, c}
	p, err := build(parseSpec(t, src, stages...), stages, add(1, "junk", "y"), add(10, "z"), summer)
	if err != nil {
		t.Fatal(err)
	}
	if in := p.Inputs(); len(in) != 1 || in[0].Name != "values" {
		t.Fatalf("declared inputs %v", in)
	}
	req := &Request{V2: &v2codec.InferRequest{Inputs: []models.Tensor{f32("values", []int64{1, 2}, 1, 2)}}}
	out, _, err := p.Run(context.Background(), req, time.Time{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// a.y = v+1, b.z = v+11, request v: m + 10 n + 100 o.
	want := []float32{(1 + 1) + 10*(1+11) + 100*1, (2 + 1) + 10*(2+11) + 100*2}
	if got := dataplanetest.Floats(out[0]); !slices.Equal(got, want) {
		t.Fatalf("sum %v, want %v", got, want)
	}
	req = &Request{V2: &v2codec.InferRequest{Inputs: []models.Tensor{f32("other", []int64{1, 2}, 1, 2)}}}
	if _, _, err := p.Run(context.Background(), req, time.Time{}, nil); err == nil || !strings.Contains(err.Error(), `no input "values"`) {
		t.Fatalf("missing request input: %v", err)
	}
}

func TestNewPipelineRefusesDeclarativeGlueItCannotRun(t *testing.T) {
	img := fakeStage(t, "img", []models.TensorSpec{spec("x", models.FP32, -1, 3, 8, 8)}, []models.TensorSpec{spec("boxes", models.FP32, -1, 2, 4), spec("prob", models.FP32, -1, 5, 2)}, nil)
	flat := fakeStage(t, "flat", []models.TensorSpec{spec("v", models.FP32, -1, 4)}, []models.TensorSpec{spec("w", models.FP32, -1, 4)}, nil)
	two := fakeStage(t, "two", []models.TensorSpec{spec("x", models.FP32, -1, 3, 8, 8), spec("k", models.FP32, -1, 1)}, []models.TensorSpec{spec("w", models.FP32, -1, 4)}, nil)
	f := func(src, want string, stages ...*models.Stage) {
		t.Helper()
		clients := make([]StageClient, len(stages))
		_, err := build(parseSpec(t, src, stages...), stages, clients...)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v, want %q", err, want)
		}
	}
	head := "name: p\nsla: 1s\nstages:\n"
	f(head+"  - {name: a, model: flat, image: {}}\n", "rank-4", flat)
	f(head+"  - {name: a, model: two, image: {}}\n", `input "k" has no source`, two)
	f(head+"  - {name: a, model: img, image: {}}\n  - {name: b, model: img, crops: {decoder: yolo, image: {}}}\n", `no decoder "yolo"`, img, img)
	f(head+"  - {name: a, model: img, image: {}}\noutput: {topk: {from: prob}}\n", "not FP32 [N,C]", img)
	f(head+"  - {name: a, model: img, image: {}}\noutput: {topk: {from: prob2}}\n", `no output "prob2"`, img)
	f(head+"  - {name: a, model: img, image: {}}\noutput: {rename: {boxes: prob}}\n", "already answers", img)
	f(head+"  - {name: a, model: flat}\noutput: {topk: {from: w, labels: nope.txt}}\n", "nope.txt", flat)
	f(head+"  - {name: a, model: flat}\noutput: {select: [v]}\n", `select: no output "v"`, flat)
}

// FuzzDeclarativePipeline: any spec that parses either builds or is
// refused with an error, and one that builds answers a request or fails
// with an error — never a panic.
func FuzzDeclarativePipeline(f *testing.F) {
	f.Add([]byte(detectClassify))
	f.Add([]byte("name: p\nsla: 1s\nstages:\n  - {name: a, model: det, image: {resize: letterbox, layout: NHWC}}\n"))
	f.Add([]byte("name: p\nsla: 1s\nstages:\n  - {name: a, model: det, image: {resize: centre-crop, channels: GRAY, size: [3, 5]}}\n  - {name: b, model: cls, crops: {boxes: boxes, format: cxcywh, max: 1, margin: 2, image: {resize: shorter-side, shorter: 3}}}\n"))
	f.Add([]byte("name: p\nsla: 1s\nstages:\n  - {name: a, model: det, image: {}}\n  - {name: b, model: cls, crops: {decoder: blazeface, image: {}}}\noutput: {softmax: [logits], topk: {from: logits, k: 3, softmax: true}, select: [class]}\n"))
	f.Add([]byte("name: p\nsla: 1s\nstages:\n  - {name: a, model: cls, from: {x: request.x}}\n  - {name: b, model: cls, from: {x: a.logits}}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<12 {
			return
		}
		det := &models.Stage{Name: "det", Variants: []*models.Variant{{Name: "v", Stage: "det", File: "m",
			Inputs:  []models.TensorSpec{spec("img", models.FP32, -1, 3, -1, -1)},
			Outputs: []models.TensorSpec{spec("boxes", models.FP32, -1, 2, 4), spec("scores", models.FP32, -1, 2)}}}}
		cls := &models.Stage{Name: "cls", Variants: []*models.Variant{{Name: "v", Stage: "cls", File: "m",
			Inputs:  []models.TensorSpec{spec("x", models.FP32, -1, 3, 4, 4)},
			Outputs: []models.TensorSpec{spec("logits", models.FP32, -1, 3)}}}}
		repo := &models.Repository{Stages: map[string]*models.Stage{"det": det, "cls": cls}}
		first, next := BuiltinGlues().Names()
		sp, err := pipespec.Parse(b, repo, first, next)
		if err != nil {
			return
		}
		clients := map[string]StageClient{
			"det": fakeClient(func([]models.Tensor) []models.Tensor {
				return []models.Tensor{f32("boxes", []int64{1, 2, 4}, 0, 0, 0.5, 1, 0.2, 0.2, 3, -1), f32("scores", []int64{1, 2}, 0.9, 0.5)}
			}),
			"cls": fakeClient(func(in []models.Tensor) []models.Tensor {
				return []models.Tensor{f32("logits", []int64{in[0].Shape[0], 3}, 1, 2, 3)}
			}),
		}
		steps := make([]*Step, len(sp.Stages))
		for i, s := range sp.Stages {
			steps[i] = &Step{Spec: s, Meta: repo.Stages[s.Model], Client: clients[s.Model]}
		}
		p, err := NewPipeline(sp, steps, BuiltinGlues())
		if err != nil {
			return
		}
		req := &Request{Images: []image.Image{halves(12, 7)}}
		if p.Inputs()[0].DataType != models.BYTES {
			req = &Request{V2: &v2codec.InferRequest{Inputs: []models.Tensor{f32("x", []int64{1, 3, 4, 4})}}}
		}
		out, _, err := p.Run(context.Background(), req, time.Time{}, nil)
		if err != nil {
			return
		}
		if len(out) != len(p.Outputs()) {
			t.Fatalf("answered %d outputs, declared %v", len(out), p.Outputs())
		}
		for i, o := range out {
			if o.Name != p.Outputs()[i].Name || o.DataType != p.Outputs()[i].DataType {
				t.Fatalf("output %d is %s %s, declared %v", i, o.Name, o.DataType, p.Outputs()[i])
			}
		}
	})
}
