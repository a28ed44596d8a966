package repobuild

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/runtime/onnxpb"
)

// A user's own models: `ipa models inspect` (Inspect), `ipa models add`
// (Add) and `ipa models remove` (Remove). They reuse the builder's recipe —
// interface renames, the batch rewrite of MODELS.md §3 and its self-check —
// on a file the user names instead of a catalog entry, and write the same
// layout (<repo>/<stage>/<variant>/{model.onnx, variant.json, build.json}),
// into a repository of the user's (not .deps/), which the serving roles
// merge with the built-in one (models.ReadRepositoryDirs).

// Refusals of Inspect and Add; branch with errors.Is. Each is wrapped with
// a message that says what to do.
var (
	// ErrNotONNX: the file is not an ONNX model.
	ErrNotONNX = errors.New("not an ONNX model")
	// ErrUnsupported: ONNX Runtime cannot load the model (an operator it
	// does not implement, a custom domain, weights in external files) or
	// the model has a tensor ipa cannot carry (a scalar, a sequence, a map).
	ErrUnsupported = errors.New("model not supported")
	// ErrBatch: the model cannot be batched along dimension 0 at all.
	ErrBatch = errors.New("no batch dimension")
	// ErrInterface: the variant's inputs or outputs differ from those of the
	// stage's other variants.
	ErrInterface = errors.New("interface mismatch")
	// ErrDuplicate: the stage already has a variant of that name.
	ErrDuplicate = errors.New("duplicate variant")
	// ErrAccuracy: the accuracy or its metric is missing or not a number.
	ErrAccuracy = errors.New("accuracy missing")
	// ErrNotFound: Remove found no such variant.
	ErrNotFound = errors.New("no such variant")
)

// Batch capabilities reported by Inspect.
const (
	CapDynamic    = "dynamic"    // dimension 0 is dynamic as shipped
	CapRewritable = "rewritable" // fixed at 1; the rewrite passed its self-check
	CapFixed      = "fixed"      // fixed at 1; served item by item (the rewrite failed)
	CapNone       = "none"       // ipa cannot batch it along dimension 0 (ErrBatch)
)

// Opset is one operator set a model imports.
type Opset struct {
	Domain  string `json:"domain"`
	Version int64  `json:"version"`
}

// Inspection is what Inspect found in a model file.
type Inspection struct {
	File     string  `json:"file"`
	Bytes    int64   `json:"bytes"`
	SHA256   string  `json:"sha256"`
	IR       int64   `json:"ir_version"`
	Opsets   []Opset `json:"opsets"`
	Producer string  `json:"producer,omitempty"`
	// Ops counts the graph's nodes by operator (subgraphs included).
	Ops map[string]int `json:"ops"`
	// Inputs and Outputs are ONNX Runtime's view of the file.
	Inputs  []models.TensorSpec `json:"inputs"`
	Outputs []models.TensorSpec `json:"outputs"`
	// Batch is CapDynamic, CapRewritable, CapFixed or CapNone; BatchNote
	// says how that was found (the self-check, or why none ran).
	Batch     string `json:"batch"`
	BatchNote string `json:"batch_note"`
	// Check is the self-check's record; nil when none ran.
	Check *VariantReport `json:"check,omitempty"`
	// Constants and Dropped are what Bake changed before the rest was
	// inspected.
	Constants []models.Constant `json:"constants,omitempty"`
	Dropped   []string          `json:"dropped_outputs,omitempty"`
}

// CheckOptions configure the self-check of Inspect and Add.
type CheckOptions struct {
	// CheckBatch is the batch size k of the self-check; 0 means 4.
	CheckBatch int
	// Threads of the check sessions; 0 means 1.
	Threads int
	// CheckShapes gives the sizes of dimensions an input leaves dynamic
	// besides the batch, for the self-check's random inputs (the batch
	// entry is ignored).
	CheckShapes map[string][]int64
	// Tolerance is the largest accepted |batched − item by item| relative
	// to the output's largest magnitude; nil means 1e-4, 0 bit-identical.
	Tolerance *float64
	// Bake turns inputs into constants and drops outputs before anything
	// else (see bakeConstants).
	Bake Bake
}

