package glue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"sync"

	"github.com/disintegration/imaging"
	"golang.org/x/image/draw"

	"github.com/ipa-serving/ipa/models"
)

// MaxPixels is the largest image DecodeImage accepts: 50 megapixels, checked
// on the header before any pixel is decoded (a decoded RGBA image of that size
// takes 200 MB).
const MaxPixels = 50_000_000

// Errors returned by DecodeImage (wrapped, with details); branch with errors.Is.
var (
	ErrNotImage  = errors.New("not a PNG or JPEG image")
	ErrTruncated = errors.New("truncated image")
	ErrTooLarge  = errors.New("image too large")
	ErrBadImage  = errors.New("invalid image")
)

var (
	pngMagic  = []byte("\x89PNG\r\n\x1a\n")
	jpegMagic = []byte{0xff, 0xd8, 0xff}
)

// DecodeImage decodes a PNG or JPEG image from raw request bytes. The format
// is chosen from the magic bytes, not from a registry, so no other format is
// ever decoded. Images over MaxPixels are rejected from their header. Errors
// name the problem and wrap ErrNotImage, ErrTruncated, ErrTooLarge or
// ErrBadImage.
func DecodeImage(b []byte) (image.Image, error) {
	return decodeImage(b, MaxPixels)
}

func decodeImage(b []byte, maxPixels int) (image.Image, error) {
	var (
		format       string
		decodeConfig func(io.Reader) (image.Config, error)
		decode       func(io.Reader) (image.Image, error)
	)
	switch {
	case len(b) == 0:
		return nil, fmt.Errorf("%w: the body is empty", ErrNotImage)
	case bytes.HasPrefix(b, pngMagic):
		format, decodeConfig, decode = "PNG", png.DecodeConfig, png.Decode
	case bytes.HasPrefix(b, jpegMagic):
		format, decodeConfig, decode = "JPEG", jpeg.DecodeConfig, decodeJPEG
	default:
		head := b[:min(len(b), 8)]
		return nil, fmt.Errorf("%w (starts with %q)", ErrNotImage, head)
	}
	cfg, err := decodeConfig(bytes.NewReader(b))
	if err != nil {
		return nil, decodeError(format, b, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, fmt.Errorf("%w: %s image is %d×%d pixels", ErrBadImage, format, cfg.Width, cfg.Height)
	}
	if px := int64(cfg.Width) * int64(cfg.Height); px > int64(maxPixels) {
		return nil, fmt.Errorf("%w: %s image is %d×%d = %.1f megapixels; the limit is %.1f",
			ErrTooLarge, format, cfg.Width, cfg.Height, float64(px)/1e6, float64(maxPixels)/1e6)
	}
	img, err := decode(bytes.NewReader(b))
	if err != nil {
		return nil, decodeError(format, b, err)
	}
	if format == "JPEG" && !jpegComplete(b) {
		// image/jpeg returns what it has of a progressive image cut short
		// (a blurred or grey picture) without an error; a baseline one
		// fails with io.ErrUnexpectedEOF. Both are truncated.
		return nil, fmt.Errorf("%w: JPEG data ends after %d bytes without its end-of-image marker", ErrTruncated, len(b))
	}
	if c, ok := img.(*image.CMYK); ok {
		img = cmykToRGBA(c)
	}
	return img, nil
}

// decodeJPEG decodes a JPEG upright: a camera that stored the picture
// sideways says so in its EXIF Orientation tag, which every viewer applies
// (a phone's portrait photo, a scanned page), and so does the model's input.
// imaging applies it (the image as decoded when the tag is absent or 1).
func decodeJPEG(r io.Reader) (image.Image, error) {
	return imaging.Decode(r, imaging.AutoOrientation(true))
}

// jpegComplete reports whether a JPEG stream has its end-of-image marker
// (FF D9) after its first start-of-scan (FF DA). Entropy-coded data escapes
// every FF byte (FF 00) and restart markers are FF D0–D7, so an FF D9 after
// the first scan is the end of the image; one before it belongs to an
// embedded thumbnail. Bytes after the marker (padding some cameras append)
// are allowed.
func jpegComplete(b []byte) bool {
	sos := bytes.Index(b, []byte{0xff, 0xda})
	return sos >= 0 && bytes.LastIndex(b, []byte{0xff, 0xd9}) > sos
}

// cmykLUT maps (255−C)·(255−K) (0…65025) to an sRGB channel value.
var cmykLUT = sync.OnceValue(func() *[65026]uint8 {
	var t [65026]uint8
	for i := range t {
		v := float64(i) / 65025 // linear light
		if v <= 0.0031308 {
			v *= 12.92
		} else {
			v = 1.055*math.Pow(v, 1/2.4) - 0.055
		}
		t[i] = uint8(math.Round(v * 255))
	}
	return &t
})

// cmykToRGBA converts a decoded CMYK JPEG (image/jpeg has already undone
// Adobe's inverted storage and, for YCCK, the YCbCr transform) to RGB. Without
// an ICC profile, ink coverage is taken to act on linear light,
// R = (1−C)(1−K) then sRGB-encoded: the inverse of ImageMagick's
// sRGB→CMYK (which works in linear RGB). On Go's reference frame
// (testdata/video-001.cmyk.jpeg against video-001.png) this is 1.7/255 off on
// average, against 35/255 for color.CMYKToRGB's device formula, which reads
// the ink as acting on gamma-encoded values and comes out far too dark.
func cmykToRGBA(c *image.CMYK) *image.RGBA {
	lut := cmykLUT()
	b := c.Bounds()
	out := image.NewRGBA(b)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		src := c.Pix[c.PixOffset(b.Min.X, y):]
		dst := out.Pix[out.PixOffset(b.Min.X, y):]
		for x := 0; x < b.Dx(); x++ {
			s, d := src[4*x:4*x+4], dst[4*x:4*x+4]
			k := 255 - int(s[3])
			d[0] = lut[(255-int(s[0]))*k]
			d[1] = lut[(255-int(s[1]))*k]
			d[2] = lut[(255-int(s[2]))*k]
			d[3] = 255
		}
	}
	return out
}

