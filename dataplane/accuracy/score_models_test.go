package accuracy

import (
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/dataplane/dataplanetest"
	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/optimizer"
)

// copyOCRStages makes a writable repository of the real ocr-det and ocr-rec
// stages in a temporary directory: variant.json files copied, the rest
// linked (nothing is written into the shared repository).
func copyOCRStages(t *testing.T) (string, *models.Repository) {
	t.Helper()
	_, src := dataplanetest.Repo(t) // loads ONNX Runtime too
	dst := t.TempDir()
	for _, stage := range []string{OCRDetStage, OCRRecStage} {
		err := filepath.WalkDir(filepath.Join(src, stage), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(src, p)
			out := filepath.Join(dst, rel)
			switch {
			case d.IsDir():
				return os.MkdirAll(out, 0o755)
			case d.Name() == models.MetaFile:
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				return os.WriteFile(out, b, 0o644)
			default:
				abs, err := filepath.Abs(p)
				if err != nil {
					return err
				}
				return os.Symlink(abs, out)
			}
		})
		if err != nil {
			t.Fatalf("model repository is required (run `make models`): %v", err)
		}
	}
	repo, err := models.ReadRepository(os.DirFS(dst))
	if err != nil {
		t.Fatal(err)
	}
	return dst, repo
}

// TestScoreOCRDetThroughTheModels scores the three detection variants on a
// few generated pages through the real PP-OCRv4 models, records the result
// and checks that the optimizer sees it, and that the character error rate
// does not rise with the detection resolution.
func TestScoreOCRDetThroughTheModels(t *testing.T) {
	dir, repo := copyOCRStages(t)
	opt := Options{Dir: dir, Repo: repo, Stage: OCRDetStage, RecVariant: "rec-v4", Seed: 1, Pages: 4, Threads: 1}
	pages := 0
	opt.Progress = func(_, page string) {
		if page != "" {
			pages++
		}
	}
	results, err := Score(t.Context(), opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 3 || pages != 12 {
		t.Fatalf("%d results, %d pages reported; want 3 variants × 4 pages", len(results), pages)
	}
	var m models.MeasuredAccuracy
	if err := Record(dir, repo, results, opt.Set(), time.Now(), &m); err != nil {
		t.Fatal(err)
	}
	back, err := models.ReadRepository(os.DirFS(dir))
	if err != nil {
		t.Fatal(err)
	}
	st, _ := back.Stage(OCRDetStage)
	offered := optimizer.StagesFromModels(st)[0].Variants
	prev := -1.0
	for i, r := range results {
		t.Logf("%s: %d errors / %d chars, CER %.2f %%, %.1fs; worst %s: %q", r.Variant, r.Errors, r.Chars, 100*r.CER(), r.Elapsed.Seconds(), r.Worst, r.WorstRead)
		if r.Chars == 0 || r.Pages != 4 {
			t.Fatalf("%s: %+v", r.Variant, r)
		}
		if r.CER() > 0.05 {
			t.Errorf("%s: CER %.3f > 5 %%", r.Variant, r.CER())
		}
		if prev >= 0 && r.CER() > prev {
			t.Errorf("%s: CER %.4f is above the smaller variant's %.4f: more pixels read worse", r.Variant, r.CER(), prev)
		}
		prev = r.CER()
		if want := math.Round(10000*(1-r.CER())) / 100; offered[i].Name != r.Variant || offered[i].Accuracy != want {
			t.Errorf("optimizer offers %+v; want %s at %.2f", offered[i], r.Variant, want)
		}
		if a := st.Variant(r.Variant).Accuracy; !a.Verified || !a.Measured() || a.Set != opt.Set() {
			t.Errorf("%s metadata: %+v", r.Variant, a)
		}
	}
}
