package glue

import (
	"errors"
	"image"
	"image/color"
	"image/draw"
	"os"
	"testing"
)

// pattern is an image with detail everywhere, so that every part of its
// encoding carries pixels.
func pattern(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x * 7), uint8(y * 5), uint8(x*y + 3), 255})
		}
	}
	return img
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Truncated images are rejected the same way whatever their format: a
// baseline JPEG, a progressive JPEG (which image/jpeg decodes into a partial
// picture without an error) and a PNG, cut anywhere after the header,
// including just before their last byte.
func TestDecodeImageRejectsTruncatedImagesAlike(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"baseline JPEG", encodeJPEG(t, pattern(64, 48))},
		{"progressive JPEG", readTestdata(t, "video-001.progressive.jpeg")},
		{"PNG", encodePNG(t, pattern(64, 48))},
	} {
		if _, err := DecodeImage(tc.data); err != nil {
			t.Fatalf("%s, whole: %v", tc.name, err)
		}
		n := len(tc.data)
		for _, cut := range []int{n * 3 / 10, n / 2, n * 9 / 10, n - 2, n - 1} {
			img, err := DecodeImage(tc.data[:cut])
			if !errors.Is(err, ErrTruncated) || img != nil {
				t.Errorf("%s cut at %d of %d bytes: %v, want ErrTruncated", tc.name, cut, n, err)
			}
		}
	}
	// Bytes after a JPEG's end-of-image marker (camera padding) are fine.
	padded := append(readTestdata(t, "video-001.progressive.jpeg"), 0, 0, 0, 0)
	if _, err := DecodeImage(padded); err != nil {
		t.Errorf("JPEG with trailing padding: %v", err)
	}
}

// meanDiff returns the mean absolute difference of the RGB channels of a
// and b, as 0–255 levels.
func meanDiff(a, b image.Image) float64 {
	ra, rb := image.NewRGBA(a.Bounds()), image.NewRGBA(b.Bounds())
	draw.Draw(ra, ra.Bounds(), a, a.Bounds().Min, draw.Src)
	draw.Draw(rb, rb.Bounds(), b, b.Bounds().Min, draw.Src)
	var sum, n float64
	for i := range ra.Pix {
		if i%4 != 3 {
			d := float64(ra.Pix[i]) - float64(rb.Pix[i])
			sum, n = sum+max(d, -d), n+1
		}
	}
	return sum / n
}

// An Adobe (inverted) CMYK JPEG comes out in the colours of the RGB frame
// it was made from: JPEG noise only, not the 35 levels of the device formula.
func TestDecodeImageConvertsCMYKToTheColoursOfTheReference(t *testing.T) {
	ref, err := DecodeImage(readTestdata(t, "video-001.png"))
	if err != nil {
		t.Fatal(err)
	}
	cmyk, err := DecodeImage(readTestdata(t, "video-001.cmyk.jpeg"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cmyk.(*image.CMYK); ok {
		t.Fatal("a CMYK image reaches the model code unconverted")
	}
	if d := meanDiff(cmyk, ref); d > 3 {
		t.Errorf("CMYK JPEG is %.1f levels off the reference on average, want ≤ 3", d)
	}
	// The same frame as a YCbCr JPEG, for scale: what JPEG alone costs.
	rgb, err := DecodeImage(readTestdata(t, "video-001.progressive.jpeg"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("mean difference to the reference: CMYK %.2f, YCbCr JPEG %.2f levels", meanDiff(cmyk, ref), meanDiff(rgb, ref))
}