// Bake says which inputs of a model become constants and which outputs
// are dropped (`--const`, `--batch-axis`, `--drop-output`).
type Bake struct {
	// Consts gives each constant input its value (every element).
	Consts map[string]float64
	// BatchAxis names, for a constant whose shape follows the batch, the
	// dimension that is the batch.
	BatchAxis map[string]int
	// Drop lists outputs the variant does not publish.
	Drop []string
}

// validate checks b on its own (the model checks the rest).
func (b Bake) validate() error {
	for name, v := range b.Consts {
		if name == "" || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("--const %s=%v: a constant needs an input name and a finite value", name, v)
		}
	}
	for name, k := range b.BatchAxis {
		if _, ok := b.Consts[name]; !ok {
			return fmt.Errorf("--batch-axis %s: only a constant input (--const %s=VALUE) may have its batch elsewhere than dimension 0", name, name)
		}
		if k < 0 || k > 64 {
			return fmt.Errorf("--batch-axis %s=%d: the axis must be a dimension of the input", name, k)
		}
	}
	for i, d := range b.Drop {
		if d == "" || slices.Contains(b.Drop[:i], d) {
			return fmt.Errorf("--drop-output %q: empty or given twice", d)
		}
	}
	return nil
}

func (b Bake) empty() bool { return len(b.Consts) == 0 && len(b.BatchAxis) == 0 && len(b.Drop) == 0 }

// applyBake bakes b into m and returns the constants and the new bytes
// (src when there is nothing to bake).
func applyBake(path string, m *onnxpb.ModelProto, src []byte, b Bake) ([]models.Constant, []byte, error) {
	if b.empty() {
		return nil, src, nil
	}
	consts, err := bakeConstants(m, b.Consts, b.BatchAxis, b.Drop)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	out, err := marshalModel(m)
	if err != nil {
		return nil, nil, err
	}
	return consts, out, nil
}

func (o *CheckOptions) defaults() {
	if o.CheckBatch == 0 {
		o.CheckBatch = 4
	}
	if o.Threads <= 0 {
		o.Threads = 1
	}
}

func (o CheckOptions) tolerance() float64 {
	if o.Tolerance == nil {
		return batchTol
	}
	return *o.Tolerance
}

// Inspect reads the ONNX model at path, loads it in ONNX Runtime and works
// out its batch capability: dimension 0 dynamic as shipped, fixed at 1 but
// rewritable (makeBatchDynamic passes its self-check), fixed at 1, or not
// batchable. A dynamic batch is self-checked too (batch k against k runs of
// batch 1) when every input's other dimensions have a size. ONNX Runtime
// must be loaded (runtime.Init). Errors wrap ErrNotONNX or ErrUnsupported.
func Inspect(ctx context.Context, path string, opt CheckOptions) (*Inspection, error) {
	opt.defaults()
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m, err := parseUserModel(path, src)
	if err != nil {
		return nil, err
	}
	ins := &Inspection{File: path, Bytes: int64(len(src)), SHA256: hexSum(src), IR: m.GetIrVersion(), Ops: opCounts(m.GetGraph())}
	if ins.Constants, src, err = applyBake(path, m, src, opt.Bake); err != nil {
		return nil, err
	}
	ins.Dropped = opt.Bake.Drop
	for _, o := range m.GetOpsetImport() {
		d := o.GetDomain()
		if d == "" {
			d = "ai.onnx"
		}
		ins.Opsets = append(ins.Opsets, Opset{d, o.GetVersion()})
	}
	ins.Producer = strings.TrimSpace(m.GetProducerName() + " " + m.GetProducerVersion())

	ss, done, err := tempSessions(opt.Threads)
	if err != nil {
		return nil, err
	}
	defer done()
	if ins.Inputs, ins.Outputs, err = ortView(ss, path, m, src); err != nil {
		return nil, err
	}
	mode, why := batchModeOf(ins.Inputs, ins.Outputs)
	if mode == 0 {
		ins.Batch, ins.BatchNote = CapNone, why
		return ins, nil
	}
	if missing := uncheckable(ins.Inputs, opt.CheckShapes); missing != "" {
		ins.Batch = CapDynamic
		if mode == batchRewrite {
			ins.Batch = CapFixed
		}
		ins.BatchNote = "not self-checked: " + missing
		return ins, nil
	}
	e := &entry{Stage: "inspect", Name: "model", Batch: mode, Nominal: opt.CheckShapes, Tolerance: opt.tolerance()}
	rec, _, err := checkUser(ctx, e, src, opt, ss)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", path, ErrUnsupported, err)
	}
	ins.Check = &rec.Report
	ins.BatchNote = rec.Report.BatchNote
	switch rec.Report.Batch {
	case BatchNative:
		ins.Batch = CapDynamic
	case BatchRewritten:
		ins.Batch = CapRewritable
	default: // a rewrite that failed, or a declared dynamic batch that
		// computes something else than item by item: Add serves it item by item
		ins.Batch = CapFixed
	}
	return ins, nil
}

