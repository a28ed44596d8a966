package glue

import (
	"image"
	"image/color"
	"math"
	"os"
	"reflect"
	"testing"

	"github.com/ipa-serving/ipa/models"
)

func TestFaceAnchorsMatchMediaPipe(t *testing.T) {
	for _, m := range []FaceModel{FrontFace, BackFace} {
		a := FaceAnchors(m.Anchors)
		// 16×16 cells × 2 anchors (one stride-8 layer, or stride 16 for the
		// back model) + 8×8 × 6 (three layers sharing the coarser stride).
		if len(a) != 896 {
			t.Fatalf("%d: %d anchors, want 896", m.Anchors.InputSize, len(a))
		}
		for _, c := range []struct {
			i    int
			x, y float64
		}{
			{0, 0.5 / 16, 0.5 / 16}, {1, 0.5 / 16, 0.5 / 16}, {2, 1.5 / 16, 0.5 / 16},
			{32, 0.5 / 16, 1.5 / 16}, {511, 15.5 / 16, 15.5 / 16},
			{512, 0.5 / 8, 0.5 / 8}, {517, 0.5 / 8, 0.5 / 8}, {518, 1.5 / 8, 0.5 / 8}, {895, 7.5 / 8, 7.5 / 8},
		} {
			if got := a[c.i]; got != (Anchor{c.x, c.y, 1, 1}) {
				t.Errorf("%d: anchor %d = %+v, want (%v, %v, 1, 1)", m.Anchors.InputSize, c.i, got, c.x, c.y)
			}
		}
	}
	// Without fixed_anchor_size the scales follow SsdAnchorsCalculator:
	// layer 0 scale 0.1484375 and the interpolated sqrt(0.1484375·0.3503125).
	o := FrontFace.Anchors
	o.FixedAnchorSize = false
	a := FaceAnchors(o)
	if a[0].W != 0.1484375 || math.Abs(a[1].W-math.Sqrt(0.1484375*(0.1484375+(0.75-0.1484375)/3))) > 1e-12 {
		t.Fatalf("anchor sizes %+v %+v", a[0], a[1])
	}
	if _, err := FaceModelFor(192); err == nil {
		t.Fatal("no model takes 192×192")
	}
}

func TestFaceInputLetterboxesInMinusOneToOne(t *testing.T) {
	in, g := FaceInput(solid(200, 100, color.RGBA{255, 0, 51, 255}), 128)
	if in.Name != "input:0" || !reflect.DeepEqual(in.Shape, []int64{1, 128, 128, 3}) {
		t.Fatalf("tensor %q %v", in.Name, in.Shape)
	}
	if g.Scale != 0.64 || g.PadX != 0 || g.PadY != 32 || g.Width != 200 || g.Height != 100 {
		t.Fatalf("geometry %+v", g)
	}
	px := func(x, y int) [3]float32 {
		i := (y*128 + x) * 3
		return [3]float32{getF32(in.Data, i), getF32(in.Data, i+1), getF32(in.Data, i+2)}
	}
	if got := px(64, 64); got != [3]float32{1, -1, 51/127.5 - 1} {
		t.Fatalf("image pixel %v", got)
	}
	for _, p := range []image.Point{{0, 0}, {64, 31}, {127, 96}, {127, 127}} {
		if got := px(p.X, p.Y); got != [3]float32{-1, -1, -1} {
			t.Fatalf("letterbox pixel %v = %v, want black (−1)", p, got)
		}
	}
}

// faceOutputs builds the 4 outputs of a BlazeFace model, all logits at −50,
// in the ONNX files' order.
func faceOutputs() []models.Tensor {
	out := []models.Tensor{fp32("Identity:0", 1, 512, 1), fp32("Identity_1:0", 1, 384, 1),
		fp32("Identity_2:0", 1, 512, 16), fp32("Identity_3:0", 1, 384, 16)}
	fill(out[0], -50)
	fill(out[1], -50)
	return out
}

