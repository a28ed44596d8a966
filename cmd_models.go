package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/runtime/repobuild"
)

// ModelsCmd groups the model repository tools.
type ModelsCmd struct {
	Build   ModelsBuildCmd   `cmd:"" help:"Build the model repository from the raw models of 'make deps': normalise interfaces, make batch dimensions dynamic, self-check each variant."`
	List    ModelsListCmd    `cmd:"" help:"List the stages and variants of the model repository (the built-in one merged with yours)."`
	Memory  ModelsMemoryCmd  `cmd:"" help:"Measure the resident memory of each variant's sessions (one process per variant) and write the memory model 'ipa stage', 'ipa local' and 'ipa manifests' size replicas with."`
	Score   ModelsScoreCmd   `cmd:"" help:"Measure the accuracy of a stage's variants on a generated labelled set (OCR: character error rate of the pipeline per detection variant) and write it into variant.json and the measured-accuracy file."`
	Inspect ModelsInspectCmd `cmd:"" help:"Print an ONNX model's inputs, outputs, datatypes, shapes, opset and batch capability (dynamic, fixed but rewritable, fixed, none), loading it in ONNX Runtime."`
	Add     ModelsAddCmd     `cmd:"" help:"Add your own ONNX model as a variant of a stage of your model repository: checks that ONNX Runtime loads it, makes a batch fixed at 1 dynamic when the rewrite passes its self-check, checks its interface against the stage's other variants."`
	Remove  ModelsRemoveCmd  `cmd:"" help:"Remove a variant from your model repository."`
}

// defaultUserRepo is where `ipa models add` writes and the serving roles
// look for the user's own models when neither --repo/--models.user nor
// IPA_USER_MODELS says otherwise.
const defaultUserRepo = "models-repo"

// ModelsBuildCmd builds the repository.
type ModelsBuildCmd struct {
	Raw        string `default:".deps/raw" env:"IPA_RAW_DIR" help:"Raw models fetched by 'make deps'."`
	Out        string `default:".deps/models" env:"IPA_MODELS_DIR" help:"Repository to write."`
	CheckBatch int    `default:"4" help:"Batch size k of the self-check (batch k vs k runs of batch 1)."`
	Accuracy   string `default:"${accuracy_file}" help:"Measured accuracies ('ipa models score') that replace the catalog's published ones; a missing file means none."`
}

// Run builds the repository, printing one line per variant.
func (c *ModelsBuildCmd) Run(g *Globals) error {
	if err := g.InitORT(); err != nil {
		return err
	}
	measured, err := readMeasured(c.Accuracy, true)
	if err != nil {
		return err
	}
	if len(measured.Variants) == 0 {
		fmt.Fprintf(os.Stderr, "no measured accuracies in %q: variants keep a measurement their variant.json holds, else get the catalog's published number\n", c.Accuracy)
	}
	ctx := signalContext(g.Logger())
	rep, err := repobuild.Build(ctx, repobuild.Options{RawDir: c.Raw, OutDir: c.Out, Progress: os.Stderr, CheckBatch: c.CheckBatch, Threads: 1, Measured: measured})
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "built %d variants in %s\n", len(rep.Variants), rep.Elapsed.Round(10*time.Millisecond))
	return rep.WriteTable(os.Stdout)
}

// ModelsListCmd lists the repository.
type ModelsListCmd struct {
	Models RepoFlags `embed:"" prefix:"models."`
}

// Run prints one line per variant.
func (c *ModelsListCmd) Run(*Globals) error {
	repo, err := c.Models.Open()
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "STAGE\tVARIANT\tMAX BATCH\tACCURACY\tMETRIC\tINPUTS\tOUTPUTS\tLICENCE")
	for _, name := range repo.StageNames() {
		st := repo.Stages[name]
		for _, v := range st.Variants {
			mb := "dynamic"
			if v.MaxBatch > 0 {
				mb = fmt.Sprint(v.MaxBatch)
			}
			acc := fmt.Sprintf("%g", v.Accuracy.Value)
			if !v.Accuracy.Verified {
				acc += "?"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%v\t%v\t%s\n", st.Name, v.Name, mb, acc, v.Accuracy.Metric, v.Inputs, v.Outputs, v.License)
		}
	}
	return w.Flush()
}

