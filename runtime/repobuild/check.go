package repobuild

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"

	"github.com/ipa-serving/ipa/models"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// checkSession is an ONNX Runtime session on a (possibly probe-extended)
// model, described by what ONNX Runtime reports about the file.
type checkSession struct {
	s *mlrt.Session
	v *models.Variant
}

// sessions opens check sessions and keeps them until reset, so that
// variants built from the same model file (ocr-det's sizes) share one.
type sessions struct {
	dir     string // where model bytes are written for ONNX Runtime
	threads int
	open    map[[32]byte]*checkSession
	errs    map[[32]byte]error
}

func newSessions(dir string, threads int) *sessions {
	return &sessions{dir: dir, threads: threads, open: map[[32]byte]*checkSession{}, errs: map[[32]byte]error{}}
}

// tempSessions returns sessions that write their model bytes into a new
// temporary directory; done closes them and removes it.
func tempSessions(threads int) (ss *sessions, done func(), err error) {
	tmp, err := os.MkdirTemp("", "repobuild-")
	if err != nil {
		return nil, nil, err
	}
	ss = newSessions(tmp, threads)
	return ss, func() { ss.reset(); os.RemoveAll(tmp) }, nil
}

// get returns a session on the model encoded in b.
func (ss *sessions) get(b []byte) (*checkSession, error) {
	key := sha256.Sum256(b)
	if cs, ok := ss.open[key]; ok {
		return cs, nil
	}
	if err, ok := ss.errs[key]; ok {
		return nil, err
	}
	cs, err := ss.openBytes(key, b)
	if err != nil {
		ss.errs[key] = err
		return nil, err
	}
	ss.open[key] = cs
	return cs, nil
}

func (ss *sessions) openBytes(key [32]byte, b []byte) (*checkSession, error) {
	p := filepath.Join(ss.dir, fmt.Sprintf("%x.onnx", key[:8]))
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return nil, err
	}
	defer os.Remove(p)
	in, out, err := mlrt.Inspect(p)
	if err != nil {
		return nil, err
	}
	for _, t := range slices.Concat(in, out) {
		if len(t.Shape) == 0 {
			return nil, fmt.Errorf("tensor %q has no known rank (or is a scalar); cannot batch-check it", t.Name)
		}
	}
	v := &models.Variant{Name: "selfcheck", Stage: "repobuild", File: filepath.Base(p), Inputs: in, Outputs: out}
	s, err := mlrt.Open(p, v, mlrt.Options{Threads: ss.threads, SkipWarmup: true})
	if err != nil {
		return nil, err
	}
	return &checkSession{s: s, v: v}, nil
}

// inspect returns ONNX Runtime's view of the model encoded in b.
func (ss *sessions) inspect(b []byte) (inputs, outputs []models.TensorSpec, err error) {
	key := sha256.Sum256(b)
	if cs, ok := ss.open[key]; ok {
		return cs.v.Inputs, cs.v.Outputs, nil
	}
	p := filepath.Join(ss.dir, fmt.Sprintf("%x.onnx", key[:8]))
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return nil, nil, err
	}
	defer os.Remove(p)
	return mlrt.Inspect(p)
}

// reset closes every session.
func (ss *sessions) reset() {
	for k, cs := range ss.open {
		cs.s.Close()
		delete(ss.open, k)
	}
	clear(ss.errs)
}

// checkResult is the outcome of running batch K against K runs of batch 1.
type checkResult struct {
	K int
	// Compared lists the outputs compared: the graph's, then the probes.
	Compared []string
	// MaxDiff is the largest |batched - item by item| over all outputs, and
	// MaxRel the largest of those differences relative to its output's
	// largest magnitude.
	MaxDiff, MaxRel float64
	// Identical is true when every compared output is bit-identical.
	Identical bool
	// Constant lists compared outputs whose K items are all equal, where the
	// comparison proves little about the batch layout.
	Constant []string
	// Flips describes, per masked output, how many elements a mask flip
	// zeroed on one side only (see maskedOutputs).
	Flips []string
	// Err says why the check failed; nil when it passed.
	Err error
}

