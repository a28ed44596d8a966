package models

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
)

// MetaFile is the name of the metadata file next to each variant's model file.
const MetaFile = "variant.json"

// Accuracy is a variant's published or measured quality, with where it comes from.
type Accuracy struct {
	// Value in the metric's own unit (e.g. 74.93 for 74.93 % top-1).
	Value float64 `json:"value"`
	// Metric names what Value measures, e.g. "ImageNet top-1 %".
	Metric string `json:"metric"`
	// Source says where Value was published or how it was measured.
	Source string `json:"source"`
	// Verified is false when Value could not be checked against Source.
	// A measurement (MeasuredAt set) is verified.
	Verified bool `json:"verified"`
	// Set describes the labelled set a measured Value comes from (e.g.
	// ocrset's Describe); empty for a published number.
	Set string `json:"set,omitempty"`
	// MeasuredAt is the UTC date (YYYY-MM-DD) of the measurement; empty for a
	// published number.
	MeasuredAt string `json:"measured_at,omitempty"`
}

// Measured reports whether a is an in-project measurement.
func (a Accuracy) Measured() bool { return a.MeasuredAt != "" }

// Variant is the metadata of one model variant of a stage, stored as
// <repository>/<stage>/<variant>/variant.json.
type Variant struct {
	Name  string `json:"name"`
	Stage string `json:"stage"`
	// Task is what the model does, e.g. "image-classification".
	Task string `json:"task"`
	// File is the model file, relative to the variant's directory.
	File string `json:"file"`
	// SHA256 of File, hex.
	SHA256  string       `json:"sha256"`
	Inputs  []TensorSpec `json:"inputs"`
	Outputs []TensorSpec `json:"outputs"`
	// MaxBatch is the largest batch the model file accepts in one run: 0 means
	// unbounded (dynamic batch dimension), 1 a model whose batch is fixed at 1,
	// which the engine runs item by item.
	MaxBatch int `json:"max_batch"`
	// BatchNote says how the batch dimension was obtained: "native",
	// "rewritten: …", or why a rewrite was rejected.
	BatchNote string   `json:"batch_note"`
	Accuracy  Accuracy `json:"accuracy"`
	License   string   `json:"license"`
	// Origin names the package and file the model came from.
	Origin string `json:"origin"`
	// Description is one human-readable line.
	Description string `json:"description,omitempty"`
	// Latency1 is a rough single-item, single-thread latency used to order
	// variants in listings; profiles carry the measured numbers.
	Latency1 Seconds `json:"latency_seconds_b1,omitempty"`

	// Constants are model inputs baked into the served graph (`ipa models
	// add --const`): clients do not send them. DroppedOutputs are outputs
	// of the original model the served graph no longer has.
	Constants      []Constant `json:"constants,omitempty"`
	DroppedOutputs []string   `json:"dropped_outputs,omitempty"`

	// Dir is the directory that holds the variant's files as the operating
	// system names it, when the variant was read from a directory
	// (ReadRepositoryDirs); empty when it was read from an fs.FS. It is not
	// stored in variant.json.
	Dir string `json:"-"`
}

// Constant is an input of the original model that the served graph
// computes itself: every element is Value; Shape is its shape, with
// Dynamic at BatchAxis when the constant follows the request's batch (a
// zero recurrent state [2,N,128] has batch axis 1).
type Constant struct {
	Name      string   `json:"name"`
	DataType  DataType `json:"datatype"`
	Shape     []int64  `json:"shape"`
	Value     float64  `json:"value"`
	BatchAxis *int     `json:"batch_axis,omitempty"`
}

func (c Constant) String() string {
	s := fmt.Sprintf("%s %s%s = %v", c.Name, c.DataType, FormatShape(c.Shape), c.Value)
	if c.BatchAxis != nil {
		s += fmt.Sprintf(" (batch on dimension %d)", *c.BatchAxis)
	}
	return s
}

// Seconds is a duration serialized as a number of seconds.
type Seconds float64