// parseUserModel decodes src as an ONNX model and refuses what is not one,
// or what ipa cannot copy into a repository as one file.
func parseUserModel(path string, src []byte) (*onnxpb.ModelProto, error) {
	if len(src) == 0 {
		return nil, fmt.Errorf("%s: %w: the file is empty", path, ErrNotONNX)
	}
	m, err := parseModel(src)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (%v); export it with torch.onnx.export, tf2onnx or your framework's ONNX exporter", path, ErrNotONNX, err)
	}
	// Protocol buffers decode many byte strings; a model has an IR version,
	// an operator set and at least one node and output.
	g := m.GetGraph()
	if m.GetIrVersion() <= 0 || len(m.GetOpsetImport()) == 0 || len(g.GetNode()) == 0 || len(g.GetOutput()) == 0 {
		return nil, fmt.Errorf("%s: %w: it decodes as a protocol buffer but has no IR version, operator set, nodes or outputs", path, ErrNotONNX)
	}
	var external []string
	walkGraphs(g, func(g *onnxpb.GraphProto) {
		for _, t := range g.GetInitializer() {
			if t.GetDataLocation() == onnxpb.TensorProto_EXTERNAL {
				external = append(external, t.GetName())
			}
		}
	})
	if len(external) > 0 {
		return nil, fmt.Errorf("%s: %w: %d weights (%s) are stored in external data files; ipa copies one file — save the model with its weights inside (onnx.save_model(m, path, save_as_external_data=False))",
			path, ErrUnsupported, len(external), listNames(external, 3))
	}
	return m, nil
}

// standardDomains are the operator domains ONNX Runtime's CPU build
// implements.
var standardDomains = []string{"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training"}

// ortView returns ONNX Runtime's view of the model's tensors, after checking
// that it loads (a session is opened, which resolves every operator).
func ortView(ss *sessions, path string, m *onnxpb.ModelProto, src []byte) (in, out []models.TensorSpec, err error) {
	fail := func(err error) error {
		msg := fmt.Sprintf("ONNX Runtime cannot load it: %v", err)
		var custom []string
		for _, o := range m.GetOpsetImport() {
			if !slices.Contains(standardDomains, o.GetDomain()) {
				custom = append(custom, o.GetDomain())
			}
		}
		if len(custom) > 0 {
			msg += fmt.Sprintf(" (the model uses operator domains %v, which ONNX Runtime's CPU build does not implement: re-export it with standard operators)", custom)
		}
		return fmt.Errorf("%s: %w: %s", path, ErrUnsupported, msg)
	}
	in, out, err = ss.inspect(src)
	if err != nil {
		return nil, nil, fail(err)
	}
	for i, t := range slices.Concat(in, out) {
		if len(t.Shape) == 0 {
			fix := fmt.Sprintf("if it is a constant for your use (a sampling rate), bake it into the model with --const %s=VALUE", t.Name)
			if i >= len(in) {
				fix = fmt.Sprintf("drop it with --drop-output %s if you do not need it", t.Name)
			}
			return nil, nil, fmt.Errorf("%s: %w: tensor %q is a scalar; ipa batches requests along dimension 0 of every input and output: %s", path, ErrUnsupported, t.Name, fix)
		}
		if t.DataType == models.Invalid || t.DataType == models.BYTES {
			return nil, nil, fmt.Errorf("%s: %w: tensor %q has datatype %s", path, ErrUnsupported, t.Name, t.DataType)
		}
	}
	// Inspecting reads the graph's declarations only; a session resolves
	// every node's kernel, so an unknown operator fails here.
	if _, err := ss.get(src); err != nil {
		return nil, nil, fail(err)
	}
	return in, out, nil
}

