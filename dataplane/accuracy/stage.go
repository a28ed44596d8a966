package accuracy

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/ipa-serving/ipa/dataplane/glue/ocrset"
	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/runtime"
)

// Stages that Score can measure, with the recogniser stage they read with.
const (
	OCRDetStage = "ocr-det"
	OCRRecStage = "ocr-rec"
)

// Options says what Score measures.
type Options struct {
	// Dir is the repository's root and Repo the repository read from it.
	Dir  string
	Repo *models.Repository
	// Stage to score; only OCRDetStage has a labelled set.
	Stage string
	// Variants to score; empty means every variant of Stage.
	Variants []string
	// RecVariant is the recogniser every detection variant reads with.
	RecVariant string
	// Seed and Pages choose the ocrset pages.
	Seed  uint64
	Pages int
	// Threads is the intra-op thread count of each session.
	Threads int
	// Progress, if not nil, is called before each variant (page "") and
	// after each page.
	Progress func(variant, page string)
}

// Set describes the labelled set of opt.
func (opt Options) Set() string {
	return ocrset.Describe(opt.Seed, opt.Pages) + "; recogniser " + OCRRecStage + "/" + opt.RecVariant
}

// Score measures every chosen variant of opt.Stage on the set.
func Score(ctx context.Context, opt Options) ([]Result, error) {
	if opt.Stage != OCRDetStage {
		return nil, fmt.Errorf("stage %q has no labelled set: only %s is scored (the OCR pipeline's character error rate)", opt.Stage, OCRDetStage)
	}
	if opt.Pages < 1 {
		return nil, fmt.Errorf("the set needs at least one page, got %d", opt.Pages)
	}
	st, err := opt.Repo.Stage(opt.Stage)
	if err != nil {
		return nil, err
	}
	var variants []*models.Variant
	for _, name := range opt.Variants {
		if st.Variant(name) == nil {
			return nil, fmt.Errorf("stage %q has no variant %q (have %v)", st.Name, name, st.VariantNames())
		}
	}
	for _, v := range st.Variants {
		if len(opt.Variants) == 0 || slices.Contains(opt.Variants, v.Name) {
			variants = append(variants, v)
		}
	}
	recSt, err := opt.Repo.Stage(OCRRecStage)
	if err != nil {
		return nil, err
	}
	ocr, err := OpenOCRRec(opt.Dir, recSt, opt.RecVariant, opt.Threads)
	if err != nil {
		return nil, err
	}
	defer ocr.Rec.Close()
	pages, err := ocrset.Generate(opt.Seed, opt.Pages)
	if err != nil {
		return nil, err
	}
	var out []Result
	for _, v := range variants {
		if opt.Progress != nil {
			opt.Progress(v.Name, "")
		}
		det, err := runtime.Open(filepath.Join(opt.Dir, st.Dir, v.Name, v.File), v, runtime.Options{Threads: opt.Threads})
		if err != nil {
			return out, err
		}
		var progress func()
		if opt.Progress != nil {
			progress = func() { opt.Progress(v.Name, "page") }
		}
		r, err := ocr.ScoreOCR(ctx, det, pages, progress)
		det.Close()
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Record writes each result's accuracy, measured on set at the date of at,
// into the variant.json of the repository at dir, and into m when m is not
// nil (the measured-accuracy file the repository builder reads).
func Record(dir string, repo *models.Repository, results []Result, set string, at time.Time, m *models.MeasuredAccuracy) error {
	for _, r := range results {
		st, err := repo.Stage(r.Stage)
		if err != nil {
			return err
		}
		a := r.Accuracy(set, at)
		if err := WriteAccuracy(dir, st, r.Variant, a); err != nil {
			return err
		}
		if m != nil {
			m.Put(r.Stage, r.Variant, a)
		}
	}
	return nil
}
