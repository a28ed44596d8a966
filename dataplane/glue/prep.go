package glue

import (
	"fmt"
	"image"
	"image/color"
	"math"

	"golang.org/x/image/draw"

	"github.com/ipa-serving/ipa/models"
)

// Prep is a resolved image preprocessing (models.ImagePrep with every size
// known): it turns an image into one [1,C,H,W] or [1,H,W,C] tensor.
//
//	value = (pixel / Scale − Mean[c]) / Std[c]
//
// for tensor channel c, computed in float32 (so that Prep reproduces the
// built-in inputs bit for bit), or the raw pixel for UINT8.
type Prep struct {
	// Resize is one of models.ResizeStretch, ResizeLetterbox,
	// ResizeCentreCrop, ResizeShorterSide.
	Resize string
	// H and W are the tensor image's size.
	H, W int
	// Shorter is the shorter side after a shorter-side resize.
	Shorter int
	// TopLeft places a letterbox's image at the top-left corner instead of
	// the centre.
	TopLeft bool
	// Pad is the letterbox's padding and the background of transparent
	// pixels in letterbox mode (white in the others).
	Pad    color.RGBA
	Kernel draw.Interpolator
	NHWC   bool
	// Channels is "RGB", "BGR" or "GRAY".
	Channels string
	Scale    float32
	// Mean and Std are per tensor channel (in Channels' order).
	Mean, Std [3]float32
	DType     models.DataType
}

var kernels = map[string]draw.Interpolator{
	"": draw.ApproxBiLinear, "approx-bilinear": draw.ApproxBiLinear, "bilinear": draw.BiLinear,
	"nearest": draw.NearestNeighbor, "catmull-rom": draw.CatmullRom,
}

// NewPrep resolves spec for the model input in: sizes the spec leaves out
// come from in's shape, which must then fix them; the layout, channel count
// and datatype must agree with in.
func NewPrep(spec models.ImagePrep, in models.TensorSpec) (Prep, error) {
	p := Prep{Resize: spec.ResizeMode(), Shorter: spec.Shorter, TopLeft: spec.Align == "top-left",
		Kernel: kernels[spec.Interpolation], NHWC: spec.Layout == "NHWC", Channels: spec.Channels, Scale: 255}
	if p.Resize == "" || p.Kernel == nil {
		return p, fmt.Errorf("resize %q or interpolation %q unknown", spec.Resize, spec.Interpolation)
	}
	if p.Channels == "" {
		p.Channels = "RGB"
	}
	if len(in.Shape) != 4 {
		return p, fmt.Errorf("input %q is %s%s; image preprocessing makes rank-4 tensors (%s)", in.Name, in.DataType, models.FormatShape(in.Shape), layoutName(p.NHWC))
	}
	cDim, hDim, wDim := 1, 2, 3
	if p.NHWC {
		cDim, hDim, wDim = 3, 1, 2
	}
	if c := in.Shape[cDim]; c > 0 && c != int64(p.channels()) {
		return p, fmt.Errorf("input %q is %s: dimension %d has %d channels, %s in %s gives %d (set layout or channels)",
			in.Name, models.FormatShape(in.Shape), cDim, c, p.Channels, layoutName(p.NHWC), p.channels())
	}
	p.H, p.W = int(in.Shape[hDim]), int(in.Shape[wDim])
	if len(spec.Size) == 2 {
		h, w := spec.Size[0], spec.Size[1]
		if p.H > 0 && p.H != h || p.W > 0 && p.W != w {
			return p, fmt.Errorf("size [%d, %d] but input %q fixes %s", h, w, in.Name, models.FormatShape(in.Shape))
		}
		p.H, p.W = h, w
	}
	if p.H <= 0 || p.W <= 0 {
		return p, fmt.Errorf("input %q is %s: give the image's size (size: [height, width])", in.Name, models.FormatShape(in.Shape))
	}
	if p.Resize == models.ResizeShorterSide && p.Shorter == 0 {
		p.Shorter = int(math.Round(256 * float64(min(p.H, p.W)) / 224))
	}
	if len(spec.Pad) == 3 {
		p.Pad = color.RGBA{uint8(spec.Pad[0]), uint8(spec.Pad[1]), uint8(spec.Pad[2]), 255}
	} else {
		p.Pad = color.RGBA{0, 0, 0, 255}
	}
	if spec.Scale != 0 {
		p.Scale = float32(spec.Scale)
	}
	for c := range 3 {
		p.Mean[c], p.Std[c] = 0, 1
		if n := len(spec.Mean); n > 0 {
			p.Mean[c] = float32(spec.Mean[min(c, n-1)])
		}
		if n := len(spec.Std); n > 0 {
			p.Std[c] = float32(spec.Std[min(c, n-1)])
		}
	}
	p.DType = in.DataType
	if spec.DType != "" {
		dt, err := models.ParseDataType(spec.DType)
		if err != nil {
			return p, err
		}
		if dt != in.DataType {
			return p, fmt.Errorf("dtype %s but input %q is %s", dt, in.Name, in.DataType)
		}
	}
	if p.DType != models.FP32 && p.DType != models.UINT8 {
		return p, fmt.Errorf("input %q is %s; image preprocessing makes FP32 or UINT8", in.Name, p.DType)
	}
	return p, nil
}

