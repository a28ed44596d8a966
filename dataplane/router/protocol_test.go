package router

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/dataplanetest"
	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
	"github.com/valyala/fasthttp"
)

// jsonAnswer is a JSON V2 answer (or error) as a client reads it.
type jsonAnswer struct {
	ModelVersion string            `json:"model_version"`
	Parameters   map[string]any    `json:"parameters"`
	Outputs      []json.RawMessage `json:"outputs"`
	Error        string            `json:"error"`
	Inputs       []v2codec.TensorMetadata
	Versions     []string
}

type jsonOutput struct {
	Name     string  `json:"name"`
	DataType string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
	Data     []any   `json:"data"`
}

func (a jsonAnswer) output(t *testing.T, name string) *jsonOutput {
	t.Helper()
	for _, raw := range a.Outputs {
		var o jsonOutput
		if err := json.Unmarshal(raw, &o); err != nil {
			t.Fatal(err)
		}
		if o.Name == name {
			return &o
		}
	}
	return nil
}

// slowMachine gives a request a deadline that a loaded test machine (race
// detector, shared cores) meets: these tests are about the protocol.
var slowMachine = []string{v2codec.HeaderTimeout, "120s"}

// postJSON sends a JSON V2 request and decodes the answer.
func postJSON(t *testing.T, r *testRouter, pipeline, body string) (int, jsonAnswer) {
	t.Helper()
	res := r.Do(t, "POST", "/v2/models/"+pipeline+"/infer", []byte(body), slowMachine...)
	var a jsonAnswer
	if err := json.Unmarshal(res.Body, &a); err != nil {
		t.Fatalf("%s: %v: %s", pipeline, err, res.Body)
	}
	return res.Status, a
}

// imagesRequest is a JSON request whose input "image" holds elems as JSON
// strings, plus extra request fields.
func imagesRequest(elems []string, extra string) string {
	q, _ := json.Marshal(elems)
	return fmt.Sprintf(`{"inputs":[{"name":"image","datatype":"BYTES","shape":[%d],"data":%s}]%s}`, len(elems), q, extra)
}

func samplePage(t *testing.T) []byte {
	t.Helper()
	page, err := os.ReadFile("../../docs/sample-page.png")
	if err != nil {
		t.Fatal(err)
	}
	return page
}

