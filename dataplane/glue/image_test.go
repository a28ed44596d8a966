package glue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"strings"
	"testing"

	"github.com/ipa-serving/ipa/models"
)

func solid(w, h int, c color.RGBA) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, c.A
	}
	return img
}

func encodePNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodeJPEG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// pngWithSize rewrites the IHDR of a valid PNG to claim w×h (fixing its CRC).
func pngWithSize(t testing.TB, w, h uint32) []byte {
	b := encodePNG(t, solid(1, 1, color.RGBA{1, 2, 3, 255}))
	// signature (8) | length (4) | "IHDR" (4) | width | height | … | CRC
	binary.BigEndian.PutUint32(b[16:], w)
	binary.BigEndian.PutUint32(b[20:], h)
	binary.BigEndian.PutUint32(b[29:], crc32.ChecksumIEEE(b[12:29]))
	return b
}

// jpegWithSize rewrites the SOF0 frame header of a valid JPEG to claim w×h.
func jpegWithSize(t testing.TB, w, h uint16) []byte {
	b := encodeJPEG(t, solid(8, 8, color.RGBA{1, 2, 3, 255}))
	i := bytes.Index(b, []byte{0xff, 0xc0})
	if i < 0 {
		t.Fatal("no SOF0 in the encoded JPEG")
	}
	// marker (2) | length (2) | precision (1) | height (2) | width (2)
	binary.BigEndian.PutUint16(b[i+5:], h)
	binary.BigEndian.PutUint16(b[i+7:], w)
	return b
}

func TestDecodeImageReadsPNGAndJPEG(t *testing.T) {
	src := solid(33, 17, color.RGBA{200, 100, 50, 255})
	for _, tc := range []struct {
		name string
		data []byte
		tol  int
	}{
		{"png", encodePNG(t, src), 0},
		{"jpeg", encodeJPEG(t, src), 4},
	} {
		img, err := DecodeImage(tc.data)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := img.Bounds(); got != src.Bounds() {
			t.Fatalf("%s: bounds %v, want %v", tc.name, got, src.Bounds())
		}
		r, g, b, _ := img.At(16, 8).RGBA()
		for i, pair := range [][2]int{{int(r >> 8), 200}, {int(g >> 8), 100}, {int(b >> 8), 50}} {
			if d := pair[0] - pair[1]; d > tc.tol || d < -tc.tol {
				t.Errorf("%s: channel %d = %d, want %d±%d", tc.name, i, pair[0], pair[1], tc.tol)
			}
		}
	}
}

func TestDecodeImageErrorsNameTheProblem(t *testing.T) {
	good := encodePNG(t, solid(64, 64, color.RGBA{9, 9, 9, 255}))
	goodJPEG := encodeJPEG(t, solid(64, 64, color.RGBA{9, 9, 9, 255}))
	badIDAT := bytes.Clone(good)
	if i := bytes.Index(badIDAT, []byte("IDAT")); i > 0 {
		copy(badIDAT[i+4:], []byte{0xde, 0xad, 0xbe, 0xef})
	}
	for _, tc := range []struct {
		name string
		data []byte
		err  error
		msg  string
	}{
		{"empty", nil, ErrNotImage, "the body is empty"},
		{"gif", []byte("GIF89a\x01\x00\x01\x00"), ErrNotImage, `not a PNG or JPEG image (starts with "GIF89a\x01\x00")`},
		{"text", []byte("hello"), ErrNotImage, `(starts with "hello")`},
		{"png signature only", good[:8], ErrTruncated, "truncated image: PNG data ends after 8 bytes"},
		{"truncated png", good[:len(good)/2], ErrTruncated, "truncated image: PNG"},
		{"truncated jpeg", goodJPEG[:len(goodJPEG)/2], ErrTruncated, "truncated image: JPEG"},
		{"corrupt png", badIDAT, ErrBadImage, "invalid image: PNG"},
		{"png too large", pngWithSize(t, 10000, 6000), ErrTooLarge, "PNG image is 10000×6000 = 60.0 megapixels; the limit is 50.0"},
		{"jpeg too large", jpegWithSize(t, 65000, 65000), ErrTooLarge, "JPEG image is 65000×65000"},
		{"png zero width", pngWithSize(t, 0, 10), ErrBadImage, "PNG"},
	} {
		img, err := DecodeImage(tc.data)
		if err == nil {
			t.Errorf("%s: decoded %v, want an error", tc.name, img.Bounds())
			continue
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: error %q does not wrap %q", tc.name, err, tc.err)
		}
		if !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: error %q does not contain %q", tc.name, err, tc.msg)
		}
	}
}