// Duration converts s to a time.Duration.
func (s Seconds) Duration() time.Duration { return time.Duration(float64(s) * float64(time.Second)) }

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidName reports whether s may name a stage, variant or pipeline: lower
// case letters, digits, '.', '_' and '-', starting with a letter or digit.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// Validate checks that the metadata is complete and consistent.
func (v *Variant) Validate() error {
	if !ValidName(v.Name) {
		return fmt.Errorf("variant name %q is invalid: use [a-z0-9._-], at most 63 characters", v.Name)
	}
	if !ValidName(v.Stage) {
		return fmt.Errorf("variant %q: stage name %q is invalid", v.Name, v.Stage)
	}
	if v.File == "" || path.IsAbs(v.File) || !fs.ValidPath(v.File) {
		return fmt.Errorf("variant %q: file %q must be a relative path inside the variant directory", v.Name, v.File)
	}
	if len(v.Inputs) == 0 || len(v.Outputs) == 0 {
		return fmt.Errorf("variant %q: needs at least one input and one output", v.Name)
	}
	if v.MaxBatch < 0 {
		return fmt.Errorf("variant %q: max_batch %d must be >= 0", v.Name, v.MaxBatch)
	}
	seen := map[string]bool{}
	for _, list := range [][]TensorSpec{v.Inputs, v.Outputs} {
		for _, t := range list {
			if t.Name == "" {
				return fmt.Errorf("variant %q: a tensor has no name", v.Name)
			}
			if seen[t.Name] {
				return fmt.Errorf("variant %q: tensor name %q is used twice", v.Name, t.Name)
			}
			seen[t.Name] = true
			if t.DataType == Invalid || t.DataType == BYTES {
				return fmt.Errorf("variant %q: tensor %q has unsupported datatype %s", v.Name, t.Name, t.DataType)
			}
			if len(t.Shape) == 0 {
				return fmt.Errorf("variant %q: tensor %q needs a batch dimension", v.Name, t.Name)
			}
			for _, d := range t.Shape {
				if d < Dynamic || d == 0 {
					return fmt.Errorf("variant %q: tensor %q has invalid dimension %d in %s", v.Name, t.Name, d, FormatShape(t.Shape))
				}
			}
		}
	}
	return nil
}

// Input returns the input spec called name.
func (v *Variant) Input(name string) (TensorSpec, bool) {
	i := slices.IndexFunc(v.Inputs, func(t TensorSpec) bool { return t.Name == name })
	if i < 0 {
		return TensorSpec{}, false
	}
	return v.Inputs[i], true
}

// Output returns the output spec called name.
func (v *Variant) Output(name string) (TensorSpec, bool) {
	i := slices.IndexFunc(v.Outputs, func(t TensorSpec) bool { return t.Name == name })
	if i < 0 {
		return TensorSpec{}, false
	}
	return v.Outputs[i], true
}

// Stage is a set of interchangeable variants: every variant of a stage has the
// same input and output names and datatypes, so a request fits all of them.
type Stage struct {
	Name string
	// Variants sorted by Latency1, fastest first.
	Variants []*Variant
	// Dir is the stage's directory inside the repository.
	Dir string
}

// Variant returns the variant called name, or nil.
func (s *Stage) Variant(name string) *Variant {
	for _, v := range s.Variants {
		if v.Name == name {
			return v
		}
	}
	return nil
}

// VariantNames lists the stage's variants in order.
func (s *Stage) VariantNames() []string {
	names := make([]string, len(s.Variants))
	for i, v := range s.Variants {
		names[i] = v.Name
	}
	return names
}

// Interface returns the stage's common input and output specs: for each tensor,
// a dimension is fixed only where every variant fixes it to the same size.
func (s *Stage) Interface() (inputs, outputs []TensorSpec) {
	merge := func(get func(*Variant) []TensorSpec) []TensorSpec {
		base := get(s.Variants[0])
		out := make([]TensorSpec, len(base))
		for i, t := range base {
			t.Shape = slices.Clone(t.Shape)
			for _, v := range s.Variants[1:] {
				o := get(v)[i]
				for d := range t.Shape {
					if o.Shape[d] != t.Shape[d] {
						t.Shape[d] = Dynamic
					}
				}
			}
			t.Shape[0] = Dynamic
			out[i] = t
		}
		return out
	}
	return merge(func(v *Variant) []TensorSpec { return v.Inputs }), merge(func(v *Variant) []TensorSpec { return v.Outputs })
}

// checkCompatible verifies that v can stand in for the stage's first variant.
func (s *Stage) checkCompatible(v *Variant) error {
	return CheckInterface(s.Name, s.Variants[0], v)
}

// CheckInterface verifies that variant v of stage can stand in for ref: the
// same input and output names, in the same order, with the same datatypes
// and ranks (sizes may differ: the stage's Interface marks them dynamic).
func CheckInterface(stage string, ref, v *Variant) error {
	same := func(kind string, a, b []TensorSpec) error {
		if len(a) != len(b) {
			return fmt.Errorf("stage %q: variant %q has %d %ss %v, variant %q has %d %v", stage, v.Name, len(b), kind, b, ref.Name, len(a), a)
		}
		for i := range a {
			if a[i].Name != b[i].Name || a[i].DataType != b[i].DataType || len(a[i].Shape) != len(b[i].Shape) {
				return fmt.Errorf("stage %q: %s %d of variant %q is %s, of variant %q %s; variants of a stage must share names, datatypes and ranks",
					stage, kind, i, v.Name, b[i], ref.Name, a[i])
			}
		}
		return nil
	}
	if err := same("input", ref.Inputs, v.Inputs); err != nil {
		return err
	}
	return same("output", ref.Outputs, v.Outputs)
}

// Repository is an on-disk set of stages, laid out as
//
//	<root>/<stage>/<variant>/variant.json
//	<root>/<stage>/<variant>/<file>.onnx
type Repository struct {
	Stages map[string]*Stage
}

