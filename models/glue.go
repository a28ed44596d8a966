package models

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
)

// The declarative glue of a pipeline spec: how a step's inputs are made
// (from the request's images, crops of boxes an earlier step found, or
// tensors routed by name) and what the pipeline answers. The router
// (dataplane/router) runs it with the pure functions of dataplane/glue;
// this file holds the nouns and their checks.

// Resize modes of ImagePrep.
const (
	ResizeStretch     = "stretch"      // to the size exactly, aspect ratio not kept
	ResizeLetterbox   = "letterbox"    // fit inside the size, aspect kept, the rest padded
	ResizeCentreCrop  = "centre-crop"  // cover the size, aspect kept, the centre cut out
	ResizeShorterSide = "shorter-side" // shorter side to Shorter, aspect kept, then the centre Size cut out
)

// ImagePrep turns an image into one input tensor of a model.
//
//	value = (pixel / Scale − Mean[c]) / Std[c]   for pixel in 0…255
//
// in channel order Channels, laid out as Layout, of datatype DType.
type ImagePrep struct {
	// Input is the model input the tensor feeds (default: the model's only
	// input, or its first one that no `from` entry names).
	Input string `yaml:"input,omitempty" json:"input,omitempty"`
	// Resize is stretch (default), letterbox, centre-crop (or center-crop)
	// or shorter-side.
	Resize string `yaml:"resize,omitempty" json:"resize,omitempty"`
	// Size is [height, width] of the tensor's image (default: the active
	// variant's input, which must fix them).
	Size []int `yaml:"size,omitempty" json:"size,omitempty"`
	// Shorter is the length of the shorter side after a shorter-side resize
	// (default round(256·min(Size)/224), torchvision's ImageNet evaluation).
	Shorter int `yaml:"shorter,omitempty" json:"shorter,omitempty"`
	// Align places a letterboxed image: centre (default) or top-left.
	Align string `yaml:"align,omitempty" json:"align,omitempty"`
	// Pad is the RGB colour (0…255) of a letterbox's padding (default black).
	Pad []int `yaml:"pad,omitempty" json:"pad,omitempty"`
	// Interpolation is approx-bilinear (default), bilinear, nearest or
	// catmull-rom (golang.org/x/image/draw's kernels).
	Interpolation string `yaml:"interpolation,omitempty" json:"interpolation,omitempty"`
	// Layout is NCHW (default) or NHWC.
	Layout string `yaml:"layout,omitempty" json:"layout,omitempty"`
	// Channels is RGB (default), BGR or GRAY (one channel, ITU-R BT.601 luma).
	Channels string `yaml:"channels,omitempty" json:"channels,omitempty"`
	// Scale divides the 0…255 pixel values first (default 255, so 0…1; 1
	// keeps 0…255; 127.5 with mean 1 gives −1…1).
	Scale float64 `yaml:"scale,omitempty" json:"scale,omitempty"`
	// Mean and Std normalise each channel (one value, or one per channel in
	// RGB order; defaults 0 and 1).
	Mean []float64 `yaml:"mean,omitempty" json:"mean,omitempty"`
	Std  []float64 `yaml:"std,omitempty" json:"std,omitempty"`
	// DType is FP32 or UINT8 (raw pixels, no normalisation); default the
	// model input's datatype.
	DType string `yaml:"dtype,omitempty" json:"dtype,omitempty"`
}

// Box formats of Crops.
const (
	BoxXYXY   = "xyxy"   // x0, y0, x1, y1
	BoxYXYX   = "yxyx"   // y0, x0, y1, x1 (TensorFlow's detection API)
	BoxXYWH   = "xywh"   // x0, y0, width, height
	BoxCXCYWH = "cxcywh" // centre x, centre y, width, height (YOLO, DETR)
)

// Crops fans a step out: for every box an earlier step found, the crop of
// the request's image, preprocessed by Image, is one item of this step.
//
// Boxes come from the previous step's outputs — Boxes [K,4] (or [1,K,4])
// in Format, in the previous step's input pixels, or in 0…1 of them with
// Normalized, and Scores [K] (or [1,K], [K,1], [1,K,1]) — or from a Go
// decoder registered with the router (Decoder: "blazeface"). They are
// mapped back to the original image, grown by Margin, clipped; boxes
// scoring below Threshold are dropped, then boxes overlapping a better one
// by more than NMS (IoU) are, and at most Max are kept, best first.
type Crops struct {
	Boxes      string    `yaml:"boxes,omitempty" json:"boxes,omitempty"`
	Scores     string    `yaml:"scores,omitempty" json:"scores,omitempty"`
	Format     string    `yaml:"format,omitempty" json:"format,omitempty"`
	Normalized bool      `yaml:"normalized,omitempty" json:"normalized,omitempty"`
	Decoder    string    `yaml:"decoder,omitempty" json:"decoder,omitempty"`
	Threshold  float64   `yaml:"threshold,omitempty" json:"threshold,omitempty"`
	NMS        float64   `yaml:"nms,omitempty" json:"nms,omitempty"`
	Max        int       `yaml:"max,omitempty" json:"max,omitempty"`
	Margin     float64   `yaml:"margin,omitempty" json:"margin,omitempty"`
	Image      ImagePrep `yaml:"image" json:"image"`
}