// TestOCRPipelineSpeaksTheProtocol: the metadata declares the true input
// (image BYTES) and outputs; a request made from the metadata works; images
// come as base64 (standard, URL-safe, data URL) or raw; N images are N items;
// requested outputs are honoured and unknown ones refused; the answer names
// the variants that computed it.
func TestOCRPipelineSpeaksTheProtocol(t *testing.T) {
	r := localPipe(t, "ocr")
	page := samplePage(t)

	var meta struct {
		Inputs, Outputs []v2codec.TensorMetadata
		Versions        []string
	}
	if err := json.Unmarshal(r.Do(t, "GET", "/v2/models/ocr", nil).Body, &meta); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(meta.Inputs) != "[{image BYTES [-1]}]" {
		t.Errorf("inputs %v, want image BYTES [-1]", meta.Inputs)
	}
	if fmt.Sprint(meta.Outputs) != "[{text BYTES [-1]} {boxes INT32 [-1 4]} {confidence FP32 [-1]} {item INT32 [-1]}]" {
		t.Errorf("outputs %v", meta.Outputs)
	}
	if fmt.Sprint(meta.Versions) != "[det-640+rec-v4]" {
		t.Errorf("versions %v", meta.Versions)
	}

	// One image as standard base64: the answer has every declared output,
	// with the declared datatypes, and says which variants served it.
	std := base64.StdEncoding.EncodeToString(page)
	status, a := postJSON(t, r, "ocr", imagesRequest([]string{std}, ""))
	if status != 200 {
		t.Fatalf("base64 image: %d %s", status, a.Error)
	}
	for _, m := range meta.Outputs {
		o := a.output(t, m.Name)
		if o == nil || o.DataType != m.DataType || len(o.Shape) != len(m.Shape) {
			t.Errorf("output %v: got %+v", m, o)
		}
	}
	lines := a.output(t, "text").Data
	if len(lines) != 4 || lines[0] != "Inference pipelines adapt" {
		t.Fatalf("text %v", lines)
	}
	if a.ModelVersion != "det-640+rec-v4" || a.Parameters["det_variant"] != "det-640" || a.Parameters["rec_variant"] != "rec-v4" {
		t.Errorf("model_version %q, parameters %v", a.ModelVersion, a.Parameters)
	}

	// Two images (URL-safe base64 with line breaks, and a data URL): two
	// items, each line tagged with its image; only the requested outputs.
	url := base64.RawURLEncoding.EncodeToString(page)
	url = url[:76] + "\n" + url[76:]
	dataURL := "data:image/png;base64," + std
	status, a = postJSON(t, r, "ocr", imagesRequest([]string{url, dataURL}, `,"outputs":[{"name":"text"},{"name":"item"}]`))
	if status != 200 {
		t.Fatalf("two images: %d %s", status, a.Error)
	}
	if len(a.Outputs) != 2 || a.output(t, "boxes") != nil {
		t.Errorf("asked for text and item, got %d outputs", len(a.Outputs))
	}
	text, item := a.output(t, "text"), a.output(t, "item")
	if text == nil || item == nil || len(text.Data) != 8 || fmt.Sprint(item.Data) != "[0 0 0 0 1 1 1 1]" || text.Data[4] != lines[0] {
		t.Fatalf("two images: text %v, item %v", text, item)
	}

	// Bad inputs are 400s that say what is wrong.
	for _, tc := range []struct{ body, want string }{
		{imagesRequest([]string{"", std}, ""), "element 0 of 2 is empty"},
		{imagesRequest([]string{"hello, world"}, ""), "base64"},
		{imagesRequest([]string{std}, `,"outputs":[{"name":"nope"}]`), `no output "nope"`},
		{`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3,2,2],"data":[1,2,3,4,5,6,7,8,9,10,11,12]}]}`, `input "image" BYTES`},
		{`{"inputs":[{"name":"image","datatype":"BYTES","shape":[0],"data":[]}]}`, "no image"},
	} {
		status, a := postJSON(t, r, "ocr", tc.body)
		if status != 400 || !strings.Contains(a.Error, tc.want) {
			t.Errorf("%.80s: %d %q, want 400 containing %q", tc.body, status, a.Error, tc.want)
		}
	}

	// The version in the path: the current one works, another is a 404.
	res := r.Do(t, "POST", "/v2/models/ocr/versions/det-640+rec-v4/infer", []byte(imagesRequest([]string{std}, `,"outputs":[{"name":"item"}]`)), slowMachine...)
	if res.Status != 200 {
		t.Errorf("infer with the current version: %d %s", res.Status, res.Body)
	}
	if res := r.Do(t, "GET", "/v2/models/ocr/versions/det-960+rec-v4", nil); res.Status != 404 {
		t.Errorf("metadata of another version: %d %s", res.Status, res.Body)
	}

	// The repository index lists the pipeline; /v2 names the extensions.
	var index []map[string]any
	json.Unmarshal(r.Do(t, "POST", "/v2/repository/index", nil).Body, &index)
	if len(index) == 0 || index[0]["name"] != "ocr" || index[0]["state"] != "READY" || index[0]["version"] != "det-640+rec-v4" {
		t.Errorf("repository index %v", index)
	}
	if res := r.Do(t, "POST", "/v2/repository/models/ocr/load", nil); res.Status != 200 {
		t.Errorf("load the served pipeline: %d %s", res.Status, res.Body)
	}
	if res := r.Do(t, "POST", "/v2/repository/models/ocr/unload", nil); res.Status != 400 || !strings.Contains(string(res.Body), "cannot be unloaded") {
		t.Errorf("unload: %d %s", res.Status, res.Body)
	}
	if res := r.Do(t, "POST", "/v2/repository/models/classify/load", nil); res.Status != 404 {
		t.Errorf("load a pipeline the router lacks: %d %s", res.Status, res.Body)
	}
	for _, path := range []string{"/v2/models/ocr", "/v2/models/ocr/ready"} {
		if res := r.Do(t, "POST", path, nil); res.Status != 405 {
			t.Errorf("POST %s: %d %s, want 405", path, res.Status, res.Body)
		}
	}
	if res := r.Do(t, "GET", "/v2/models/ocr/ready", nil); res.Status != 200 {
		t.Errorf("ready: %d %s", res.Status, res.Body)
	}
	var server struct{ Extensions []string }
	json.Unmarshal(r.Do(t, "GET", "/v2", nil).Body, &server)
	for _, e := range []string{"binary_tensor_data", "model_repository"} {
		if !slices.Contains(server.Extensions, e) {
			t.Errorf("/v2 extensions %v lack %q", server.Extensions, e)
		}
	}
}

