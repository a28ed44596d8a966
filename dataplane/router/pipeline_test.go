package router

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/dataplanetest"
	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/models/pipespec"
)

// localPipe starts the built-in pipeline name in process on real models.
func localPipe(t *testing.T, name string) *testRouter {
	t.Helper()
	repo, dir := dataplanetest.Repo(t)
	src, err := pipespec.Builtin(name)
	if err != nil {
		t.Fatal(err)
	}
	first, next := BuiltinGlues().Names()
	spec, err := pipespec.Parse(src, repo, first, next)
	if err != nil {
		t.Fatal(err)
	}
	var steps []*Step
	for _, s := range spec.Stages {
		meta, err := s.RepoStage(repo)
		if err != nil {
			t.Fatal(err)
		}
		st, err := dataplane.NewStage(meta, s.Initial, dataplane.StageOptions{MaxQueue: 256}, dataplanetest.ORTOpener(dir, meta))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		steps = append(steps, &Step{Spec: s, Meta: meta, Client: LocalClient{st}, RepoDir: dir,
			Active: func() string { return st.Config().Variant }})
	}
	pipe, err := NewPipeline(spec, steps, BuiltinGlues())
	if err != nil {
		t.Fatal(err)
	}
	return startRouter(t, pipe)
}

func bytesElements(t models.DataType, data []byte) []string {
	var out []string
	for len(data) >= 4 {
		n := binary.LittleEndian.Uint32(data)
		out = append(out, string(data[4:4+n]))
		data = data[4+n:]
	}
	return out
}

func TestOCRPipelineReadsThePageOfTheREADME(t *testing.T) {
	r := localPipe(t, "ocr")
	page, err := os.ReadFile("../../docs/sample-page.png")
	if err != nil {
		t.Fatal(err)
	}
	resp, res := r.Infer(t, "ocr", page, slowMachine...)
	if resp == nil {
		t.Fatalf("status %d: %s", res.Status, res.Body)
	}
	var text []string
	for _, o := range resp.Outputs {
		if o.Name == "text" {
			text = bytesElements(o.DataType, o.Data)
		}
	}
	want := []string{"Inference pipelines adapt", "to the load every interval.", "ipa picks variants, batch", "sizes and replicas."}
	if strings.Join(text, "|") != strings.Join(want, "|") {
		t.Fatalf("read %q, want %q", text, want)
	}
	// The same page as a V2 BYTES input gives the same answer.
	framed := binary.LittleEndian.AppendUint32(nil, uint32(len(page)))
	framed = append(framed, page...)
	body, jl := v2codec.AppendInferRequest(nil, &v2codec.InferRequest{Inputs: []models.Tensor{{Name: "image", DataType: models.BYTES, Shape: []int64{1}, Data: framed}}}, true)
	resp, res = r.Infer(t, "ocr", body, append([]string{v2codec.HeaderJSONLength, itoa(jl)}, slowMachine...)...)
	if resp == nil || resp.Outputs[0].Shape[0] != 4 {
		t.Fatalf("BYTES input: status %d: %s", res.Status, res.Body)
	}
	// A body that is not an image is a 400 that says so.
	bad := r.Do(t, "POST", "/v2/models/ocr/infer", []byte("GIF89a...."))
	if bad.Status != 400 || !strings.Contains(string(bad.Body), "not a PNG or JPEG") {
		t.Fatalf("not an image: %d %s", bad.Status, bad.Body)
	}
	m := string(r.Do(t, "GET", "/metrics", nil).Body)
	for _, want := range []string{
		`ipa_router_requests_total{pipeline="ocr",code="2xx"} 2`,
		`ipa_router_requests_total{pipeline="ocr",code="4xx"} 1`,
		`ipa_router_stage_duration_seconds_count{pipeline="ocr",stage="rec"} 2`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q:\n%s", want, grep(m, "ipa_router"))
		}
	}
	// The router's own work (decode, resize, crops, CTC) is counted per
	// request, the failed one included: the controller reserves cores for it.
	glue, n, err := r.router.GlueCost("ocr")
	if err != nil || n != 3 || glue < time.Millisecond || glue > 10*time.Second {
		t.Fatalf("glue cost %s over %d requests (%v), want 3 requests and a plausible time", glue, n, err)
	}
	if _, _, err := r.router.GlueCost("nope"); err == nil {
		t.Fatal("GlueCost of an unknown pipeline")
	}
	// The controller's fan-out: two pages reached both steps (the GIF
	// none), each one row at det and its four lines at rec; /router/rate
	// serves the same totals.
	reached, rows, err := r.router.Rows("ocr")
	if err != nil || fmt.Sprint(reached, rows) != "[2 2] [2 8]" {
		t.Fatalf("per step: reached %v, rows %v (%v); want [2 2], [2 8]", reached, rows, err)
	}
	rate := string(r.Do(t, "GET", "/router/rate?pipeline=ocr", nil).Body)
	if !strings.Contains(rate, `{"requests_total":2,"rows_total":8,"step":"rec"}`) {
		t.Fatalf("/router/rate: %s", rate)
	}
}

func TestFacesPipelineAnswersWithEmptyDetectionsOnAPageWithoutFaces(t *testing.T) {
	r := localPipe(t, "faces")
	page, err := os.ReadFile("../../docs/sample-page.png")
	if err != nil {
		t.Fatal(err)
	}
	resp, res := r.Infer(t, "faces", page)
	if resp == nil {
		t.Fatalf("status %d: %s", res.Status, res.Body)
	}
	if len(resp.Outputs) != 5 || resp.Outputs[0].Name != "boxes" || resp.Outputs[0].Shape[0] != 0 {
		t.Fatalf("outputs %+v", resp.Outputs)
	}
	// For the fan-out, the page reached the classifier with no face: one
	// request, no rows (its next page with two faces would make it 1).
	if reached, rows, err := r.router.Rows("faces"); err != nil || fmt.Sprint(reached, rows) != "[1 1] [1 0]" {
		t.Errorf("per step: reached %v, rows %v (%v); want [1 1], [1 0]", reached, rows, err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
