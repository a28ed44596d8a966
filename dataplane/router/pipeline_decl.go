package router

import (
	"errors"
	"fmt"
	"image"
	"slices"

	"github.com/ipa-serving/ipa/dataplane/glue"
	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
)

// The declarative glue: a step whose spec names no Go glue (models.Step's
// Image, Crops and From sections, or nothing: tensors by position) gets its
// Glue built here from the spec, with the pure functions of dataplane/glue.

// Decoder turns the outputs of a detector step (det) into boxes in the
// pixels of its input, best first, keeping boxes scoring at least
// threshold (0: the model's own default). Decoders hold what is specific
// to a model (anchors, regressors); a crops section names one.
type Decoder func(outputs []models.Tensor, det *Step, threshold float32) ([]glue.Box, error)

// declData is what the declarative glue keeps on each item it makes.
type declData struct {
	req *Request
	// img is the image the item's image input was made from (the request's
	// image, or a crop of it), geom where it went; hasGeom is false for an
	// item without an image input.
	img     image.Image
	geom    glue.Geometry
	hasGeom bool
	// reqImg is the request image the item descends from (nil without one).
	reqImg image.Image
	parent *Item
	step   int // the step the item goes to
}

// source says where one model input of a declarative step comes from.
type source struct {
	image bool   // the step's image (or crop) tensor
	step  int    // an earlier step's output (≥ 0), or -1: the request's input
	name  string // the tensor's name there
	pos   int    // by position: the previous step's output pos (step == -2)
}

const (
	fromRequest  = -1
	fromPosition = -2
)

// declStep is one declarative step, resolved against its stage.
type declStep struct {
	index   int
	spec    models.Step
	sources []source             // per model input, in the stage's order
	preps   map[string]glue.Prep // per variant: the image or crop preprocessing
	imgIn   string               // the model input the image feeds
	crops   *models.Crops
	decoder Decoder
	// tensorsToo: a first step with an image also takes the model's own
	// tensors in a V2 request (as they are).
	tensorsToo bool
}

// newDeclStep resolves step i of spec (a declarative one) for the running
// step st. prev is the previous step (nil for the first).
func newDeclStep(spec *models.Pipeline, i int, st *Step, prev *Step, glues Glues) (*declStep, error) {
	s := spec.Stages[i]
	d := &declStep{index: i, spec: s, crops: s.Crops}
	earlier := make([]string, i)
	for j := range earlier {
		earlier[j] = spec.Stages[j].Name
	}
	prep := s.Image
	if s.Crops != nil {
		prep = &s.Crops.Image
		if glues[s.Crops.Decoder].Decoder == nil && s.Crops.Decoder != "" {
			return nil, fmt.Errorf("crops: no decoder %q (have %v)", s.Crops.Decoder, glues.Decoders())
		}
		d.decoder = glues[s.Crops.Decoder].Decoder
		if s.Crops.Boxes != "" {
			if err := hasOutput(prev, s.Crops.Boxes, s.Crops.Scores); err != nil {
				return nil, fmt.Errorf("crops: %w", err)
			}
		}
	}
	if prep != nil {
		d.imgIn = prep.Input
		if d.imgIn == "" { // the only input, or the first that from does not fill
			for _, in := range st.inputs {
				if _, routed := s.From[in.Name]; !routed {
					d.imgIn = in.Name
					break
				}
			}
		}
		d.preps = map[string]glue.Prep{}
		for _, v := range st.Meta.Variants {
			in, ok := v.Input(d.imgIn)
			if !ok {
				return nil, fmt.Errorf("image: model %q has no input %q (inputs %v)", st.Spec.Model, d.imgIn, models.TensorNames(v.Inputs))
			}
			p, err := glue.NewPrep(*prep, in)
			if err != nil {
				return nil, fmt.Errorf("image: variant %q: %w", v.Name, err)
			}
			d.preps[v.Name] = p
		}
		d.tensorsToo = i == 0 && len(s.From) == 0
	}
	for pos, in := range st.inputs {
		switch ref, routed := s.From[in.Name]; {
		case prep != nil && in.Name == d.imgIn:
			if routed {
				return nil, fmt.Errorf("input %q is both the image and from %q", in.Name, ref)
			}
			d.sources = append(d.sources, source{image: true})
		case routed:
			step, name, _ := models.SplitRef(ref, earlier)
			src := source{step: fromRequest, name: name}
			if step != models.RequestRef {
				src.step = slices.Index(earlier, step)
			} else if prep != nil {
				return nil, fmt.Errorf("from %q: a step that takes the request's image takes no request tensors", ref)
			}
			d.sources = append(d.sources, src)
		case prep != nil || len(s.From) > 0:
			return nil, fmt.Errorf("input %q has no source: name it in from (or image.input)", in.Name)
		default:
			d.sources = append(d.sources, source{step: fromPosition, pos: pos})
		}
	}
	for k := range s.From {
		if !slices.ContainsFunc(st.inputs, func(t models.TensorSpec) bool { return t.Name == k }) {
			return nil, fmt.Errorf("from: model %q has no input %q (inputs %v)", st.Spec.Model, k, models.TensorNames(st.inputs))
		}
	}
	return d, nil
}