// TestClassifyPipelineBatchesImages: N images are N rows of prob, in order,
// each the same as the image sent alone; the tensor form still works.
func TestClassifyPipelineBatchesImages(t *testing.T) {
	r := localPipe(t, "classify")
	page := base64.StdEncoding.EncodeToString(samplePage(t))
	status, one := postJSON(t, r, "classify", imagesRequest([]string{page}, ""))
	if status != 200 {
		t.Fatalf("one image: %d %s", status, one.Error)
	}
	status, two := postJSON(t, r, "classify", imagesRequest([]string{page, page}, ""))
	if status != 200 {
		t.Fatalf("two images: %d %s", status, two.Error)
	}
	p1, p2 := one.output(t, "prob"), two.output(t, "prob")
	if p1 == nil || p2 == nil || fmt.Sprint(p2.Shape) != "[2 1000]" || len(p2.Data) != 2000 {
		t.Fatalf("prob of one image %v, of two %v", p1.Shape, p2.Shape)
	}
	for i := range 1000 {
		if p2.Data[i] != p1.Data[i] || p2.Data[1000+i] != p1.Data[i] {
			t.Fatalf("row 0 or 1 of the batch differs from the image alone at %d", i)
		}
	}
	var meta struct {
		Inputs, Outputs []v2codec.TensorMetadata
		Parameters      map[string]any
	}
	json.Unmarshal(r.Do(t, "GET", "/v2/models/classify", nil).Body, &meta)
	if fmt.Sprint(meta.Inputs, meta.Outputs) != "[{image BYTES [-1]}] [{prob FP32 [-1 1000]}]" || meta.Parameters["tensor_inputs"] == nil {
		t.Errorf("classify metadata %+v", meta)
	}
}

// A router is ready only when every step has a stage to call: a remote step
// without replicas (discovery found none yet) makes it unready.
func TestRouterIsReadyWhenEveryStepHasAStage(t *testing.T) {
	repo, _ := dataplanetest.Repo(t)
	spec := chainSpec(time.Second)
	client := NewRemoteClient("ocr-cls", nil)
	pipe, err := NewPipeline(spec, []*Step{{Spec: spec.Stages[0], Meta: dataplanetest.SubStage(t, repo, "ocr-cls"), Client: client}}, BuiltinGlues())
	if err != nil {
		t.Fatal(err)
	}
	r := startRouter(t, pipe)
	for _, path := range []string{"/v2/health/ready", "/v2/models/chain/ready"} {
		if res := r.Do(t, "GET", path, nil); res.Status != 503 || !strings.Contains(string(res.Body), `angle`) {
			t.Errorf("%s without replicas: %d %s", path, res.Status, res.Body)
		}
	}
	client.SetEndpoints([]string{"127.0.0.1:1"})
	for _, path := range []string{"/v2/health/ready", "/v2/models/chain/ready", "/v2/health/live"} {
		if res := r.Do(t, "GET", path, nil); res.Status != 200 {
			t.Errorf("%s with a replica: %d %s", path, res.Status, res.Body)
		}
	}
}

// In ipa local the stages' server answers for other models; its 404 for an
// unknown model also names the pipelines.
func TestUnknownModelNamesPipelinesAndStages(t *testing.T) {
	repo, _ := dataplanetest.Repo(t)
	spec := chainSpec(time.Second)
	pipe, err := NewPipeline(spec, []*Step{{Spec: spec.Stages[0], Meta: dataplanetest.SubStage(t, repo, "ocr-cls"), Client: NewRemoteClient("ocr-cls", nil)}}, BuiltinGlues())
	if err != nil {
		t.Fatal(err)
	}
	stages := dataplane.NewServer(dataplane.ServerConfig{}, dataplane.AdminConfig{}, nil, nil, "test")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rt := NewRouter(dataplane.ServerConfig{MaxBodySize: 1 << 20}, []*Pipeline{pipe}, nil, "test", stages.Handle)
	go rt.Serve(ln)
	t.Cleanup(func() { rt.Shutdown(t.Context()) })
	r := &dataplanetest.Server{Addr: ln.Addr().String(), Client: &fasthttp.HostClient{Addr: ln.Addr().String()}}
	res := r.Do(t, "GET", "/v2/models/nope", nil)
	if res.Status != 404 || !strings.Contains(string(res.Body), "[chain]") || !strings.Contains(string(res.Body), `unknown model \"nope\"`) {
		t.Errorf("unknown model: %d %s", res.Status, res.Body)
	}
}