func decodeError(format string, b []byte, err error) error {
	// image/png reports pixel data that stops early (an IDAT stream cut
	// short) as the FormatError "not enough pixel data"; image/jpeg reports
	// a scan cut short as "short Huffman data" or another format error, so a
	// JPEG that fails without its end-of-image marker counts as truncated.
	var pngErr png.FormatError
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.As(err, &pngErr) && pngErr == "not enough pixel data" ||
		format == "JPEG" && !jpegComplete(b) {
		return fmt.Errorf("%w: %s data ends after %d bytes", ErrTruncated, format, len(b))
	}
	return fmt.Errorf("%w: %s: %v", ErrBadImage, format, err)
}

// Crop returns the part of img inside r (clipped to img's bounds), sharing
// pixels with img when it supports SubImage. The result may be empty.
func Crop(img image.Image, r image.Rectangle) image.Image {
	r = r.Intersect(img.Bounds())
	if s, ok := img.(interface {
		SubImage(image.Rectangle) image.Image
	}); ok {
		return s.SubImage(r)
	}
	dst := image.NewRGBA(image.Rect(0, 0, r.Dx(), r.Dy()))
	draw.Draw(dst, dst.Bounds(), img, r.Min, draw.Src)
	return dst
}

// scaleInto resamples all of src into dr of dst with kernel, over a
// background of bg: transparent source pixels come out as bg.
//
// OCR uses draw.BiLinear, which widens its support when shrinking and so
// anti-aliases (the text-line crops keep thin strokes). The classifier and
// face inputs use draw.ApproxBiLinear: 2.7× faster on a 900×400 page
// (BenchmarkClassifyPagePreprocessing: 26 ms → 10 ms), which matters because
// this runs on the router's cores for every request, outside any stage's
// profile.
func scaleInto(dst *image.RGBA, dr image.Rectangle, src image.Image, bg color.RGBA, kernel draw.Interpolator) {
	draw.Draw(dst, dr, image.NewUniform(bg), image.Point{}, draw.Src)
	if src.Bounds().Empty() || dr.Empty() {
		return
	}
	kernel.Scale(dst, dr, src, src.Bounds(), draw.Over, nil)
}

