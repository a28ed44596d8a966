package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestControllerPlansTheRecognizerForTheLinesOfEachPage runs `ipa local` on
// the built-in OCR pipeline with its controller and offers it the README's
// page (four text lines) from `ipa load`: every page is one row at the
// detector and four at the recognizer, and the controller must plan each
// step for that (the decision log's fanout), so that the recognizer's plan
// carries four lines per predicted page, not one.
func TestControllerPlansTheRecognizerForTheLinesOfEachPage(t *testing.T) {
	decisions := filepath.Join(t.TempDir(), "decisions.jsonl")
	addr, stop := startLocal(t, ipaBin, "--pipeline", "ocr", "--stage.preload", "active",
		"--controller.interval", "2s", "--controller.predictor", "reactive", "--controller.decision-log", decisions)
	out, err := exec.Command(ipaBin, "load", "--url", "http://"+addr+"/v2/models/ocr/infer", "--rate", "3", "--duration", "9s",
		"--body", "docs/sample-page.png", "--sla", "5s", "--no-progress").CombinedOutput()
	if err != nil {
		t.Fatalf("ipa load: %v\n%s", err, out)
	}
	stop()
	b, err := os.ReadFile(decisions)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var d struct {
			Predicted float64   `json:"predicted_rps"`
			Fanout    []float64 `json:"fanout"`
			Fallback  bool      `json:"fallback"`
			Plan      *struct {
				Stages []struct {
					Stage      string  `json:"stage"`
					Throughput float64 `json:"throughput"`
				} `json:"stages"`
			} `json:"plan"`
		}
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			t.Fatalf("decision %q: %v", line, err)
		}
		if d.Fanout == nil || d.Plan == nil || d.Fallback || d.Predicted == 0 {
			continue
		}
		found = true
		// (A page dropped before the recognizer counts there with none.)
		if len(d.Fanout) != 2 || d.Fanout[0] != 1 || d.Fanout[1] < 3.5 || d.Fanout[1] > 4 {
			t.Errorf("fanout %v, want [1 4]: one row per page at the detector, its four lines at the recognizer", d.Fanout)
		}
		// Throughputs are in pages/s: the recognizer's replicas × lines/s
		// over four lines a page must carry the predicted pages.
		for _, s := range d.Plan.Stages {
			if s.Throughput < d.Predicted*0.999 {
				t.Errorf("step %s carries %.2f pages/s, %.2f predicted", s.Stage, s.Throughput, d.Predicted)
			}
		}
	}
	if !found {
		t.Fatalf("no decision planned with a fan-out under load:\n%s", b)
	}
}
