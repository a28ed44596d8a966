package router

import (
	"context"
	"errors"
	"fmt"
	"image"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/glue"
	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
)

// Item is one unit of work travelling through a pipeline: the request
// itself, or one thing a stage found in it (a text line, a face). A request
// that fans out becomes a tree of items; every item is computed exactly once
// by the stage its inputs were made for.
type Item struct {
	// In are the inputs for the stage the item goes to.
	In []models.Tensor
	// Out are that stage's outputs for the item (a copy: replies are released).
	Out []models.Tensor
	// Box locates the item in the request's image, for items found by a stage.
	Box image.Rectangle
	// Score is the confidence of the stage that found the item.
	Score    float32
	Children []*Item
	// Data is private to the glue that made the item (image geometry, the
	// boxes of the rows of a batch of crops).
	Data any
}

// Request is a pipeline request as the first glue sees it: V2 tensors,
// or images (raw body, or the elements of a V2 BYTES tensor, decoded by the
// glue).
type Request struct {
	V2     *v2codec.InferRequest
	Raw    []byte
	Images []image.Image

	// first and firstLevel are the tensor glue's root item, reused with its
	// output buffers when the router reuses the Request (see Reset).
	first      Item
	firstLevel [1]*Item
}

// Reset clears r for another request, keeping the buffers of the tensor
// glue's root item (its stage-output copies) for reuse.
func (r *Request) Reset() {
	r.V2, r.Raw, r.Images = nil, nil, nil // nil: not decoded yet (see requestImages)
	r.first = Item{Out: r.first.Out[:0]}
	r.firstLevel[0] = nil
}

// Step is one step of a running pipeline.
type Step struct {
	Spec   models.Step
	Meta   *models.Stage
	Client StageClient
	// Active returns the variant the stage runs now (glue that depends on
	// the variant's input size reads it); nil means Meta.Variants[0].
	Active func() string
	// RepoDir is the model repository's root, for glue that reads files next
	// to a model (the OCR character list).
	RepoDir string
	inputs  []models.TensorSpec
	index   int   // position in the pipeline
	prev    *Step // the step before (nil for the first)
}

// VariantDir returns the directory of the active variant's files (glue
// reads the files shipped next to a model there: the OCR character list,
// a classifier's labels).
func (s *Step) VariantDir() string {
	v := s.Variant()
	if v.Dir != "" {
		return v.Dir
	}
	return filepath.Join(s.RepoDir, s.Meta.Dir, v.Name)
}

// Variant returns the metadata of the stage's active variant.
func (s *Step) Variant() *models.Variant {
	if s.Active != nil {
		if v := s.Meta.Variant(s.Active()); v != nil {
			return v
		}
	}
	return s.Meta.Variants[0]
}

// Glue makes a stage's items: First from the request (first stage), Next
// from one item the previous stage computed. Finish turns the items of the
// last stage into the response's outputs.
//
// First makes one root item per item of the request (an image of a batch).
// Inputs, on a first glue, declares what the pipeline takes (nil: the first
// step's inputs); Outputs, on a last glue, what Finish answers (nil: the
// last step's outputs).
//
// A glue may instead be a Preset: a name for declarative sections (the
// spec's image, crops, from and output), which Preset writes into the step
// i of a copy of the spec before the pipeline is built; PresetFirst and
// PresetNext say where the name may stand. Or a Decoder: the model-specific
// part of a crops section (decoder: NAME), not a step's glue.
type Glue struct {
	First   func(req *Request, st *Step) ([]*Item, error)
	Next    func(parent *Item, st *Step) ([]*Item, error)
	Finish  func(req *Request, roots []*Item, last *Step) ([]models.Tensor, error)
	Inputs  func(first *Step) []models.TensorSpec
	Outputs func(last *Step) []models.TensorSpec

	Preset                  func(p *models.Pipeline, i int, st *Step)
	PresetFirst, PresetNext bool
	Decoder                 Decoder
}

