package main

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/ipa-serving/ipa/runtime/repobuild"
)

// ModelsCmd groups the model repository tools.
type ModelsCmd struct {
	Build  ModelsBuildCmd  `cmd:"" help:"Build the model repository from the raw models of 'make deps': normalise interfaces, make batch dimensions dynamic, self-check each variant."`
	List   ModelsListCmd   `cmd:"" help:"List the stages and variants of the model repository."`
	Memory ModelsMemoryCmd `cmd:"" help:"Measure the resident memory of each variant's sessions (one process per variant) and write the memory model 'ipa stage', 'ipa local' and 'ipa manifests' size replicas with."`
	Score  ModelsScoreCmd  `cmd:"" help:"Measure the accuracy of a stage's variants on a generated labelled set (OCR: character error rate of the pipeline per detection variant) and write it into variant.json and the measured-accuracy file."`
}

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
