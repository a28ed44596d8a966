package models

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// MeasuredAccuracy is the file of accuracies measured in the project
// (`ipa models score` writes it, profiles/measured/accuracy.json is the
// committed one): the repository builder puts them into variant.json in place
// of the catalog's published numbers, so a rebuild keeps them.
//
//	{
//	  "version": 1,
//	  "variants": [{
//	    "stage": "ocr-det", "variant": "det-640",
//	    "accuracy": {"value": 98.9, "metric": "…", "source": "…", "verified": true,
//	                 "set": "ocrset v1 seed 1, 48 pages …", "measured_at": "2026-12-02"}
//	  }]
//	}
type MeasuredAccuracy struct {
	Version  int               `json:"version"`
	Variants []MeasuredVariant `json:"variants"`
}

// MeasuredVariant is one measured variant.
type MeasuredVariant struct {
	Stage    string   `json:"stage"`
	Variant  string   `json:"variant"`
	Accuracy Accuracy `json:"accuracy"`
}

// ReadMeasuredAccuracy decodes and validates a measured-accuracy file;
// unknown fields are errors.
func ReadMeasuredAccuracy(r io.Reader) (*MeasuredAccuracy, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var m MeasuredAccuracy
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("cannot parse the measured accuracies: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks the version and that every entry is a complete, unique
// measurement.
func (m *MeasuredAccuracy) Validate() error {
	if m.Version != 1 {
		return fmt.Errorf("measured accuracies: version %d is unknown; want 1", m.Version)
	}
	seen := map[string]bool{}
	for _, v := range m.Variants {
		id := v.Stage + "/" + v.Variant
		a := v.Accuracy
		switch {
		case !ValidName(v.Stage) || !ValidName(v.Variant):
			return fmt.Errorf("measured accuracies: %q is not a valid stage/variant", id)
		case seen[id]:
			return fmt.Errorf("measured accuracies: %s is listed twice", id)
		case math.IsNaN(a.Value) || math.IsInf(a.Value, 0):
			return fmt.Errorf("measured accuracies: %s: value %v is not finite", id, a.Value)
		case !a.Verified || strings.TrimSpace(a.Metric) == "" || strings.TrimSpace(a.Set) == "":
			return fmt.Errorf("measured accuracies: %s: a measurement needs metric and set and is verified", id)
		}
		if _, err := time.Parse(time.DateOnly, a.MeasuredAt); err != nil {
			return fmt.Errorf("measured accuracies: %s: measured_at %q is not a date (YYYY-MM-DD)", id, a.MeasuredAt)
		}
		seen[id] = true
	}
	return nil
}

// Lookup returns the measured accuracy of stage/variant.
func (m *MeasuredAccuracy) Lookup(stage, variant string) (Accuracy, bool) {
	if m == nil {
		return Accuracy{}, false
	}
	for _, v := range m.Variants {
		if v.Stage == stage && v.Variant == variant {
			return v.Accuracy, true
		}
	}
	return Accuracy{}, false
}

// Put records a measurement of stage/variant, replacing an older one, and
// keeps the entries sorted by stage and variant.
func (m *MeasuredAccuracy) Put(stage, variant string, a Accuracy) {
	m.Version = 1
	m.Variants = slices.DeleteFunc(m.Variants, func(v MeasuredVariant) bool { return v.Stage == stage && v.Variant == variant })
	m.Variants = append(m.Variants, MeasuredVariant{stage, variant, a})
	slices.SortStableFunc(m.Variants, func(a, b MeasuredVariant) int {
		return strings.Compare(a.Stage+"/"+a.Variant, b.Stage+"/"+b.Variant)
	})
}

// Write encodes m, indented.
func (m *MeasuredAccuracy) Write(w io.Writer) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