// DefaultMaxCrops is Crops.Max when unset.
const DefaultMaxCrops = 100

// Output shapes what a pipeline answers, in this order: Softmax replaces
// the named outputs by their softmax over the last dimension, TopK adds
// the best classes of an output, Rename renames outputs, Select keeps only
// the named outputs in that order.
type Output struct {
	Softmax []string          `yaml:"softmax,omitempty" json:"softmax,omitempty"`
	TopK    *TopK             `yaml:"topk,omitempty" json:"topk,omitempty"`
	Rename  map[string]string `yaml:"rename,omitempty" json:"rename,omitempty"`
	Select  []string          `yaml:"select,omitempty" json:"select,omitempty"`
}

// TopK adds the K best classes of each row of the output From ([N,C] or
// [N,C,1,1]): "class" INT32 (indices), "class_prob" FP32 (their values,
// after a softmax with Softmax) and, with Labels, "label" BYTES — shaped
// [N] for K 1, [N,K] otherwise. Labels is a file of one label per line in
// class order, next to the last step's model in the repository (`ipa
// models add --file`), or an absolute path.
type TopK struct {
	From    string `yaml:"from" json:"from"`
	K       int    `yaml:"k,omitempty" json:"k,omitempty"`
	Labels  string `yaml:"labels,omitempty" json:"labels,omitempty"`
	Softmax bool   `yaml:"softmax,omitempty" json:"softmax,omitempty"`
}

// The outputs TopK adds, and those a fan-out (Crops) adds to the rows of
// its leaves.
const (
	OutClass     = "class"
	OutClassProb = "class_prob"
	OutLabel     = "label"
	OutBoxes     = "boxes" // INT32 [n,4] x0, y0, x1, y1 in the request's image
	OutScore     = "score" // FP32 [n] the box's score
	OutItem      = "item"  // INT32 [n] the request image each row belongs to
)

// MaxTopK bounds TopK.K.
const MaxTopK = 1000

// RequestRef is the prefix of a From source naming a request input.
const RequestRef = "request"

// Declarative reports whether the step's inputs are made by the
// declarative glue (Image, Crops, From, or nothing at all: the previous
// step's outputs by position) rather than by a named Go glue (Input).
func (s *Step) Declarative() bool { return s.Input == "" }

// Canonical resize spellings.
var resizeModes = map[string]string{
	"": ResizeStretch, ResizeStretch: ResizeStretch, ResizeLetterbox: ResizeLetterbox,
	ResizeCentreCrop: ResizeCentreCrop, "center-crop": ResizeCentreCrop, ResizeShorterSide: ResizeShorterSide,
}

// ResizeMode returns the canonical resize mode of p.
func (p *ImagePrep) ResizeMode() string { return resizeModes[p.Resize] }

