package glue

import (
	"crypto/sha256"
	"fmt"
	"image"
	"image/color"
	"strings"
	"testing"

	"github.com/ipa-serving/ipa/models"
)

func goldenImages(t *testing.T) map[string]image.Image {
	grad := func(w, h int) image.Image {
		img := image.NewRGBA(image.Rect(0, 0, w, h))
		for y := range h {
			for x := range w {
				img.Set(x, y, color.RGBA{uint8(x * 7), uint8(y * 5), uint8(x*y + 3), uint8(128 + (x+y)%128)})
			}
		}
		return img
	}
	return map[string]image.Image{
		"grad-300x200": grad(300, 200),
		"grad-90x400":  grad(90, 400),
		"grad-224x224": grad(224, 224),
		"strip-1x3000": grad(1, 3000),
		"strip-3000x2": grad(3000, 2),
		"frame":        speakersFrame(t),
		"frame-crop":   Crop(speakersFrame(t), image.Rect(10, 5, 70, 80)),
		"empty":        image.NewRGBA(image.Rectangle{}),
		"transparent":  image.NewRGBA(image.Rect(0, 0, 50, 30)),
	}
}

// builtinInputHashes are the sha256 prefixes of ClassifyInput's and
// FaceInput's tensors before they were re-expressed as Preprocess with
// ImageNetPrep and FacePrep (commit dd1aaa8): the declarative form must
// reproduce the built-in glue bit for bit.
var builtinInputHashes = map[string]string{
	"classify empty 224":        "b6b5e270cc3ba102",
	"classify empty 96":         "fdc171aecbdeeeec",
	"classify frame 224":        "e7af83eeeac0657c",
	"classify frame 96":         "f519741a4c85be88",
	"classify frame-crop 224":   "7008a33a19c85963",
	"classify frame-crop 96":    "3e35b814570fda77",
	"classify grad-224x224 224": "87a687e38c9186aa",
	"classify grad-224x224 96":  "acbe43fb0348d20d",
	"classify grad-300x200 224": "bf6611d2aa89a54e",
	"classify grad-300x200 96":  "012e3c089c84fbd1",
	"classify grad-90x400 224":  "5ccab45fa38107ec",
	"classify grad-90x400 96":   "6e6e2d4f6a8a7cae",
	"classify strip-1x3000 224": "dbb785fb2fc7dec5",
	"classify strip-1x3000 96":  "e47f5178ec07bc22",
	"classify strip-3000x2 224": "4c399557ce2fc425",
	"classify strip-3000x2 96":  "89352ba3fb93b537",
	"classify transparent 224":  "06adada88ba01de4",
	"classify transparent 96":   "c67137d10585af3c",
	"face empty 128":            "e4cfe5ee4b29ce7f",
	"face empty 256":            "00cbbe71c8e0229f",
	"face frame 128":            "5c5aec02f5367999",
	"face frame 256":            "88066246ab612025",
	"face frame-crop 128":       "30fc4d4d3aff53b7",
	"face frame-crop 256":       "69c378a73a102936",
	"face grad-224x224 128":     "cca5bc45da7ea5cb",
	"face grad-224x224 256":     "ba64d19db95848ad",
	"face grad-300x200 128":     "f6e1b1c8c0faf9b8",
	"face grad-300x200 256":     "713e33467122a5dd",
	"face grad-90x400 128":      "3f405ad252f9536a",
	"face grad-90x400 256":      "d0fa747924dbe019",
	"face strip-1x3000 128":     "cfad1ed3770e80a3",
	"face strip-1x3000 256":     "dd3f47d901b93b0f",
	"face strip-3000x2 128":     "16c7d9effbc7a84d",
	"face strip-3000x2 256":     "ff0283913387e522",
	"face transparent 128":      "e4cfe5ee4b29ce7f",
	"face transparent 256":      "00cbbe71c8e0229f",
}

func TestPreprocessReproducesTheBuiltinInputsBitForBit(t *testing.T) {
	got := 0
	for name, img := range goldenImages(t) {
		check := func(kind string, size int, data []byte) {
			t.Helper()
			key := fmt.Sprintf("%s %s %d", kind, name, size)
			want, ok := builtinInputHashes[key]
			if !ok {
				t.Fatalf("no golden hash for %s", key)
			}
			if h := fmt.Sprintf("%x", sha256.Sum256(data))[:16]; h != want {
				t.Errorf("%s: sha256 %s…, the built-in glue made %s…", key, h, want)
			}
			got++
		}
		for _, size := range []int{224, 96} {
			check("classify", size, ClassifyInput(img, "data", size).Data)
		}
		for _, size := range []int{128, 256} {
			in, _ := FaceInput(img, size)
			check("face", size, in.Data)
		}
	}
	if got != len(builtinInputHashes) {
		t.Fatalf("checked %d of %d hashes", got, len(builtinInputHashes))
	}
}

