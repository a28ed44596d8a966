package repobuild

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/runtime/onnxpb"
)

// ModelFile is the name of the model file in every variant directory.
const ModelFile = "model.onnx"

// RecordFile is the build record next to variant.json: the sources' sha256
// and what the build found. models.ReadRepository ignores it.
const RecordFile = "build.json"

// recipe versions the build logic: bump it when a change to the rewrite,
// the normalisation or the self-check must rebuild existing variants.
// Changes to a catalog entry's recipe fields rebuild it by themselves (see
// fingerprint); changes to its metadata only rewrite variant.json.
const recipe = 1

// fingerprint identifies how e is built: the recipe version and every
// catalog field that changes the model file or the self-check.
func fingerprint(e *entry) string {
	b, err := json.Marshal(struct {
		Recipe        int
		Raw           string
		Extra         []string
		Batch         batchMode
		Normalize     *ioNormalization
		Shapes        map[string][]int64
		Nominal       map[string][]int64
		Tolerance     float64
		RandomWeights bool
	}{recipe, e.Raw, e.Extra, e.Batch, e.Normalize, e.Shapes, e.Nominal, e.Tolerance, e.RandomWeights})
	if err != nil {
		panic("BUG: cannot encode a catalog entry: " + err.Error())
	}
	return hexSum(b)
}

// Options configures Build.
type Options struct {
	// RawDir holds the raw models as `make deps` installs them
	// (imagenet/, ppocr/, mlsd/, blazeface/).
	RawDir string
	// OutDir is the repository root to write; it is created if needed.
	OutDir string
	// Progress receives one line per variant; nil discards them.
	Progress io.Writer
	// CheckBatch is the batch size k of the self-check (batch k against k
	// runs of batch 1); 0 means 4.
	CheckBatch int
	// Threads is the intra-op thread count of the self-check sessions; 0 means 1.
	Threads int
	// Measured holds accuracies measured in the project (`ipa models
	// score`); they replace the catalog's published ones. A variant it does
	// not name whose variant.json already holds a measurement keeps that
	// measurement: a rebuild never drops one silently (see AccuracyNote).
	Measured *models.MeasuredAccuracy
}

// Report says what Build did.
type Report struct {
	Variants []VariantReport
	Elapsed  time.Duration
}

// Batch kinds of a written model (VariantReport.Batch).
const (
	BatchNative    = "native"    // dynamic batch as shipped
	BatchRewritten = "rewritten" // dynamic batch after makeBatchDynamic
	BatchFixed     = "fixed"     // runs item by item (max_batch 1)
)

// VariantReport says what happened to one variant. Build stores it in the
// variant's build.json and reports it again when the variant is up to date.
type VariantReport struct {
	Stage   string `json:"stage"`
	Variant string `json:"variant"`
	// UpToDate is true when the variant had been built from the same
	// sources before; only its metadata was refreshed.
	UpToDate bool `json:"-"`
	// Normalized says how the interface was renamed, if it was.
	Normalized string `json:"normalized,omitempty"`
	// Rewrite says what the batch rewrite changed, if one was tried.
	Rewrite string `json:"rewrite,omitempty"`
	// RandomWeights counts the placeholder weights replaced by pseudo-random
	// ones in the self-check's copies of the model.
	RandomWeights int `json:"random_weights,omitempty"`
	// Batch is BatchNative, BatchRewritten or BatchFixed.
	Batch string `json:"batch"`
	// Verified is true when the self-check ran and passed.
	Verified   bool `json:"verified"`
	CheckBatch int  `json:"check_batch,omitempty"`
	// MaxDiff is the self-check's largest |batched - item by item| and
	// MaxRelDiff that difference relative to the output's largest magnitude.
	MaxDiff    float64 `json:"max_diff"`
	MaxRelDiff float64 `json:"max_rel_diff"`
	Identical  bool    `json:"identical"`
	// Compared lists the tensors the self-check compared; Constant those of
	// them equal for every item (where the check proves little).
	Compared  []string `json:"compared,omitempty"`
	Constant  []string `json:"constant,omitempty"`
	MaxBatch  int      `json:"max_batch"`
	BatchNote string   `json:"batch_note"`
	// SHA256 of the written model file.
	SHA256  string        `json:"sha256"`
	Elapsed time.Duration `json:"-"`
	// AccuracyNote says where a measured accuracy came from; empty for the
	// catalog's published number.
	AccuracyNote string `json:"-"`
}

