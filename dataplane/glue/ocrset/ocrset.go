// Package ocrset generates a labelled validation set for the OCR pipeline:
// pages of rendered text whose every line is known, so that the whole
// pipeline (detection → recognition) can be scored by its character error
// rate (CER, see Compare).
//
// A page is drawn with a Go font module (the Go fonts of
// golang.org/x/image/font/gofont and the Liberation fonts of
// codeberg.org/go-fonts/liberation: no system fonts, so a fresh machine makes
// the same set), at a random size, with lines of random length taken from a
// fixed vocabulary, dark on light or inverted (light on dark), slightly
// skewed or not, and encoded as PNG or as JPEG at a random quality.
//
// Everything follows from the seed: GeneratePage(seed, i) returns the same
// page, to the byte, on every run of the same build (page i does not depend
// on how many pages are generated). Version names the generator; bump it
// when a change makes other pages, so that measurements name their set.
//
// The package is pure Go and does no I/O except WriteDir.
package ocrset

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/jpeg"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"unicode"

	"codeberg.org/go-fonts/liberation/liberationmonoregular"
	"codeberg.org/go-fonts/liberation/liberationsansbold"
	"codeberg.org/go-fonts/liberation/liberationsansregular"
	"codeberg.org/go-fonts/liberation/liberationserifitalic"
	"codeberg.org/go-fonts/liberation/liberationserifregular"
	xdraw "golang.org/x/image/draw"
	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/gobold"
	"golang.org/x/image/font/gofont/goitalic"
	"golang.org/x/image/font/gofont/gomedium"
	"golang.org/x/image/font/gofont/gomono"
	"golang.org/x/image/font/gofont/goregular"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/f64"
	"golang.org/x/image/math/fixed"
)

// Version of the generator: pages of the same seed are the same only
// within a version.
const Version = 1

// Font is one typeface the generator draws with.
type Font struct {
	Name string
	TTF  []byte
}

// Fonts are the typefaces of the set, all from Go modules.
var Fonts = []Font{
	{"go-regular", goregular.TTF},
	{"go-bold", gobold.TTF},
	{"go-italic", goitalic.TTF},
	{"go-medium", gomedium.TTF},
	{"go-mono", gomono.TTF},
	{"liberation-sans", liberationsansregular.TTF},
	{"liberation-sans-bold", liberationsansbold.TTF},
	{"liberation-serif", liberationserifregular.TTF},
	{"liberation-serif-italic", liberationserifitalic.TTF},
	{"liberation-mono", liberationmonoregular.TTF},
}

// Page is one generated page and its label.
type Page struct {
	// Name is "page-NNN" (the index).
	Name string `json:"name"`
	// Lines is the text of the page, top to bottom, words separated by one
	// space.
	Lines []string `json:"lines"`
	// How the page was drawn.
	Font     string  `json:"font"`
	SizePx   float64 `json:"size_px"`
	SkewDeg  float64 `json:"skew_deg"`
	Inverted bool    `json:"inverted"`
	// JPEGQuality is the JPEG quality of Image, 0 for PNG.
	JPEGQuality int `json:"jpeg_quality"`
	Width       int `json:"width"`
	Height      int `json:"height"`
	// Image is the encoded page (PNG or JPEG), as a request would bring it.
	Image []byte `json:"-"`
}

// Ext is the file extension of p.Image.
func (p Page) Ext() string {
	if p.JPEGQuality > 0 {
		return ".jpg"
	}
	return ".png"
}

// Describe names the set GeneratePage(seed, 0..n-1) makes, for the metadata
// of a measurement.
func Describe(seed uint64, n int) string {
	return fmt.Sprintf("ocrset v%d seed %d, %d pages (%d fonts, 14–34 px, 1–10 words per line, 25 %% inverted, "+
		"half skewed up to ±0.8°, 60 %% JPEG q45–95)", Version, seed, n, len(Fonts))
}

// Generate returns pages 0..n-1 of seed.
func Generate(seed uint64, n int) ([]Page, error) {
	pages := make([]Page, n)
	for i := range pages {
		p, err := GeneratePage(seed, i)
		if err != nil {
			return nil, err
		}
		pages[i] = p
	}
	return pages, nil
}

// GeneratePage returns page i of seed.
func GeneratePage(seed uint64, i int) (Page, error) {
	rng := rand.New(rand.NewPCG(seed, uint64(i)))
	f := Fonts[rng.IntN(len(Fonts))]
	p := Page{Name: fmt.Sprintf("page-%03d", i), Font: f.Name, SizePx: float64(14 + rng.IntN(21))}
	nLines := 3 + rng.IntN(6)
	for range nLines {
		p.Lines = append(p.Lines, line(rng, 1+rng.IntN(10)))
	}
	p.Inverted = rng.IntN(4) == 0
	if rng.IntN(2) == 0 {
		p.SkewDeg = math.Round((rng.Float64()*1.6-0.8)*100) / 100
	}
	if rng.IntN(5) < 3 {
		p.JPEGQuality = 45 + rng.IntN(51)
	}
	img, err := render(rng, f, &p)
	if err != nil {
		return Page{}, fmt.Errorf("ocrset: %s: %w", p.Name, err)
	}
	var buf bytes.Buffer
	if p.JPEGQuality > 0 {
		err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: p.JPEGQuality})
	} else {
		err = (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, img)
	}
	if err != nil {
		return Page{}, fmt.Errorf("ocrset: %s: %w", p.Name, err)
	}
	p.Image = buf.Bytes()
	b := img.Bounds()
	p.Width, p.Height = b.Dx(), b.Dy()
	return p, nil
}

