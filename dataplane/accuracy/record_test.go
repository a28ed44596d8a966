package accuracy

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/dataplane/glue/ocrset"
	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/optimizer"
)

// fakeRepo writes an ocr-det stage of variant.json files (no models) with
// the catalog's published accuracy.
func fakeRepo(t *testing.T, names ...string) (string, *models.Repository) {
	t.Helper()
	dir := t.TempDir()
	for i, n := range names {
		v := &models.Variant{Name: n, Stage: OCRDetStage, Task: "text-detection", File: "model.onnx",
			Inputs:   []models.TensorSpec{{Name: "x", DataType: models.FP32, Shape: []int64{-1, 3, 480, 480}}},
			Outputs:  []models.TensorSpec{{Name: "y", DataType: models.FP32, Shape: []int64{-1, 1, 480, 480}}},
			Accuracy: models.Accuracy{Value: 0.8476, Metric: "H-mean", Source: "published"}, Latency1: models.Seconds(i + 1)}
		b, err := models.EncodeVariant(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, OCRDetStage, n), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, OCRDetStage, n, models.MetaFile), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	repo, err := models.ReadRepository(os.DirFS(dir))
	if err != nil {
		t.Fatal(err)
	}
	return dir, repo
}

// TestRecordReachesTheOptimizer: a measured accuracy written by Record is
// what the optimizer's problem offers for the variant, and what the
// measured-accuracy file keeps for the repository builder.
func TestRecordReachesTheOptimizer(t *testing.T) {
	dir, repo := fakeRepo(t, "det-480", "det-640", "det-960")
	results := []Result{
		{Stage: OCRDetStage, Variant: "det-480", Score: ocrset.Score{Errors: 30, Chars: 1000}, Pages: 4},
		{Stage: OCRDetStage, Variant: "det-960", Score: ocrset.Score{Errors: 10, Chars: 1000}, Pages: 4},
	}
	var m models.MeasuredAccuracy
	at := time.Date(2026, 12, 2, 15, 0, 0, 0, time.UTC)
	if err := Record(dir, repo, results, "ocrset v1 seed 1, 4 pages", at, &m); err != nil {
		t.Fatal(err)
	}
	back, err := models.ReadRepository(os.DirFS(dir))
	if err != nil {
		t.Fatal(err)
	}
	st, _ := back.Stage(OCRDetStage)
	want := map[string]float64{"det-480": 97, "det-640": 0.8476, "det-960": 99}
	for _, v := range optimizer.StagesFromModels(st)[0].Variants {
		if v.Accuracy != want[v.Name] {
			t.Errorf("optimizer sees %s accuracy %v; want %v", v.Name, v.Accuracy, want[v.Name])
		}
	}
	a := st.Variant("det-960").Accuracy
	if !a.Verified || !a.Measured() || a.MeasuredAt != "2026-12-02" || a.Set != "ocrset v1 seed 1, 4 pages" || a.Metric != OCRMetric {
		t.Errorf("det-960 metadata %+v", a)
	}
	if a := st.Variant("det-640").Accuracy; a.Verified || a.Measured() {
		t.Errorf("det-640 was not measured: %+v", a)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	if got, ok := m.Lookup(OCRDetStage, "det-480"); !ok || got != st.Variant("det-480").Accuracy {
		t.Errorf("measured file has %+v, variant.json %+v", got, st.Variant("det-480").Accuracy)
	}
}

func TestScoreRefusesStagesWithoutASet(t *testing.T) {
	_, repo := fakeRepo(t, "det-480")
	if _, err := Score(t.Context(), Options{Repo: repo, Stage: "classify", Pages: 1}); err == nil {
		t.Fatal("classify has no labelled set")
	}
	if _, err := Score(t.Context(), Options{Repo: repo, Stage: OCRDetStage, Pages: 1, Variants: []string{"det-2000"}}); err == nil {
		t.Fatal("unknown variant accepted")
	}
}
