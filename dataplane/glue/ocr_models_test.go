package glue

import (
	"fmt"
	"image"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/image/font/gofont/gobold"
	"golang.org/x/image/font/gofont/gomono"
	"golang.org/x/image/font/gofont/goregular"

	"github.com/ipa-serving/ipa/dataplane/glue/ocrset"
	"github.com/ipa-serving/ipa/runtime"
)

// pageLines is the text of the rendered test pages: pangrams, digits,
// capitals and words of the project, all in ppocr_keys_v1.txt.
var pageLines = []string{
	"The quick brown fox jumps over the lazy dog",
	"Pack my box with five dozen liquor jugs",
	"Serving pipelines need accurate models",
	"ONNX Runtime runs on two CPU cores",
	"Invoice 2024 total 1375 dollars",
	"Hello world from the glue package",
}

// ocrResult compares read lines with the reference.
type ocrResult struct {
	lines        []string
	exact        int
	errs, chars  int // edit distance and reference length, spaces included
	errsNoSpaces int // the same with every space removed
	charsNoSpace int
}

func (r ocrResult) cer() float64        { return float64(r.errs) / float64(r.chars) }
func (r ocrResult) cerNoSpace() float64 { return float64(r.errsNoSpaces) / float64(r.charsNoSpace) }

func score(got, want []string) ocrResult {
	r := ocrResult{lines: got}
	for i := range min(len(got), len(want)) {
		if got[i] == want[i] {
			r.exact++
		}
	}
	g, w := strings.Join(got, "\n"), strings.Join(want, "\n")
	r.errs, r.chars = ocrset.EditDistance(g, w), len([]rune(w))
	nos := func(s string) string { return strings.ReplaceAll(s, " ", "") }
	r.errsNoSpaces, r.charsNoSpace = ocrset.EditDistance(nos(g), nos(w)), len([]rune(nos(w)))
	return r
}

type ocrModels struct {
	rec  *runtime.Session
	keys []string
	det  map[int]*runtime.Session
}

func openOCR(t testing.TB, sides ...int) *ocrModels {
	t.Helper()
	m := &ocrModels{rec: openVariant(t, "ocr-rec", "rec-v4"), det: map[int]*runtime.Session{}}
	f, err := os.Open(filepath.Join(modelsDir(), "ocr-rec", "rec-v4", "ppocr_keys_v1.txt"))
	if err != nil {
		t.Fatalf("model repository is required (run `make deps`): %v", err)
	}
	defer f.Close()
	if m.keys, err = LoadKeys(f); err != nil {
		t.Fatal(err)
	}
	for _, s := range sides {
		m.det[s] = openVariant(t, "ocr-det", fmt.Sprintf("det-%d", s))
	}
	return m
}

// read runs the whole OCR pipeline on img: det → boxes → rec → CTC, and
// returns the text lines in reading order.
func (m *ocrModels) read(t testing.TB, img image.Image, side int) []string {
	t.Helper()
	in, g := DetInput(img, side)
	out := run(t, m.det[side], in)
	boxes, err := DetBoxes(out[0], 0, g, DetThresh, DetMinArea)
	if err != nil {
		t.Fatal(err)
	}
	tensors, rows := RecInput(img, boxes, RecHeight, DefaultRecWidths)
	texts := make([]string, len(boxes))
	for i, x := range tensors {
		o := run(t, m.rec, x)
		for r, b := range rows[i] {
			if texts[b], _, err = CTCDecode(o[0], r, m.keys); err != nil {
				t.Fatal(err)
			}
		}
	}
	var lines []string
	for _, l := range GroupLines(boxes) {
		words := make([]string, len(l))
		for j, b := range l {
			words[j] = texts[b]
		}
		lines = append(lines, strings.Join(words, " "))
	}
	return lines
}

// TestOCREndToEnd reads a rendered page with the real PP-OCRv4 det (640) and
// rec models through runtime sessions, from PNG bytes as a request brings
// them.
func TestOCREndToEnd(t *testing.T) {
	m := openOCR(t, 640)
	page, err := DecodeImage(encodePNG(t, renderPage(t, goregular.TTF, 28, pageLines, 0)))
	if err != nil {
		t.Fatal(err)
	}
	r := score(m.read(t, page, 640), pageLines)
	t.Logf("det-640 on %v: %d/%d lines exact, CER %.1f %% (%.1f %% ignoring spaces)",
		page.Bounds().Size(), r.exact, len(pageLines), 100*r.cer(), 100*r.cerNoSpace())
	for i, l := range r.lines {
		t.Logf("  %q", l)
		_ = i
	}
	if len(r.lines) != len(pageLines) {
		t.Fatalf("read %d lines, want %d", len(r.lines), len(pageLines))
	}
	if r.exact < 5 && r.cer() > 0.05 {
		t.Fatalf("%d/6 lines exact and CER %.3f: want ≥ 5 exact or CER ≤ 5 %%", r.exact, r.cer())
	}
	if r.cerNoSpace() > 0.01 {
		t.Fatalf("CER ignoring spaces %.3f > 1 %%", r.cerNoSpace())
	}
}

// TestOCRAccuracyByDetSize measures the character error rate of the whole
// pipeline per det input size on pages of different fonts and widths (the
// ocr-det variants' accuracy for the optimizer). Each size must stay under
// 10 % CER; the table is logged.
func TestOCRAccuracyByDetSize(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 12 det and rec passes (≈ 25 s on one core)")
	}
	sides := []int{480, 640, 960}
	m := openOCR(t, sides...)
	pages := []struct {
		name string
		img  image.Image
	}{
		{"goregular 28px 678 px wide", renderPage(t, goregular.TTF, 28, pageLines, 0)},
		{"goregular 24px 1200 px wide", renderPage(t, goregular.TTF, 24, pageLines, 1200)},
		{"gomono 20px 1000 px wide", renderPage(t, gomono.TTF, 20, pageLines, 1000)},
		{"gobold 28px 1400 px wide", renderPage(t, gobold.TTF, 28, pageLines, 1400)},
	}
	for _, side := range sides {
		var total ocrResult
		for _, p := range pages {
			r := score(m.read(t, p.img, side), pageLines)
			t.Logf("det-%d %-28s %d/6 exact  CER %5.2f %%  (no spaces %5.2f %%)", side, p.name, r.exact, 100*r.cer(), 100*r.cerNoSpace())
			total.exact += r.exact
			total.errs += r.errs
			total.chars += r.chars
			total.errsNoSpaces += r.errsNoSpaces
			total.charsNoSpace += r.charsNoSpace
		}
		t.Logf("det-%d ALL %d/%d lines exact  CER %.2f %%  (no spaces %.2f %%)", side, total.exact, 6*len(pages), 100*total.cer(), 100*total.cerNoSpace())
		if total.cer() > 0.10 {
			t.Errorf("det-%d: CER %.3f > 10 %%", side, total.cer())
		}
	}
}