// Glues maps the glue names of pipeline specs to their code. There is no
// global registry: BuiltinGlues returns ipa's own, and a program adds its
// own to that map before it builds pipelines.
type Glues map[string]Glue

// BuiltinGlues returns a new map of ipa's glues: "tensor" (V2 tensors in,
// outputs to inputs by position); the PP-OCR glues (DB text boxes, CTC);
// the "blazeface" decoder (anchors); the presets image-imagenet,
// image-face and face-crops, names for declarative sections; and the
// wake-word glues audio-vad, audio-mel, audio-embed and audio-wake.
func BuiltinGlues() Glues {
	g := Glues{"tensor": tensorGlue}
	addImageGlues(g)
	addAudioGlues(g)
	return g
}

// Names returns the glue names usable on the first step and on later ones,
// sorted.
func (gs Glues) Names() (first, next []string) {
	for n, g := range gs {
		if g.First != nil || g.Preset != nil && g.PresetFirst {
			first = append(first, n)
		}
		if g.Next != nil || g.Preset != nil && g.PresetNext {
			next = append(next, n)
		}
	}
	slices.Sort(first)
	slices.Sort(next)
	return first, next
}

// Decoders returns the names of the box decoders, sorted.
func (gs Glues) Decoders() []string {
	var names []string
	for n, g := range gs {
		if g.Decoder != nil {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// Pipeline runs requests through a pipeline's stages.
type Pipeline struct {
	Spec   *models.Pipeline
	Stages []*Step
	glues  []Glue
	// outputs are the declared outputs; post the spec's output section
	// (nil without one); tensorInputs is true when the first step takes an
	// image and the model's own tensors too.
	outputs      []models.TensorSpec
	post         *post
	tensorInputs bool

	// What the glue (decoding, resizing, cropping, post-processing) cost
	// on the router's own goroutines, summed over requests: CPU the
	// stages' profiles do not count.
	glueNanos, glueRequests atomic.Int64
	// glueTimes, when a router serves the pipeline, is the distribution of
	// the same per request (ipa_router_glue_seconds): what a calibration
	// of the simulator takes the glue's spread from.
	glueTimes *metrics.Histogram
	// What each step was sent, summed over requests: the requests that
	// reached it (not failed or dropped before it; one whose earlier step
	// found nothing reaches it with no rows) and the batch rows of their
	// items (a page's text lines reach the recognizer as a few items of
	// many rows). rows[i]/reached[i] is step i's fan-out.
	reached, rows []atomic.Int64
}

// Rows returns, per step since the pipe was made, the requests that
// reached it and the batch rows it was sent for them: rows[i]/reached[i]
// is step i's fan-out, the load per request the controller plans the step
// for. A request dropped before a step does not count there, so that an
// overload does not make the later steps look lighter.
func (p *Pipeline) Rows() (reached, rows []int64) {
	reached, rows = make([]int64, len(p.rows)), make([]int64, len(p.rows))
	for i := range p.rows {
		reached[i] = p.reached[i].Load() // first: at worst the rows hold a few requests more
		rows[i] = p.rows[i].Load()
	}
	return reached, rows
}

// itemRows is the batch rows of an item's inputs: the first dimension of the
// first (a stage batches along it), 1 for a scalar.
func itemRows(it *Item) int64 {
	if len(it.In) == 0 || len(it.In[0].Shape) == 0 {
		return 1
	}
	return max(it.In[0].Shape[0], 0)
}

// GlueCost returns the glue's total time and the number of requests it was
// measured over since the pipe was made.
func (p *Pipeline) GlueCost() (total time.Duration, requests int64) {
	return time.Duration(p.glueNanos.Load()), p.glueRequests.Load()
}

// Inputs returns the V2 inputs the pipeline takes (-1: dynamic).
func (p *Pipeline) Inputs() []models.TensorSpec {
	if in := p.glues[0].Inputs; in != nil {
		return in(p.Stages[0])
	}
	return p.Stages[0].inputs
}

// NotReady returns the first step whose client says it cannot take
// requests (clients with a Ready method: in-process and remote stages), or
// "" when every step can.
func (p *Pipeline) NotReady() string {
	for _, st := range p.Stages {
		if r, ok := st.Client.(interface{ Ready() bool }); ok && !r.Ready() {
			return st.Spec.Name
		}
	}
	return ""
}

// Version names the variants the pipeline's steps run now, in step order,
// joined by "+" (the model_version of its answers, when every step had work).
func (p *Pipeline) Version() string {
	v := make([]string, len(p.Stages))
	for i, st := range p.Stages {
		v[i] = st.Variant().Name
	}
	return strings.Join(v, "+")
}

// Outputs returns the V2 outputs the pipeline answers with.
func (p *Pipeline) Outputs() []models.TensorSpec { return p.outputs }

// TensorInputs reports whether the pipeline, which takes images, also
// takes its first model's own tensors.
func (p *Pipeline) TensorInputs() bool { return p.tensorInputs }

// NewPipeline binds a pipeline spec to its stages' clients: each step gets
// its named Go glue, or the declarative glue its spec describes (presets
// expanded first).
func NewPipeline(spec *models.Pipeline, stages []*Step, glues Glues) (*Pipeline, error) {
	if len(stages) != len(spec.Stages) {
		return nil, fmt.Errorf("pipeline %q has %d stages, got %d clients", spec.Name, len(spec.Stages), len(stages))
	}
	p := &Pipeline{Spec: spec, Stages: stages, reached: make([]atomic.Int64, len(stages)), rows: make([]atomic.Int64, len(stages))}
	for i, st := range stages {
		st.inputs, _ = st.Meta.Interface()
		st.index = i
		if i > 0 {
			st.prev = stages[i-1]
		}
	}
	spec = expandPresets(spec, stages, glues)
	fanout := false
	for i, st := range stages {
		s := spec.Stages[i]
		if s.Declarative() {
			d, err := newDeclStep(spec, i, st, st.prev, glues)
			if err != nil {
				return nil, fmt.Errorf("pipeline %q step %q: %w", spec.Name, st.Spec.Name, err)
			}
			p.glues = append(p.glues, d.glue())
			fanout = fanout || s.Crops != nil
			p.tensorInputs = p.tensorInputs || d.tensorsToo
			continue
		}
		g, ok := glues[s.Input]
		if !ok || (i == 0 && g.First == nil) || (i > 0 && g.Next == nil) {
			return nil, fmt.Errorf("pipeline %q stage %q: no glue %q for this position", spec.Name, st.Spec.Name, s.Input)
		}
		p.glues = append(p.glues, g)
	}
	lastGlue := &p.glues[len(p.glues)-1]
	last := stages[len(stages)-1]
	if spec.Stages[len(stages)-1].Declarative() {
		lastGlue.Finish = finishTensors
		if fanout {
			lastGlue.Finish, lastGlue.Outputs = finishRows, rowsOutputs
		}
	}
	if lastGlue.Finish == nil {
		return nil, fmt.Errorf("pipeline %q: glue %q cannot end a pipeline", spec.Name, stages[len(stages)-1].Spec.Input)
	}
	if out := lastGlue.Outputs; out != nil {
		p.outputs = out(last)
	} else {
		_, p.outputs = last.Meta.Interface()
	}
	if spec.Output != nil {
		var err error
		if p.post, err = newPost(spec.Output, p.outputs, last); err != nil {
			return nil, fmt.Errorf("pipeline %q: %w", spec.Name, err)
		}
		if p.outputs, err = p.post.specs(p.outputs); err != nil {
			return nil, fmt.Errorf("pipeline %q: output: %w", spec.Name, err)
		}
	}
	return p, nil
}

// expandPresets returns spec with every preset glue name replaced by the
// declarative sections it stands for (a copy when there is one).
func expandPresets(spec *models.Pipeline, stages []*Step, glues Glues) *models.Pipeline {
	var cp *models.Pipeline
	for i := range spec.Stages {
		g := glues[spec.Stages[i].Input]
		if g.Preset == nil {
			continue
		}
		if cp == nil {
			c := *spec
			c.Stages = slices.Clone(spec.Stages)
			if spec.Output != nil {
				o := *spec.Output
				c.Output = &o
			}
			cp = &c
		}
		cp.Stages[i].Input = ""
		g.Preset(cp, i, stages[i])
	}
	if cp == nil {
		return spec
	}
	return cp
}

// StepTiming is how long one stage of a request took (wall time, all items).
type StepTiming struct {
	Stage    string
	Duration time.Duration
	Items    int
	// Variant is the variant that computed the step's items (several,
	// comma-separated, when a switch happened between them).
	Variant string
}

// ErrDropped marks a request the router gave up on because it could no
// longer meet its deadline; it wraps ErrDeadline.
var ErrDropped = fmt.Errorf("dropped: %w", dataplane.ErrDeadline)

// Run computes req. timings receives one entry per stage that ran.
func (p *Pipeline) Run(ctx context.Context, req *Request, deadline time.Time, timings []StepTiming) ([]models.Tensor, []StepTiming, error) {
	var glue time.Duration
	defer func() {
		p.glueNanos.Add(int64(glue))
		p.glueRequests.Add(1)
		if h := p.glueTimes; h != nil {
			h.Update(glue.Seconds())
		}
	}()
	t0 := time.Now()
	roots, err := p.glues[0].First(req, p.Stages[0])
	glue += time.Since(t0)
	if err != nil {
		return nil, timings, err
	}
	level := roots
	for i, st := range p.Stages {
		if len(level) == 0 { // nothing found upstream: later stages have no work
			for j := i; j < len(p.Stages); j++ {
				p.reached[j].Add(1) // with no rows
			}
			break
		}
		var rows int64
		for _, it := range level {
			rows += itemRows(it)
		}
		p.reached[i].Add(1)
		p.rows[i].Add(rows)
		start := time.Now()
		if !deadline.IsZero() && !start.Before(deadline) {
			return nil, timings, fmt.Errorf("%w before stage %q (%d of %d)", ErrDropped, st.Spec.Name, i+1, len(p.Stages))
		}
		variant, err := runLevel(ctx, st, level, deadline)
		if err != nil {
			return nil, timings, err
		}
		end := time.Now() // also the start of the next stage's glue
		timings = append(timings, StepTiming{Stage: st.Spec.Name, Duration: end.Sub(start), Items: len(level), Variant: variant})
		if i+1 == len(p.Stages) {
			break
		}
		var next []*Item
		for _, it := range level {
			kids, err := p.glues[i+1].Next(it, p.Stages[i+1])
			if err != nil {
				return nil, timings, fmt.Errorf("stage %q: %w", p.Stages[i+1].Spec.Name, err)
			}
			it.Children = kids
			next = append(next, kids...)
		}
		glue += time.Since(end)
		level = next
	}
	t0 = time.Now()
	last := p.Stages[len(p.Stages)-1]
	out, err := p.glues[len(p.glues)-1].Finish(req, roots, last)
	if err == nil && p.post != nil {
		out, err = p.post.apply(out, last)
	}
	glue += time.Since(t0)
	return out, timings, err
}

// runLevel sends every item of one stage concurrently, so that the stage
// batches them, copies each reply into its item, and returns the variants
// that computed them.
func runLevel(ctx context.Context, st *Step, items []*Item, deadline time.Time) (string, error) {
	if len(items) == 1 { // nothing to batch with: no goroutine
		v, err := runItem(ctx, st, items[0], deadline)
		if err != nil {
			return "", fmt.Errorf("stage %q: %w", st.Spec.Name, err)
		}
		return v, nil
	}
	errs := make([]error, len(items))
	variants := make([]string, len(items))
	var wg sync.WaitGroup
	for i, it := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			variants[i], errs[i] = runItem(ctx, st, it, deadline)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return "", fmt.Errorf("stage %q: %w", st.Spec.Name, err)
		}
	}
	slices.Sort(variants)
	return strings.Join(slices.Compact(variants), ","), nil
}

// runItem sends one item to its stage, copies the reply into it and returns
// the variant that computed it.
func runItem(ctx context.Context, st *Step, it *Item, deadline time.Time) (string, error) {
	rep, err := st.Client.Infer(ctx, it.In, deadline)
	if err != nil {
		return "", err
	}
	it.Out = cloneTensors(it.Out, rep.Outputs)
	v := rep.Variant
	rep.Release()
	return v, nil
}

// cloneTensors copies src into dst[:0], reusing the shape and data buffers
// of dst's tensors (within its capacity): an item reused across requests
// copies a stage's outputs without allocating.
func cloneTensors(dst, src []models.Tensor) []models.Tensor {
	dst = dst[:0]
	for i, t := range src {
		var shape []int64
		var data []byte
		if i < cap(dst) {
			old := dst[:i+1][i]
			shape, data = old.Shape[:0], old.Data[:0]
		}
		dst = append(dst, models.Tensor{Name: t.Name, DataType: t.DataType, Shape: append(shape, t.Shape...), Data: append(data, t.Data...)})
	}
	return dst
}

// errNoImage is returned by image glues when the request carries none.
var errNoImage = errors.New("the request carries no image: POST a PNG or JPEG body, or a V2 BYTES input holding one")

// tensorGlue: the request's V2 inputs go to the first step as they are;
// between steps, outputs feed the next step's inputs by position.
var tensorGlue = Glue{
	First: tensorFirst,
	Next: func(parent *Item, st *Step) ([]*Item, error) {
		if len(parent.Out) != len(st.inputs) {
			return nil, fmt.Errorf("previous stage has %d outputs, this one takes %d inputs", len(parent.Out), len(st.inputs))
		}
		in := make([]models.Tensor, len(parent.Out))
		for i, t := range parent.Out {
			in[i] = t
			in[i].Name = st.inputs[i].Name
		}
		return []*Item{{In: in}}, nil
	},
	Finish: finishTensors,
}

// tensorFirst hands the request's V2 tensors to the first step.
func tensorFirst(req *Request, st *Step) ([]*Item, error) {
	if req.V2 == nil {
		return nil, fmt.Errorf("%w: stage %q takes V2 tensors %v, not a raw body", v2codec.ErrBadRequest, st.Spec.Name, models.TensorNames(st.inputs))
	}
	req.first = Item{In: req.V2.Inputs, Out: req.first.Out[:0]}
	req.firstLevel[0] = &req.first
	return req.firstLevel[:], nil
}

// finishTensors answers with the last stage's outputs of chains of items
// (no fan-out): the outputs of the one leaf of each root, stacked along
// dimension 0 when the request had several items (images).
func finishTensors(_ *Request, roots []*Item, _ *Step) ([]models.Tensor, error) {
	leaf := func(it *Item) *Item {
		for len(it.Children) > 0 {
			it = it.Children[0]
		}
		return it
	}
	switch len(roots) {
	case 0:
		return nil, errors.New("BUG: the first step made no items")
	case 1:
		return leaf(roots[0]).Out, nil
	}
	first := leaf(roots[0]).Out
	out := make([]models.Tensor, len(first))
	for j := range first {
		parts := make([]models.Tensor, len(roots))
		for i, r := range roots {
			l := leaf(r)
			if len(l.Out) != len(first) {
				return nil, fmt.Errorf("item %d has %d outputs, item 0 has %d", i, len(l.Out), len(first))
			}
			parts[i] = l.Out[j]
		}
		t, err := glue.Stack(parts)
		if err != nil {
			return nil, err
		}
		out[j] = t
	}
	return out, nil
}
