package router

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/ipa-serving/ipa/dataplane/glue"
	"github.com/ipa-serving/ipa/models"
)

// What a pipeline answers: the last glue's Finish (for declarative steps,
// finishRows after a fan-out, else the leaves' outputs stacked), then the
// spec's output section (softmax, top-k with labels, rename, select).

// fanoutOutputs are the outputs finishRows adds to the leaves' own.
var fanoutOutputs = []models.TensorSpec{
	{Name: models.OutBoxes, DataType: models.INT32, Shape: []int64{models.Dynamic, 4}},
	{Name: models.OutScore, DataType: models.FP32, Shape: []int64{models.Dynamic}},
	itemOutput,
}

// rowsOutputs are the outputs of finishRows for the last step.
func rowsOutputs(last *Step) []models.TensorSpec {
	_, out := last.Meta.Interface()
	return append(slices.Clone(out), fanoutOutputs...)
}

// finishRows answers a pipeline that fanned out: one row per leaf item
// (an item of the last step), image by image and in the order the items
// were found: the leaves' outputs concatenated along dimension 0, their
// boxes INT32[n,4] (x0,y0,x1,y1 in the request's image), score FP32[n]
// and item INT32[n] (the request image of each row).
func finishRows(_ *Request, roots []*Item, last *Step) ([]models.Tensor, error) {
	depth := last.index
	var leaves []*Item
	var items []int
	var walk func(it *Item, d, root int)
	walk = func(it *Item, d, root int) {
		if d == depth {
			leaves = append(leaves, it)
			items = append(items, root)
			return
		}
		for _, c := range it.Children {
			walk(c, d+1, root)
		}
	}
	for r, root := range roots {
		walk(root, 0, r)
	}
	specs := rowsOutputs(last)
	own := len(specs) - len(fanoutOutputs)
	out := make([]models.Tensor, 0, len(specs))
	for j := range own {
		if len(leaves) == 0 {
			shape := slices.Clone(specs[j].Shape)
			for d := range shape {
				shape[d] = max(shape[d], 0)
			}
			shape[0] = 0
			out = append(out, models.Tensor{Name: specs[j].Name, DataType: specs[j].DataType, Shape: shape, Data: []byte{}})
			continue
		}
		parts := make([]models.Tensor, len(leaves))
		for i, l := range leaves {
			t, ok := outputNamed(l.Out, specs[j].Name)
			if !ok {
				return nil, fmt.Errorf("item %d answered %v, not %q", i, tensorNames(l.Out), specs[j].Name)
			}
			parts[i] = t
		}
		t, err := glue.Stack(parts)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	n := int64(len(leaves))
	boxes := models.Tensor{Name: models.OutBoxes, DataType: models.INT32, Shape: []int64{n, 4}, Data: make([]byte, 16*n)}
	score := models.Tensor{Name: models.OutScore, DataType: models.FP32, Shape: []int64{n}, Data: make([]byte, 4*n)}
	item := models.Tensor{Name: itemOutput.Name, DataType: models.INT32, Shape: []int64{n}, Data: make([]byte, 4*n)}
	for i, l := range leaves {
		putBox(boxes.Data[16*i:], l.Box)
		binary.LittleEndian.PutUint32(score.Data[4*i:], math.Float32bits(l.Score))
		binary.LittleEndian.PutUint32(item.Data[4*i:], uint32(items[i]))
	}
	return append(out, boxes, score, item), nil
}

// post is a compiled output section.
type post struct {
	spec *models.Output
	k    int
}

// newPost checks the output section against what the pipeline answers
// before it (in), and that the labels file is there for every variant of
// the last step.
func newPost(o *models.Output, in []models.TensorSpec, last *Step) (*post, error) {
	p := &post{spec: o}
	if o.TopK != nil {
		p.k = max(o.TopK.K, 1)
		if o.TopK.Labels != "" {
			for _, v := range last.Meta.Variants {
				path := labelsPath(o.TopK.Labels, last, v)
				if _, err := os.Stat(path); err != nil {
					return nil, fmt.Errorf("output.topk.labels: %w (ship it next to the model with `ipa models add --file`, or give an absolute path)", err)
				}
			}
		}
	}
	if _, err := p.specs(in); err != nil {
		return nil, fmt.Errorf("output: %w", err)
	}
	return p, nil
}

// labelsPath resolves a labels file: absolute, or in the variant's directory.
func labelsPath(name string, st *Step, v *models.Variant) string {
	if filepath.IsAbs(name) {
		return name
	}
	dir := v.Dir
	if dir == "" {
		dir = filepath.Join(st.RepoDir, st.Meta.Dir, v.Name)
	}
	return filepath.Join(dir, name)
}

// linesCache holds the one-entry-per-line files glue reads (OCR
// character lists, labels) by path.
var linesCache sync.Map

func loadLines(path string) ([]string, error) {
	if l, ok := linesCache.Load(path); ok {
		return l.([]string), nil
	}
	lines, err := glue.LoadKeysFile(path)
	if err != nil {
		return nil, err
	}
	linesCache.Store(path, lines)
	return lines, nil
}

func (p *post) topkSpecs(src models.TensorSpec) ([]models.TensorSpec, error) {
	if src.DataType != models.FP32 || !(len(src.Shape) == 2 || len(src.Shape) == 4 && src.Shape[2] == 1 && src.Shape[3] == 1) {
		return nil, fmt.Errorf("topk: %s is not FP32 [N,C] or [N,C,1,1]", src)
	}
	shape := []int64{models.Dynamic}
	if p.k > 1 {
		shape = append(shape, int64(p.k))
	}
	out := []models.TensorSpec{{Name: models.OutClass, DataType: models.INT32, Shape: shape}, {Name: models.OutClassProb, DataType: models.FP32, Shape: shape}}
	if p.spec.TopK.Labels != "" {
		out = append(out, models.TensorSpec{Name: models.OutLabel, DataType: models.BYTES, Shape: shape})
	}
	return out, nil
}

// specs applies the section to the specs of what the pipeline answers.
func (p *post) specs(in []models.TensorSpec) ([]models.TensorSpec, error) {
	o := p.spec
	out := slices.Clone(in)
	find := func(name string) int {
		return slices.IndexFunc(out, func(t models.TensorSpec) bool { return t.Name == name })
	}
	for _, n := range o.Softmax {
		i := find(n)
		if i < 0 || out[i].DataType != models.FP32 {
			return nil, fmt.Errorf("softmax: no FP32 output %q (outputs %v)", n, models.TensorNames(out))
		}
	}
	if k := o.TopK; k != nil {
		i := find(k.From)
		if i < 0 {
			return nil, fmt.Errorf("topk: no output %q (outputs %v)", k.From, models.TensorNames(out))
		}
		add, err := p.topkSpecs(out[i])
		if err != nil {
			return nil, err
		}
		for _, a := range add {
			if find(a.Name) >= 0 {
				return nil, fmt.Errorf("topk: the pipeline already answers %q; rename it first", a.Name)
			}
		}
		out = append(out, add...)
	}
	for from, to := range o.Rename {
		i := find(from)
		if i < 0 {
			return nil, fmt.Errorf("rename: no output %q (outputs %v)", from, models.TensorNames(out))
		}
		if j := find(to); j >= 0 && o.Rename[to] == "" {
			return nil, fmt.Errorf("rename: %q → %q, but the pipeline already answers %q", from, to, to)
		}
	}
	return renameSelect(o, out, func(t *models.TensorSpec) *string { return &t.Name })
}

// renameSelect applies the section's renames and selection to out, whose
// elements name holds the names of.
func renameSelect[T any](o *models.Output, out []T, name func(*T) *string) ([]T, error) {
	for i := range out {
		if to, ok := o.Rename[*name(&out[i])]; ok {
			*name(&out[i]) = to
		}
	}
	if len(o.Select) == 0 {
		return out, nil
	}
	sel := make([]T, 0, len(o.Select))
	for _, n := range o.Select {
		i := slices.IndexFunc(out, func(t T) bool { return *name(&t) == n })
		if i < 0 {
			var have []string
			for j := range out {
				have = append(have, *name(&out[j]))
			}
			return nil, fmt.Errorf("select: no output %q (outputs %v)", n, have)
		}
		sel = append(sel, out[i])
	}
	return sel, nil
}

// apply applies the section to the answer's tensors.
func (p *post) apply(ts []models.Tensor, last *Step) ([]models.Tensor, error) {
	o := p.spec
	out := slices.Clone(ts)
	find := func(name string) int {
		return slices.IndexFunc(out, func(t models.Tensor) bool { return t.Name == name })
	}
	for _, n := range o.Softmax {
		i := find(n)
		if i < 0 {
			return nil, fmt.Errorf("softmax: no output %q", n)
		}
		s, err := glue.Softmax(out[i])
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	if k := o.TopK; k != nil {
		i := find(k.From)
		if i < 0 {
			return nil, fmt.Errorf("topk: no output %q", k.From)
		}
		add, err := p.topk(out[i], last)
		if err != nil {
			return nil, err
		}
		out = append(out, add...)
	}
	return renameSelect(o, out, func(t *models.Tensor) *string { return &t.Name })
}

// topk returns class, class_prob (and label) of the k best classes of each
// row of t.
func (p *post) topk(t models.Tensor, last *Step) ([]models.Tensor, error) {
	k := p.spec.TopK
	if k.Softmax {
		var err error
		if t, err = glue.Softmax(flat2(t)); err != nil {
			return nil, err
		}
	}
	var labels []string
	if k.Labels != "" {
		var err error
		if labels, err = loadLines(labelsPath(k.Labels, last, last.Variant())); err != nil {
			return nil, err
		}
	}
	if len(t.Shape) == 0 {
		return nil, fmt.Errorf("topk: %q is a scalar", t.Name)
	}
	n := int(t.Shape[0])
	shape := []int64{int64(n)}
	if p.k > 1 {
		shape = append(shape, int64(p.k))
	}
	cells := n * p.k
	class := models.Tensor{Name: models.OutClass, DataType: models.INT32, Shape: shape, Data: make([]byte, 4*cells)}
	prob := models.Tensor{Name: models.OutClassProb, DataType: models.FP32, Shape: slices.Clone(shape), Data: make([]byte, 4*cells)}
	label := models.Tensor{Name: models.OutLabel, DataType: models.BYTES, Shape: slices.Clone(shape), Data: []byte{}}
	for r := range n {
		top, err := glue.TopK(t, r, p.k, labels)
		if err != nil {
			return nil, err
		}
		for j := range p.k {
			c := glue.Class{Index: -1, Prob: float32(math.NaN())}
			if j < len(top) {
				c = top[j]
			}
			binary.LittleEndian.PutUint32(class.Data[4*(r*p.k+j):], uint32(int32(c.Index)))
			binary.LittleEndian.PutUint32(prob.Data[4*(r*p.k+j):], math.Float32bits(c.Prob))
			label.Data = binary.LittleEndian.AppendUint32(label.Data, uint32(len(c.Label)))
			label.Data = append(label.Data, c.Label...)
		}
	}
	if labels == nil {
		return []models.Tensor{class, prob}, nil
	}
	return []models.Tensor{class, prob, label}, nil
}

// flat2 views an [N,C,1,1] tensor as [N,C] (softmax works on the last
// dimension).
func flat2(t models.Tensor) models.Tensor {
	if len(t.Shape) == 4 {
		t.Shape = []int64{t.Shape[0], t.Shape[1]}
	}
	return t
}