// ModelsInspectCmd prints what ipa sees in an ONNX file.
type ModelsInspectCmd struct {
	File       string   `arg:"" type:"existingfile" help:"ONNX model file."`
	CheckShape []string `name:"check-shape" sep:"none" placeholder:"NAME=DIMS" help:"Sizes of an input's dynamic dimensions for the batch self-check, e.g. x=-1,3,48,320 (repeat per input)."`
	CheckBatch int      `default:"4" help:"Batch size k of the self-check (batch k vs k runs of batch 1)."`
	JSON       bool     `help:"Print JSON instead of text."`
	BakeFlags  `embed:""`
}

// BakeFlags turn inputs of a model into constants baked into the served
// graph and drop outputs (models add and inspect).
type BakeFlags struct {
	Const      []string `name:"const" sep:"none" placeholder:"NAME=VALUE" help:"Bake an input into the model as a constant (every element VALUE; clients no longer send it), e.g. --const sr=16000 for a sampling rate, --const state=0 for a zero recurrent state (repeat per input)."`
	BatchAxis  []string `name:"batch-axis" sep:"none" placeholder:"NAME=K" help:"For a --const input whose dimension K is the batch (state [2,N,128]: --batch-axis state=1): the baked constant follows the request's batch."`
	DropOutput []string `name:"drop-output" sep:"none" placeholder:"NAME" help:"Do not publish this output of the model (a recurrent state's next value; repeat)."`
}

// bake parses the flags.
func (f BakeFlags) bake() (repobuild.Bake, error) {
	b := repobuild.Bake{Drop: f.DropOutput}
	for _, s := range f.Const {
		name, v, ok := strings.Cut(s, "=")
		x, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if !ok || name == "" || err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
			return b, fmt.Errorf("--const %q: write NAME=VALUE with a finite number, e.g. sr=16000", s)
		}
		if _, dup := b.Consts[name]; dup {
			return b, fmt.Errorf("--const %s is given twice", name)
		}
		if b.Consts == nil {
			b.Consts = map[string]float64{}
		}
		b.Consts[name] = x
	}
	for _, s := range f.BatchAxis {
		name, v, ok := strings.Cut(s, "=")
		k, err := strconv.Atoi(strings.TrimSpace(v))
		if !ok || name == "" || err != nil || k < 0 {
			return b, fmt.Errorf("--batch-axis %q: write NAME=K with K the dimension that is the batch (0, 1, …), e.g. state=1", s)
		}
		if b.BatchAxis == nil {
			b.BatchAxis = map[string]int{}
		}
		b.BatchAxis[name] = k
	}
	return b, nil
}

// Run inspects the file.
func (c *ModelsInspectCmd) Run(g *Globals) error {
	if err := g.InitORT(); err != nil {
		return err
	}
	shapes, err := parseShapes("--check-shape", c.CheckShape)
	if err != nil {
		return err
	}
	bake, err := c.bake()
	if err != nil {
		return err
	}
	ins, err := repobuild.Inspect(signalContext(g.Logger()), c.File, repobuild.CheckOptions{CheckBatch: c.CheckBatch, CheckShapes: shapes, Bake: bake})
	if err != nil {
		return err
	}
	if c.JSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(ins)
	}
	return ins.WriteText(os.Stdout)
}

