package glue

import (
	"image"
	"image/color"
	"image/draw"
	"testing"

	"golang.org/x/image/font"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/fixed"
)

// renderPage draws lines of text in black on a white page with the TrueType
// font ttf at px pixels, line pitch 1.8×px, margins of 2×px. The page is as
// wide as the longest line needs.
func renderPage(t testing.TB, ttf []byte, px float64, lines []string, width int) *image.RGBA {
	t.Helper()
	f, err := opentype.Parse(ttf)
	if err != nil {
		t.Fatal(err)
	}
	face, err := opentype.NewFace(f, &opentype.FaceOptions{Size: px, DPI: 72, Hinting: font.HintingFull})
	if err != nil {
		t.Fatal(err)
	}
	defer face.Close()
	margin := int(2 * px)
	pitch := int(1.8 * px)
	w := 0
	for _, l := range lines {
		w = max(w, font.MeasureString(face, l).Ceil())
	}
	img := image.NewRGBA(image.Rect(0, 0, max(width, w+2*margin), 2*margin+pitch*len(lines)))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	d := &font.Drawer{Dst: img, Src: image.NewUniform(color.Black), Face: face}
	for i, l := range lines {
		d.Dot = fixed.P(margin, margin+pitch*i+int(px))
		d.DrawString(l)
	}
	return img
}