// ErrNotFound is returned when a stage or variant is not in the repository.
var ErrNotFound = errors.New("not found")

// Stage returns the stage called name.
func (r *Repository) Stage(name string) (*Stage, error) {
	s, ok := r.Stages[name]
	if !ok {
		return nil, fmt.Errorf("stage %q: %w in the model repository (have %v)", name, ErrNotFound, r.StageNames())
	}
	return s, nil
}

// StageNames lists the stages in lexical order.
func (r *Repository) StageNames() []string {
	names := make([]string, 0, len(r.Stages))
	for n := range r.Stages {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ReadRepository reads every variant.json in fsys (a repository root).
// Directories without a variant.json are ignored; a malformed one is an error.
func ReadRepository(fsys fs.FS) (*Repository, error) {
	stageDirs, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("cannot read model repository: %w", err)
	}
	r := &Repository{Stages: map[string]*Stage{}}
	for _, sd := range stageDirs {
		if !sd.IsDir() || strings.HasPrefix(sd.Name(), ".") {
			continue // hidden: a tool's work in progress (`ipa models add` writes .<variant>.tmp…)
		}
		variantDirs, err := fs.ReadDir(fsys, sd.Name())
		if err != nil {
			return nil, fmt.Errorf("cannot read stage %q: %w", sd.Name(), err)
		}
		for _, vd := range variantDirs {
			if !vd.IsDir() || strings.HasPrefix(vd.Name(), ".") {
				continue
			}
			p := path.Join(sd.Name(), vd.Name(), MetaFile)
			b, err := fs.ReadFile(fsys, p)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("cannot read %s: %w", p, err)
			}
			v, err := ParseVariant(b)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			if v.Stage != sd.Name() || v.Name != vd.Name() {
				return nil, fmt.Errorf("%s: declares stage %q variant %q but lives in %s/%s", p, v.Stage, v.Name, sd.Name(), vd.Name())
			}
			st := r.Stages[v.Stage]
			if st == nil {
				st = &Stage{Name: v.Stage, Dir: sd.Name()}
				r.Stages[v.Stage] = st
			}
			st.Variants = append(st.Variants, v)
		}
	}
	if err := r.finish(); err != nil {
		return nil, err
	}
	return r, nil
}

// finish orders every stage's variants by Latency1 and checks that they
// share one interface.
func (r *Repository) finish() error {
	for _, st := range r.Stages {
		sort.SliceStable(st.Variants, func(i, j int) bool { return st.Variants[i].Latency1 < st.Variants[j].Latency1 })
		for _, v := range st.Variants[1:] {
			if err := st.checkCompatible(v); err != nil {
				return err
			}
		}
	}
	return nil
}

// ReadRepositoryDirs reads the repositories rooted at dirs (operating-system
// paths) and merges them into one: a stage found in several contributes the
// variants of each, which must share one interface, and a variant name may
// appear once per stage. Every variant's Dir is set. A directory that does
// not exist is an error.
func ReadRepositoryDirs(dirs ...string) (*Repository, error) {
	merged := &Repository{Stages: map[string]*Stage{}}
	from := map[string]string{} // stage/variant → the directory it came from
	for _, dir := range dirs {
		r, err := ReadRepository(os.DirFS(dir))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
		for _, name := range r.StageNames() {
			st := r.Stages[name]
			m := merged.Stages[name]
			if m == nil {
				m = &Stage{Name: name, Dir: st.Dir}
				merged.Stages[name] = m
			}
			for _, v := range st.Variants {
				id := name + "/" + v.Name
				if prev, ok := from[id]; ok {
					return nil, fmt.Errorf("variant %s is in two model repositories, %s and %s; remove one (`ipa models remove`)", id, prev, dir)
				}
				from[id] = dir
				v.Dir = filepath.Join(dir, st.Dir, v.Name)
				m.Variants = append(m.Variants, v)
			}
		}
	}
	if err := merged.finish(); err != nil {
		return nil, err
	}
	return merged, nil
}

// Path returns the path of the variant's model file: under its Dir when it
// was read from a directory, else under root/stageDir/name (root being the
// repository the caller read it from).
func (v *Variant) Path(root, stageDir string) string {
	if v.Dir != "" {
		return filepath.Join(v.Dir, v.File)
	}
	return filepath.Join(root, stageDir, v.Name, v.File)
}

// ParseVariant decodes and validates one variant.json.
func ParseVariant(b []byte) (*Variant, error) {
	var v Variant
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("cannot parse variant metadata: %w", err)
	}
	if err := v.Validate(); err != nil {
		return nil, err
	}
	return &v, nil
}

// EncodeVariant validates v and encodes it as variant.json is written:
// indented JSON and a final newline.
func EncodeVariant(v *Variant) ([]byte, error) {
	if err := v.Validate(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
