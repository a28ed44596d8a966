package repobuild

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/ipa-serving/ipa/models"
)

// wantRepository is the repository of the project brief: stage → variants.
var wantRepository = map[string][]string{
	"classify": {"shufflenet", "squeezenet", "inception-v2", "alexnet", "inception-v1", "resnet50", "densenet121", "zfnet512", "vgg19"},
	"ocr-det":  {"det-480", "det-640", "det-960"},
	"ocr-cls":  {"cls-mobile-v2"},
	"ocr-rec":  {"rec-v4"},
	"mlsd":     {"tiny-320", "tiny-512", "large-320", "large-512"},
	"face":     {"front-128", "back-256"},
}

func catalogEntry(stage, name string) *entry {
	for i := range catalog {
		if catalog[i].Stage == stage && catalog[i].Name == name {
			return &catalog[i]
		}
	}
	return nil
}

func TestCatalogIsComplete(t *testing.T) {
	got := map[string][]string{}
	seen := map[string]bool{}
	for _, e := range catalog {
		id := e.Stage + "/" + e.Name
		if seen[id] {
			t.Errorf("%s listed twice", id)
		}
		seen[id] = true
		got[e.Stage] = append(got[e.Stage], e.Name)

		if !models.ValidName(e.Stage) || !models.ValidName(e.Name) {
			t.Errorf("%s: invalid name", id)
		}
		for field, v := range map[string]string{
			"task": e.Task, "raw": e.Raw, "license": e.License, "origin": e.Origin, "description": e.Description,
			"accuracy metric": e.Accuracy.Metric, "accuracy source": e.Accuracy.Source,
		} {
			if strings.TrimSpace(v) == "" {
				t.Errorf("%s: %s is empty", id, field)
			}
		}
		if e.Latency1 <= 0 || e.Latency1 > 1 {
			t.Errorf("%s: latency_seconds_b1 %v out of (0, 1] s", id, e.Latency1)
		}
		if e.Batch != batchNative && e.Batch != batchRewrite {
			t.Errorf("%s: no batch mode", id)
		}
		if e.Accuracy.Value == 0 && e.Accuracy.Verified {
			t.Errorf("%s: accuracy 0 marked verified", id)
		}
		if e.Accuracy.Value == 0 && !strings.Contains(e.Accuracy.Source, "placeholder") {
			t.Errorf("%s: accuracy 0 without saying it is a placeholder: %q", id, e.Accuracy.Source)
		}
		if e.Stage == "classify" {
			if !strings.Contains(e.Description, "placeholder") || !strings.Contains(e.Description, "real architecture") {
				t.Errorf("%s: description must say the weights are placeholders with a real architecture: %q", id, e.Description)
			}
			if e.Normalize == nil || e.Batch != batchRewrite || !e.RandomWeights || e.Tolerance != 0 {
				t.Errorf("%s: classify variants are normalised, rewritten, checked with random weights, bit-exact", id)
			}
		}
	}
	for stage, want := range wantRepository {
		if !slices.Equal(got[stage], want) {
			t.Errorf("stage %s: catalog has %v; want %v", stage, got[stage], want)
		}
	}
	if extra := slices.DeleteFunc(slices.Collect(maps.Keys(got)), func(s string) bool { return wantRepository[s] != nil }); len(extra) > 0 {
		t.Errorf("unexpected stages %v", extra)
	}
}

func TestCatalogAccuracies(t *testing.T) {
	f := func(stage, name string, value float64, verified bool, sourceHas string) {
		t.Helper()
		e := catalogEntry(stage, name)
		if e == nil {
			t.Fatalf("%s/%s missing", stage, name)
		}
		a := e.Accuracy
		if a.Value != value || a.Verified != verified || !strings.Contains(a.Source, sourceHas) {
			t.Errorf("%s/%s: accuracy %+v; want %v verified=%v, source mentioning %q", stage, name, a, value, verified, sourceHas)
		}
	}
	f("classify", "shufflenet", 58, false, "paper")
	f("classify", "squeezenet", 56.85, true, "squeezenet1.0-12")
	f("classify", "inception-v2", 73.5, false, "72–75")
	f("classify", "alexnet", 54.80, true, "bvlcalexnet-12")
	f("classify", "inception-v1", 67.23, true, "inception-v1-12")
	f("classify", "resnet50", 74.93, true, "resnet50-v1-7")
	f("classify", "densenet121", 60.96, true, "74.98")
	f("classify", "zfnet512", 55.97, true, "zfnet512-12")
	f("classify", "vgg19", 73.72, true, "vgg19-7")
	f("ocr-det", "det-960", 0.8476, true, "juejin.cn/post/7358337136024387635")
	f("ocr-det", "det-640", 0.8476, false, "pending")
	f("ocr-det", "det-480", 0.8476, false, "pending")
	f("ocr-rec", "rec-v4", 83.28, true, "PP-OCRv4_mobile_rec")
	f("mlsd", "tiny-512", 58.0, true, "2106.00186")
	f("mlsd", "large-512", 62.1, true, "2106.00186")
	f("mlsd", "tiny-320", 58.0, false, "320")
	f("mlsd", "large-320", 62.1, false, "320")
}

func TestCatalogPinsExistOnlyForKnownTensors(t *testing.T) {
	// Pins are checked against the model at build time; here only that they
	// keep the batch dynamic and that every dynamic check dimension has a size.
	for _, e := range catalog {
		for name, shape := range e.Shapes {
			if len(shape) == 0 || shape[0] != models.Dynamic {
				t.Errorf("%s/%s: pin of %q %v must keep dimension 0 dynamic", e.Stage, e.Name, name, shape)
			}
		}
	}
	if n := nominal(catalogEntry("ocr-rec", "rec-v4"))["x"]; len(n) != 4 || n[3] != 320 {
		t.Errorf("rec-v4 checks at width %v; want 320", n)
	}
}
