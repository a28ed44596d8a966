package repobuild

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ipa-serving/ipa/models"
)

// TestRebuildKeepsMeasuredAccuracy: the builder gives a variant the
// measured-accuracy file's number, else keeps a measurement its variant.json
// holds, else the catalog's published number.
func TestRebuildKeepsMeasuredAccuracy(t *testing.T) {
	e := catalogEntry("ocr-det", "det-640")
	measured := models.Accuracy{Value: 98.7, Metric: "CER", Source: "ipa models score", Verified: true, Set: "ocrset v1 seed 1", MeasuredAt: "2026-12-02"}
	dir := t.TempDir()

	if a, note := accuracyOf(e, nil, dir); a != e.Accuracy || note != "" {
		t.Fatalf("nothing measured: %+v %q; want the catalog's", a, note)
	}
	var file models.MeasuredAccuracy
	file.Put("ocr-det", "det-640", measured)
	if a, note := accuracyOf(e, &file, dir); a != measured || note == "" {
		t.Fatalf("measured file: %+v %q", a, note)
	}

	// A variant.json that holds a measurement the file does not have.
	v := &models.Variant{Name: e.Name, Stage: e.Stage, Task: e.Task, File: ModelFile,
		Inputs:  []models.TensorSpec{{Name: "x", DataType: models.FP32, Shape: []int64{-1, 3, 640, 640}}},
		Outputs: []models.TensorSpec{{Name: "y", DataType: models.FP32, Shape: []int64{-1, 1, 640, 640}}}, Accuracy: measured}
	b, err := models.EncodeVariant(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, models.MetaFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if a, note := accuracyOf(e, &models.MeasuredAccuracy{Version: 1}, dir); a != measured || note == "" {
		t.Fatalf("measurement in variant.json: %+v %q; want it kept", a, note)
	}
	newer := measured
	newer.Value, newer.MeasuredAt = 99.1, "2026-12-03"
	file.Put("ocr-det", "det-640", newer)
	if a, _ := accuracyOf(e, &file, dir); a != newer {
		t.Fatalf("the file's measurement wins over variant.json's: %+v", a)
	}
	// A published number in variant.json is the catalog's business.
	v.Accuracy = models.Accuracy{Value: 1, Metric: "old", Source: "old"}
	b, _ = models.EncodeVariant(v)
	os.WriteFile(filepath.Join(dir, models.MetaFile), b, 0o644)
	if a, _ := accuracyOf(e, nil, dir); a != e.Accuracy {
		t.Fatalf("published number in variant.json: %+v; want the catalog's", a)
	}
}

// TestCommittedMeasuredAccuracy: the committed measured-accuracy file, which
// `ipa models build` reads by default, parses and names catalog variants.
func TestCommittedMeasuredAccuracy(t *testing.T) {
	f, err := os.Open("../../profiles/measured/accuracy.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := models.ReadMeasuredAccuracy(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range m.Variants {
		if catalogEntry(v.Stage, v.Variant) == nil {
			t.Errorf("%s/%s is not in the catalog", v.Stage, v.Variant)
		}
	}
}
