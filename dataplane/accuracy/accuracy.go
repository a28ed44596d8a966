// Package accuracy measures the accuracy of a stage's variants on a labelled
// set and records it in the model repository's metadata, where the optimizer
// reads it (optimizer.StagesFromModels takes models.Accuracy.Value).
//
// For OCR it scores every variant of the detection stage by the character
// error rate of the whole pipeline — detection, boxes, crops, recognition,
// CTC decoding, lines — on pages of ocrset, with the recogniser fixed:
// accuracy = 100·(1 − CER). Detection alone has no labels of its own here;
// what matters to a client is the text read.
package accuracy

import (
	"context"
	"fmt"
	"image"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ipa-serving/ipa/dataplane/glue"
	"github.com/ipa-serving/ipa/dataplane/glue/ocrset"
	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/runtime"
)

// OCRMetric is the metric of an OCR detection variant's measured accuracy.
const OCRMetric = "end-to-end character accuracy % = 100·(1 − CER) of the ocr pipeline (det → rec)"

// OCR reads pages with the PP-OCR models: one recogniser and its character
// list, and the detection variant given to Read.
type OCR struct {
	Rec  runtime.Engine
	Keys []string
}

// Read runs the pipeline on one encoded page with det, a detection variant
// whose input is square (its side is dimension 2 of the input), and returns
// the text lines in reading order: the boxes grouped into lines
// (glue.GroupLines), a line's boxes read left to right and joined by spaces.
// The glue is the router's (image-ocr-det, ocr-lines).
func (o *OCR) Read(ctx context.Context, det runtime.Engine, page []byte) ([]string, error) {
	img, err := glue.DecodeImage(page)
	if err != nil {
		return nil, err
	}
	in := det.Variant().Inputs[0]
	if len(in.Shape) != 4 || in.Shape[2] <= 0 {
		return nil, fmt.Errorf("detection variant %q has no fixed input size (%s)", det.Variant().Name, models.FormatShape(in.Shape))
	}
	t, g := glue.DetInput(img, int(in.Shape[2]))
	t.Name = in.Name
	out, err := det.Run(ctx, []models.Tensor{t})
	if err != nil {
		return nil, err
	}
	boxes, err := glue.DetBoxes(out[0], 0, g, glue.DetThresh, glue.DetMinArea)
	if err != nil {
		return nil, err
	}
	return o.readBoxes(ctx, img, boxes)
}

func (o *OCR) readBoxes(ctx context.Context, img image.Image, boxes []image.Rectangle) ([]string, error) {
	tensors, rows := glue.RecInput(img, boxes, glue.RecHeight, glue.DefaultRecWidths)
	texts := make([]string, len(boxes))
	for i, t := range tensors {
		t.Name = o.Rec.Variant().Inputs[0].Name
		out, err := o.Rec.Run(ctx, []models.Tensor{t})
		if err != nil {
			return nil, err
		}
		for r, b := range rows[i] {
			if texts[b], _, err = glue.CTCDecode(out[0], r, o.Keys); err != nil {
				return nil, err
			}
		}
	}
	var lines []string
	for _, l := range glue.GroupLines(boxes) {
		words := make([]string, len(l))
		for j, b := range l {
			words[j] = texts[b]
		}
		lines = append(lines, strings.Join(words, " "))
	}
	return lines, nil
}

// Result is the score of one variant on a set.
type Result struct {
	Stage, Variant string
	ocrset.Score
	Pages   int
	Elapsed time.Duration
	// Worst is the page with the most errors and what was read from it.
	Worst     string
	WorstRead []string
}

// Accuracy is r as a measured accuracy of set, dated at.
func (r Result) Accuracy(set string, at time.Time) models.Accuracy {
	return models.Accuracy{
		Value:  math.Round(10000*(1-r.CER())) / 100, // % to 0.01
		Metric: OCRMetric,
		Source: fmt.Sprintf("measured by `ipa models score`: %d character errors in %d reference characters (CER %.2f %%) on %d pages",
			r.Errors, r.Chars, 100*r.CER(), r.Pages),
		Verified: true, Set: set, MeasuredAt: at.UTC().Format(time.DateOnly),
	}
}

// ScoreOCR reads every page with det and scores it against its lines;
// progress, if not nil, is called after each page.
func (o *OCR) ScoreOCR(ctx context.Context, det runtime.Engine, pages []ocrset.Page, progress func()) (Result, error) {
	v := det.Variant()
	res := Result{Stage: v.Stage, Variant: v.Name, Worst: "", Pages: len(pages)}
	start := time.Now()
	worst := -1
	for _, p := range pages {
		got, err := o.Read(ctx, det, p.Image)
		if err != nil {
			return res, fmt.Errorf("%s/%s on %s: %w", v.Stage, v.Name, p.Name, err)
		}
		s := ocrset.Compare(got, p.Lines)
		res.Score = res.Score.Add(s)
		if s.Errors > worst {
			worst, res.Worst, res.WorstRead = s.Errors, p.Name, got
		}
		if progress != nil {
			progress()
		}
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// OpenOCRRec opens the recogniser stage/variant of the repository at dir
// with its character list.
func OpenOCRRec(dir string, st *models.Stage, variant string, threads int) (*OCR, error) {
	v := st.Variant(variant)
	if v == nil {
		return nil, fmt.Errorf("stage %q has no variant %q (have %v)", st.Name, variant, st.VariantNames())
	}
	vdir := filepath.Join(dir, st.Dir, v.Name)
	keys, err := glue.LoadKeysFile(filepath.Join(vdir, "ppocr_keys_v1.txt"))
	if err != nil {
		return nil, err
	}
	rec, err := runtime.Open(filepath.Join(vdir, v.File), v, runtime.Options{Threads: threads})
	if err != nil {
		return nil, err
	}
	return &OCR{Rec: rec, Keys: keys}, nil
}

// WriteAccuracy sets the accuracy of stage/variant in the variant.json of
// the repository at dir (written atomically).
func WriteAccuracy(dir string, st *models.Stage, variant string, a models.Accuracy) error {
	p := filepath.Join(dir, st.Dir, variant, models.MetaFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	v, err := models.ParseVariant(b)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	v.Accuracy = a
	out, err := models.EncodeVariant(v)
	if err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, out, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}
