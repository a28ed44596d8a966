package glue

import (
	"math"
	"strings"
	"testing"

	"github.com/ipa-serving/ipa/models"
)

func f32Tensor(name string, shape []int64, v ...float32) models.Tensor {
	t := fp32(name, shape...)
	for i, x := range v {
		putF32(t.Data, i, x)
	}
	return t
}

func TestDecodeBoxesReadsEveryFormat(t *testing.T) {
	f := func(format string, normalized bool, coords []float32, want Box) {
		t.Helper()
		boxes := f32Tensor("b", []int64{1, 1, 4}, coords...)
		scores := f32Tensor("s", []int64{1, 1}, 0.7)
		got, err := DecodeBoxes(boxes, &scores, format, normalized, 200, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0] != want {
			t.Fatalf("%s: %+v, want %+v", format, got, want)
		}
	}
	f("", false, []float32{10, 20, 30, 40}, Box{10, 20, 30, 40, 0.7})
	f("yxyx", false, []float32{20, 10, 40, 30}, Box{10, 20, 30, 40, 0.7})
	f("xywh", false, []float32{10, 20, 20, 20}, Box{10, 20, 30, 40, 0.7})
	f("cxcywh", false, []float32{20, 30, 20, 20}, Box{10, 20, 30, 40, 0.7})
	f("xyxy", true, []float32{0.25, 0.5, 0.5, 1}, Box{50, 50, 100, 100, 0.7})

	bad := func(boxes models.Tensor, scores *models.Tensor, want string) {
		t.Helper()
		if _, err := DecodeBoxes(boxes, scores, "", false, 1, 1); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v, want %q", err, want)
		}
	}
	bad(f32Tensor("b", []int64{2, 5}), nil, "want [K,4]")
	s3 := f32Tensor("s", []int64{3})
	bad(f32Tensor("b", []int64{2, 4}), &s3, "one score per box")
	bad(models.Tensor{Name: "b", DataType: models.FP32, Shape: []int64{2, 4}, Data: make([]byte, 4)}, nil, "has 4 bytes")
	bad(models.Tensor{Name: "b", DataType: models.BOOL, Shape: []int64{1, 4}, Data: make([]byte, 4)}, nil, "FP32, FP64, INT32 or INT64")
}

func TestSelectBoxesThresholdsSuppressesAndCaps(t *testing.T) {
	boxes := []Box{
		{0, 0, 10, 10, 0.6},
		{1, 1, 11, 11, 0.9}, // overlaps the first by IoU 0.68
		{20, 20, 30, 30, 0.8},
		{40, 40, 50, 50, 0.2}, // under the threshold
		{5, 5, 5, 9, 0.95},    // empty
		{0, 0, float64(math.NaN()), 1, 0.99},
	}
	got := SelectBoxes(boxes, 0.5, 0.5, 10)
	if len(got) != 2 || got[0].Score != 0.9 || got[1].Score != 0.8 {
		t.Fatalf("NMS 0.5: %+v", got)
	}
	if got := SelectBoxes(boxes, 0.5, 0, 10); len(got) != 3 {
		t.Fatalf("no NMS keeps the overlapping box: %+v", got)
	}
	if got := SelectBoxes(boxes, 0, 0, 2); len(got) != 2 || got[1].Score != 0.8 {
		t.Fatalf("max 2: %+v", got)
	}
}

func TestSoftmaxRowsSumToOne(t *testing.T) {
	in := f32Tensor("l", []int64{2, 3}, 1, 2, 3, 1000, 1000, 1000)
	out, err := Softmax(in)
	if err != nil {
		t.Fatal(err)
	}
	for r := range 2 {
		sum := 0.0
		for i := range 3 {
			sum += float64(getF32(out.Data, 3*r+i))
		}
		if math.Abs(sum-1) > 1e-6 {
			t.Fatalf("row %d sums to %v", r, sum)
		}
	}
	if getF32(out.Data, 2) <= getF32(out.Data, 1) || math.Abs(float64(getF32(out.Data, 3))-1.0/3) > 1e-6 {
		t.Fatalf("softmax %v", out.Data)
	}
	if _, err := Softmax(models.Tensor{Name: "i", DataType: models.INT32, Shape: []int64{1}}); err == nil {
		t.Fatal("softmax of INT32 accepted")
	}
}

// FaceInputBoxes through a letterbox's Geometry gives FaceBoxes' boxes:
// the decoder the declarative faces pipeline uses finds what the Go glue
// found.
func TestFaceInputBoxesMapBackLikeFaceBoxes(t *testing.T) {
	img := speakersFrame(t)
	back := openVariant(t, "face", "back-256")
	in, fg := FaceInput(img, 256)
	out := run(t, back, in)
	want, err := FaceBoxes(out, fg, 256, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	boxes, err := FaceInputBoxes(out, 256, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	_, g := Preprocess(img, prep(t, FacePrep, -1, 256, 256, 3), "x")
	if len(boxes) != len(want) || len(want) == 0 {
		t.Fatalf("%d boxes, FaceBoxes found %d", len(boxes), len(want))
	}
	for i, b := range boxes {
		if r := g.Rect(b.X0, b.Y0, b.X1, b.Y1); r != want[i].Box || b.Score != want[i].Score {
			t.Fatalf("box %d: %v %v, FaceBoxes %v %v", i, r, b.Score, want[i].Box, want[i].Score)
		}
	}
}
