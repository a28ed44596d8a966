package glue

import (
	"image"
	"image/color"
	"math"
	"runtime"
	"testing"
)

func near(a, b float32) bool { return math.Abs(float64(a-b)) <= 1e-6 }

func TestClassifyInputConstantColourIsExact(t *testing.T) {
	c := color.RGBA{10, 200, 128, 255}
	want := [3]float32{
		(10.0/255 - 0.485) / 0.229,
		(200.0/255 - 0.456) / 0.224,
		(128.0/255 - 0.406) / 0.225,
	}
	for _, size := range []int{224, 299} {
		for _, wh := range [][2]int{{300, 500}, {640, 480}, {1, 1}, {224, 224}, {1, 3000}, {3000, 2}} {
			in := ClassifyInput(solid(wh[0], wh[1], c), "data", size)
			if in.Name != "data" || len(in.Shape) != 4 || in.Shape[0] != 1 || in.Shape[1] != 3 ||
				in.Shape[2] != int64(size) || in.Shape[3] != int64(size) || len(in.Data) != 4*3*size*size {
				t.Fatalf("tensor %q %v (%d bytes)", in.Name, in.Shape, len(in.Data))
			}
			for ch := range 3 {
				for i := range size * size {
					if v := getF32(in.Data, ch*size*size+i); !near(v, want[ch]) {
						t.Fatalf("size %d image %v: channel %d element %d = %v, want %v", size, wh, ch, i, v, want[ch])
					}
				}
			}
		}
	}
}

func TestClassifyInputResizesShorterSideAndCentreCrops(t *testing.T) {
	// 448×224, left half red, right half blue: the shorter side becomes 256,
	// so the image is 512×256 and the centre crop spans columns 144..367,
	// i.e. red up to column 111 of the crop, blue from 112.
	img := solid(448, 224, color.RGBA{0, 0, 255, 255})
	for y := range 224 {
		for x := range 224 {
			img.SetRGBA(x, y, color.RGBA{255, 0, 0, 255})
		}
	}
	in := ClassifyInput(img, "data", 224)
	red := (1 - ImageNetMean[0]) / ImageNetStd[0]
	blueInR := (0 - ImageNetMean[0]) / ImageNetStd[0]
	for _, y := range []int{0, 100, 223} {
		for x := range 224 {
			v := getF32(in.Data, y*224+x) // R plane
			switch {
			case x < 110 && !near(v, red):
				t.Fatalf("(%d,%d) R = %v, want red %v", x, y, v, red)
			case x > 113 && !near(v, blueInR):
				t.Fatalf("(%d,%d) R = %v, want blue %v", x, y, v, blueInR)
			}
		}
	}
	// A portrait image is cropped vertically the same way.
	tall := ClassifyInput(solid(100, 1000, color.RGBA{0, 0, 0, 255}), "data", 224)
	if v := getF32(tall.Data, 0); !near(v, -ImageNetMean[0]/ImageNetStd[0]) {
		t.Fatalf("black portrait: %v", v)
	}
}

func TestClassifyInputTransparentIsWhiteAndEmptyIsBlack(t *testing.T) {
	in := ClassifyInput(image.NewRGBA(image.Rect(0, 0, 50, 50)), "data", 224)
	if v, want := getF32(in.Data, 0), (1-ImageNetMean[0])/ImageNetStd[0]; !near(v, want) {
		t.Fatalf("transparent pixel: %v, want white %v", v, want)
	}
	empty := ClassifyInput(image.NewRGBA(image.Rectangle{}), "data", 224)
	if v, want := getF32(empty.Data, 2*224*224), -ImageNetMean[2]/ImageNetStd[2]; !near(v, want) {
		t.Fatalf("empty image: %v, want black %v", v, want)
	}
}

func TestTopK(t *testing.T) {
	prob := fp32("prob", 2, 5)
	for i, v := range []float32{0.1, 0.5, 0.1, 0.2, 0.1, 0.05, 0.05, 0.6, 0.2, 0.1} {
		putF32(prob.Data, i, v)
	}
	got, err := TopK(prob, 1, 3, []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Class{{2, "c", 0.6}, {3, "class 3", 0.2}, {4, "class 4", 0.1}}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	// Ties keep the lower index first; k is capped at the class count.
	got, _ = TopK(prob, 0, 10, nil)
	if len(got) != 5 || got[0].Index != 1 || got[1].Index != 3 || got[2].Index != 0 || got[3].Index != 2 {
		t.Fatalf("row 0: %v", got)
	}
	// [N,C,1,1] (densenet121, squeezenet) is accepted.
	p4 := fp32("prob", 1, 5, 1, 1)
	putF32(p4.Data, 4, 1)
	if got, err := TopK(p4, 0, 1, nil); err != nil || got[0].Index != 4 || got[0].Label != "class 4" {
		t.Fatalf("[1,5,1,1]: %v %v", got, err)
	}
	for _, bad := range []struct {
		name string
		t    func() (any, error)
	}{
		{"row out of range", func() (any, error) { return TopK(prob, 2, 1, nil) }},
		{"rank 3", func() (any, error) { return TopK(fp32("p", 1, 5, 2), 0, 1, nil) }},
		{"[1,5,2,1]", func() (any, error) { return TopK(fp32("p", 1, 5, 2, 1), 0, 1, nil) }},
		{"short data", func() (any, error) {
			p := fp32("p", 1, 5)
			p.Data = p.Data[:8]
			return TopK(p, 0, 1, nil)
		}},
	} {
		if _, err := bad.t(); err == nil {
			t.Errorf("%s: no error", bad.name)
		}
	}
}

// A long strip is not resized whole: 1×3000 would become 256×768000 (786 MB
// of RGBA) before the centre crop.
func TestClassifyInputOfAStripStaysSmall(t *testing.T) {
	strip := pattern(1, 3000)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	in := ClassifyInput(strip, "data", 224)
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("ClassifyInput of a 1×3000 image allocated %d MB", alloc>>20)
	}
	// The crop is the middle of the strip: row 1500's colour fills it.
	c := strip.RGBAAt(0, 1500)
	if got, want := getF32(in.Data, 112*224+112), (float32(c.R)/255-ImageNetMean[0])/ImageNetStd[0]; math.Abs(float64(got-want)) > 0.1 {
		t.Errorf("centre value %v, want about %v", got, want)
	}
}