// hasOutput checks that the step's stage has the named outputs.
func hasOutput(st *Step, names ...string) error {
	_, out := st.Meta.Interface()
	for _, n := range names {
		if n != "" && !slices.ContainsFunc(out, func(t models.TensorSpec) bool { return t.Name == n }) {
			return fmt.Errorf("step %q has no output %q (outputs %v)", st.Spec.Name, n, models.TensorNames(out))
		}
	}
	return nil
}

// glue returns the step's Glue.
func (d *declStep) glue() Glue {
	g := Glue{}
	if d.index == 0 {
		g.First = d.first
		if d.preps != nil {
			g.Inputs = func(*Step) []models.TensorSpec { return []models.TensorSpec{ImageInput} }
		} else if len(d.spec.From) > 0 {
			g.Inputs = d.requestInputs
		}
	} else {
		g.Next = d.next
	}
	return g
}

// requestInputs declares the request tensors a first step routes by name.
func (d *declStep) requestInputs(st *Step) []models.TensorSpec {
	var in []models.TensorSpec
	for i, src := range d.sources {
		if src.step == fromRequest {
			t := st.inputs[i]
			t.Name = src.name
			in = append(in, t)
		}
	}
	return in
}

func (d *declStep) prep(st *Step) (glue.Prep, error) {
	v := st.Variant().Name
	p, ok := d.preps[v]
	if !ok {
		return p, fmt.Errorf("BUG: no image preprocessing for variant %q of step %q", v, st.Spec.Name)
	}
	return p, nil
}

// first makes the root items: one per request image, or one holding the
// request's tensors (by name, or as they are).
func (d *declStep) first(req *Request, st *Step) ([]*Item, error) {
	if d.preps == nil {
		if len(d.spec.From) == 0 {
			roots, err := tensorFirst(req, st)
			if err == nil {
				roots[0].Data = &declData{req: req}
			}
			return roots, err
		}
		if req.V2 == nil {
			return nil, fmt.Errorf("%w: stage %q takes V2 tensors %v, not a raw body", v2codec.ErrBadRequest, st.Spec.Name, models.TensorNames(d.requestInputs(st)))
		}
		root := &Item{}
		root.Data = &declData{req: req, step: 0}
		in, err := d.inputs(root, st, models.Tensor{})
		if err != nil {
			return nil, err
		}
		root.In = in
		return []*Item{root}, nil
	}
	if d.tensorsToo && req.V2 != nil && len(req.V2.Inputs) > 0 && req.V2.Inputs[0].DataType != models.BYTES {
		return tensorFirst(req, st)
	}
	imgs, err := requestImages(req)
	if err != nil {
		return nil, err
	}
	p, err := d.prep(st)
	if err != nil {
		return nil, err
	}
	items := make([]*Item, len(imgs))
	for i, img := range imgs {
		t, g := glue.Preprocess(img, p, d.imgIn)
		it := &Item{Data: &declData{req: req, img: img, geom: g, hasGeom: true, reqImg: img, step: 0}}
		if it.In, err = d.inputs(it, st, t); err != nil {
			return nil, err
		}
		items[i] = it
	}
	return items, nil
}

// child returns a new item for this step below parent, inheriting its
// request, request image, box and score.
func (d *declStep) child(parent *Item) *Item {
	it := &Item{Box: parent.Box, Score: parent.Score}
	dd := &declData{parent: parent, step: d.index}
	if pd, ok := parent.Data.(*declData); ok {
		dd.req, dd.reqImg = pd.req, pd.reqImg
	}
	it.Data = dd
	return it
}

// next makes this step's items from one item of the previous step.
func (d *declStep) next(parent *Item, st *Step) ([]*Item, error) {
	pd, _ := parent.Data.(*declData)
	if d.crops != nil {
		return d.cropItems(parent, pd, st)
	}
	it := d.child(parent)
	var img models.Tensor
	if d.preps != nil {
		if pd == nil || pd.reqImg == nil {
			return nil, errors.New("image: no request image reaches this step (the pipeline's first step must take an image)")
		}
		p, err := d.prep(st)
		if err != nil {
			return nil, err
		}
		dd := it.Data.(*declData)
		img, dd.geom = glue.Preprocess(pd.reqImg, p, d.imgIn)
		dd.img, dd.hasGeom = pd.reqImg, true
	}
	in, err := d.inputs(it, st, img)
	if err != nil {
		return nil, err
	}
	it.In = in
	return []*Item{it}, nil
}