var white = color.RGBA{255, 255, 255, 255}

// resized returns src resampled to w×h as an opaque RGBA image at origin 0,0.
func resized(src image.Image, w, h int, kernel draw.Interpolator) *image.RGBA {
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	scaleInto(dst, dst.Bounds(), src, white, kernel)
	return dst
}

// channelLUT maps an 8-bit value of each channel to (v/255 − mean)/std.
type channelLUT [3][256]float32

func newLUT(mean, std [3]float32) *channelLUT {
	var l channelLUT
	for c := range 3 {
		for v := range 256 {
			l[c][v] = (float32(v)/255 - mean[c]) / std[c]
		}
	}
	return &l
}

func putF32(b []byte, i int, v float32) {
	binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
}

func getF32(b []byte, i int) float32 {
	return math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
}

// fp32 returns a zeroed FP32 tensor.
func fp32(name string, shape ...int64) models.Tensor {
	return models.Tensor{Name: name, DataType: models.FP32, Shape: shape,
		Data: make([]byte, 4*models.Elements(shape))}
}

// fill sets every element of an FP32 tensor to v.
func fill(t models.Tensor, v float32) {
	if v == 0 {
		return
	}
	for i := range len(t.Data) / 4 {
		putF32(t.Data, i, v)
	}
}

// checkFP32 checks t's datatype, rank, data length and that row is a valid
// index of its batch dimension.
func checkFP32(t models.Tensor, rank, row int) error {
	if t.DataType != models.FP32 {
		return fmt.Errorf("tensor %q is %s; expected FP32", t.Name, t.DataType)
	}
	if len(t.Shape) != rank {
		return fmt.Errorf("tensor %q has shape %s; expected rank %d", t.Name, models.FormatShape(t.Shape), rank)
	}
	for _, d := range t.Shape {
		if d < 0 {
			return fmt.Errorf("tensor %q has a negative dimension in %s", t.Name, models.FormatShape(t.Shape))
		}
	}
	if want := 4 * models.Elements(t.Shape); len(t.Data) != want {
		return fmt.Errorf("tensor %q of shape %s needs %d bytes, has %d", t.Name, models.FormatShape(t.Shape), want, len(t.Data))
	}
	if row < 0 || row >= int(t.Shape[0]) {
		return fmt.Errorf("row %d out of range for tensor %q with batch %d", row, t.Name, t.Shape[0])
	}
	return nil
}

// Stack concatenates tensors of the same name, datatype and item shape along
// dimension 0, e.g. the single-image inputs of several crops into one batch.
func Stack(ts []models.Tensor) (models.Tensor, error) {
	if len(ts) == 0 {
		return models.Tensor{}, errors.New("glue.Stack: no tensors")
	}
	first := ts[0]
	if len(first.Shape) == 0 {
		return models.Tensor{}, fmt.Errorf("glue.Stack: tensor %q is a scalar", first.Name)
	}
	shape := append([]int64(nil), first.Shape...)
	shape[0] = 0
	size := 0
	for i, t := range ts {
		if t.Name != first.Name || t.DataType != first.DataType || len(t.Shape) != len(first.Shape) {
			return models.Tensor{}, fmt.Errorf("glue.Stack: tensor %d (%q %s%s) does not match tensor 0 (%q %s%s)",
				i, t.Name, t.DataType, models.FormatShape(t.Shape), first.Name, first.DataType, models.FormatShape(first.Shape))
		}
		for j := 1; j < len(t.Shape); j++ {
			if t.Shape[j] != first.Shape[j] {
				return models.Tensor{}, fmt.Errorf("glue.Stack: tensor %d has shape %s, tensor 0 %s",
					i, models.FormatShape(t.Shape), models.FormatShape(first.Shape))
			}
		}
		shape[0] += t.Shape[0]
		size += len(t.Data)
	}
	data := make([]byte, 0, size)
	for _, t := range ts {
		data = append(data, t.Data...)
	}
	return models.Tensor{Name: first.Name, DataType: first.DataType, Shape: shape, Data: data}, nil
}