func TestDecodeImageAcceptsTheLimit(t *testing.T) {
	// A header at exactly the limit passes the size check (and then fails
	// as truncated, without allocating 50 megapixels of nothing useful).
	_, err := decodeImage(pngWithSize(t, 1000, 1000), 1_000_000)
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("1000×1000 at a 1 MP limit: %v, want a truncation error", err)
	}
	_, err = decodeImage(pngWithSize(t, 1000, 1001), 1_000_000)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("1000×1001 at a 1 MP limit: %v, want ErrTooLarge", err)
	}
}

func TestCropClipsAndSharesPixels(t *testing.T) {
	img := solid(10, 10, color.RGBA{1, 2, 3, 255})
	c := Crop(img, image.Rect(5, 5, 20, 20))
	if c.Bounds() != image.Rect(5, 5, 10, 10) {
		t.Fatalf("bounds %v", c.Bounds())
	}
	img.Pix[img.PixOffset(6, 6)] = 99
	if r, _, _, _ := c.At(6, 6).RGBA(); r>>8 != 99 {
		t.Fatalf("crop does not share pixels")
	}
	if !Crop(img, image.Rect(20, 20, 30, 30)).Bounds().Empty() {
		t.Fatal("crop outside the image is not empty")
	}
	// An image type without SubImage is copied.
	u := image.NewUniform(color.RGBA{7, 7, 7, 255})
	uc := Crop(boundedUniform{u, image.Rect(0, 0, 4, 4)}, image.Rect(1, 1, 3, 3))
	if uc.Bounds().Size() != image.Pt(2, 2) {
		t.Fatalf("copied crop bounds %v", uc.Bounds())
	}
}

type boundedUniform struct {
	*image.Uniform
	r image.Rectangle
}

func (b boundedUniform) Bounds() image.Rectangle { return b.r }

func TestStack(t *testing.T) {
	a := fp32("x", 1, 2)
	b := fp32("x", 2, 2)
	putF32(a.Data, 1, 1)
	putF32(b.Data, 3, 2)
	s, err := Stack([]models.Tensor{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if models.FormatShape(s.Shape) != models.FormatShape([]int64{3, 2}) || getF32(s.Data, 1) != 1 || getF32(s.Data, 5) != 2 {
		t.Fatalf("stacked %v %v", s.Shape, s.Data)
	}
	if _, err := Stack([]models.Tensor{a, fp32("x", 1, 3)}); err == nil {
		t.Fatal("stacked different item shapes")
	}
	if _, err := Stack([]models.Tensor{a, fp32("y", 1, 2)}); err == nil {
		t.Fatal("stacked different names")
	}
	if _, err := Stack(nil); err == nil {
		t.Fatal("stacked nothing")
	}
}

// FuzzDecodeImage checks that no input panics or returns an image over the
// limit or an empty image without an error. Inputs are capped at 64 KiB and
// the pixel limit at 1 MP so that each run stays fast.
func FuzzDecodeImage(f *testing.F) {
	f.Add(encodePNG(f, solid(3, 2, color.RGBA{1, 2, 3, 255})))
	f.Add(encodeJPEG(f, solid(9, 9, color.RGBA{1, 2, 3, 255})))
	f.Add(pngWithSize(f, 4000, 4000))
	f.Add(jpegWithSize(f, 100, 100))
	f.Add([]byte("\x89PNG\r\n\x1a\n"))
	f.Add([]byte{0xff, 0xd8, 0xff, 0xe0})
	const limit = 1_000_000
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 64<<10 {
			return
		}
		img, err := decodeImage(b, limit)
		checkDecoded(t, img, err, limit)
	})
}