// batchModeOf decides how the model gets a dynamic batch: every input's
// dimension 0 dynamic (native), or fixed at 1 (rewrite). Anything else —
// an input whose dimension 0 is fixed at another size, such as a recurrent
// state [2,N,128] — cannot be batched along dimension 0: mode 0 and why.
func batchModeOf(in, out []models.TensorSpec) (batchMode, string) {
	native := true
	for _, t := range in {
		if len(t.Shape) == 0 {
			return 0, fmt.Sprintf("input %q is a scalar %s; ipa batches requests along dimension 0 of every input: if it is a constant for your use (a sampling rate), bake it into the model with --const %s=VALUE", t.Name, t.DataType, t.Name)
		}
		switch d := t.Shape[0]; {
		case d == models.Dynamic:
		case d == 1:
			native = false
		default:
			return 0, fmt.Sprintf("input %q is %s: dimension 0 is fixed at %d; ipa batches requests along dimension 0 of every input, so it must be the batch (dynamic or 1); if the input is a constant for your use (a zero recurrent state), bake it with --const %s=VALUE, and --batch-axis %s=K when its dimension K is the batch", t.Name, models.FormatShape(t.Shape), d, t.Name, t.Name)
		}
	}
	for _, t := range out {
		if len(t.Shape) == 0 {
			return 0, fmt.Sprintf("output %q is a scalar, not batched; drop it with --drop-output %s if you do not need it", t.Name, t.Name)
		}
		if d := t.Shape[0]; d != models.Dynamic && d != 1 {
			return 0, fmt.Sprintf("output %q is %s: dimension 0 is fixed at %d, not the batch; drop it with --drop-output %s if you do not need it (a recurrent state's next value)", t.Name, models.FormatShape(t.Shape), d, t.Name)
		}
	}
	if native {
		return batchNative, ""
	}
	return batchRewrite, ""
}

// uncheckable names an input whose dynamic dimensions (besides the batch)
// have no size in shapes, so the self-check cannot make random inputs; ""
// when there is none.
func uncheckable(in []models.TensorSpec, shapes map[string][]int64) string {
	for _, t := range in {
		for d := 1; d < len(t.Shape); d++ {
			if t.Shape[d] >= 0 {
				continue
			}
			if s := shapes[t.Name]; d < len(s) && s[d] > 0 {
				continue
			}
			eg := slices.Clone(t.Shape)
			for i := range eg {
				if eg[i] < 0 {
					eg[i] = 32
				}
			}
			eg[0] = -1
			return fmt.Sprintf("input %q is %s; give its dynamic dimensions a size for the self-check, e.g. --check-shape %s=%s", t.Name, models.FormatShape(t.Shape), t.Name, dims(eg))
		}
	}
	return ""
}

func dims(s []int64) string {
	return strings.Trim(models.FormatShape(s), "[]")
}

func walkGraphs(g *onnxpb.GraphProto, f func(*onnxpb.GraphProto)) {
	f(g)
	for _, n := range g.GetNode() {
		for _, sg := range subgraphs(n) {
			walkGraphs(sg, f)
		}
	}
}

func opCounts(g *onnxpb.GraphProto) map[string]int {
	ops := map[string]int{}
	walkGraphs(g, func(g *onnxpb.GraphProto) {
		for _, n := range g.GetNode() {
			op := n.GetOpType()
			if d := n.GetDomain(); d != "" && d != "ai.onnx" {
				op = d + "." + op
			}
			ops[op]++
		}
	})
	return ops
}