// WriteTable writes r as an aligned text table.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tVARIANT\tBATCH\tMAX_BATCH\tCHECK\tMAX |DIFF|\tREL\tTIME")
	for _, v := range r.Variants {
		check := "-"
		if v.CheckBatch > 0 {
			check = fmt.Sprintf("b%d ", v.CheckBatch)
			switch {
			case v.Verified && v.Identical:
				check += "identical"
			case v.Verified:
				check += "ok"
			default:
				check += "failed"
			}
		}
		t := fmt.Sprintf("%.2fs", v.Elapsed.Seconds())
		if v.UpToDate {
			t += " (up to date)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%.3g\t%.3g\t%s\n", v.Stage, v.Variant, v.Batch, v.MaxBatch, check, v.MaxDiff, v.MaxRelDiff, t)
	}
	fmt.Fprintf(tw, "total\t%d variants\t\t\t\t\t\t%.2fs\n", len(r.Variants), r.Elapsed.Seconds())
	return tw.Flush()
}

// buildRecord is the content of build.json.
type buildRecord struct {
	// Fingerprint of the catalog entry's recipe (see fingerprint).
	Fingerprint string `json:"fingerprint"`
	// Sources maps each source file (relative to RawDir) to its sha256.
	Sources map[string]string   `json:"sources"`
	Inputs  []models.TensorSpec `json:"inputs"`
	Outputs []models.TensorSpec `json:"outputs"`
	Report  VariantReport       `json:"report"`
}