func oneOf(path, field, v string, allowed ...string) error {
	if v == "" || slices.Contains(allowed, v) {
		return nil
	}
	return fieldErr(path+"."+field, "%s %q is not one of %v", field, v, allowed)
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// validate checks p on its own; at is its YAML path.
func (p *ImagePrep) validate(at string) error {
	if _, ok := resizeModes[p.Resize]; !ok {
		return fieldErr(at+".resize", "resize %q is not one of stretch, letterbox, centre-crop, shorter-side", p.Resize)
	}
	for _, c := range []struct{ field, v string }{{"align", p.Align}, {"interpolation", p.Interpolation}, {"layout", p.Layout}, {"channels", p.Channels}, {"dtype", p.DType}} {
		allowed := map[string][]string{
			"align": {"centre", "center", "top-left"}, "interpolation": {"approx-bilinear", "bilinear", "nearest", "catmull-rom"},
			"layout": {"NCHW", "NHWC"}, "channels": {"RGB", "BGR", "GRAY"}, "dtype": {"FP32", "UINT8"},
		}[c.field]
		if err := oneOf(at, c.field, c.v, allowed...); err != nil {
			return err
		}
	}
	if len(p.Size) != 0 && (len(p.Size) != 2 || p.Size[0] < 1 || p.Size[1] < 1 || p.Size[0] > 8192 || p.Size[1] > 8192) {
		return fieldErr(at+".size", "size %v must be [height, width], each in [1, 8192]", p.Size)
	}
	if p.Shorter < 0 || p.Shorter > 8192 {
		return fieldErr(at+".shorter", "shorter %d must be in [1, 8192]", p.Shorter)
	}
	if p.Shorter != 0 && p.ResizeMode() != ResizeShorterSide {
		return fieldErr(at+".shorter", "shorter applies to resize: shorter-side only")
	}
	if p.Align != "" && p.ResizeMode() != ResizeLetterbox || len(p.Pad) != 0 && p.ResizeMode() != ResizeLetterbox {
		return fieldErr(at+".resize", "align and pad apply to resize: letterbox only")
	}
	if len(p.Pad) != 0 && len(p.Pad) != 3 {
		return fieldErr(at+".pad", "pad %v must be an RGB colour [r, g, b]", p.Pad)
	}
	for _, v := range p.Pad {
		if v < 0 || v > 255 {
			return fieldErr(at+".pad", "pad %v: each channel is in [0, 255]", p.Pad)
		}
	}
	if !finite(p.Scale) || p.Scale < 0 {
		return fieldErr(at+".scale", "scale %v must be positive (pixels are divided by it)", p.Scale)
	}
	channels := 3
	if p.Channels == "GRAY" {
		channels = 1
	}
	for _, c := range []struct {
		field string
		v     []float64
	}{{"mean", p.Mean}, {"std", p.Std}} {
		if len(c.v) != 0 && len(c.v) != 1 && len(c.v) != channels {
			return fieldErr(at+"."+c.field, "%s has %d values; give 1 or %d (one per channel)", c.field, len(c.v), channels)
		}
		for _, x := range c.v {
			if !finite(x) || c.field == "std" && x == 0 {
				return fieldErr(at+"."+c.field, "%s %v: values must be finite (std non-zero)", c.field, c.v)
			}
		}
	}
	if p.DType == "UINT8" && (p.Scale != 0 || len(p.Mean) != 0 || len(p.Std) != 0) {
		return fieldErr(at+".dtype", "dtype UINT8 carries raw pixels: scale, mean and std do not apply")
	}
	return nil
}

// validate checks c on its own.
func (c *Crops) validate(at string) error {
	switch {
	case (c.Boxes == "") == (c.Decoder == ""):
		return fieldErr(at, "crops need either boxes (an output of the previous step holding [K,4] boxes) or decoder (a Go decoder such as blazeface)")
	case c.Scores != "" && c.Boxes == "":
		return fieldErr(at+".scores", "scores go with boxes; a decoder scores its boxes itself")
	case c.Decoder != "" && (c.Format != "" || c.Normalized):
		return fieldErr(at+".decoder", "format and normalized describe boxes; a decoder's boxes need neither")
	case !finite(c.Threshold):
		return fieldErr(at+".threshold", "threshold must be a number")
	case !finite(c.NMS) || c.NMS < 0 || c.NMS > 1:
		return fieldErr(at+".nms", "nms %v is an IoU in [0, 1] (0: no suppression)", c.NMS)
	case c.Max < 0 || c.Max > 10000:
		return fieldErr(at+".max", "max %d must be in [1, 10000] (default %d)", c.Max, DefaultMaxCrops)
	case !finite(c.Margin) || c.Margin < 0 || c.Margin > 10:
		return fieldErr(at+".margin", "margin %v is a fraction of the box's size in [0, 10]", c.Margin)
	}
	if err := oneOf(at, "format", c.Format, BoxXYXY, BoxYXYX, BoxXYWH, BoxCXCYWH); err != nil {
		return err
	}
	return c.Image.validate(at + ".image")
}

// validate checks o on its own.
func (o *Output) validate() error {
	const at = "$.output"
	name := func(path, n string) error {
		if n == "" || len(n) > 256 || strings.ContainsFunc(n, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return fieldErr(path, "%q is not an output name", n)
		}
		return nil
	}
	for i, n := range o.Softmax {
		if err := name(fmt.Sprintf("%s.softmax[%d]", at, i), n); err != nil {
			return err
		}
	}
	if k := o.TopK; k != nil {
		if err := name(at+".topk.from", k.From); err != nil {
			return err
		}
		if k.K < 0 || k.K > MaxTopK {
			return fieldErr(at+".topk.k", "k %d must be in [1, %d] (default 1)", k.K, MaxTopK)
		}
	}
	targets := map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(o.Rename)) {
		v := o.Rename[k]
		if err := name(at+".rename", k); err != nil {
			return err
		}
		if err := name(at+".rename."+k, v); err != nil {
			return err
		}
		if prev, ok := targets[v]; ok {
			return fieldErr(at+".rename."+k, "%q and %q are both renamed to %q", prev, k, v)
		}
		targets[v] = k
	}
	seen := map[string]bool{}
	for i, n := range o.Select {
		if err := name(fmt.Sprintf("%s.select[%d]", at, i), n); err != nil {
			return err
		}
		if seen[n] {
			return fieldErr(fmt.Sprintf("%s.select[%d]", at, i), "%q is selected twice", n)
		}
		seen[n] = true
	}
	return nil
}