// selfCheck runs one batch of k random inputs through batched and the same k
// inputs one at a time through ref (which may be batched itself, or the
// model before its rewrite), and compares every output of ref. Dynamic
// dimensions besides the batch take their size from nominal. In the outputs
// named in masked, elements zero on exactly one side are counted as mask
// flips instead of differences; at most maxFlips of them may flip.
func selfCheck(ctx context.Context, batched, ref *checkSession, k int, nominal map[string][]int64, tol float64, masked map[string]string) checkResult {
	res := checkResult{K: k}
	in, err := randomInputs(batched.v, k, nominal)
	if err != nil {
		res.Err = err
		return res
	}
	out, err := batched.s.Run(ctx, in)
	if err != nil {
		res.Err = fmt.Errorf("batch %d run failed: %w", k, err)
		return res
	}
	got := cloneTensors(out)
	rows := make([][]models.Tensor, k)
	for r := range k {
		row := make([]models.Tensor, len(in))
		for i, t := range in {
			n := len(t.Data) / k
			shape := slices.Clone(t.Shape)
			shape[0] = 1
			row[i] = models.Tensor{Name: t.Name, DataType: t.DataType, Shape: shape, Data: t.Data[r*n : (r+1)*n]}
		}
		out, err := ref.s.Run(ctx, row)
		if err != nil {
			res.Err = fmt.Errorf("batch-1 run of item %d failed: %w", r, err)
			return res
		}
		rows[r] = cloneTensors(out)
	}
	res.Identical = true
	for i, spec := range ref.v.Outputs {
		j := slices.IndexFunc(got, func(t models.Tensor) bool { return t.Name == spec.Name })
		if j < 0 {
			res.Err = fmt.Errorf("output %q missing from the batched model", spec.Name)
			return res
		}
		res.Compared = append(res.Compared, spec.Name)
		_, isMasked := masked[spec.Name]
		c := compareOutput(got[j], rows, i, k, isMasked)
		if c.err != nil {
			res.Err = fmt.Errorf("output %q: %w", spec.Name, c.err)
			return res
		}
		res.MaxDiff = max(res.MaxDiff, c.diff)
		rel := 0.0
		if c.diff > 0 {
			rel = math.Inf(1)
			if c.scale > 0 {
				rel = c.diff / c.scale
			}
		}
		res.MaxRel = max(res.MaxRel, rel)
		res.Identical = res.Identical && c.identical
		if c.constant && k > 1 {
			res.Constant = append(res.Constant, spec.Name)
		}
		if isMasked {
			res.Flips = append(res.Flips, fmt.Sprintf("%s: %d of %d elements", spec.Name, c.flips, c.elems))
		}
		switch {
		case float64(c.flips) > maxFlips*float64(c.elems):
			res.Err = fmt.Errorf("output %q: %d of %d elements are zero on one side only, more than mask flips explain (%.0f %%)", spec.Name, c.flips, c.elems, 100*maxFlips)
		case tol == 0 && !c.identical:
			res.Err = fmt.Errorf("output %q: batched result differs from item-by-item runs (max |diff| %.3g), bit-identical results required", spec.Name, c.diff)
		case tol > 0 && rel > tol:
			res.Err = fmt.Errorf("output %q: batched result differs from item-by-item runs by %.3g, %.3g of the output's largest magnitude %.3g (tolerance %.0e)", spec.Name, c.diff, rel, c.scale, tol)
		}
		if res.Err != nil {
			return res
		}
	}
	return res
}

// maxFlips is the largest fraction of a masked output's elements that may
// differ by a mask flip. On random inputs M-LSD's score maps are tiny and
// flat (many exact ties and sigmoid underflows to 0), and 0.1–3 % of their
// elements flip; a batch layout error would change most of them, and would
// show in the unmasked probe anyway.
const maxFlips = 0.05

type outputDiff struct {
	diff, scale         float64
	identical, constant bool
	flips, elems        int
	err                 error
}