func layoutName(nhwc bool) string {
	if nhwc {
		return "NHWC"
	}
	return "NCHW"
}

func (p *Prep) channels() int {
	if p.Channels == "GRAY" {
		return 1
	}
	return 3
}

// Shape returns the tensor shape Preprocess makes.
func (p *Prep) Shape() []int64 {
	c, h, w := int64(p.channels()), int64(p.H), int64(p.W)
	if p.NHWC {
		return []int64{1, h, w, c}
	}
	return []int64{1, c, h, w}
}

// Geometry records where Preprocess put an image in its tensor: tensor
// pixel (x, y) shows image pixel ((x − OffX)/ScaleX, (y − OffY)/ScaleY)
// relative to the image's Origin.
type Geometry struct {
	ScaleX, ScaleY float64
	OffX, OffY     float64
	// Origin is the image's Bounds().Min, Width×Height its size.
	Origin        image.Point
	Width, Height int
	// W×H is the tensor image's size.
	W, H int
}

// Rect maps the box (x0, y0)–(x1, y1) in tensor pixels to the smallest
// integer rectangle of the image that holds it, clipped to the image, in
// the image's own coordinates (Origin added); empty (the zero rectangle)
// when the box misses the image.
func (g Geometry) Rect(x0, y0, x1, y1 float64) image.Rectangle {
	if g.ScaleX == 0 || g.ScaleY == 0 {
		return image.Rectangle{}
	}
	ix0, iy0 := (x0-g.OffX)/g.ScaleX, (y0-g.OffY)/g.ScaleY
	ix1, iy1 := (x1-g.OffX)/g.ScaleX, (y1-g.OffY)/g.ScaleY
	r := image.Rect(int(math.Floor(ix0)), int(math.Floor(iy0)), int(math.Ceil(ix1)), int(math.Ceil(iy1))).
		Intersect(image.Rect(0, 0, g.Width, g.Height))
	if r.Empty() {
		return image.Rectangle{}
	}
	return r.Add(g.Origin)
}

// Preprocess turns img into the tensor p describes, named name, and says
// where the image went. An empty img gives a tensor of the padding colour.
//
//   - stretch resizes to W×H;
//   - letterbox resizes keeping the aspect ratio to fit W×H, centred (or
//     top-left), the rest padded;
//   - centre-crop resizes keeping the aspect ratio to cover W×H and cuts the
//     centre W×H out;
//   - shorter-side resizes keeping the aspect ratio so that the shorter side
//     is Shorter, then cuts the centre W×H out (padded where the image is
//     smaller), as torchvision's Resize + CenterCrop.
//
// Only the part of the resized image the window keeps is resampled, so a
// long strip (1×3000) costs no more than a square.
func Preprocess(img image.Image, p Prep, name string) (models.Tensor, Geometry) {
	t := models.Tensor{Name: name, DataType: p.DType, Shape: p.Shape()}
	t.Data = make([]byte, models.Elements(t.Shape)*p.DType.Size())
	b := img.Bounds()
	g := Geometry{Origin: b.Min, Width: b.Dx(), Height: b.Dy(), W: p.W, H: p.H}
	lut := p.lut()
	if b.Empty() {
		p.fill(t, lut, p.Pad, image.Rect(0, 0, p.W, p.H))
		return t, g
	}
	w, h := float64(b.Dx()), float64(b.Dy())
	switch p.Resize {
	case models.ResizeStretch:
		g.ScaleX, g.ScaleY = float64(p.W)/w, float64(p.H)/h
		rgba := resized(img, p.W, p.H, p.Kernel)
		p.write(t, lut, rgba, image.Point{})
	case models.ResizeLetterbox:
		s := math.Min(float64(p.W)/w, float64(p.H)/h)
		rw := min(p.W, max(1, int(math.Round(w*s))))
		rh := min(p.H, max(1, int(math.Round(h*s))))
		px, py := (p.W-rw)/2, (p.H-rh)/2
		if p.TopLeft {
			px, py = 0, 0
		}
		g.ScaleX, g.ScaleY, g.OffX, g.OffY = s, s, float64(px), float64(py)
		dst := image.NewRGBA(image.Rect(0, 0, p.W, p.H))
		dr := image.Rect(px, py, px+rw, py+rh)
		scaleInto(dst, dr, img, p.Pad, p.Kernel)
		p.fill(t, lut, p.Pad, image.Rect(0, 0, p.W, p.H))
		p.writeRect(t, lut, dst, dr)
	default: // centre-crop, shorter-side: resize keeping the aspect, cut the centre
		var rw, rh int
		if p.Resize == models.ResizeCentreCrop {
			s := math.Max(float64(p.W)/w, float64(p.H)/h)
			rw, rh = max(p.W, int(math.Round(w*s))), max(p.H, int(math.Round(h*s)))
		} else if w <= h {
			rw, rh = p.Shorter, max(1, int(math.Round(h*float64(p.Shorter)/w)))
		} else {
			rw, rh = max(1, int(math.Round(w*float64(p.Shorter)/h))), p.Shorter
		}
		// torchvision CenterCrop: offset round((dim − size)/2).
		ox := int(math.Round(float64(rw-p.W) / 2))
		oy := int(math.Round(float64(rh-p.H) / 2))
		g.ScaleX, g.ScaleY, g.OffX, g.OffY = float64(rw)/w, float64(rh)/h, float64(-ox), float64(-oy)
		if ox < 0 || oy < 0 || rw-ox < p.W || rh-oy < p.H {
			p.fill(t, lut, p.Pad, image.Rect(0, 0, p.W, p.H)) // the window reaches past the image
		}
		side := int64(p.Shorter)
		if p.Resize == models.ResizeCentreCrop {
			side = int64(max(p.W, p.H))
		}
		if int64(rw)*int64(rh) > 4*side*side && ox >= 0 && oy >= 0 {
			// A long strip (1×3000 resized to 256×768000 would take 786
			// MB): resample only the part of the source the window keeps.
			fx, fy := w/float64(rw), h/float64(rh)
			src := image.Rect(b.Min.X+int(float64(ox)*fx), b.Min.Y+int(float64(oy)*fy),
				b.Min.X+int(math.Ceil(float64(ox+p.W)*fx)), b.Min.Y+int(math.Ceil(float64(oy+p.H)*fy)))
			rgba := resized(Crop(img, src), p.W, p.H, p.Kernel)
			p.write(t, lut, rgba, image.Point{})
			return t, g
		}
		rgba := resized(img, rw, rh, p.Kernel)
		p.write(t, lut, rgba, image.Pt(ox, oy))
	}
	return t, g
}