// validateGlue checks the declarative sections of step i.
func (p *Pipeline) validateGlue(i int) error {
	s := &p.Stages[i]
	at := fmt.Sprintf("$.stages[%d]", i)
	if !s.Declarative() && (s.Image != nil || s.Crops != nil || len(s.From) > 0) {
		return fieldErr(at+".input", "input %q names a Go glue; image, crops and from are the declarative glue: use one or the other", s.Input)
	}
	if s.Audio != nil {
		if err := s.Audio.validate(s, i); err != nil {
			return err
		}
	}
	if s.Image != nil && s.Crops != nil {
		return fieldErr(at+".crops", "a step takes either the request's image (image) or crops of it (crops, with its own image section)")
	}
	if s.Crops != nil && i == 0 {
		return fieldErr(at+".crops", "the first step has no earlier step to take boxes from")
	}
	if s.Image != nil {
		if err := s.Image.validate(at + ".image"); err != nil {
			return err
		}
	}
	if s.Crops != nil {
		if err := s.Crops.validate(at + ".crops"); err != nil {
			return err
		}
	}
	earlier := make([]string, i)
	for j := range earlier {
		earlier[j] = p.Stages[j].Name
	}
	for _, k := range slices.Sorted(maps.Keys(s.From)) {
		path := at + ".from." + k
		if _, _, ok := SplitRef(s.From[k], earlier); !ok {
			return fieldErr(path, "%q must be STEP.OUTPUT with STEP an earlier step %v, or request.INPUT", s.From[k], earlier)
		}
	}
	return nil
}

// SplitRef splits a From source "STEP.OUTPUT" (or "request.INPUT") into
// the step, one of steps or RequestRef (the longest that prefixes ref:
// names may hold dots), and the tensor name; ok is false when neither
// prefixes it or the name is empty.
func SplitRef(ref string, steps []string) (step, name string, ok bool) {
	for _, s := range append([]string{RequestRef}, steps...) {
		if rest, found := strings.CutPrefix(ref, s+"."); found && rest != "" && len(s) > len(step) {
			step, name, ok = s, rest, true
		}
	}
	return step, name, ok
}

// checkGlueNames checks, against the repository, that the tensors the
// declarative glue of step i names exist: inputs of its stage, outputs of
// the steps it reads.
func (p *Pipeline) checkGlueNames(i int, repo *Repository) error {
	s := &p.Stages[i]
	at := fmt.Sprintf("$.stages[%d]", i)
	st := repo.Stages[s.Model]
	in, _ := st.Interface()
	inputs := TensorNames(in)
	outputsOf := func(step string) []string {
		e := p.Step(step)
		if e == nil || repo.Stages[e.Model] == nil {
			return nil
		}
		_, out := repo.Stages[e.Model].Interface()
		return TensorNames(out)
	}
	isInput := func(path, name string) error {
		if name != "" && !slices.Contains(inputs, name) {
			return fieldErr(path, "%q is not an input of model %q (inputs %v)", name, s.Model, inputs)
		}
		return nil
	}
	if s.Image != nil {
		if err := isInput(at+".image.input", s.Image.Input); err != nil {
			return err
		}
	}
	if c := s.Crops; c != nil {
		if err := isInput(at+".crops.image.input", c.Image.Input); err != nil {
			return err
		}
		prev := p.Stages[i-1]
		outs := outputsOf(prev.Name)
		for _, o := range []struct{ field, name string }{{"boxes", c.Boxes}, {"scores", c.Scores}} {
			if o.name != "" && !slices.Contains(outs, o.name) {
				return fieldErr(at+".crops."+o.field, "%q is not an output of step %q (outputs %v)", o.name, prev.Name, outs)
			}
		}
	}
	earlier := make([]string, i)
	for j := range earlier {
		earlier[j] = p.Stages[j].Name
	}
	for _, k := range slices.Sorted(maps.Keys(s.From)) {
		path := at + ".from." + k
		if err := isInput(path, k); err != nil {
			return err
		}
		step, name, _ := SplitRef(s.From[k], earlier)
		if step == RequestRef {
			continue
		}
		if outs := outputsOf(step); !slices.Contains(outs, name) {
			return fieldErr(path, "%q is not an output of step %q (outputs %v)", name, step, outs)
		}
	}
	return nil
}
