package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/ipa-serving/ipa/dataplane/accuracy"
	"github.com/ipa-serving/ipa/dataplane/glue/ocrset"
	"github.com/ipa-serving/ipa/models"
)

// defaultAccuracyFile is the committed file of measured accuracies that
// `ipa models score` updates and `ipa models build` reads.
const defaultAccuracyFile = "profiles/measured/accuracy.json"

// ModelsScoreCmd measures the accuracy of a stage's variants on a generated
// labelled set and writes it into the repository's metadata.
type ModelsScoreCmd struct {
	Models   RepoFlags `embed:"" prefix:"models."`
	Stage    string    `default:"ocr-det" help:"Stage to score (only ocr-det has a labelled set: the OCR pipeline's character error rate per detection variant)."`
	Variants []string  `help:"Only these variants (default: all of the stage)."`
	Rec      string    `default:"rec-v4" help:"Variant of ocr-rec every detection variant reads with."`
	Pages    int       `default:"24" help:"Pages of the generated set."`
	Seed     uint64    `default:"1" help:"Seed of the generated set (same seed, same pages)."`
	Threads  int       `default:"1" help:"Intra-op threads of each session."`
	Record   string    `default:"${accuracy_file}" help:"Measured-accuracy file to update (read by 'ipa models build'); empty: do not."`
	DryRun   bool      `help:"Print the table only; write neither variant.json nor the accuracy file."`
	SaveSet  string    `placeholder:"DIR" help:"Also write the set's pages and labels.json into DIR."`
}

// Run scores, prints a table and records the accuracies.
func (c *ModelsScoreCmd) Run(g *Globals) error {
	if c.Pages < 1 || c.Threads < 1 {
		return fmt.Errorf("--pages and --threads must be at least 1")
	}
	if err := g.InitORT(); err != nil {
		return err
	}
	repo, err := c.Models.Open()
	if err != nil {
		return err
	}
	var measured *models.MeasuredAccuracy
	if c.Record != "" && !c.DryRun {
		if measured, err = readMeasured(c.Record, true); err != nil {
			return err
		}
	}
	if c.SaveSet != "" {
		pages, err := ocrset.Generate(c.Seed, c.Pages)
		if err != nil {
			return err
		}
		if err := ocrset.WriteDir(c.SaveSet, pages); err != nil {
			return err
		}
	}
	opt := accuracy.Options{Dir: c.Models.Dir, Repo: repo, Stage: c.Stage, Variants: c.Variants, RecVariant: c.Rec,
		Seed: c.Seed, Pages: c.Pages, Threads: c.Threads}
	nv := len(c.Variants)
	if st, err := repo.Stage(c.Stage); err == nil && nv == 0 {
		nv = len(st.Variants)
	}
	fmt.Fprintf(os.Stderr, "scoring %d variants of %s on %s\n", nv, c.Stage, opt.Set())
	bar := progressbar.NewOptions(nv*c.Pages, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true), progressbar.OptionSetDescription("score"), progressbar.OptionClearOnFinish())
	opt.Progress = func(variant, page string) {
		if page == "" {
			bar.Describe(c.Stage + "/" + variant)
			return
		}
		bar.Add(1)
	}
	results, err := accuracy.Score(signalContext(g.Logger()), opt)
	bar.Finish()
	if err != nil {
		return err
	}
	if err := writeScoreTable(os.Stdout, results); err != nil {
		return err
	}
	if c.DryRun {
		return nil
	}
	if err := accuracy.Record(c.Models.Dir, repo, results, opt.Set(), time.Now(), measured); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote the accuracy of %d variants into %s\n", len(results), c.Models.Dir)
	if measured != nil {
		return writeFile(c.Record, measured.Write)
	}
	return nil
}

func writeScoreTable(w io.Writer, results []accuracy.Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIANT\tPAGES\tERRORS\tCHARS\tCER\tACCURACY\tTIME\tWORST PAGE")
	for _, r := range results {
		fmt.Fprintf(tw, "%s/%s\t%d\t%d\t%d\t%.2f %%\t%.2f\t%.1fs\t%s: %q\n", r.Stage, r.Variant, r.Pages, r.Errors, r.Chars,
			100*r.CER(), 100*(1-r.CER()), r.Elapsed.Seconds(), r.Worst, strings.Join(r.WorstRead, " / "))
	}
	return tw.Flush()
}

// readMeasured reads the measured-accuracy file at path; a missing file is
// an empty set when missingOK.
func readMeasured(path string, missingOK bool) (*models.MeasuredAccuracy, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) && missingOK {
		return &models.MeasuredAccuracy{Version: 1}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, err := models.ReadMeasuredAccuracy(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}