// WriteText writes the inspection for a reader.
func (ins *Inspection) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "file      %s (%.1f MB, sha256 %s)\n", ins.File, float64(ins.Bytes)/1e6, ins.SHA256[:16]+"…")
	var ops []string
	for _, o := range ins.Opsets {
		ops = append(ops, fmt.Sprintf("%s %d", o.Domain, o.Version))
	}
	fmt.Fprintf(&b, "format    IR %d, opset %s", ins.IR, strings.Join(ops, ", "))
	if ins.Producer != "" {
		fmt.Fprintf(&b, ", producer %s", ins.Producer)
	}
	b.WriteByte('\n')
	for _, t := range ins.Inputs {
		fmt.Fprintf(&b, "input     %s %s%s\n", t.Name, t.DataType, models.FormatShape(t.Shape))
	}
	for _, t := range ins.Outputs {
		fmt.Fprintf(&b, "output    %s %s%s\n", t.Name, t.DataType, models.FormatShape(t.Shape))
	}
	names := make([]string, 0, len(ins.Ops))
	total := 0
	for op, n := range ins.Ops {
		names = append(names, op)
		total += n
	}
	sort.Slice(names, func(i, j int) bool {
		if ins.Ops[names[i]] != ins.Ops[names[j]] {
			return ins.Ops[names[i]] > ins.Ops[names[j]]
		}
		return names[i] < names[j]
	})
	var list []string
	for _, op := range names {
		list = append(list, fmt.Sprintf("%s×%d", op, ins.Ops[op]))
	}
	if len(list) > 10 {
		list = append(list[:9], fmt.Sprintf("and %d more operators", len(list)-9))
	}
	fmt.Fprintf(&b, "nodes     %d: %s\n", total, strings.Join(list, ", "))
	for _, c := range ins.Constants {
		fmt.Fprintf(&b, "constant  %s\n", c)
	}
	for _, d := range ins.Dropped {
		fmt.Fprintf(&b, "dropped   output %s\n", d)
	}
	what := map[string]string{
		CapDynamic:    "dynamic (dimension 0 is the batch as shipped)",
		CapRewritable: "fixed at 1, rewritable (ipa models add makes it dynamic)",
		CapFixed:      "fixed at 1 (served item by item)",
		CapNone:       "none (ipa models add refuses it)",
	}[ins.Batch]
	fmt.Fprintf(&b, "batch     %s\n", what)
	if ins.BatchNote != "" {
		fmt.Fprintf(&b, "          %s\n", ins.BatchNote)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// AddSpec describes one variant to add.
type AddSpec struct {
	// File is the ONNX model to add.
	File string
	// Stage and Variant name it in the repository ([a-z0-9._-]).
	Stage, Variant string
	// Accuracy is required: the variant's quality in Metric's unit, which
	// the optimizer trades against latency. Source says where it comes
	// from; Verified that it was measured or checked against Source.
	Accuracy *float64
	Metric   string
	Source   string
	Verified bool
	// Task, License and Description are free text for listings.
	Task, License, Description string
	// Input and Output rename the model's only input or output (a pure
	// relabelling; an output [N,C,1,1] is flattened to [N,C] on the way),
	// so that variants exported under other names share the stage's
	// interface. Empty keeps the names.
	Input, Output string
	// Shapes pins dimensions the model leaves dynamic (besides the batch)
	// in the published variant.json, per input name; -1 keeps one dynamic.
	// The self-check uses them too.
	Shapes map[string][]int64
	// Files are copied next to the model (labels, vocabularies): glue reads
	// them by base name.
	Files []string
	Check CheckOptions
}

// AddOptions configure Add.
type AddOptions struct {
	// Repo is the user repository's root; created when missing.
	Repo string
	// Others are the repositories served together with Repo (the built-in
	// one): their variants of the same stage are part of the interface
	// check, and their variant names are taken.
	Others []*models.Repository
	// Replace lets a variant of Repo be replaced; without it a duplicate is
	// refused.
	Replace bool
	// Now dates the default accuracy source; nil means time.Now.
	Now func() time.Time
}

// Added is what Add wrote.
type Added struct {
	Variant *models.Variant
	Report  VariantReport
	Dir     string
	// Replaced is true when an older variant of that name was replaced.
	Replaced bool
}

// Add checks the model of spec and writes it into the repository opt.Repo
// as <stage>/<variant>/: ONNX Runtime must load it, a batch dimension fixed
// at 1 is made dynamic when the rewrite passes its self-check (else the
// variant runs item by item and its batch_note says why), its interface
// must match the stage's other variants (in Repo and opt.Others), and the
// name must be free. The files appear together (written under a hidden name
// and renamed), so a reader never sees half a variant. Errors wrap
// ErrNotONNX, ErrUnsupported, ErrBatch, ErrInterface, ErrDuplicate or
// ErrAccuracy.
func Add(ctx context.Context, spec AddSpec, opt AddOptions) (*Added, error) {
	spec.Check.defaults()
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if err := spec.validate(); err != nil {
		return nil, err
	}
	final := filepath.Join(opt.Repo, spec.Stage, spec.Variant)
	replaced := false
	if _, err := os.Stat(filepath.Join(final, models.MetaFile)); err == nil {
		if !opt.Replace {
			return nil, fmt.Errorf("%w: stage %q already has a variant %q in %s; choose another --variant, or pass --replace (or `ipa models remove %s/%s` first)",
				ErrDuplicate, spec.Stage, spec.Variant, opt.Repo, spec.Stage, spec.Variant)
		}
		replaced = true
	}
	var peers []*models.Variant // the stage's other variants, wherever served
	for _, r := range opt.Others {
		if st := r.Stages[spec.Stage]; st != nil {
			if v := st.Variant(spec.Variant); v != nil {
				return nil, fmt.Errorf("%w: stage %q already has a variant %q in another repository served with %s (%s); choose another --variant",
					ErrDuplicate, spec.Stage, spec.Variant, opt.Repo, v.Dir)
			}
			peers = append(peers, st.Variants...)
		}
	}
	if _, err := os.Stat(opt.Repo); err == nil {
		own, err := models.ReadRepository(os.DirFS(opt.Repo))
		if err != nil {
			return nil, fmt.Errorf("cannot read the repository %s: %w", opt.Repo, err)
		}
		if st := own.Stages[spec.Stage]; st != nil {
			for _, v := range st.Variants {
				if v.Name != spec.Variant {
					peers = append(peers, v)
				}
			}
		}
	}
	for _, f := range spec.Files {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("--file: %w", err)
		}
	}

	src, err := os.ReadFile(spec.File)
	if err != nil {
		return nil, err
	}
	m, err := parseUserModel(spec.File, src)
	if err != nil {
		return nil, err
	}
	srcSum := hexSum(src)
	consts, src, err := applyBake(spec.File, m, src, spec.Check.Bake)
	if err != nil {
		return nil, err
	}
	ss, done, err := tempSessions(spec.Check.Threads)
	if err != nil {
		return nil, err
	}
	defer done()
	if _, _, err := ortView(ss, spec.File, m, src); err != nil {
		return nil, err
	}
	e := spec.entry(src, opt.Now())
	e.Constants, e.Dropped = consts, spec.Check.Bake.Drop
	if e.Normalize != nil {
		if _, err := normalizeIO(m, *e.Normalize); err != nil {
			return nil, fmt.Errorf("%s: %w: --input/--output: %v", spec.File, ErrInterface, err)
		}
	}
	normBytes, err := marshalModel(m)
	if err != nil {
		return nil, err
	}
	in, out, err := ss.inspect(normBytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: ONNX Runtime cannot load it after renaming its interface: %v", spec.File, ErrUnsupported, err)
	}
	mode, why := batchModeOf(in, out)
	if mode == 0 {
		return nil, fmt.Errorf("%s: %w: %s", spec.File, ErrBatch, why)
	}
	e.Batch = mode
	shapes := map[string][]int64{}
	for k, v := range spec.Check.CheckShapes {
		shapes[k] = v
	}
	for k, v := range spec.Shapes {
		shapes[k] = v
	}
	if missing := uncheckable(in, shapes); missing != "" {
		return nil, fmt.Errorf("%s: cannot self-check the batch: %s (or pin it in the published interface with --shape)", spec.File, missing)
	}
	rec, model, err := checkUser(ctx, e, src, spec.Check, ss)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", spec.File, ErrUnsupported, err)
	}
	rec.Sources = map[string]string{filepath.Base(spec.File): srcSum}
	e.Latency1, err = latencyB1(ctx, ss, model, shapes)
	if err != nil {
		return nil, fmt.Errorf("%s: cannot time the model: %w", spec.File, err)
	}
	v := variantOf(e, rec)
	if err := v.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", spec.File, ErrUnsupported, err)
	}
	for _, p := range peers {
		if err := models.CheckInterface(spec.Stage, p, v); err != nil {
			hint := "export the model with the same input and output names, or rename a single input/output with --input/--output"
			return nil, fmt.Errorf("%w: %v; %s", ErrInterface, err, hint)
		}
	}

	// Write everything under a hidden name, then swap it in.
	stageDir := filepath.Join(opt.Repo, spec.Stage)
	if err := os.MkdirAll(stageDir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create the repository: %w", err)
	}
	work, err := os.MkdirTemp(stageDir, "."+spec.Variant+".tmp")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	if err := os.Chmod(work, 0o755); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(work, ModelFile), model); err != nil {
		return nil, err
	}
	for _, f := range spec.Files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if err := writeFileAtomic(filepath.Join(work, filepath.Base(f)), b); err != nil {
			return nil, err
		}
	}
	if err := writeMeta(work, e, rec, e.Accuracy); err != nil {
		return nil, err
	}
	if replaced {
		if err := os.RemoveAll(final); err != nil {
			return nil, err
		}
	}
	if err := os.Rename(work, final); err != nil {
		return nil, err
	}
	if _, err := models.ReadRepository(os.DirFS(opt.Repo)); err != nil {
		os.RemoveAll(final)
		return nil, fmt.Errorf("the repository %s does not read back with the new variant (removed it again): %w", opt.Repo, err)
	}
	v.Dir = final
	return &Added{Variant: v, Report: rec.Report, Dir: final, Replaced: replaced}, nil
}

