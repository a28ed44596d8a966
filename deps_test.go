package main

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestImportGraphKeepsItsShape enforces the package DAG of the README's
// architecture table: pure packages stay pure, native code stays in its leaves.
func TestImportGraphKeepsItsShape(t *testing.T) {
	const mod = "github.com/ipa-serving/ipa/"
	f := func(pkg string, bad map[string]string) {
		t.Helper()
		out, err := exec.Command("go", "list", "-deps", "-json", "./"+pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		dec := json.NewDecoder(strings.NewReader(string(out)))
		for dec.More() {
			var p struct{ ImportPath string }
			if err := dec.Decode(&p); err != nil {
				t.Fatal(err)
			}
			if p.ImportPath == mod+pkg {
				continue
			}
			for prefix, why := range bad {
				if strings.HasPrefix(p.ImportPath, prefix) {
					t.Errorf("%s imports %s: %s", pkg, p.ImportPath, why)
				}
			}
		}
	}
	native := map[string]string{
		"github.com/yalue/onnxruntime_go": "ONNX Runtime belongs to runtime only",
		"github.com/lanl/highs":           "HiGHS belongs to optimizer/highs only",
		"k8s.io/client-go":                "client-go belongs to orchestrator/kube only",
		"github.com/valyala/fasthttp":     "HTTP belongs to dataplane",
	}
	f("models", native)
	f("batcher", native)
	f("batcher", map[string]string{mod: "batcher is generic and imports nothing of ipa"})
	f("models", map[string]string{mod + "runtime": "models holds nouns only", mod + "dataplane": "models holds nouns only", mod + "batcher": "models holds nouns only"})
	f("runtime", map[string]string{mod + "dataplane": "runtime must not know the server", "github.com/valyala/fasthttp": "runtime must not know HTTP", "k8s.io/client-go": "no Kubernetes in runtime"})
	f("optimizer", map[string]string{"github.com/lanl/highs": "optimizer is pure; HiGHS lives in optimizer/highs", mod + "runtime": "optimizer must not run models", mod + "dataplane": "optimizer must not serve", "k8s.io/client-go": "optimizer is pure"})
	f("profiles", map[string]string{"github.com/lanl/highs": "profiles is pure data", mod + "runtime": "profiles is pure data", mod + "optimizer": "profiles is pure data"})
	f("orchestrator", map[string]string{mod + "dataplane": "the controller reaches stages through Actuator", mod + "runtime": "the controller must not run models", "github.com/lanl/highs": "the solver is injected", "github.com/yalue/onnxruntime_go": "no ONNX in the controller"})
	f("dataplane/glue/ocrset", map[string]string{mod: "the OCR validation set is pure Go and imports nothing of ipa"})
	f("dataplane/accuracy", map[string]string{"github.com/lanl/highs": "scoring must not link the solver", mod + "optimizer": "scoring writes metadata; the optimizer reads it"})
	f("dataplane", map[string]string{"github.com/lanl/highs": "the data plane must not link the solver", "k8s.io/client-go": "the data plane must not talk to Kubernetes"})
}
