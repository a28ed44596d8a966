package models

import (
	"bytes"
	"strings"
	"testing"
)

func measuredOCR(v float64) Accuracy {
	return Accuracy{Value: v, Metric: "m", Source: "s", Verified: true, Set: "ocrset v1 seed 1", MeasuredAt: "2026-12-02"}
}

func TestMeasuredAccuracyRoundTrip(t *testing.T) {
	var m MeasuredAccuracy
	m.Put("ocr-det", "det-960", measuredOCR(97))
	m.Put("ocr-det", "det-480", measuredOCR(95))
	m.Put("ocr-det", "det-960", measuredOCR(98)) // replaces
	var buf bytes.Buffer
	if err := m.Write(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := ReadMeasuredAccuracy(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Variants) != 2 || got.Variants[0].Variant != "det-480" {
		t.Fatalf("variants %+v; want det-480 then det-960", got.Variants)
	}
	if a, ok := got.Lookup("ocr-det", "det-960"); !ok || a.Value != 98 || !a.Measured() {
		t.Fatalf("det-960: %+v %v", a, ok)
	}
	if _, ok := got.Lookup("ocr-det", "det-640"); ok {
		t.Fatal("det-640 was never measured")
	}
	if _, ok := (*MeasuredAccuracy)(nil).Lookup("ocr-det", "det-480"); ok {
		t.Fatal("a nil file holds nothing")
	}
}

func TestMeasuredAccuracyRejects(t *testing.T) {
	for want, doc := range map[string]string{
		"version":     `{"version":2,"variants":[]}`,
		"unknown":     `{"version":1,"variants":[],"extra":1}`,
		"verified":    `{"version":1,"variants":[{"stage":"s","variant":"v","accuracy":{"value":1,"metric":"m","set":"x","measured_at":"2026-12-02"}}]}`,
		"needs":       `{"version":1,"variants":[{"stage":"s","variant":"v","accuracy":{"value":1,"metric":"m","verified":true,"measured_at":"2026-12-02"}}]}`,
		"not a date":  `{"version":1,"variants":[{"stage":"s","variant":"v","accuracy":{"value":1,"metric":"m","set":"x","verified":true}}]}`,
		"twice":       `{"version":1,"variants":[{"stage":"s","variant":"v","accuracy":{"value":1,"metric":"m","set":"x","verified":true,"measured_at":"2026-12-02"}},{"stage":"s","variant":"v","accuracy":{"value":1,"metric":"m","set":"x","verified":true,"measured_at":"2026-12-02"}}]}`,
		"stage/varia": `{"version":1,"variants":[{"stage":"S","variant":"v","accuracy":{"value":1,"metric":"m","set":"x","verified":true,"measured_at":"2026-12-02"}}]}`,
	} {
		_, err := ReadMeasuredAccuracy(strings.NewReader(doc))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v; want one containing %q", doc, err, want)
		}
	}
}