// checkUser runs the recipe e on a user's model. When no compared tensor
// differs between the self-check's items (placeholder weights, as in the
// light ImageNet models, give every input the same output) it checks again
// on copies whose ConstantOfShape weights are pseudo-random, as the builder
// does for those models; a trained model's own ConstantOfShape tensors
// (BlazeFace pads channels with them) are left as they are otherwise.
func checkUser(ctx context.Context, e *entry, src []byte, opt CheckOptions, ss *sessions) (*buildRecord, []byte, error) {
	o := Options{CheckBatch: opt.CheckBatch, Threads: opt.Threads}
	rec, model, err := makeVariant(ctx, e, src, o, ss)
	if err != nil || len(rec.Report.Compared) == 0 || len(rec.Report.Constant) < len(rec.Report.Compared) {
		return rec, model, err
	}
	again := *e
	again.RandomWeights = true
	rec2, model2, err := makeVariant(ctx, &again, src, o, ss)
	if err != nil || rec2.Report.RandomWeights == 0 {
		return rec, model, nil // nothing to randomise: the first check stands
	}
	*e = again
	return rec2, model2, nil
}

// reserved are the names of a variant directory's own files.
var reserved = []string{ModelFile, models.MetaFile, RecordFile}

func (s *AddSpec) validate() error {
	switch {
	case !models.ValidName(s.Stage):
		return fmt.Errorf("stage name %q is invalid: use [a-z0-9._-], at most 63 characters, starting with a letter or digit", s.Stage)
	case !models.ValidName(s.Variant):
		return fmt.Errorf("variant name %q is invalid: use [a-z0-9._-], at most 63 characters, starting with a letter or digit", s.Variant)
	case s.Accuracy == nil:
		return fmt.Errorf("%w: %s/%s needs --accuracy (the variant's quality, e.g. 71.3 for 71.3 %% top-1) and --metric (what it measures): the optimizer trades accuracy against latency",
			ErrAccuracy, s.Stage, s.Variant)
	case math.IsNaN(*s.Accuracy) || math.IsInf(*s.Accuracy, 0):
		return fmt.Errorf("%w: %s/%s: accuracy %v is not a number", ErrAccuracy, s.Stage, s.Variant, *s.Accuracy)
	case strings.TrimSpace(s.Metric) == "":
		return fmt.Errorf("%w: %s/%s needs --metric: what the accuracy %v measures, e.g. \"ImageNet top-1 %%\"", ErrAccuracy, s.Stage, s.Variant, *s.Accuracy)
	case s.Check.CheckBatch < 2:
		return fmt.Errorf("--check-batch %d must be at least 2", s.Check.CheckBatch)
	case s.Check.Tolerance != nil && (*s.Check.Tolerance < 0 || math.IsNaN(*s.Check.Tolerance)):
		return fmt.Errorf("--tolerance must be 0 (bit-identical) or positive")
	}
	seen := map[string]bool{}
	for _, f := range s.Files {
		base := filepath.Base(f)
		if slices.Contains(reserved, base) || strings.HasPrefix(base, ".") {
			return fmt.Errorf("--file %s: the name %q is taken by the variant's own files or hidden", f, base)
		}
		if seen[base] {
			return fmt.Errorf("--file: two files are called %q", base)
		}
		seen[base] = true
	}
	for name, sh := range s.Shapes {
		if err := checkDims(name, sh); err != nil {
			return fmt.Errorf("--shape: %w", err)
		}
	}
	if err := s.Check.Bake.validate(); err != nil {
		return err
	}
	for name, sh := range s.Check.CheckShapes {
		if err := checkDims(name, sh); err != nil {
			return fmt.Errorf("--check-shape: %w", err)
		}
	}
	return nil
}

