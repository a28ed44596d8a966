package glue

import (
	"image"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDetInputResizesPadsAndNormalisesInBGR(t *testing.T) {
	img := solid(200, 100, color.RGBA{255, 0, 0, 255}) // red
	in, g := DetInput(img, 64)
	if in.Name != "x" || !reflect.DeepEqual(in.Shape, []int64{1, 3, 64, 64}) {
		t.Fatalf("tensor %q %v", in.Name, in.Shape)
	}
	want := DetGeometry{Width: 200, Height: 100, ResizedW: 64, ResizedH: 32, InputW: 64, InputH: 64}
	if g != want {
		t.Fatalf("geometry %+v, want %+v", g, want)
	}
	// Channel 0 is blue (PaddleOCR reads BGR) with mean 0.485, std 0.229.
	blue := float32((0 - 0.485) / 0.229)
	green := float32((0 - 0.456) / 0.224)
	red := float32((1 - 0.406) / 0.225)
	for c, v := range []float32{blue, green, red} {
		for _, p := range []image.Point{{0, 0}, {63, 31}, {30, 10}} {
			if got := getF32(in.Data, c*64*64+p.Y*64+p.X); !near(got, v) {
				t.Fatalf("channel %d at %v = %v, want %v", c, p, got, v)
			}
		}
		// Padding below the image is zero.
		if got := getF32(in.Data, c*64*64+40*64+5); got != 0 {
			t.Fatalf("padding channel %d = %v", c, got)
		}
	}
	// The tensor side is rounded up to a multiple of 32; the image fits side.
	in, g = DetInput(solid(50, 100, color.RGBA{0, 0, 0, 255}), 100)
	if in.Shape[2] != 128 || g.ResizedW != 50 || g.ResizedH != 100 || g.InputW != 128 {
		t.Fatalf("side 100: %v %+v", in.Shape, g)
	}
}

func TestDetBoxesFindsComponentsInOriginalCoordinates(t *testing.T) {
	prob := fp32("sigmoid_0.tmp_0", 2, 1, 64, 64)
	set := func(row, x0, y0, x1, y1 int, v float32) { // inclusive
		for y := y0; y <= y1; y++ {
			for x := x0; x <= x1; x++ {
				putF32(prob.Data, row*64*64+y*64+x, v)
			}
		}
	}
	set(1, 10, 5, 29, 8, 0.9)   // 20×4 line
	set(1, 40, 20, 49, 21, 0.8) // 10×2 word
	set(1, 60, 2, 60, 2, 0.9)   // 1-pixel speck: below minArea
	set(1, 5, 40, 7, 42, 0.9)   // in the padding (y ≥ ResizedH): ignored
	set(1, 20, 25, 29, 27, 0.3) // exactly at the threshold: not text
	set(1, 0, 28, 3, 31, 0.9)   // 4×4 at the corner: clipped
	g := DetGeometry{Width: 200, Height: 100, ResizedW: 64, ResizedH: 32, InputW: 64, InputH: 64}
	boxes, err := DetBoxes(prob, 1, g, DetThresh, DetMinArea)
	if err != nil {
		t.Fatal(err)
	}
	// Unclip offsets: 20·4·1.5/48 = 2.5, 10·2·1.5/24 = 1.25, 4·4·1.5/16 = 1.5
	// map pixels; the map is 3.125 original pixels per pixel.
	want := []image.Rectangle{
		image.Rect(23, 7, 102, 36),
		image.Rect(121, 58, 161, 73),
		image.Rect(0, 82, 18, 100), // 26.5·3.125 = 82.8
	}
	if !reflect.DeepEqual(boxes, want) {
		t.Fatalf("boxes %v, want %v", boxes, want)
	}
	if boxes, _ := DetBoxes(prob, 0, g, DetThresh, DetMinArea); len(boxes) != 0 {
		t.Fatalf("row 0 is empty, got %v", boxes)
	}
	// The image's origin is added back.
	g.Origin = image.Pt(1000, 2000)
	boxes, _ = DetBoxes(prob, 1, g, DetThresh, DetMinArea)
	if boxes[0] != want[0].Add(image.Pt(1000, 2000)) {
		t.Fatalf("with origin: %v", boxes[0])
	}
	for name, bad := range map[string]func() error{
		"row":      func() error { _, err := DetBoxes(prob, 2, g, DetThresh, DetMinArea); return err },
		"channels": func() error { _, err := DetBoxes(fp32("p", 1, 2, 64, 64), 0, g, DetThresh, DetMinArea); return err },
		"small":    func() error { _, err := DetBoxes(fp32("p", 1, 1, 16, 16), 0, g, DetThresh, DetMinArea); return err },
		"rank":     func() error { _, err := DetBoxes(fp32("p", 1, 64, 64), 0, g, DetThresh, DetMinArea); return err },
	} {
		if bad() == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestGroupLines(t *testing.T) {
	boxes := []image.Rectangle{
		image.Rect(60, 2, 100, 22),   // 0: line 1, right
		image.Rect(0, 30, 40, 50),    // 1: line 2
		image.Rect(0, 0, 50, 20),     // 2: line 1, left
		image.Rect(45, 100, 60, 110), // 3: line 3
		image.Rect(50, 33, 90, 52),   // 4: line 2, right
	}
	got := GroupLines(boxes)
	want := [][]int{{2, 0}, {1, 4}, {3}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("lines %v, want %v", got, want)
	}
	if len(GroupLines(nil)) != 0 {
		t.Fatal("lines of nothing")
	}
}

func TestRecInputBucketsCropsAndKeepsBoxOrder(t *testing.T) {
	img := solid(2000, 200, color.RGBA{255, 0, 0, 255}) // red
	boxes := []image.Rectangle{
		image.Rect(0, 0, 10, 10),         // 48 wide → 320
		image.Rect(0, 0, 100, 10),        // 480 → 640
		image.Rect(0, 0, 500, 10),        // 2400 → squeezed to 1280
		{},                               // empty → a row of padding in 320
		image.Rect(5, 5, 65, 15),         // 288 → 320
		image.Rect(1990, 190, 2100, 300), // clipped to 10×10 → 48 → 320
	}
	ts, rows := RecInput(img, boxes, 0, nil)
	if len(ts) != 3 {
		t.Fatalf("%d tensors", len(ts))
	}
	wantRows := [][]int{{0, 3, 4, 5}, {1}, {2}}
	if !reflect.DeepEqual(rows, wantRows) {
		t.Fatalf("rows %v, want %v", rows, wantRows)
	}
	for i, w := range []int64{320, 640, 1280} {
		if want := []int64{int64(len(wantRows[i])), 3, 48, w}; ts[i].Name != "x" || !reflect.DeepEqual(ts[i].Shape, want) {
			t.Fatalf("tensor %d: %q %v, want %v", i, ts[i].Name, ts[i].Shape, want)
		}
	}
	// value of tensor i, row r, channel c (0 = blue), pixel (x, y)
	at := func(i, r, c, x, y int) float32 {
		w := int(ts[i].Shape[3])
		return getF32(ts[i].Data, ((r*3+c)*48+y)*w+x)
	}
	const red, none = 1, -1 // (x/255 − 0.5)/0.5
	checks := []struct {
		i, r, c, x, y int
		want          float32
	}{
		{0, 0, 2, 0, 0, red}, {0, 0, 0, 47, 47, none}, {0, 0, 2, 48, 0, 0}, {0, 0, 2, 319, 47, 0},
		{0, 1, 2, 0, 0, 0}, {0, 1, 2, 100, 20, 0},
		{0, 2, 2, 287, 10, red}, {0, 2, 2, 288, 10, 0},
		{1, 0, 2, 479, 47, red}, {1, 0, 2, 480, 47, 0},
		{2, 0, 2, 1279, 47, red}, {2, 0, 1, 0, 0, none},
	}
	for _, c := range checks {
		if got := at(c.i, c.r, c.c, c.x, c.y); !near(got, c.want) {
			t.Errorf("tensor %d row %d channel %d (%d,%d) = %v, want %v", c.i, c.r, c.c, c.x, c.y, got, c.want)
		}
	}
	// Custom buckets and height.
	ts, rows = RecInput(img, boxes[:2], 32, []int{640, 160})
	if len(ts) != 2 || ts[0].Shape[3] != 160 || ts[0].Shape[2] != 32 || ts[1].Shape[3] != 640 || rows[1][0] != 1 {
		t.Fatalf("custom buckets: %v %v %v", ts[0].Shape, ts[1].Shape, rows)
	}
}

func TestCTCDecode(t *testing.T) {
	keys := []string{"a", "b", "ç"}
	// steps: a a blank a b space ç ç → "aab ç"
	seq := []int{1, 1, 0, 1, 2, 4, 3, 3}
	probs := fp32("softmax", 2, int64(len(seq)), 5)
	for step, c := range seq {
		for k := range 5 {
			p := float32(0.1)
			if k == c {
				p = 0.6
			}
			if step == 6 && k == c {
				p = 0.9
			}
			putF32(probs.Data, (1*len(seq)+step)*5+k, p)
		}
	}
	text, conf, err := CTCDecode(probs, 1, keys)
	if err != nil {
		t.Fatal(err)
	}
	if text != "aab ç" {
		t.Fatalf("text %q", text)
	}
	// emitted at steps 0, 3, 4, 5, 6: (0.6·4 + 0.9)/5
	if !near(conf, 0.66) {
		t.Fatalf("confidence %v", conf)
	}
	// Row 0 is all zeros: every step's argmax is the blank.
	if text, conf, _ := CTCDecode(probs, 0, keys); text != "" || conf != 0 {
		t.Fatalf("row 0: %q %v", text, conf)
	}
	if _, _, err := CTCDecode(probs, 0, keys[:2]); err == nil || !strings.Contains(err.Error(), "2 keys need 4") {
		t.Fatalf("class-count mismatch: %v", err)
	}
	if _, _, err := CTCDecode(probs, 2, keys); err == nil {
		t.Fatal("row out of range")
	}
}

func TestLoadKeys(t *testing.T) {
	keys, err := LoadKeys(strings.NewReader("a\nb\r\n \nc"))
	if err != nil || !reflect.DeepEqual(keys, []string{"a", "b", " ", "c"}) {
		t.Fatalf("%q %v", keys, err)
	}
	if _, err := LoadKeys(strings.NewReader("")); err == nil {
		t.Fatal("empty dictionary accepted")
	}
	f, err := os.Open(filepath.Join(modelsDir(), "ocr-rec", "rec-v4", "ppocr_keys_v1.txt"))
	if err != nil {
		t.Fatalf("model repository is required (run `make deps`): %v", err)
	}
	defer f.Close()
	keys, err = LoadKeys(f)
	// 6625 classes = blank + 6623 keys + space (variant.json of rec-v4).
	if err != nil || len(keys) != 6623 || keys[0] != "'" {
		t.Fatalf("ppocr_keys_v1.txt: %d keys, first %q, %v", len(keys), keys[0], err)
	}
}

// TestDetBoxesKeepTheirSizeAcrossInputSizes draws the det map's region of
// one text line as PP-OCRv4 makes it at det-480, 640 and 960 (0.385 × the
// font size + DetHalo map pixels high, see DetHalo) and checks that the box
// in the original image does not shrink as the input grows: DB's unclip
// alone gave 44 → 39 → 32 px here, tight crops whose spaces the recogniser
// drops.
func TestDetBoxesKeepTheirSizeAcrossInputSizes(t *testing.T) {
	const width, height, font = 1200, 400, 24.0 // original image and font size, px
	var heights []int
	for _, side := range []int{480, 640, 960} {
		scale := float64(side) / width
		prob := fp32("sigmoid_0.tmp_0", 1, 1, int64(side), int64(side))
		kh := int(math.Round(0.385*font*scale + 3.0))
		kw := int(math.Round(800*scale + 3.0))
		y0, x0 := int(100*scale)-kh/2, int(200*scale)
		for y := y0; y < y0+kh; y++ {
			for x := x0; x < x0+kw; x++ {
				putF32(prob.Data, y*side+x, 0.9)
			}
		}
		g := DetGeometry{Width: width, Height: height, ResizedW: side, ResizedH: int(math.Round(height * scale)), InputW: side, InputH: side}
		boxes, err := DetBoxes(prob, 0, g, DetThresh, DetMinArea)
		if err != nil || len(boxes) != 1 {
			t.Fatalf("side %d: %v %v", side, boxes, err)
		}
		heights = append(heights, boxes[0].Dy())
	}
	t.Logf("box heights at det-480/640/960: %v px (font %v px)", heights, font)
	for i := 1; i < len(heights); i++ {
		if heights[i] < heights[0] || heights[i] > heights[0]*13/10 {
			t.Errorf("box heights %v: a larger input must give a box no tighter than det-480's and at most 30 %% taller", heights)
		}
	}
}