// lut maps each tensor channel's 8-bit value to its tensor value.
func (p *Prep) lut() *channelLUT {
	var l channelLUT
	for c := range 3 {
		for v := range 256 {
			l[c][v] = (float32(v)/p.Scale - p.Mean[c]) / p.Std[c]
		}
	}
	return &l
}

// write fills the tensor from src, reading tensor pixel (x, y) at src pixel
// at + (x, y); pixels outside src keep what the tensor holds.
func (p *Prep) write(t models.Tensor, lut *channelLUT, src *image.RGBA, at image.Point) {
	r := image.Rect(0, 0, p.W, p.H).Add(at).Intersect(src.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		row := src.Pix[(y-src.Rect.Min.Y)*src.Stride:]
		for x := r.Min.X; x < r.Max.X; x++ {
			px := row[4*(x-src.Rect.Min.X):]
			p.put(t, lut, x-at.X, y-at.Y, px[0], px[1], px[2])
		}
	}
}

// writeRect writes the pixels of src inside r at the same tensor pixels.
func (p *Prep) writeRect(t models.Tensor, lut *channelLUT, src *image.RGBA, r image.Rectangle) {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		row := src.Pix[y*src.Stride:]
		for x := r.Min.X; x < r.Max.X; x++ {
			px := row[4*x:]
			p.put(t, lut, x, y, px[0], px[1], px[2])
		}
	}
}

// fill sets the tensor pixels of r to colour c.
func (p *Prep) fill(t models.Tensor, lut *channelLUT, c color.RGBA, r image.Rectangle) {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			p.put(t, lut, x, y, c.R, c.G, c.B)
		}
	}
}

// put writes one pixel at tensor position (x, y).
func (p *Prep) put(t models.Tensor, lut *channelLUT, x, y int, r, g, b uint8) {
	var v [3]uint8
	n := 3
	switch p.Channels {
	case "BGR":
		v = [3]uint8{b, g, r}
	case "GRAY":
		// ITU-R BT.601 luma, as color.GrayModel converts.
		v[0] = uint8((19595*uint32(r) + 38470*uint32(g) + 7471*uint32(b) + 1<<15) >> 16)
		n = 1
	default:
		v = [3]uint8{r, g, b}
	}
	plane := p.W * p.H
	for c := range n {
		i := c*plane + y*p.W + x
		if p.NHWC {
			i = (y*p.W+x)*n + c
		}
		if p.DType == models.UINT8 {
			t.Data[i] = v[c]
		} else {
			putF32(t.Data, i, lut[c][v[c]])
		}
	}
}