func checkDims(name string, sh []int64) error {
	if len(sh) == 0 {
		return fmt.Errorf("%s: no dimensions", name)
	}
	for _, d := range sh {
		if d == 0 || d < models.Dynamic || d > 1<<20 {
			return fmt.Errorf("%s=%s: every dimension is -1 (dynamic) or a size in [1, 1048576]", name, dims(sh))
		}
	}
	return nil
}

// entry turns the spec into a recipe for makeVariant.
func (s *AddSpec) entry(src []byte, now time.Time) *entry {
	e := &entry{
		Stage: s.Stage, Name: s.Variant, Task: s.Task,
		Shapes: s.Shapes, Nominal: s.Check.CheckShapes,
		Tolerance:   s.Check.tolerance(),
		License:     s.License,
		Origin:      fmt.Sprintf("added by `ipa models add` from %s on %s", filepath.Base(s.File), now.UTC().Format(time.DateOnly)),
		Description: s.Description,
	}
	if e.Task == "" {
		e.Task = "user"
	}
	if e.License == "" {
		e.License = "unknown (not given to ipa models add)"
	}
	if s.Input != "" || s.Output != "" {
		e.Normalize = &ioNormalization{Input: s.Input, Output: s.Output}
	}
	src2 := s.Source
	if src2 == "" {
		src2 = "given to `ipa models add` on " + now.UTC().Format(time.DateOnly)
	}
	e.Accuracy = models.Accuracy{Value: *s.Accuracy, Metric: strings.TrimSpace(s.Metric), Source: src2, Verified: s.Verified}
	return e
}