// checkDecoded fails t unless err is nil and img a non-empty image within
// limit pixels, or err is a classified error and img nil. It reports
// whether img was decoded.
func checkDecoded(t *testing.T, img image.Image, err error, limit int) bool {
	t.Helper()
	if err != nil {
		if img != nil {
			t.Fatal("an image with an error")
		}
		if !errors.Is(err, ErrNotImage) && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrBadImage) {
			t.Fatalf("unclassified error %q", err)
		}
		return false
	}
	if r := img.Bounds(); r.Empty() || r.Dx()*r.Dy() > limit {
		t.Fatalf("decoded bounds %v", r)
	}
	return true
}

// withOrientation inserts an EXIF APP1 segment with Orientation o (a
// big-endian TIFF header, one IFD entry) after a JPEG's SOI marker, as a
// camera writes it.
func withOrientation(b []byte, o uint16) []byte {
	tiff := []byte{'M', 'M', 0, 42, 0, 0, 0, 8, // header, IFD0 at offset 8
		0, 1, // one entry
		0x01, 0x12, 0, 3, 0, 0, 0, 1, byte(o >> 8), byte(o), 0, 0, // Orientation, SHORT, 1 value
		0, 0, 0, 0} // no next IFD
	seg := append([]byte("Exif\x00\x00"), tiff...)
	app1 := append([]byte{0xff, 0xe1, byte((len(seg) + 2) >> 8), byte(len(seg) + 2)}, seg...)
	return append(append(append([]byte(nil), b[:2]...), app1...), b[2:]...)
}

// A JPEG a camera stored sideways (EXIF Orientation 6: rotate 90° clockwise
// to view, a phone's portrait photo) is decoded upright, as every viewer
// shows it: the model sees what the user sees. Orientation 1, or none, is
// the image as stored.
func TestDecodeImageTurnsAJPEGUprightByItsEXIFOrientation(t *testing.T) {
	// 40×20 as stored: red left half, blue right half.
	src := image.NewRGBA(image.Rect(0, 0, 40, 20))
	for y := range 20 {
		for x := range 40 {
			c := color.RGBA{220, 20, 20, 255}
			if x >= 20 {
				c = color.RGBA{20, 20, 220, 255}
			}
			src.Set(x, y, c)
		}
	}
	stored := encodeJPEG(t, src)
	red := func(img image.Image, x, y int) bool {
		r, _, b, _ := img.At(x, y).RGBA()
		return r > b
	}
	for _, tc := range []struct {
		name       string
		data       []byte
		w, h       int
		redAtStart bool // the red half is on top (rotated) or on the left (as stored)
	}{
		{"no EXIF", stored, 40, 20, true},
		{"orientation 1", withOrientation(stored, 1), 40, 20, true},
		{"orientation 6", withOrientation(stored, 6), 20, 40, true},  // rotated 90° clockwise: the left half goes on top
		{"orientation 8", withOrientation(stored, 8), 20, 40, false}, // rotated 90° counter-clockwise: the left half goes to the bottom
		{"orientation 3", withOrientation(stored, 3), 40, 20, false}, // 180°: red on the right
	} {
		img, err := DecodeImage(tc.data)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if b := img.Bounds(); b.Dx() != tc.w || b.Dy() != tc.h {
			t.Fatalf("%s: %v, want %d×%d", tc.name, b, tc.w, tc.h)
		}
		if got := red(img, 5, 5); got != tc.redAtStart {
			t.Errorf("%s: red at the top-left corner: %v, want %v", tc.name, got, tc.redAtStart)
		}
	}
}