// setFace makes anchor i (of 896) fire with logit and regressors dx, dy, w, h
// (input pixels), keypoints at the box centre.
func setFace(out []models.Tensor, i int, logit, dx, dy, w, h float32) {
	s, r := out[0], out[2]
	if i >= 512 {
		s, r, i = out[1], out[3], i-512
	}
	putF32(s.Data, i, logit)
	vals := []float32{dx, dy, w, h}
	for range 6 {
		vals = append(vals, dx, dy)
	}
	for k, v := range vals {
		putF32(r.Data, i*16+k, v)
	}
}

func TestFaceBoxesDecodesAndMerges(t *testing.T) {
	out := faceOutputs()
	// Anchor 512 + 6·(8·4+4) = the first anchor of cell (4,4) of the 8×8
	// grid: centre (4.5/8, 4.5/8)·128 = (72, 72).
	setFace(out, 512+6*(8*4+4), 3, 0, 0, 40, 40)
	setFace(out, 512+6*(8*4+4)+1, 1, 4, 4, 40, 40) // overlaps: merged, weighted
	setFace(out, 2*(16*2+2), 2, 0, 0, 8, 16)       // cell (2,2) of 16×16: centre (20, 20)
	g := FaceGeometry{Width: 256, Height: 256, Scale: 0.5}
	dets, err := FaceBoxes(out, g, 128, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(dets) != 2 {
		t.Fatalf("%d detections: %+v", len(dets), dets)
	}
	s3, s1 := 1/(1+math.Exp(-3)), 1/(1+math.Exp(-1))
	// Weighted centre (72 + 4·s1/(s3+s1)) in input pixels, ×2 in the image.
	c := 2 * (72 + 4*s1/(s3+s1))
	wantBox := image.Rect(int(math.Floor(c-40)), int(math.Floor(c-40)), int(math.Ceil(c+40)), int(math.Ceil(c+40)))
	if dets[0].Box != wantBox || math.Abs(float64(dets[0].Score)-s3) > 1e-6 {
		t.Fatalf("first detection %+v, want box %v score %v", dets[0], wantBox, s3)
	}
	if len(dets[0].Keypoints) != 6 || dets[0].Keypoints[0] != image.Pt(int(math.Round(c)), int(math.Round(c))) {
		t.Fatalf("keypoints %v", dets[0].Keypoints)
	}
	if dets[1].Box != image.Rect(32, 24, 48, 56) {
		t.Fatalf("second detection %+v", dets[1])
	}
	// The threshold applies to sigmoid scores; 0 means the model's default.
	if dets, _ := FaceBoxes(out, g, 128, 0.9); len(dets) != 1 {
		t.Fatalf("threshold 0.9: %+v", dets)
	}
	// Boxes are clipped to the image and shifted by its origin.
	g.Origin = image.Pt(10, 10)
	g.Width, g.Height = 100, 100
	dets, _ = FaceBoxes(out, g, 128, 0)
	if len(dets) != 1 || dets[0].Box != image.Rect(42, 34, 58, 66) {
		t.Fatalf("clipped: %+v", dets)
	}
	for name, bad := range map[string]func() error{
		"size":    func() error { _, err := FaceBoxes(out, g, 192, 0); return err },
		"missing": func() error { _, err := FaceBoxes(out[:3], g, 128, 0); return err },
		"shape":   func() error { _, err := FaceBoxes(append(out[:3:3], fp32("x", 1, 384, 4)), g, 128, 0); return err },
		"batch":   func() error { _, err := FaceBoxes([]models.Tensor{fp32("x", 2, 896, 1)}, g, 128, 0); return err },
	} {
		if bad() == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestFaceBoxesOnBlankImagesFindsNothing runs both real BlazeFace models on
// blank images.
func TestFaceBoxesOnBlankImagesFindsNothing(t *testing.T) {
	for _, v := range []struct {
		name string
		size int
	}{{"front-128", 128}, {"back-256", 256}} {
		s := openVariant(t, "face", v.name)
		for _, c := range []color.RGBA{{255, 255, 255, 255}, {0, 0, 0, 255}, {128, 128, 128, 255}} {
			in, g := FaceInput(solid(640, 480, c), v.size)
			dets, err := FaceBoxes(run(t, s, in), g, v.size, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(dets) != 0 {
				t.Errorf("%s on blank %v: %+v", v.name, c, dets)
			}
		}
	}
}

// TestFaceDetectionOnAPhoto runs the real models on video-001.png from
// golang.org/x/image's testdata (a 150×103 frame of two speakers; Debian's
// skimage astronaut.png is not installed here). back-256 must find both faces
// on the whole frame; front-128 (selfie range) must find each face on a crop
// of its speaker. The face centres were read off the image: (29, 32) and
// (124, 29).
func TestFaceDetectionOnAPhoto(t *testing.T) {
	img := speakersFrame(t)
	faces := []image.Point{{29, 32}, {124, 29}}
	check := func(name string, dets []Detection, want []image.Point) {
		t.Helper()
		if len(dets) != len(want) {
			t.Fatalf("%s: %d detections %+v, want %d", name, len(dets), dets, len(want))
		}
		for _, w := range want {
			found := false
			for _, d := range dets {
				c := d.Box.Min.Add(d.Box.Max).Div(2)
				found = found || (abs(c.X-w.X) <= 6 && abs(c.Y-w.Y) <= 6 && d.Box.Dx() >= 10 && d.Box.Dx() <= 40)
			}
			if !found {
				t.Errorf("%s: no face near %v in %+v", name, w, dets)
			}
		}
		for _, d := range dets {
			t.Logf("%s: %v score %.3f eyes %v %v", name, d.Box, d.Score, d.Keypoints[0], d.Keypoints[1])
		}
	}
	back := openVariant(t, "face", "back-256")
	in, g := FaceInput(img, 256)
	dets, err := FaceBoxes(run(t, back, in), g, 256, 0)
	if err != nil {
		t.Fatal(err)
	}
	check("back-256", dets, faces)

	front := openVariant(t, "face", "front-128")
	for _, f := range faces {
		crop := Crop(img, image.Rect(f.X-25, f.Y-25, f.X+25, f.Y+35))
		in, g := FaceInput(crop, 128)
		dets, err := FaceBoxes(run(t, front, in), g, 128, 0)
		if err != nil {
			t.Fatal(err)
		}
		check("front-128 crop", dets, []image.Point{f})
	}
}

func abs(x int) int { return max(x, -x) }

// speakersFrame decodes golang.org/x/image's video-001.png (two speakers).
func speakersFrame(t *testing.T) image.Image {
	t.Helper()
	b, err := os.ReadFile(xImageTestdata(t, "video-001.png"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := DecodeImage(b)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestDetectThenClassify runs the P1 glue: faces → crops → ImageNet inputs →
// one batch through a real classifier → top-5.
func TestDetectThenClassify(t *testing.T) {
	img := speakersFrame(t)
	back := openVariant(t, "face", "back-256")
	in, g := FaceInput(img, 256)
	dets, err := FaceBoxes(run(t, back, in), g, 256, 0)
	if err != nil || len(dets) == 0 {
		t.Fatalf("no faces: %v", err)
	}
	cls := openVariant(t, "classify", "squeezenet")
	spec := cls.Variant().Inputs[0]
	var ins []models.Tensor
	for _, d := range dets {
		ins = append(ins, ClassifyInput(Crop(img, d.Box), spec.Name, int(spec.Shape[2])))
	}
	batch, err := Stack(ins)
	if err != nil {
		t.Fatal(err)
	}
	out := run(t, cls, batch)
	for row := range dets {
		top, err := TopK(out[0], row, 5, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(top) != 5 || top[0].Prob < top[4].Prob {
			t.Fatalf("row %d: %+v", row, top)
		}
	}
}
