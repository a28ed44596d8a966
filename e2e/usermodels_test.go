package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/dataplane/glue"
	"github.com/ipa-serving/ipa/models"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// newcomer runs ipa commands the way the README's walkthrough does: in
// their own directory (so `./models-repo` is the user repository), with
// raw model files from elsewhere.
type newcomer struct {
	t   *testing.T
	dir string
	env []string
}

// newNewcomer returns a newcomer in a fresh directory whose environment
// has no IPA_ variable but the ONNX Runtime library (no built-in
// repository: the user's is all there is), and the raw model directory,
// which must hold need (run `make deps`), and the library's path.
func newNewcomer(t *testing.T, need string) (n *newcomer, raw, lib string) {
	t.Helper()
	raw, err := filepath.Abs(os.Getenv("IPA_RAW_DIR"))
	if os.Getenv("IPA_RAW_DIR") == "" {
		raw, err = filepath.Abs(".deps/raw")
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(raw, need)); err != nil {
		t.Fatalf("raw models are required (run `make deps`): %v", err)
	}
	lib = os.Getenv("IPA_ORT_LIB")
	if lib == "" {
		lib = ".deps/lib/libonnxruntime.so.1"
	}
	if lib, err = filepath.Abs(lib); err != nil {
		t.Fatal(err)
	}
	n = &newcomer{t: t, dir: t.TempDir()}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "IPA_") {
			n.env = append(n.env, kv)
		}
	}
	n.env = append(n.env, "IPA_ORT_LIB="+lib)
	return n, raw, lib
}

func (n *newcomer) cmd(args ...string) *exec.Cmd {
	c := exec.Command(ipaBin, args...)
	c.Dir, c.Env = n.dir, n.env
	return c
}