func prep(t *testing.T, spec models.ImagePrep, shape ...int64) Prep {
	t.Helper()
	p, err := NewPrep(spec, models.TensorSpec{Name: "x", DataType: models.FP32, Shape: shape})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A 4×2 image: left half red, right half blue.
func halves() image.Image {
	img := image.NewRGBA(image.Rect(0, 0, 4, 2))
	for y := range 2 {
		for x := range 4 {
			c := color.RGBA{255, 0, 0, 255}
			if x >= 2 {
				c = color.RGBA{0, 0, 255, 255}
			}
			img.Set(x, y, c)
		}
	}
	return img
}

func TestPreprocessLayoutsChannelsAndNormalisation(t *testing.T) {
	at := func(tt models.Tensor, i int) float32 { return getF32(tt.Data, i) }
	// NCHW RGB, stretch to the same size, 0..1: plane 0 is red.
	p := prep(t, models.ImagePrep{Interpolation: "nearest"}, -1, 3, 2, 4)
	in, g := Preprocess(halves(), p, "x")
	if at(in, 0) != 1 || at(in, 3) != 0 || at(in, 2*8+3) != 1 || g.ScaleX != 1 || g.OffX != 0 {
		t.Fatalf("NCHW RGB: %v %+v", in.Shape, g)
	}
	// NHWC BGR with mean/std per tensor channel: pixel 0 is (B,G,R) = (0,0,1).
	p = prep(t, models.ImagePrep{Interpolation: "nearest", Layout: "NHWC", Channels: "BGR", Mean: []float64{0.5, 0, 0}, Std: []float64{0.5, 1, 2}}, -1, 2, 4, 3)
	in, _ = Preprocess(halves(), p, "x")
	if at(in, 0) != -1 || at(in, 1) != 0 || at(in, 2) != 0.5 || at(in, 3*3) != 1 {
		t.Fatalf("NHWC BGR: %v", in.Data[:48])
	}
	// GRAY: one channel of BT.601 luma; UINT8 raw.
	gray, err := NewPrep(models.ImagePrep{Interpolation: "nearest", Channels: "GRAY"}, models.TensorSpec{Name: "x", DataType: models.UINT8, Shape: []int64{-1, 1, 2, 4}})
	if err != nil {
		t.Fatal(err)
	}
	in, _ = Preprocess(halves(), gray, "x")
	if in.DataType != models.UINT8 || len(in.Data) != 8 || in.Data[0] != 76 || in.Data[3] != 29 {
		t.Fatalf("GRAY UINT8: %v", in.Data)
	}
}

func TestPreprocessGeometryMapsBoxesBack(t *testing.T) {
	img := image.NewRGBA(image.Rect(100, 50, 500, 250)) // 400×200 at (100,50)
	f := func(spec models.ImagePrep, box [4]float64, want image.Rectangle) {
		t.Helper()
		_, g := Preprocess(img, prep(t, spec, -1, 3, 100, 100), "x")
		if got := g.Rect(box[0], box[1], box[2], box[3]); got != want {
			t.Fatalf("%s: box %v → %v, want %v (%+v)", spec.Resize, box, got, want, g)
		}
	}
	// stretch: x ×4, y ×2.
	f(models.ImagePrep{}, [4]float64{0, 0, 100, 100}, image.Rect(100, 50, 500, 250))
	f(models.ImagePrep{}, [4]float64{25, 50, 50, 75}, image.Rect(200, 150, 300, 200))
	// letterbox: scale 1/4, image in rows 25..75; a box outside is clipped.
	f(models.ImagePrep{Resize: "letterbox"}, [4]float64{0, 25, 50, 75}, image.Rect(100, 50, 300, 250))
	f(models.ImagePrep{Resize: "letterbox"}, [4]float64{0, 0, 10, 10}, image.Rectangle{})
	f(models.ImagePrep{Resize: "letterbox", Align: "top-left"}, [4]float64{0, 0, 50, 50}, image.Rect(100, 50, 300, 250))
	// centre-crop: scale 1/2, the centre 200×200 of the image.
	f(models.ImagePrep{Resize: "centre-crop"}, [4]float64{0, 0, 100, 100}, image.Rect(200, 50, 400, 250))
	// shorter-side 50 then the centre 100×100: a window larger than the
	// resized image (100×50), padded; the image maps back whole.
	f(models.ImagePrep{Resize: "shorter-side", Shorter: 50}, [4]float64{0, 25, 100, 75}, image.Rect(100, 50, 500, 250))
}

func TestNewPrepChecksTheModelInput(t *testing.T) {
	f := func(spec models.ImagePrep, in models.TensorSpec, want string) {
		t.Helper()
		_, err := NewPrep(spec, in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("NewPrep(%+v, %v) = %v, want %q", spec, in, err, want)
		}
	}
	fp := func(shape ...int64) models.TensorSpec {
		return models.TensorSpec{Name: "x", DataType: models.FP32, Shape: shape}
	}
	f(models.ImagePrep{}, fp(-1, 3, 224), "rank-4")
	f(models.ImagePrep{}, fp(-1, 224, 224, 3), "224 channels")
	f(models.ImagePrep{Channels: "GRAY"}, fp(-1, 3, 224, 224), "gives 1")
	f(models.ImagePrep{}, fp(-1, 3, -1, -1), "size: [height, width]")
	f(models.ImagePrep{Size: []int{100, 100}}, fp(-1, 3, 224, 224), "fixes")
	f(models.ImagePrep{DType: "UINT8"}, fp(-1, 3, 8, 8), "dtype UINT8 but input")
	f(models.ImagePrep{}, models.TensorSpec{Name: "x", DataType: models.INT64, Shape: []int64{-1, 3, 8, 8}}, "FP32 or UINT8")
	if p, err := NewPrep(models.ImagePrep{Size: []int{48, 320}}, fp(-1, 3, 48, -1)); err != nil || p.W != 320 || p.H != 48 {
		t.Fatalf("a dynamic width takes the spec's size: %+v %v", p, err)
	}
}