// cropItems fans out: one item per box found in the parent's outputs.
func (d *declStep) cropItems(parent *Item, pd *declData, st *Step) ([]*Item, error) {
	if pd == nil || !pd.hasGeom {
		return nil, errors.New("crops: the previous step took no image, so its boxes cannot be mapped to one")
	}
	c := d.crops
	prevStep := d.prevStep(st)
	var boxes []glue.Box
	var err error
	if d.decoder != nil {
		boxes, err = d.decoder(parent.Out, prevStep, float32(c.Threshold))
	} else {
		b, okb := outputNamed(parent.Out, c.Boxes)
		var scores *models.Tensor
		if c.Scores != "" {
			s, oks := outputNamed(parent.Out, c.Scores)
			okb = okb && oks
			scores = &s
		}
		if !okb {
			return nil, fmt.Errorf("crops: the previous step answered %v, not %q and %q", tensorNames(parent.Out), c.Boxes, c.Scores)
		}
		boxes, err = glue.DecodeBoxes(b, scores, c.Format, c.Normalized, pd.geom.W, pd.geom.H)
	}
	if err != nil {
		return nil, fmt.Errorf("crops: %w", err)
	}
	maxN := c.Max
	if maxN == 0 {
		maxN = models.DefaultMaxCrops
	}
	boxes = glue.SelectBoxes(boxes, float32(c.Threshold), c.NMS, maxN)
	p, err := d.prep(st)
	if err != nil {
		return nil, err
	}
	items := make([]*Item, 0, len(boxes))
	for _, b := range boxes {
		g := b.Grow(c.Margin)
		r := pd.geom.Rect(g.X0, g.Y0, g.X1, g.Y1)
		if r.Empty() {
			continue
		}
		crop := glue.Crop(pd.img, r)
		it := d.child(parent)
		it.Box, it.Score = r, b.Score
		dd := it.Data.(*declData)
		var t models.Tensor
		t, dd.geom = glue.Preprocess(crop, p, d.imgIn)
		dd.img, dd.hasGeom = crop, true
		if it.In, err = d.inputs(it, st, t); err != nil {
			return nil, err
		}
		items = append(items, it)
	}
	return items, nil
}

// prevStep is the step before this one (the running pipeline's), which the
// decoder reads its input size from.
func (d *declStep) prevStep(st *Step) *Step { return st.prev }

// inputs assembles the model inputs of it in the stage's order: the image
// tensor img, tensors routed by name from earlier steps or the request, or
// the parent's outputs by position.
func (d *declStep) inputs(it *Item, st *Step, img models.Tensor) ([]models.Tensor, error) {
	dd := it.Data.(*declData)
	in := make([]models.Tensor, len(d.sources))
	for i, src := range d.sources {
		want := st.inputs[i].Name
		switch {
		case src.image:
			in[i] = img
		case src.step == fromPosition:
			out := dd.parent.Out
			if len(out) != len(st.inputs) {
				return nil, fmt.Errorf("previous stage has %d outputs, this one takes %d inputs; route them by name with from", len(out), len(st.inputs))
			}
			in[i] = out[src.pos]
		case src.step == fromRequest:
			if dd.req == nil || dd.req.V2 == nil {
				return nil, fmt.Errorf("%w: input %q comes from the request's tensor %q: send a V2 request", v2codec.ErrBadRequest, want, src.name)
			}
			t, ok := outputNamed(dd.req.V2.Inputs, src.name)
			if !ok {
				return nil, fmt.Errorf("%w: the request has no input %q (this pipeline takes %v)", v2codec.ErrBadRequest, src.name, d.requestNames())
			}
			in[i] = t
		default:
			t, err := ancestorOutput(it, src.step, src.name)
			if err != nil {
				return nil, err
			}
			in[i] = t
		}
		in[i].Name = want
	}
	return in, nil
}

func (d *declStep) requestNames() []string {
	var names []string
	for _, s := range d.sources {
		if s.step == fromRequest {
			names = append(names, s.name)
		}
	}
	return names
}

// ancestorOutput returns output name of the item's ancestor that went to
// step (the parent of an item of step k went to step k−1).
func ancestorOutput(it *Item, step int, name string) (models.Tensor, error) {
	dd := it.Data.(*declData)
	idx := dd.step - 1
	for p := dd.parent; p != nil; idx-- {
		if idx == step {
			t, ok := outputNamed(p.Out, name)
			if !ok {
				return models.Tensor{}, fmt.Errorf("step %d answered %v, not %q", step, tensorNames(p.Out), name)
			}
			return t, nil
		}
		pd, ok := p.Data.(*declData)
		if !ok {
			break
		}
		p = pd.parent
	}
	return models.Tensor{}, fmt.Errorf("no item of step %d above this one: route from an earlier declarative step", step)
}

func outputNamed(ts []models.Tensor, name string) (models.Tensor, bool) {
	i := slices.IndexFunc(ts, func(t models.Tensor) bool { return t.Name == name })
	if i < 0 {
		return models.Tensor{}, false
	}
	return ts[i], true
}

func tensorNames(ts []models.Tensor) []string {
	n := make([]string, len(ts))
	for i, t := range ts {
		n[i] = t.Name
	}
	return n
}