// compareOutput compares the batched output b with output i of the k
// item-by-item runs. With masked, an element that is zero on exactly one side
// counts as a mask flip, not as a difference; the unmasked tensor is compared
// as a probe, with the tolerance.
func compareOutput(b models.Tensor, rows [][]models.Tensor, i, k int, masked bool) outputDiff {
	var d outputDiff
	if len(b.Shape) == 0 || b.Shape[0] != int64(k) {
		d.err = fmt.Errorf("batched shape %s does not have batch %d", models.FormatShape(b.Shape), k)
		return d
	}
	n := len(b.Data) / k
	d.identical, d.constant = true, true
	d.elems = len(b.Data) / max(b.DataType.Size(), 1)
	for r := range k {
		row := rows[r][i]
		if !slices.Equal(row.Shape[1:], b.Shape[1:]) || row.Shape[0] != 1 || len(row.Data) != n {
			d.err = fmt.Errorf("item %d has shape %s, the batched output %s", r, models.FormatShape(row.Shape), models.FormatShape(b.Shape))
			return d
		}
		if r > 0 && !slices.Equal(row.Data, rows[0][i].Data) {
			d.constant = false
		}
		for _, y := range floats(b.DataType, row.Data) {
			if !math.IsInf(y, 0) {
				d.scale = max(d.scale, math.Abs(y))
			}
		}
	}
	for r := range k {
		row, part := rows[r][i].Data, b.Data[r*n:(r+1)*n]
		if slices.Equal(part, row) {
			continue
		}
		d.identical = false
		if b.DataType != models.FP32 {
			d.diff = math.Inf(1)
			continue
		}
		for j := 0; j+4 <= n; j += 4 {
			x := float64(math.Float32frombits(binary.LittleEndian.Uint32(part[j:])))
			y := float64(math.Float32frombits(binary.LittleEndian.Uint32(row[j:])))
			switch {
			case masked && (x == 0) != (y == 0):
				d.flips++
			case math.IsNaN(x) && math.IsNaN(y):
			case math.IsNaN(x) || math.IsNaN(y):
				d.diff = math.Inf(1)
			default:
				if diff := math.Abs(x - y); diff > d.diff || math.IsNaN(diff) {
					d.diff = diff
				}
			}
		}
	}
	if math.IsNaN(d.diff) {
		d.diff = math.Inf(1)
	}
	return d
}

func floats(dt models.DataType, b []byte) []float64 {
	if dt != models.FP32 {
		return nil
	}
	f := make([]float64, len(b)/4)
	for j := range f {
		f[j] = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*j:])))
	}
	return f
}

// randomInputs returns k distinct uniform [0,1) FP32 inputs for v (other
// datatypes zero), from a fixed seed so that a rebuild checks the same
// numbers.
func randomInputs(v *models.Variant, k int, nominal map[string][]int64) ([]models.Tensor, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	in := make([]models.Tensor, len(v.Inputs))
	for i, spec := range v.Inputs {
		shape := slices.Clone(spec.Shape)
		shape[0] = int64(k)
		for d := 1; d < len(shape); d++ {
			if shape[d] >= 0 {
				continue
			}
			nom := nominal[spec.Name]
			if d >= len(nom) || nom[d] <= 0 {
				return nil, fmt.Errorf("input %q has dynamic dimension %d in %s and no nominal size", spec.Name, d, models.FormatShape(spec.Shape))
			}
			shape[d] = nom[d]
		}
		data := make([]byte, models.Elements(shape)*spec.DataType.Size())
		// Only FP32 inputs get random values; others stay zero (a valid
		// index or mask), so items differ through the FP32 inputs only.
		if spec.DataType == models.FP32 {
			for j := 0; j < len(data); j += 4 {
				binary.LittleEndian.PutUint32(data[j:], math.Float32bits(rng.Float32()))
			}
		}
		in[i] = models.Tensor{Name: spec.Name, DataType: spec.DataType, Shape: shape, Data: data}
	}
	return in, nil
}

func cloneTensors(ts []models.Tensor) []models.Tensor {
	out := make([]models.Tensor, len(ts))
	for i, t := range ts {
		out[i] = models.Tensor{Name: t.Name, DataType: t.DataType, Shape: slices.Clone(t.Shape), Data: slices.Clone(t.Data)}
	}
	return out
}