// FuzzRequestImages: any BYTES tensor (elements, shape) either decodes to
// as many images as it has elements or is a bad request; nothing panics.
func FuzzRequestImages(f *testing.F) {
	png := binary.LittleEndian.AppendUint32(nil, 4)
	f.Add(append(png, "\x89PNG"...), int64(1))
	f.Add([]byte{0, 0, 0, 0}, int64(1))
	f.Add([]byte{255, 255, 255, 255, 1}, int64(1))
	f.Add([]byte("\x08\x00\x00\x00iVBORw0K\x04\x00\x00\x00/9j/"), int64(2))
	f.Fuzz(func(t *testing.T, data []byte, n int64) {
		if len(data) > 64<<10 {
			return
		}
		req := &Request{V2: &v2codec.InferRequest{Inputs: []models.Tensor{{Name: ImageInput.Name, DataType: models.BYTES, Shape: []int64{n}, Data: data}}}}
		imgs, err := requestImages(req)
		if err != nil {
			if !errors.Is(err, v2codec.ErrBadRequest) {
				t.Fatalf("error %q is not a bad request", err)
			}
			return
		}
		if int64(len(imgs)) != n {
			t.Fatalf("%d images from shape [%d]", len(imgs), n)
		}
	})
}

// The pixel limit holds for a request's images together: two 30-megapixel
// images are refused (each alone is fine), before the second is decoded.
func TestRequestImagesShareOnePixelBudget(t *testing.T) {
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	if err := enc.Encode(&buf, image.NewGray(image.Rect(0, 0, 5000, 6000))); err != nil {
		t.Fatal(err)
	}
	elem := binary.LittleEndian.AppendUint32(nil, uint32(buf.Len()))
	elem = append(elem, buf.Bytes()...)
	one := &Request{V2: &v2codec.InferRequest{Inputs: []models.Tensor{{Name: "image", DataType: models.BYTES, Shape: []int64{1}, Data: elem}}}}
	if _, err := requestImages(one); err != nil {
		t.Fatalf("one 30 MP image: %v", err)
	}
	two := &Request{V2: &v2codec.InferRequest{Inputs: []models.Tensor{{Name: "image", DataType: models.BYTES, Shape: []int64{2}, Data: append(slices.Clone(elem), elem...)}}}}
	_, err := requestImages(two)
	if !errors.Is(err, v2codec.ErrBadRequest) || !strings.Contains(err.Error(), "element 1 of 2") || !strings.Contains(err.Error(), "together") {
		t.Fatalf("two 30 MP images: %v", err)
	}
}

// Faces on a batch of two images, the page (no face) and the speakers'
// frame: every detection row is tagged with image 1, and the answer names
// both steps' variants.
func TestFacesPipelineTagsDetectionsWithTheirImage(t *testing.T) {
	r := localPipe(t, "faces")
	frame, err := os.ReadFile("../glue/testdata/video-001.png")
	if err != nil {
		t.Fatal(err)
	}
	page := samplePage(t)
	status, a := postJSON(t, r, "faces", imagesRequest([]string{base64.StdEncoding.EncodeToString(page), base64.StdEncoding.EncodeToString(frame)}, ""))
	if status != 200 {
		t.Fatalf("two images: %d %s", status, a.Error)
	}
	item, boxes := a.output(t, "item"), a.output(t, "boxes")
	if item == nil || boxes == nil || len(item.Data) == 0 || len(item.Data)*4 != len(boxes.Data) {
		t.Fatalf("item %v, boxes %v: want one item per detected face, and some faces on the frame", item, boxes)
	}
	for _, v := range item.Data {
		if v != float64(1) {
			t.Fatalf("item %v: every face is on image 1", item.Data)
		}
	}
	if a.ModelVersion != "front-128+squeezenet" || a.Parameters["classify_variant"] != "squeezenet" {
		t.Errorf("model_version %q, parameters %v", a.ModelVersion, a.Parameters)
	}
}