// line makes a line of n words: sentence case, Title Case or ALL CAPS, with
// a number now and then and a final punctuation mark sometimes.
func line(rng *rand.Rand, n int) string {
	words := make([]string, n)
	for j := range words {
		if rng.IntN(9) == 0 {
			words[j] = number(rng)
		} else {
			words[j] = vocabulary[rng.IntN(len(vocabulary))]
		}
	}
	switch k := rng.IntN(20); {
	case k < 3:
		for j := range words {
			words[j] = strings.ToUpper(words[j])
		}
	case k < 6:
		for j := range words {
			words[j] = capitalize(words[j])
		}
	default:
		words[0] = capitalize(words[0])
	}
	s := strings.Join(words, " ")
	if n > 2 && rng.IntN(3) == 0 {
		s += [...]string{".", ",", ":", "!", "?"}[rng.IntN(5)]
	}
	return s
}

func capitalize(w string) string {
	r := []rune(w)
	r[0] = unicode.ToUpper(r[0])
	return string(r)
}

func number(rng *rand.Rand) string {
	switch rng.IntN(4) {
	case 0:
		return fmt.Sprint(1990 + rng.IntN(40))
	case 1:
		return fmt.Sprintf("%d.%d", rng.IntN(100), rng.IntN(10))
	case 2:
		return fmt.Sprintf("%d%%", rng.IntN(101))
	default:
		return fmt.Sprint(rng.IntN(10000))
	}
}

// render draws p's lines with f and returns the page, skewed by p.SkewDeg.
func render(rng *rand.Rand, f Font, p *Page) (*image.RGBA, error) {
	ot, err := opentype.Parse(f.TTF)
	if err != nil {
		return nil, err
	}
	face, err := opentype.NewFace(ot, &opentype.FaceOptions{Size: p.SizePx, DPI: 72, Hinting: font.HintingFull})
	if err != nil {
		return nil, err
	}
	defer face.Close()
	px := p.SizePx
	pitch := int(math.Round(px * (1.5 + 0.6*rng.Float64())))
	margin := int(math.Round(px * (1.5 + 1.5*rng.Float64())))
	textW := 0
	for _, l := range p.Lines {
		textW = max(textW, font.MeasureString(face, l).Ceil())
	}
	w := textW + 2*margin + int(float64(textW)*0.5*rng.Float64())
	h := 2*margin + pitch*len(p.Lines)
	// Room for the skew: a line of width w rises w·tan(θ).
	h += int(math.Ceil(float64(w) * math.Abs(math.Tan(p.SkewDeg*math.Pi/180))))

	var bg, fg color.Gray
	if p.Inverted {
		bg, fg = color.Gray{uint8(10 + rng.IntN(60))}, color.Gray{uint8(200 + rng.IntN(56))}
	} else {
		bg, fg = color.Gray{uint8(215 + rng.IntN(41))}, color.Gray{uint8(rng.IntN(70))}
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.NewUniform(bg), image.Point{}, draw.Src)
	d := &font.Drawer{Dst: img, Src: image.NewUniform(fg), Face: face}
	top := margin + (h-2*margin-pitch*len(p.Lines))/2
	for i, l := range p.Lines {
		indent := 0
		if i > 0 && rng.IntN(4) == 0 {
			indent = int(px * 2 * rng.Float64())
		}
		d.Dot = fixed.P(margin+indent, top+pitch*i+int(px))
		d.DrawString(l)
	}
	if p.SkewDeg == 0 {
		return img, nil
	}
	// Rotate about the centre: dst = T(c)·R(θ)·T(−c)·src.
	th := p.SkewDeg * math.Pi / 180
	c, s := math.Cos(th), math.Sin(th)
	cx, cy := float64(w)/2, float64(h)/2
	m := f64.Aff3{c, -s, cx - c*cx + s*cy, s, c, cy - s*cx - c*cy}
	out := image.NewRGBA(img.Bounds())
	draw.Draw(out, out.Bounds(), image.NewUniform(bg), image.Point{}, draw.Src)
	xdraw.BiLinear.Transform(out, m, img, img.Bounds(), xdraw.Src, nil)
	return out, nil
}

// Text is the reference text of a page: its lines joined by newlines.
func (p Page) Text() string { return strings.Join(p.Lines, "\n") }

// WriteDir writes every page's image (page-NNN.png or .jpg) and one
// labels.json (the pages' metadata and lines) into dir, creating it.
func WriteDir(dir string, pages []Page) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, p := range pages {
		if err := os.WriteFile(filepath.Join(dir, p.Name+p.Ext()), p.Image, 0o644); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(pages, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "labels.json"), append(b, '\n'), 0o644)
}