// latencyB1 times batch-1 runs of model on random inputs: the median of 5
// after one warm-up. It only orders the stage's variants in listings and
// picks the default initial variant (the fastest); profiles measure.
func latencyB1(ctx context.Context, ss *sessions, model []byte, shapes map[string][]int64) (models.Seconds, error) {
	cs, err := ss.get(model)
	if err != nil {
		return 0, err
	}
	in, err := randomInputs(cs.v, 1, shapes)
	if err != nil {
		return 0, err
	}
	var d []time.Duration
	for i := range 6 {
		t0 := time.Now()
		if _, err := cs.s.Run(ctx, in); err != nil {
			return 0, err
		}
		if i > 0 {
			d = append(d, time.Since(t0))
		}
	}
	slices.Sort(d)
	return models.Seconds(d[len(d)/2].Seconds()), nil
}

// Remove deletes stage/variant from the repository at repo, and the stage's
// directory when it was the last variant. It wraps ErrNotFound when there is
// no such variant.
func Remove(repo, stage, variant string) error {
	if !models.ValidName(stage) || !models.ValidName(variant) {
		return fmt.Errorf("%w: %q/%q is not a valid stage/variant name", ErrNotFound, stage, variant)
	}
	dir := filepath.Join(repo, stage, variant)
	if _, err := os.Stat(filepath.Join(dir, models.MetaFile)); err != nil {
		have := "it is empty or missing"
		if r, err := models.ReadRepository(os.DirFS(repo)); err == nil {
			var all []string
			for _, n := range r.StageNames() {
				for _, v := range r.Stages[n].Variants {
					all = append(all, n+"/"+v.Name)
				}
			}
			have = fmt.Sprintf("it has %v", all)
		}
		return fmt.Errorf("%w: %s/%s is not in the repository %s (%s)", ErrNotFound, stage, variant, repo, have)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	entries, err := os.ReadDir(filepath.Join(repo, stage))
	if err == nil && len(entries) == 0 {
		return os.Remove(filepath.Join(repo, stage))
	}
	return nil
}
