package repobuild

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"

	"github.com/goccy/go-yaml"

	"github.com/ipa-serving/ipa/models/yamlx"
)

// ManifestFile is the manifest `ipa models add DIR` reads from DIR.
const ManifestFile = "models.yaml"

// MaxManifestSize bounds a manifest file.
const MaxManifestSize = 1 << 20

// MaxManifestVariants bounds the variants of one manifest.
const MaxManifestVariants = 256

// Manifest lists several variants for `ipa models add`: fields at the top
// are defaults for every entry, an entry's own fields win.
//
//	stage: my-classify
//	metric: ImageNet top-1 %
//	license: Apache-2.0
//	variants:
//	  - file: squeezenet.onnx        # relative to the manifest
//	    variant: squeezenet          # default: the file's name
//	    accuracy: 56.85              # required
//	    source: ONNX model zoo README
//	    input: data                  # rename the only input / output
//	    output: prob
//	    shape: {data: [-1, 3, 224, 224]}   # pin dynamic dimensions
//	    check_shape: {x: [-1, 3, 48, 320]} # sizes for the self-check only
//	    files: [labels.txt]          # copied next to the model
//	    tolerance: 1e-4              # self-check tolerance, 0 = bit-identical
//	    const: {sr: 16000, state: 0} # inputs baked in as constants
//	    batch_axis: {state: 1}       # a constant whose dimension 1 is the batch
//	    drop_output: [stateN]        # outputs not published
//
// Unknown fields are errors, and errors name the line.
type Manifest struct {
	ManifestDefaults `yaml:",inline"`
	Variants         []ManifestEntry `yaml:"variants"`
}

// ManifestDefaults are the fields a manifest's top level gives every entry
// (an entry may set its own).
type ManifestDefaults struct {
	Stage       string `yaml:"stage"`
	Metric      string `yaml:"metric"`
	Source      string `yaml:"source"`
	License     string `yaml:"license"`
	Task        string `yaml:"task"`
	Description string `yaml:"description"`
}

// ManifestEntry is one variant of a manifest.
type ManifestEntry struct {
	ManifestDefaults `yaml:",inline"`
	File             string             `yaml:"file"`
	Variant          string             `yaml:"variant"`
	Accuracy         *float64           `yaml:"accuracy"`
	Verified         bool               `yaml:"verified"`
	Input            string             `yaml:"input"`
	Output           string             `yaml:"output"`
	Shape            map[string][]int64 `yaml:"shape"`
	CheckShape       map[string][]int64 `yaml:"check_shape"`
	Files            []string           `yaml:"files"`
	Tolerance        *float64           `yaml:"tolerance"`
	Const            map[string]float64 `yaml:"const"`
	BatchAxis        map[string]int     `yaml:"batch_axis"`
	DropOutput       []string           `yaml:"drop_output"`
}

// ParseManifest decodes a manifest and returns one AddSpec per entry, with
// file paths resolved against dir (the manifest's directory) and check
// defaults from check. It checks everything that needs no file: names,
// accuracies, shapes, duplicates within the manifest.
func ParseManifest(b []byte, dir string, check CheckOptions) ([]AddSpec, error) {
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("manifest is %d bytes; the limit is %d", len(b), MaxManifestSize)
	}
	var m Manifest
	if err := yamlx.UnmarshalStrict(b, &m); err != nil {
		return nil, fmt.Errorf("bad manifest: %s", oneLine(yaml.FormatError(err, false, false)))
	}
	if len(m.Variants) == 0 {
		return nil, errors.New("bad manifest: no variants (list them under variants:, each with file: and accuracy:)")
	}
	if len(m.Variants) > MaxManifestVariants {
		return nil, fmt.Errorf("bad manifest: %d variants; the limit is %d", len(m.Variants), MaxManifestVariants)
	}
	or := func(a, b string) string {
		if a != "" {
			return a
		}
		return b
	}
	specs := make([]AddSpec, 0, len(m.Variants))
	seen := map[string]int{}
	for i, e := range m.Variants {
		at := fmt.Sprintf("variants[%d]", i)
		if strings.TrimSpace(e.File) == "" {
			return nil, fmt.Errorf("bad manifest: %s: file is required", at)
		}
		file := e.File
		if !filepath.IsAbs(file) {
			file = filepath.Join(dir, filepath.FromSlash(file))
		}
		s := AddSpec{
			File: file, Stage: or(e.Stage, m.Stage), Variant: or(e.Variant, VariantName(e.File)),
			Accuracy: e.Accuracy, Metric: or(e.Metric, m.Metric), Source: or(e.Source, m.Source), Verified: e.Verified,
			Task: or(e.Task, m.Task), License: or(e.License, m.License), Description: or(e.Description, m.Description),
			Input: e.Input, Output: e.Output, Shapes: e.Shape, Check: check,
		}
		s.Check.CheckShapes = e.CheckShape
		if e.Tolerance != nil {
			s.Check.Tolerance = e.Tolerance
		}
		s.Check.Bake = Bake{Consts: e.Const, BatchAxis: e.BatchAxis, Drop: e.DropOutput}
		for _, f := range e.Files {
			if !filepath.IsAbs(f) {
				f = filepath.Join(dir, filepath.FromSlash(f))
			}
			s.Files = append(s.Files, f)
		}
		s.Check.defaults()
		if s.Accuracy != nil && (math.IsNaN(*s.Accuracy) || math.IsInf(*s.Accuracy, 0)) {
			return nil, fmt.Errorf("bad manifest: %s: %w: accuracy is not a number", at, ErrAccuracy)
		}
		if err := s.validate(); err != nil {
			return nil, fmt.Errorf("bad manifest: %s (%s): %w", at, e.File, err)
		}
		id := s.Stage + "/" + s.Variant
		if j, ok := seen[id]; ok {
			return nil, fmt.Errorf("bad manifest: %s: %w: %s is also variants[%d]", at, ErrDuplicate, id, j)
		}
		seen[id] = i
		specs = append(specs, s)
	}
	return specs, nil
}

// VariantName derives a variant name from a model file's name: its base
// name without extension, lower case, with every character outside
// [a-z0-9._-] replaced by '-' (light_squeezenet.onnx → light_squeezenet).
func VariantName(file string) string {
	base := strings.TrimSuffix(filepath.Base(filepath.FromSlash(file)), filepath.Ext(file))
	var b strings.Builder
	for _, r := range strings.ToLower(base) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	s := strings.TrimLeft(b.String(), "._-")
	if len(s) > 63 {
		s = s[:63]
	}
	return s
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}