// ModelsAddCmd adds the user's own models to their repository.
type ModelsAddCmd struct {
	Path        string   `arg:"" type:"path" help:"An ONNX file; a manifest (YAML) listing several; or a directory holding ${manifest}."`
	Repo        string   `default:"${user_repo}" env:"IPA_USER_MODELS" placeholder:"DIR" help:"Your model repository (created if missing; serve it with --models.user DIR or IPA_USER_MODELS)."`
	Builtin     string   `name:"models.dir" env:"IPA_MODELS_DIR" default:".deps/models" help:"The built-in repository served with yours: a stage there shares its interface and variant names with yours (skipped when missing)."`
	Stage       string   `help:"Stage (task) the model is a variant of, e.g. my-classify; required for one file."`
	Variant     string   `help:"Variant name (default: the file's name)."`
	Accuracy    *float64 `help:"The variant's accuracy in --metric's unit (required for one file): what the optimizer trades against latency."`
	Metric      string   `help:"What --accuracy measures, e.g. 'ImageNet top-1 %' (required with --accuracy)."`
	Source      string   `help:"Where the accuracy comes from (paper, model card, your evaluation)."`
	Verified    bool     `help:"The accuracy was measured or checked against --source."`
	Task        string   `help:"What the model does, e.g. image-classification."`
	License     string   `help:"The model's licence."`
	Description string   `help:"One line about the variant."`
	Input       string   `placeholder:"NAME" help:"Rename the model's only input (so that variants exported under other names share one interface)."`
	Output      string   `placeholder:"NAME" help:"Rename the model's only output; an output [N,C,1,1] is flattened to [N,C]."`
	Shape       []string `sep:"none" placeholder:"NAME=DIMS" help:"Pin an input's dynamic dimensions in the published interface, e.g. x=-1,3,640,640 (repeat per input; -1 stays dynamic)."`
	CheckShape  []string `name:"check-shape" sep:"none" placeholder:"NAME=DIMS" help:"Sizes of an input's dynamic dimensions for the batch self-check only, e.g. x=-1,3,48,320."`
	File        []string `name:"file" sep:"none" type:"existingfile" placeholder:"PATH" help:"Copy a file next to the model (labels, vocabulary; repeat)."`
	Tolerance   *float64 `help:"Self-check tolerance: largest |batched − item by item| relative to the output's largest magnitude (default 1e-4; 0 = bit-identical)."`
	CheckBatch  int      `default:"4" help:"Batch size k of the self-check (batch k vs k runs of batch 1)."`
	Replace     bool     `help:"Replace a variant of the same name in --repo."`
	BakeFlags   `embed:""`
}

// Run adds every variant the path names, or none: a failure removes the
// ones this run added.
func (c *ModelsAddCmd) Run(g *Globals) error {
	if err := g.InitORT(); err != nil {
		return err
	}
	specs, err := c.specs()
	if err != nil {
		return err
	}
	var others []*models.Repository
	if _, err := os.Stat(c.Builtin); err == nil && filepath.Clean(c.Builtin) != filepath.Clean(c.Repo) {
		r, err := models.ReadRepositoryDirs(c.Builtin)
		if err != nil {
			return fmt.Errorf("--models.dir: %w", err)
		}
		others = append(others, r)
	}
	ctx := signalContext(g.Logger())
	var added []string
	for i, s := range specs {
		a, err := repobuild.Add(ctx, s, repobuild.AddOptions{Repo: c.Repo, Others: others, Replace: c.Replace})
		if err != nil {
			for _, id := range added {
				stage, variant, _ := strings.Cut(id, "/")
				_ = repobuild.Remove(c.Repo, stage, variant)
			}
			if len(specs) > 1 {
				return fmt.Errorf("variant %d of %d (%s/%s): %w; nothing was added", i+1, len(specs), s.Stage, s.Variant, err)
			}
			return err
		}
		if !a.Replaced {
			added = append(added, s.Stage+"/"+s.Variant)
		}
		v := a.Variant
		mb := "dynamic"
		if v.MaxBatch > 0 {
			mb = fmt.Sprintf("fixed at %d", v.MaxBatch)
		}
		fmt.Printf("added %s/%s to %s: %s → %s, batch %s (%s), accuracy %g %s, b1 %.2f ms\n", v.Stage, v.Name, c.Repo,
			specList(v.Inputs), specList(v.Outputs), mb, a.Report.Batch, v.Accuracy.Value, v.Accuracy.Metric, 1000*float64(v.Latency1))
		fmt.Printf("  %s\n", v.BatchNote)
	}
	return nil
}

func specList(ts []models.TensorSpec) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = t.String()
	}
	return strings.Join(s, ", ")
}