// ok runs ipa and fails the test unless it exits 0; it returns stdout.
func (n *newcomer) ok(args ...string) string {
	n.t.Helper()
	var out, errb bytes.Buffer
	c := n.cmd(args...)
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		n.t.Fatalf("ipa %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// refused runs ipa, which must exit non-zero with one line on stderr naming
// the problem.
func (n *newcomer) refused(want string, args ...string) {
	n.t.Helper()
	var errb bytes.Buffer
	c := n.cmd(args...)
	c.Stderr = &errb
	err := c.Run()
	var last string
	for _, l := range strings.Split(strings.TrimSpace(errb.String()), "\n") {
		if strings.HasPrefix(l, "ipa: error:") {
			last = l
		}
	}
	if err == nil || !strings.Contains(last, want) {
		n.t.Fatalf("ipa %s: exit %v, error %q; want a refusal containing %q\n%s", strings.Join(args, " "), err, last, want, errb.String())
	}
}

// TestNewcomerServesTheirOwnModels plays the README's "Your own models and
// pipelines" walkthrough: raw ONNX files (BlazeFace from npm, three light
// ImageNet graphs from Debian) become variants of two stages of a user
// repository through `ipa models add` (every refusal on the way is one
// line and a non-zero exit), a YAML pipeline with declarative glue chains
// them, `ipa profile --quick` measures it, `ipa solve` plans it, `ipa
// local` serves it with the controller on, and the answers match direct
// ONNX Runtime runs of the raw files; `ipa manifests` renders it.
func TestNewcomerServesTheirOwnModels(t *testing.T) {
	n, raw, lib := newNewcomer(t, "blazeface")
	frame, err := filepath.Abs("dataplane/glue/testdata/video-001.png")
	if err != nil {
		t.Fatal(err)
	}
	face := func(f string) string { return filepath.Join(raw, "blazeface", f) }
	light := func(f string) string { return filepath.Join(raw, "imagenet", f) }

	// What ipa sees in a file.
	out := n.ok("models", "inspect", face("face_detection_back_256x256_barracuda.onnx"))
	for _, want := range []string{"input     input:0 FP32[1,256,256,3]", "output    Identity:0 FP32[1,512,1]", "opset ai.onnx 12", "batch     fixed at 1 (served item by item)"} {
		if !strings.Contains(out, want) {
			t.Fatalf("inspect: no %q in\n%s", want, out)
		}
	}
	out = n.ok("models", "inspect", light("light_squeezenet.onnx"))
	if !strings.Contains(out, "batch     fixed at 1, rewritable") {
		t.Fatalf("inspect squeezenet:\n%s", out)
	}

	// Refusals, each one line and a non-zero exit.
	notes := filepath.Join(n.dir, "notes.onnx")
	os.WriteFile(notes, []byte("not a model\n"), 0o644)
	n.refused("not an ONNX model", "models", "add", notes, "--stage", "my-face", "--accuracy", "1", "--metric", "m")
	n.refused("accuracy missing", "models", "add", face("face_detection_back_256x256_barracuda.onnx"), "--stage", "my-face")

	// The detector: two BlazeFace variants (their batch stays fixed at 1).
	n.ok("models", "add", face("face_detection_back_256x256_barracuda.onnx"), "--stage", "my-face", "--variant", "back-256",
		"--accuracy", "90", "--metric", "faces found % (our test set)", "--license", "Apache-2.0")
	n.ok("models", "add", face("face_detection_front_128x128_barracuda.onnx"), "--stage", "my-face", "--variant", "front-128",
		"--accuracy", "70", "--metric", "faces found % (our test set)", "--license", "Apache-2.0")
	n.refused("duplicate variant", "models", "add", face("face_detection_front_128x128_barracuda.onnx"), "--stage", "my-face", "--variant", "front-128",
		"--accuracy", "70", "--metric", "m")

	// The classifier ladder from a manifest, with a labels file; the graphs
	// name their tensors differently, so each is renamed to data → prob.
	var labels strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&labels, "label %d\n", i)
	}
	os.WriteFile(filepath.Join(n.dir, "labels.txt"), []byte(labels.String()), 0o644)
	manifest := fmt.Sprintf(`stage: my-classify
metric: ImageNet top-1 %%
license: Apache-2.0 (ONNX project test data)
variants:
  - {file: %s, variant: squeezenet, accuracy: 56.85, input: data, output: prob, files: [labels.txt]}
  - {file: %s, variant: shufflenet, accuracy: 58.0, input: data, output: prob, files: [labels.txt]}
`, light("light_squeezenet.onnx"), light("light_shufflenet.onnx"))
	os.WriteFile(filepath.Join(n.dir, "models.yaml"), []byte(manifest), 0o644)
	n.ok("models", "add", "models.yaml")
	n.refused("interface mismatch", "models", "add", light("light_resnet50.onnx"), "--stage", "my-classify", "--variant", "resnet50",
		"--accuracy", "74.93", "--metric", "ImageNet top-1 %")
	n.ok("models", "add", light("light_resnet50.onnx"), "--stage", "my-classify", "--variant", "resnet50",
		"--accuracy", "74.93", "--metric", "ImageNet top-1 %", "--input", "data", "--output", "prob", "--file", "labels.txt")
	out = n.ok("models", "list")
	for _, want := range []string{"my-face", "back-256", "my-classify", "resnet50"} {
		if !strings.Contains(out, want) {
			t.Fatalf("models list: no %q in\n%s", want, out)
		}
	}

	// The pipeline: detect faces, classify each crop, answer labels.
	spec := `name: my-faces
sla: 2s
stages:
  - name: detect
    model: my-face
    image: {resize: letterbox, layout: NHWC, scale: 127.5, mean: [1]}
    initial: {variant: back-256}
  - name: classify
    model: my-classify
    crops:
      decoder: blazeface
      threshold: 0.5
      image: {resize: shorter-side, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
    initial: {variant: squeezenet, max_batch: 4, max_wait: 2ms}
output:
  topk: {from: prob, k: 1, labels: labels.txt}
  rename: {score: face_score}
  select: [boxes, face_score, class, class_prob, label, item]
`
	os.WriteFile(filepath.Join(n.dir, "my.yaml"), []byte(spec), 0o644)
	n.ok("profile", "--pipeline", "my.yaml", "--quick", "--out", "my-profile.json")
	out = n.ok("solve", "--pipeline", "my.yaml", "--profile", "my-profile.json", "--rate", "5")
	if !strings.Contains(out, "detect") || !strings.Contains(out, "classify") {
		t.Fatalf("solve:\n%s", out)
	}

	// Serve it, adapted by the controller.
	addr := freeAddr(t)
	local := n.cmd("local", "--pipeline", "my.yaml", "--controller.profile", "my-profile.json", "--controller.interval", "1s",
		"--controller.decision-log", "decisions.jsonl", "--http.listen-addr", addr)
	var log bytes.Buffer
	local.Stdout, local.Stderr = &log, &log
	if err := local.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		local.Process.Signal(os.Interrupt)
		local.Wait()
		if t.Failed() {
			t.Logf("ipa local:\n%s", log.String())
		}
	})
	waitFor(t, 3*time.Minute, func() error {
		r, err := http.Get("http://" + addr + "/v2/health/ready")
		if err != nil {
			return err
		}
		r.Body.Close()
		if r.StatusCode != 200 {
			return fmt.Errorf("ready: %d", r.StatusCode)
		}
		return nil
	})
	var meta struct {
		Inputs, Outputs []struct {
			Name, Datatype string
			Shape          []int64
		}
	}
	if err := json.Unmarshal(get(t, "http://"+addr+"/v2/models/my-faces"), &meta); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(meta.Inputs, meta.Outputs); got != "[{image BYTES [-1]}] [{boxes INT32 [-1 4]} {face_score FP32 [-1]} {class INT32 [-1]} {class_prob FP32 [-1]} {label BYTES [-1]} {item INT32 [-1]}]" {
		t.Fatalf("V2 metadata: %s", got)
	}

	// Answers against ONNX Runtime run directly on the raw files.
	if err := mlrt.Init(lib); err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile(frame)
	if err != nil {
		t.Fatal(err)
	}
	img, err := glue.DecodeImage(body)
	if err != nil {
		t.Fatal(err)
	}
	rawFile := map[string]string{
		"back-256": face("face_detection_back_256x256_barracuda.onnx"), "front-128": face("face_detection_front_128x128_barracuda.onnx"),
		"squeezenet": light("light_squeezenet.onnx"), "shufflenet": light("light_shufflenet.onnx"), "resnet50": light("light_resnet50.onnx"),
	}
	checked, faces := 0, 0
	for attempt := 0; checked < 2 && attempt < 10; attempt++ {
		ans := inferImage(t, addr, "my-faces", body)
		det, cls := ans.param("detect_variant"), ans.param("classify_variant")
		if strings.Contains(det+cls, ",") {
			continue // the controller switched a variant mid-request
		}
		size := map[string]int{"back-256": 256, "front-128": 128}[det]
		in, g := glue.FaceInput(img, size) // the spec's image section, bit for bit (glue's tests)
		dets, err := glue.FaceBoxes(direct(t, rawFile[det], in), g, size, 0.5)
		if err != nil {
			t.Fatal(err)
		}
		boxes, scores := ans.ints("boxes"), ans.floats("face_score")
		if len(dets) != len(scores) || len(boxes) != 4*len(dets) {
			t.Fatalf("%s found %d faces %v; ONNX Runtime directly %+v", det, len(scores), boxes, dets)
		}
		if det == "back-256" && len(dets) != 2 {
			t.Fatalf("back-256 found %d faces on the two speakers: %+v", len(dets), dets)
		}
		labelList := strings.Split(strings.TrimSpace(labels.String()), "\n")
		for i, d := range dets {
			if got := image.Rect(int(boxes[4*i]), int(boxes[4*i+1]), int(boxes[4*i+2]), int(boxes[4*i+3])); got != d.Box || scores[i] != d.Score {
				t.Fatalf("face %d: %v %v, directly %v %v", i, got, scores[i], d.Box, d.Score)
			}
			x := glue.ClassifyInput(glue.Crop(img, d.Box), "", 224)
			top, err := glue.TopK(flatten(direct(t, rawFile[cls], x)[0]), 0, 1, labelList)
			if err != nil {
				t.Fatal(err)
			}
			if c, p, l := ans.ints("class")[i], ans.floats("class_prob")[i], ans.strings("label")[i]; int(c) != top[0].Index || l != top[0].Label ||
				math.Abs(float64(p-top[0].Prob)) > 1e-6 {
				t.Fatalf("face %d (%s): class %d %v %q, directly %+v", i, cls, c, p, l, top[0])
			}
		}
		t.Logf("answer %d: %s found %d faces, %s classified them; equal to ONNX Runtime run directly", checked, det, len(dets), cls)
		checked++
		faces += len(dets)
	}
	if checked < 2 || faces == 0 {
		t.Fatalf("compared %d answers with %d faces in 10 requests", checked, faces)
	}
	// The controller is on: it logs a decision every interval.
	waitFor(t, time.Minute, func() error {
		b, _ := os.ReadFile(filepath.Join(n.dir, "decisions.jsonl"))
		if lines := bytes.Count(b, []byte("\n")); lines < 2 {
			return fmt.Errorf("%d decisions logged", lines)
		}
		return nil
	})
	// A body that is no image is a 400 with a V2 error.
	r, err := http.Post("http://"+addr+"/v2/models/my-faces/infer", "application/octet-stream", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 400 {
		t.Fatalf("a text body: status %d", r.StatusCode)
	}

	// Kubernetes: the manifests render (the stage pods read the repository
	// from --models-volume).
	out = n.ok("manifests", "--pipeline", "my.yaml", "--profile", "my-profile.json", "--models-volume", "my-models")
	for _, want := range []string{"name: my-faces-detect", "name: my-faces-classify", "name: my-faces-router", "claimName: my-models"} {
		if !strings.Contains(out, want) {
			t.Fatalf("manifests: no %q", want)
		}
	}

	n.ok("models", "remove", "my-classify/shufflenet")
	n.refused("no such variant", "models", "remove", "my-classify/shufflenet")
}

