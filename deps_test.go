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
			for prefix, why := range bad { // a key ending in $ matches one path exactly
				if exact, ok := strings.CutSuffix(prefix, "$"); ok && p.ImportPath == exact || !ok && strings.HasPrefix(p.ImportPath, prefix) {
					t.Errorf("%s imports %s: %s", pkg, p.ImportPath, why)
				}
			}
		}
	}
	native := map[string]string{
		"github.com/yalue/onnxruntime_go": "ONNX Runtime belongs to runtime only",
		"github.com/lanl/highs":           "HiGHS belongs to optimizer/highs only",
		"k8s.io/client-go":                "client-go belongs to orchestrator/kube only",
	}
	pure := map[string]string{
		"github.com/yalue/onnxruntime_go": "pure packages need no native library",
		"github.com/lanl/highs":           "pure packages need no native library",
		"k8s.io/client-go":                "pure packages know no Kubernetes",
		"github.com/valyala/fasthttp":     "pure packages know no HTTP server",
		mod + "runtime":                   "pure packages run no model",
	}
	for _, p := range []string{"models", "models/pipespec", "batcher", "profiles", "optimizer", "orchestrator", "orchestrator/predict", "dataplane/v2codec", "dataplane/glue"} {
		f(p, pure)
	}
	f("batcher", map[string]string{mod: "batcher is generic and imports nothing of ipa"})
	f("models", map[string]string{mod: "models holds the nouns and imports nothing of ipa"})
	f("dataplane/v2codec", map[string]string{mod + "dataplane/": "the codec is a leaf: it knows tensors, not servers", mod + "batcher": "the codec is a leaf"})
	f("dataplane/glue", map[string]string{mod + "dataplane/": "glue is pre/post-processing only", mod + "batcher": "glue is pre/post-processing only"})
	f("dataplane/loadgen", native)
	f("dataplane/loadgen", map[string]string{mod + "runtime": "the load generator is a client", mod + "dataplane/router": "the load generator is a client", mod + "batcher": "the load generator is a client"})
	f("runtime", map[string]string{mod + "dataplane": "runtime must not know the server", "github.com/valyala/fasthttp": "runtime must not know HTTP", "k8s.io/client-go": "no Kubernetes in runtime"})
	f("runtime/repobuild", map[string]string{mod + "dataplane": "the repository builder is a tool, not a server", "github.com/valyala/fasthttp": "the builder serves nothing"})
	f("optimizer", map[string]string{mod + "dataplane": "optimizer must not serve", mod + "orchestrator": "optimizer is the pure decision core"})
	f("profiles", map[string]string{mod + "optimizer": "profiles is pure data"})
	f("orchestrator", map[string]string{mod + "dataplane": "the controller reaches stages through Actuator", "github.com/yalue/onnxruntime_go": "no ONNX in the controller"})
	serving := map[string]string{"github.com/lanl/highs": "the data plane must not link the solver", "k8s.io/client-go": "the data plane must not talk to Kubernetes"}
	f("dataplane", serving)
	f("dataplane", map[string]string{mod + "dataplane/router": "the stage server does not know the router", mod + "optimizer": "the data plane does not solve", mod + "orchestrator": "the data plane does not control"})
	f("dataplane/router", serving)
	f("dataplane/router", map[string]string{mod + "optimizer": "the router does not solve", mod + "orchestrator": "the router does not control"})
	f("orchestrator/kube", map[string]string{mod + "dataplane": "the Kubernetes actuator reaches stages over HTTP", mod + "runtime": "no ONNX in the controller", "github.com/lanl/highs": "the solver is injected"})
	// The simulator and the experiment runner are pure Go: the solver is
	// injected by main; arrivals and report types come from dataplane/loadgen.
	for _, pkg := range []string{"orchestrator/sim", "orchestrator/experiment"} {
		f(pkg, native)
		f(pkg, map[string]string{mod + "runtime": "the simulator runs no model", mod + "dataplane$": "the simulator serves nothing",
			mod + "dataplane/router": "the simulator serves nothing", mod + "optimizer/highs": "the solver is injected by main", mod + "orchestrator/kube": "no Kubernetes in the simulator"})
	}
	f("dataplane/glue/ocrset", map[string]string{mod: "the OCR validation set is pure Go and imports nothing of ipa"})
	f("dataplane/accuracy", map[string]string{"github.com/lanl/highs": "scoring must not link the solver", mod + "optimizer": "scoring writes metadata; the optimizer reads it"})
}