// specs returns the variants to add: from the flags for one ONNX file,
// from the manifest otherwise.
func (c *ModelsAddCmd) specs() ([]repobuild.AddSpec, error) {
	check := repobuild.CheckOptions{CheckBatch: c.CheckBatch, Tolerance: c.Tolerance}
	st, err := os.Stat(c.Path)
	if err != nil {
		return nil, err
	}
	manifest := ""
	if st.IsDir() {
		manifest = filepath.Join(c.Path, repobuild.ManifestFile)
		if _, err := os.Stat(manifest); err != nil {
			return nil, fmt.Errorf("%s is a directory without %s: list its models there (file, variant, accuracy, metric each; see `ipa models add --help`), or add one file at a time", c.Path, repobuild.ManifestFile)
		}
	} else if ext := strings.ToLower(filepath.Ext(c.Path)); ext == ".yaml" || ext == ".yml" {
		manifest = c.Path
	}
	if manifest != "" {
		if c.Stage != "" || c.Variant != "" || c.Accuracy != nil || c.Metric != "" || c.Input != "" || c.Output != "" || len(c.Shape) > 0 || len(c.CheckShape) > 0 || len(c.File) > 0 ||
			len(c.Const) > 0 || len(c.BatchAxis) > 0 || len(c.DropOutput) > 0 {
			return nil, fmt.Errorf("%s is a manifest: give --stage, --variant, --accuracy, --metric, --input, --output, --shape, --check-shape, --file, --const, --batch-axis and --drop-output per variant in it (const, batch_axis, drop_output)", manifest)
		}
		b, err := os.ReadFile(manifest)
		if err != nil {
			return nil, err
		}
		specs, err := repobuild.ParseManifest(b, filepath.Dir(manifest), check)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", manifest, err)
		}
		return specs, nil
	}
	if c.Stage == "" {
		return nil, errors.New("--stage is required: the stage (task) this model is a variant of, e.g. --stage my-classify")
	}
	variant := c.Variant
	if variant == "" {
		variant = repobuild.VariantName(c.Path)
	}
	shapes, err := parseShapes("--shape", c.Shape)
	if err != nil {
		return nil, err
	}
	if check.CheckShapes, err = parseShapes("--check-shape", c.CheckShape); err != nil {
		return nil, err
	}
	if check.Bake, err = c.bake(); err != nil {
		return nil, err
	}
	return []repobuild.AddSpec{{File: c.Path, Stage: c.Stage, Variant: variant, Accuracy: c.Accuracy, Metric: c.Metric, Source: c.Source,
		Verified: c.Verified, Task: c.Task, License: c.License, Description: c.Description, Input: c.Input, Output: c.Output,
		Shapes: shapes, Files: c.File, Check: check}}, nil
}

// parseShapes parses NAME=D0,D1,… flags.
func parseShapes(flag string, list []string) (map[string][]int64, error) {
	if len(list) == 0 {
		return nil, nil
	}
	m := map[string][]int64{}
	for _, s := range list {
		name, dims, ok := strings.Cut(s, "=")
		if !ok || name == "" || dims == "" {
			return nil, fmt.Errorf("%s %q: write NAME=DIMS, e.g. x=-1,3,640,640", flag, s)
		}
		var shape []int64
		for _, d := range strings.Split(dims, ",") {
			n, err := strconv.ParseInt(strings.TrimSpace(d), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s %q: %q is not a dimension (an integer, -1 for dynamic)", flag, s, d)
			}
			shape = append(shape, n)
		}
		m[name] = shape
	}
	return m, nil
}

// ModelsRemoveCmd removes a variant from the user's repository.
type ModelsRemoveCmd struct {
	Variant string `arg:"" placeholder:"STAGE/VARIANT" help:"The variant to remove."`
	Repo    string `default:"${user_repo}" env:"IPA_USER_MODELS" placeholder:"DIR" help:"Your model repository."`
}

// Run removes the variant.
func (c *ModelsRemoveCmd) Run(*Globals) error {
	stage, variant, ok := strings.Cut(c.Variant, "/")
	if !ok {
		return fmt.Errorf("%q: name the variant as STAGE/VARIANT, e.g. my-classify/squeezenet", c.Variant)
	}
	if err := repobuild.Remove(c.Repo, stage, variant); err != nil {
		return err
	}
	fmt.Printf("removed %s/%s from %s\n", stage, variant, c.Repo)
	return nil
}