// Build writes the model repository of the catalog into opt.OutDir from the
// raw models in opt.RawDir. ONNX Runtime must be loaded (runtime.Init).
//
// For every variant it normalises the interface where the catalog says so,
// makes the batch dimension dynamic where needed, self-checks every dynamic
// batch by running batch k against k runs of batch 1 (keeping the original
// model with max_batch 1 when the check fails), and writes
// <stage>/<variant>/{model.onnx, variant.json, build.json} plus extra files.
//
// Build is idempotent: a variant whose build.json records the same sources
// and recipe, and whose model file is intact, is not rebuilt; only its
// variant.json is rewritten if the catalog's metadata changed. At the end the
// repository is read back with models.ReadRepository. Variants of OutDir that
// the catalog does not name are left alone. Two Builds must not write the
// same OutDir at once. On error the report lists the variants done so far.
func Build(ctx context.Context, opt Options) (*Report, error) {
	start := time.Now()
	if opt.RawDir == "" || opt.OutDir == "" {
		return nil, errors.New("repobuild: RawDir and OutDir must be set")
	}
	if opt.CheckBatch == 0 {
		opt.CheckBatch = 4
	}
	if opt.CheckBatch < 2 {
		return nil, fmt.Errorf("repobuild: CheckBatch %d must be at least 2", opt.CheckBatch)
	}
	if opt.Threads <= 0 {
		opt.Threads = 1
	}
	if opt.Progress == nil {
		opt.Progress = io.Discard
	}
	if err := os.MkdirAll(opt.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create model repository: %w", err)
	}
	ss, done, err := tempSessions(opt.Threads)
	if err != nil {
		return nil, err
	}
	defer done()

	rep := &Report{}
	for i := range catalog {
		e := &catalog[i]
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		t0 := time.Now()
		vr, err := buildVariant(ctx, e, opt, ss)
		if err != nil {
			return rep, fmt.Errorf("cannot build %s/%s: %w", e.Stage, e.Name, err)
		}
		vr.Elapsed = time.Since(t0)
		rep.Variants = append(rep.Variants, *vr)
		fmt.Fprintf(opt.Progress, "repobuild: %-24s %s (%.2fs)\n", e.Stage+"/"+e.Name, summary(vr), vr.Elapsed.Seconds())
		if i+1 == len(catalog) || catalog[i+1].Raw != e.Raw {
			ss.reset() // keep sessions only for variants of the same file
		}
	}
	if _, err := models.ReadRepository(os.DirFS(opt.OutDir)); err != nil {
		return rep, fmt.Errorf("the built repository does not read back: %w", err)
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}

func summary(v *VariantReport) string {
	s := v.Batch
	if v.UpToDate {
		s = "up to date, " + v.Batch
	}
	if v.AccuracyNote != "" {
		s += ", " + v.AccuracyNote
	}
	if v.UpToDate {
		return s
	}
	switch {
	case v.Verified && v.Identical:
		s += fmt.Sprintf(", self-check b%d bit-identical", v.CheckBatch)
	case v.Verified:
		s += fmt.Sprintf(", self-check b%d max |diff| %.3g (rel %.3g)", v.CheckBatch, v.MaxDiff, v.MaxRelDiff)
	case v.CheckBatch > 0:
		s += fmt.Sprintf(", self-check b%d failed: max_batch 1", v.CheckBatch)
	}
	return s
}

// buildVariant builds one catalog entry, or refreshes its metadata when it
// is up to date.
func buildVariant(ctx context.Context, e *entry, opt Options, ss *sessions) (*VariantReport, error) {
	srcPath := filepath.Join(opt.RawDir, filepath.FromSlash(e.Raw))
	src, err := os.ReadFile(srcPath)
	if err != nil {
		return nil, fmt.Errorf("cannot read the raw model (run `make deps`): %w", err)
	}
	sources := map[string]string{e.Raw: hexSum(src)}
	extras := map[string][]byte{}
	for _, x := range e.Extra {
		b, err := os.ReadFile(filepath.Join(opt.RawDir, filepath.FromSlash(x)))
		if err != nil {
			return nil, fmt.Errorf("cannot read %s (run `make deps`): %w", x, err)
		}
		sources[x] = hexSum(b)
		extras[x] = b
	}
	dir := filepath.Join(opt.OutDir, e.Stage, e.Name)
	acc, note := accuracyOf(e, opt.Measured, dir)
	if rec := upToDate(dir, e, sources); rec != nil {
		vr := rec.Report
		vr.UpToDate = true
		vr.AccuracyNote = note
		return &vr, writeMeta(dir, e, rec, acc)
	}

	rec, model, err := makeVariant(ctx, e, src, opt, ss)
	if err != nil {
		return nil, err
	}
	rec.Sources = sources
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// variant.json goes last: its presence marks a complete variant.
	os.Remove(filepath.Join(dir, models.MetaFile))
	if err := writeFileAtomic(filepath.Join(dir, ModelFile), model); err != nil {
		return nil, err
	}
	for _, x := range e.Extra {
		if err := writeFileAtomic(filepath.Join(dir, filepath.Base(x)), extras[x]); err != nil {
			return nil, err
		}
	}
	rec.Report.AccuracyNote = note
	if err := writeMeta(dir, e, rec, acc); err != nil {
		return nil, err
	}
	return &rec.Report, nil
}

// makeVariant runs the recipe of e on the source model and returns the
// build record and the model bytes to write.
func makeVariant(ctx context.Context, e *entry, src []byte, opt Options, ss *sessions) (*buildRecord, []byte, error) {
	rec := &buildRecord{Fingerprint: fingerprint(e), Report: VariantReport{Stage: e.Stage, Variant: e.Name}}
	vr := &rec.Report
	base, err := parseModel(src)
	if err != nil {
		return nil, nil, err
	}
	if e.Normalize != nil {
		if vr.Normalized, err = normalizeIO(base, *e.Normalize); err != nil {
			return nil, nil, err
		}
	}
	baseBytes, err := marshalModel(base)
	if err != nil {
		return nil, nil, err
	}

	final := baseBytes
	var res checkResult
	switch e.Batch {
	case batchNative:
		vr.Batch = BatchNative
		cs, err := ss.get(baseBytes)
		if err != nil {
			return nil, nil, fmt.Errorf("ONNX Runtime cannot load the model: %w", err)
		}
		res = selfCheck(ctx, cs, cs, opt.CheckBatch, nominal(e), e.Tolerance, nil)
	case batchRewrite:
		rw := proto.CloneOf(base)
		rr, err := makeBatchDynamic(rw)
		if err != nil {
			return nil, nil, fmt.Errorf("batch rewrite: %w", err)
		}
		vr.Rewrite = rr.String()
		rwBytes, err := marshalModel(rw)
		if err != nil {
			return nil, nil, err
		}
		res, err = checkRewrite(ctx, e, base, rw, rr, opt, ss, vr)
		if err != nil {
			return nil, nil, err
		}
		if res.Err == nil {
			final = rwBytes
		}
	default:
		return nil, nil, fmt.Errorf("BUG: unknown batch mode %d", e.Batch)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err // a cancelled self-check proves nothing
	}

	vr.CheckBatch = res.K
	vr.Verified = res.Err == nil
	vr.MaxDiff, vr.MaxRelDiff = finite(res.MaxDiff), finite(res.MaxRel)
	vr.Identical = res.Identical && res.Err == nil
	vr.Compared = res.Compared
	vr.Constant = res.Constant
	switch {
	case res.Err == nil && e.Batch == batchRewrite:
		vr.Batch, vr.MaxBatch = BatchRewritten, 0
	case res.Err == nil:
		vr.MaxBatch = 0
	default:
		vr.Batch, vr.MaxBatch = BatchFixed, 1
	}
	vr.BatchNote = batchNote(e, vr, res)

	// The published specs are ONNX Runtime's view of the written file.
	in, out, err := ss.inspect(final)
	if err != nil {
		return nil, nil, fmt.Errorf("ONNX Runtime cannot load the model to publish: %w", err)
	}
	if rec.Inputs, err = publishSpecs(e, in); err != nil {
		return nil, nil, err
	}
	if rec.Outputs, err = publishSpecs(e, out); err != nil {
		return nil, nil, err
	}
	vr.SHA256 = hexSum(final)
	return rec, final, nil
}

// maxRandomElems bounds the placeholders randomizeWeights replaces (4 Mi
// elements, 16 MiB): vgg19's and alexnet's big fully connected weights stay
// constant, which keeps the check models small.
const maxRandomElems = 4 << 20

// checkRewrite self-checks the rewritten model rw against base, the model
// before the rewrite. Both also output the probes, so the comparison sees
// tensors that differ between items even when the outputs do not, and with
// e.RandomWeights both get the same pseudo-random weights for the check. It
// returns an error only when the original model itself cannot be run.
func checkRewrite(ctx context.Context, e *entry, base, rw *onnxpb.ModelProto, rr rewriteResult, opt Options, ss *sessions, vr *VariantReport) (checkResult, error) {
	if e.RandomWeights {
		base, rw = proto.CloneOf(base), proto.CloneOf(rw)
		n, err := randomizeWeights(base, maxRandomElems)
		if err != nil {
			return checkResult{}, err
		}
		if _, err := randomizeWeights(rw, maxRandomElems); err != nil {
			return checkResult{}, err
		}
		vr.RandomWeights = n
	}
	probes := probeOutputs(rw, rr)
	refBytes, err := marshalModel(withOutputs(base, probes))
	if err != nil {
		return checkResult{}, err
	}
	ref, err := ss.get(refBytes)
	if err != nil {
		return checkResult{}, fmt.Errorf("ONNX Runtime cannot load the original model: %w", err)
	}
	chkBytes, err := marshalModel(withOutputs(rw, probes))
	if err != nil {
		return checkResult{}, err
	}
	chk, err := ss.get(chkBytes)
	if err != nil {
		return checkResult{K: opt.CheckBatch, Err: fmt.Errorf("ONNX Runtime cannot load the rewritten model: %w", err)}, nil
	}
	return selfCheck(ctx, chk, ref, opt.CheckBatch, nominal(e), e.Tolerance, maskedOutputs(rw.GetGraph())), nil
}

func nominal(e *entry) map[string][]int64 {
	m := map[string][]int64{}
	for k, v := range e.Shapes {
		m[k] = v
	}
	for k, v := range e.Nominal {
		m[k] = v
	}
	return m
}

// batchNote explains max_batch in words for variant.json.
func batchNote(e *entry, vr *VariantReport, res checkResult) string {
	var b strings.Builder
	how := "native dynamic batch"
	against := fmt.Sprintf("%d runs of batch 1", res.K)
	if e.Batch == batchRewrite {
		how = "rewritten to a dynamic batch (" + vr.Rewrite + ")"
		against = fmt.Sprintf("%d batch-1 runs of the original model", res.K)
		if vr.RandomWeights > 0 {
			against += fmt.Sprintf(", both with their %d ConstantOfShape placeholder weights replaced by the same pseudo-random ones "+
				"(with the placeholders every input gets the same output, so they would prove little; the published file keeps them)", vr.RandomWeights)
		}
	}
	if res.Err != nil {
		if e.Batch == batchRewrite {
			fmt.Fprintf(&b, "batch fixed at 1: the batch rewrite (%s) failed its self-check (batch %d against %s): %v; kept the original model, run item by item",
				vr.Rewrite, res.K, against, res.Err)
		} else {
			fmt.Fprintf(&b, "%s, but its self-check (batch %d against %s) failed: %v; run item by item", how, res.K, against, res.Err)
		}
		return b.String()
	}
	fmt.Fprintf(&b, "%s; self-check batch %d against %s, compared on %s: ", how, res.K, against, listNames(res.Compared, 6))
	if res.Identical {
		b.WriteString("bit-identical")
	} else {
		fmt.Fprintf(&b, "max |diff| %.3g, %.3g of the output's largest magnitude (tolerance %.0e)", res.MaxDiff, res.MaxRel, e.Tolerance)
	}
	if len(res.Flips) > 0 {
		fmt.Fprintf(&b, "; mask flips (an Equal in the output's NMS mask turned by a rounding difference of the batched kernels): %s", strings.Join(res.Flips, ", "))
	}
	if len(res.Constant) > 0 {
		fmt.Fprintf(&b, "; %s equal for every item, so the check rests on the other tensors", strings.Join(res.Constant, ", "))
		if len(res.Constant) == len(res.Compared) {
			b.WriteString(" — none differ between items, so it proves little")
		}
	}
	return b.String()
}

// listNames joins names, eliding all but the first few of a long list.
func listNames(names []string, few int) string {
	if len(names) <= few+1 {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more tensors", strings.Join(names[:few], ", "), len(names)-few)
}

// publishSpecs turns ONNX Runtime's view of the tensors into variant.json
// specs: dimension 0 is the (dynamic) batch, and the catalog may pin other
// dynamic dimensions.
func publishSpecs(e *entry, ts []models.TensorSpec) ([]models.TensorSpec, error) {
	out := make([]models.TensorSpec, len(ts))
	for i, t := range ts {
		t.Shape = append([]int64(nil), t.Shape...)
		t.Shape[0] = models.Dynamic
		if pin, ok := e.Shapes[t.Name]; ok {
			if len(pin) != len(t.Shape) {
				return nil, fmt.Errorf("catalog pins %q to %s but the model has %s", t.Name, models.FormatShape(pin), models.FormatShape(t.Shape))
			}
			for d := 1; d < len(pin); d++ {
				switch {
				case pin[d] == models.Dynamic:
				case t.Shape[d] == models.Dynamic:
					t.Shape[d] = pin[d]
				case t.Shape[d] != pin[d]:
					return nil, fmt.Errorf("catalog pins %q to %s but the model has %s", t.Name, models.FormatShape(pin), models.FormatShape(t.Shape))
				}
			}
		}
		out[i] = t
	}
	return out, nil
}

// variantOf renders the variant.json of e from the catalog and the record.
func variantOf(e *entry, rec *buildRecord) *models.Variant {
	origin := e.Origin
	if sum := rec.Sources[e.Raw]; len(sum) >= 16 {
		origin += " (sha256 " + sum[:16] + "…)"
	}
	return &models.Variant{
		Name: e.Name, Stage: e.Stage, Task: e.Task,
		File: ModelFile, SHA256: rec.Report.SHA256,
		Inputs: rec.Inputs, Outputs: rec.Outputs,
		MaxBatch: rec.Report.MaxBatch, BatchNote: rec.Report.BatchNote,
		Accuracy: e.Accuracy, License: e.License, Origin: origin,
		Description: e.Description, Latency1: e.Latency1,
		Constants: e.Constants, DroppedOutputs: e.Dropped,
	}
}

// writeMeta writes build.json and then variant.json (with accuracy acc),
// each only if changed.
func writeMeta(dir string, e *entry, rec *buildRecord, acc models.Accuracy) error {
	v := variantOf(e, rec)
	v.Accuracy = acc
	if err := v.Validate(); err != nil {
		return fmt.Errorf("BUG: generated metadata is invalid: %w", err)
	}
	for _, f := range []struct {
		name string
		v    any
	}{{RecordFile, rec}, {models.MetaFile, v}} {
		b, err := json.MarshalIndent(f.v, "", "  ")
		if err != nil {
			return err
		}
		b = append(b, '\n')
		p := filepath.Join(dir, f.name)
		if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, b) {
			continue
		}
		if err := writeFileAtomic(p, b); err != nil {
			return err
		}
	}
	return nil
}

// accuracyOf returns the accuracy variant.json gets for e: measured's when
// it names e, else a measurement the variant.json in dir already holds (a
// rebuild never drops one silently), else the catalog's published number.
// note says which measurement was used; empty for the catalog's.
func accuracyOf(e *entry, measured *models.MeasuredAccuracy, dir string) (acc models.Accuracy, note string) {
	if a, ok := measured.Lookup(e.Stage, e.Name); ok {
		return a, "accuracy measured " + a.MeasuredAt
	}
	if b, err := os.ReadFile(filepath.Join(dir, models.MetaFile)); err == nil {
		if old, err := models.ParseVariant(b); err == nil && old.Accuracy.Measured() {
			return old.Accuracy, "accuracy measured " + old.Accuracy.MeasuredAt + " kept from variant.json (not in the measured-accuracy file)"
		}
	}
	return e.Accuracy, ""
}

// upToDate returns the build record of dir when the variant there was built
// with the same recipe from the same sources and its files are intact.
func upToDate(dir string, e *entry, sources map[string]string) *buildRecord {
	b, err := os.ReadFile(filepath.Join(dir, RecordFile))
	if err != nil {
		return nil
	}
	var rec buildRecord
	if json.Unmarshal(b, &rec) != nil || rec.Fingerprint != fingerprint(e) || len(rec.Sources) != len(sources) {
		return nil
	}
	for k, v := range sources {
		if rec.Sources[k] != v {
			return nil
		}
	}
	vb, err := os.ReadFile(filepath.Join(dir, models.MetaFile))
	if err != nil {
		return nil
	}
	if _, err := models.ParseVariant(vb); err != nil {
		return nil
	}
	if m, err := os.ReadFile(filepath.Join(dir, ModelFile)); err != nil || hexSum(m) != rec.Report.SHA256 {
		return nil
	}
	for _, x := range e.Extra {
		if b, err := os.ReadFile(filepath.Join(dir, filepath.Base(x))); err != nil || hexSum(b) != sources[x] {
			return nil
		}
	}
	return &rec
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func finite(x float64) float64 {
	if math.IsInf(x, 0) || math.IsNaN(x) {
		return math.MaxFloat64
	}
	return x
}

// writeFileAtomic writes b to path through a temporary file in the same
// directory and a rename, so readers never see a partial file.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		os.Remove(f.Name())
		return err
	}
	return os.Rename(f.Name(), path)
}