// direct runs one input through the ONNX file at path with ONNX Runtime,
// outside ipa's stages, and copies the outputs.
func direct(t *testing.T, path string, in models.Tensor) []models.Tensor {
	t.Helper()
	ins, outs, err := mlrt.Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := mlrt.Open(path, &models.Variant{Name: "direct", Stage: "direct", File: filepath.Base(path), Inputs: ins, Outputs: outs}, mlrt.Options{Threads: 1, SkipWarmup: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	in.Name = ins[0].Name
	res, err := s.Run(context.Background(), []models.Tensor{in})
	if err != nil {
		t.Fatal(err)
	}
	cp := make([]models.Tensor, len(res))
	for i, o := range res {
		cp[i] = models.Tensor{Name: o.Name, DataType: o.DataType, Shape: append([]int64(nil), o.Shape...), Data: append([]byte(nil), o.Data...)}
	}
	return cp
}

// flatten views a classifier's [1,C,1,1] output as [1,C].
func flatten(t models.Tensor) models.Tensor {
	t.Shape = t.Shape[:2]
	return t
}

// answer is a V2 JSON answer.
type answer struct {
	Parameters map[string]any
	Outputs    []struct {
		Name string
		Data json.RawMessage
	}
}

func inferImage(t *testing.T, addr, pipeline string, body []byte) *answer {
	t.Helper()
	r, err := http.Post("http://"+addr+"/v2/models/"+pipeline+"/infer", "image/png", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var a answer
	b := new(bytes.Buffer)
	b.ReadFrom(bufio.NewReader(r.Body))
	if r.StatusCode != 200 {
		t.Fatalf("infer: %d %s", r.StatusCode, b)
	}
	if err := json.Unmarshal(b.Bytes(), &a); err != nil {
		t.Fatal(err)
	}
	return &a
}

func (a *answer) param(name string) string {
	s, _ := a.Parameters[name].(string)
	return s
}

func (a *answer) data(name string, v any) {
	for _, o := range a.Outputs {
		if o.Name == name {
			if err := json.Unmarshal(o.Data, v); err != nil {
				panic(err)
			}
			return
		}
	}
	panic("no output " + name)
}

func (a *answer) ints(name string) (v []int32)     { a.data(name, &v); return v }
func (a *answer) floats(name string) (v []float32) { a.data(name, &v); return v }
func (a *answer) strings(name string) (v []string) { a.data(name, &v); return v }

// waitFor polls cond until it returns nil, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
