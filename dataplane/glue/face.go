package glue

import (
	"fmt"
	"image"
	"math"
	"sort"

	"github.com/ipa-serving/ipa/models"
)

// FaceInputName is the input tensor name of the BlazeFace ONNX files
// (tf2onnx export of MediaPipe's TFLite models).
const FaceInputName = "input:0"

// AnchorOptions are the fields of MediaPipe's SsdAnchorsCalculatorOptions
// that BlazeFace uses (mediapipe/calculators/tflite/ssd_anchors_calculator.cc).
type AnchorOptions struct {
	NumLayers                    int
	MinScale, MaxScale           float64
	InputSize                    int // input_size_width = input_size_height
	AnchorOffset                 float64
	Strides                      []int
	AspectRatios                 []float64
	InterpolatedScaleAspectRatio float64
	FixedAnchorSize              bool
}

// FaceModel holds the anchor and decoding options of one BlazeFace model.
type FaceModel struct {
	Anchors AnchorOptions
	// Scale divides the raw box regressors (x_scale = y_scale = w_scale =
	// h_scale in TensorsToDetectionsCalculatorOptions): the input size.
	Scale float64
	// MinScore is MediaPipe's min_score_thresh for the model.
	MinScore float32
	// NMSThreshold is the IoU above which boxes are merged
	// (NonMaxSuppressionCalculator min_suppression_threshold).
	NMSThreshold float64
}

// FrontFace is MediaPipe's short-range ("front camera") BlazeFace, 128×128:
// mediapipe/modules/face_detection/face_detection_short_range_common.pbtxt
// (formerly face_detection_front_cpu.pbtxt): 4 layers, min_scale 0.1484375,
// max_scale 0.75, strides 8,16,16,16, fixed-size anchors offset 0.5; boxes
// scaled by 128; min_score_thresh 0.5; weighted NMS at IoU 0.3.
var FrontFace = FaceModel{
	Anchors: AnchorOptions{NumLayers: 4, MinScale: 0.1484375, MaxScale: 0.75, InputSize: 128,
		AnchorOffset: 0.5, Strides: []int{8, 16, 16, 16}, AspectRatios: []float64{1},
		InterpolatedScaleAspectRatio: 1, FixedAnchorSize: true},
	Scale: 128, MinScore: 0.5, NMSThreshold: 0.3,
}

// BackFace is MediaPipe's back-camera BlazeFace, 256×256
// (mediapipe/modules/face_detection/face_detection_back_*.pbtxt, v0.7–0.8):
// 4 layers, min_scale 0.15625, max_scale 0.75, strides 16,32,32,32, fixed-size
// anchors offset 0.5; boxes scaled by 256; min_score_thresh 0.65; weighted
// NMS at IoU 0.3.
var BackFace = FaceModel{
	Anchors: AnchorOptions{NumLayers: 4, MinScale: 0.15625, MaxScale: 0.75, InputSize: 256,
		AnchorOffset: 0.5, Strides: []int{16, 32, 32, 32}, AspectRatios: []float64{1},
		InterpolatedScaleAspectRatio: 1, FixedAnchorSize: true},
	Scale: 256, MinScore: 0.65, NMSThreshold: 0.3,
}

// FaceModelFor returns the BlazeFace model taking size×size inputs: FrontFace
// for 128, BackFace for 256.
func FaceModelFor(size int) (FaceModel, error) {
	switch size {
	case FrontFace.Anchors.InputSize:
		return FrontFace, nil
	case BackFace.Anchors.InputSize:
		return BackFace, nil
	}
	return FaceModel{}, fmt.Errorf("no BlazeFace model takes %d×%d inputs (front 128, back 256)", size, size)
}

// Anchor is an SSD anchor in normalised input coordinates (0..1).
type Anchor struct {
	X, Y, W, H float64
}

func anchorScale(minScale, maxScale float64, i, n int) float64 {
	if n == 1 {
		return (minScale + maxScale) / 2
	}
	return minScale + (maxScale-minScale)*float64(i)/float64(n-1)
}

// FaceAnchors generates the anchors of MediaPipe's SsdAnchorsCalculator for o,
// in the order of the model's outputs: layers with the same stride share a
// grid; for each grid cell (row-major) come that grid's anchors, two per layer
// (aspect ratio 1 and the interpolated scale). BlazeFace front and back both
// have 16×16×2 + 8×8×6 = 896.
func FaceAnchors(o AnchorOptions) []Anchor {
	var anchors []Anchor
	for layer := 0; layer < o.NumLayers; {
		var ws, hs []float64
		last := layer
		for last < o.NumLayers && o.Strides[last] == o.Strides[layer] {
			scale := anchorScale(o.MinScale, o.MaxScale, last, len(o.Strides))
			for _, ar := range o.AspectRatios {
				ws = append(ws, scale*math.Sqrt(ar))
				hs = append(hs, scale/math.Sqrt(ar))
			}
			if o.InterpolatedScaleAspectRatio > 0 {
				next := 1.0
				if last != len(o.Strides)-1 {
					next = anchorScale(o.MinScale, o.MaxScale, last+1, len(o.Strides))
				}
				s := math.Sqrt(scale * next)
				ar := o.InterpolatedScaleAspectRatio
				ws = append(ws, s*math.Sqrt(ar))
				hs = append(hs, s/math.Sqrt(ar))
			}
			last++
		}
		stride := o.Strides[layer]
		fm := (o.InputSize + stride - 1) / stride
		for y := range fm {
			for x := range fm {
				for a := range ws {
					an := Anchor{X: (float64(x) + o.AnchorOffset) / float64(fm), Y: (float64(y) + o.AnchorOffset) / float64(fm), W: 1, H: 1}
					if !o.FixedAnchorSize {
						an.W, an.H = ws[a], hs[a]
					}
					anchors = append(anchors, an)
				}
			}
		}
		layer = last
	}
	return anchors
}

// FaceGeometry records how FaceInput letterboxed the image.
type FaceGeometry struct {
	// Width and Height of the original image; Origin its Bounds().Min.
	Width, Height int
	Origin        image.Point
	// Scale is input pixels per original pixel; PadX, PadY the offset of the
	// resized image in the input.
	Scale      float64
	PadX, PadY int
}

// FaceInput turns img into the BlazeFace input, a tensor named "input:0" of
// shape [1,size,size,3] (NHWC, RGB) with values in −1..1 (MediaPipe's
// ImageToTensorCalculator output_tensor_float_range −1..1 for face
// detection): img is resized keeping its aspect ratio and centred, the rest
// black (keep_aspect_ratio with BORDER_ZERO). It panics if size < 1.
func FaceInput(img image.Image, size int) (models.Tensor, FaceGeometry) {
	if size < 1 {
		panic(fmt.Sprintf("glue.FaceInput: size %d < 1", size))
	}
	p, err := NewPrep(FacePrep, models.TensorSpec{Name: FaceInputName, DataType: models.FP32, Shape: []int64{-1, int64(size), int64(size), 3}})
	if err != nil {
		panic("BUG: glue.FaceInput: " + err.Error())
	}
	t, g := Preprocess(img, p, FaceInputName)
	return t, FaceGeometry{Width: g.Width, Height: g.Height, Origin: g.Origin, Scale: g.ScaleX, PadX: int(g.OffX), PadY: int(g.OffY)}
}

// FacePrep is BlazeFace's input as a declarative preprocessing: letterbox
// (centred, black), NHWC, RGB, −1..1 (MediaPipe's ImageToTensorCalculator
// for face detection).
var FacePrep = models.ImagePrep{Resize: models.ResizeLetterbox, Layout: "NHWC", Scale: 127.5, Mean: []float64{1}}

// Detection is one face: its box and MediaPipe's 6 keypoints (right eye, left
// eye, nose tip, mouth, right ear tragion, left ear tragion) in original
// image coordinates, and its score (sigmoid of the model's logit).
type Detection struct {
	Box       image.Rectangle `json:"box"`
	Keypoints []image.Point   `json:"keypoints"`
	Score     float32         `json:"score"`
}

// faceCoords is the number of regressors per anchor: box (x, y, w, h) and 6
// keypoints (x, y) (num_coords 16, box_coord_offset 0, keypoint_coord_offset
// 4, num_keypoints 6, reverse_output_order: x before y).
const faceCoords = 16

// scoreClip is MediaPipe's score_clipping_thresh for BlazeFace.
const scoreClip = 100

// raw detection in normalised input coordinates.
type faceBox struct {
	x0, y0, x1, y1 float64
	kp             [12]float64
	score          float64
}

// FaceBoxes decodes the outputs of a BlazeFace model taking size×size inputs
// (128: FrontFace, 256: BackFace), as MediaPipe's TensorsToDetections and
// NonMaxSuppression calculators do: scores are sigmoid(clip(logit, ±100));
// anchors with a score ≥ thresh (≤ 0 means the model's MinScore) are decoded
// (centre = raw/scale + anchor centre, size = raw/scale), merged by weighted
// NMS (overlapping boxes averaged by score, IoU > 0.3), mapped back through g
// to the original image and clipped to it. Highest score first.
//
// outputs are the model's outputs in any order: the ONNX exports emit the
// scores and regressors of the two anchor grids separately — [1,512,1],
// [1,384,1], [1,512,16], [1,384,16] — which are concatenated, in the order
// given, into the 896 anchors.
func FaceBoxes(outputs []models.Tensor, g FaceGeometry, size int, thresh float32) ([]Detection, error) {
	merged, err := faceDecode(outputs, size, thresh)
	if err != nil {
		return nil, err
	}
	bounds := image.Rect(0, 0, g.Width, g.Height)
	toImg := func(nx, ny float64) (float64, float64) {
		if g.Scale == 0 {
			return 0, 0
		}
		return (nx*float64(size) - float64(g.PadX)) / g.Scale, (ny*float64(size) - float64(g.PadY)) / g.Scale
	}
	var dets []Detection
	for _, fb := range merged {
		x0, y0 := toImg(fb.x0, fb.y0)
		x1, y1 := toImg(fb.x1, fb.y1)
		box := image.Rect(int(math.Floor(x0)), int(math.Floor(y0)), int(math.Ceil(x1)), int(math.Ceil(y1))).Intersect(bounds)
		if box.Empty() {
			continue
		}
		d := Detection{Box: box.Add(g.Origin), Score: float32(fb.score)}
		for k := range 6 {
			x, y := toImg(fb.kp[2*k], fb.kp[2*k+1])
			d.Keypoints = append(d.Keypoints, image.Pt(int(math.Round(x)), int(math.Round(y))).Add(g.Origin))
		}
		dets = append(dets, d)
	}
	return dets, nil
}

// FaceInputBoxes decodes the outputs of a BlazeFace model taking size×size
// inputs as FaceBoxes does, and returns the faces in the input's pixels
// (0…size), best first: the boxes a declarative crops step maps back
// through its Geometry (router decoder "blazeface").
func FaceInputBoxes(outputs []models.Tensor, size int, thresh float32) ([]Box, error) {
	merged, err := faceDecode(outputs, size, thresh)
	if err != nil {
		return nil, err
	}
	s := float64(size)
	boxes := make([]Box, len(merged))
	for i, fb := range merged {
		boxes[i] = Box{X0: fb.x0 * s, Y0: fb.y0 * s, X1: fb.x1 * s, Y1: fb.y1 * s, Score: float32(fb.score)}
	}
	return boxes, nil
}

// faceDecode scores, decodes and merges the anchors of BlazeFace outputs
// (see FaceBoxes), in normalised input coordinates.
func faceDecode(outputs []models.Tensor, size int, thresh float32) ([]faceBox, error) {
	m, err := FaceModelFor(size)
	if err != nil {
		return nil, fmt.Errorf("glue.FaceBoxes: %w", err)
	}
	if thresh <= 0 {
		thresh = m.MinScore
	}
	anchors := FaceAnchors(m.Anchors)
	var scores, regs []float32
	for _, t := range outputs {
		if err := checkFP32(t, 3, 0); err != nil {
			return nil, fmt.Errorf("glue.FaceBoxes: %w", err)
		}
		if t.Shape[0] != 1 {
			return nil, fmt.Errorf("glue.FaceBoxes: tensor %q has batch %d; BlazeFace runs one image at a time", t.Name, t.Shape[0])
		}
		n := len(t.Data) / 4
		vals := make([]float32, n)
		for i := range vals {
			vals[i] = getF32(t.Data, i)
		}
		switch t.Shape[2] {
		case 1:
			scores = append(scores, vals...)
		case faceCoords:
			regs = append(regs, vals...)
		default:
			return nil, fmt.Errorf("glue.FaceBoxes: tensor %q has shape %v; expected [1,N,1] scores or [1,N,16] regressors", t.Name, t.Shape)
		}
	}
	if len(scores) != len(anchors) || len(regs) != faceCoords*len(anchors) {
		return nil, fmt.Errorf("glue.FaceBoxes: outputs hold %d scores and %d regressor sets; the %d×%d model has %d anchors",
			len(scores), len(regs)/faceCoords, size, size, len(anchors))
	}
	var cands []faceBox
	for i, a := range anchors {
		logit := math.Max(-scoreClip, math.Min(scoreClip, float64(scores[i])))
		score := 1 / (1 + math.Exp(-logit))
		if score < float64(thresh) {
			continue
		}
		r := regs[i*faceCoords : (i+1)*faceCoords]
		cx := float64(r[0])/m.Scale*a.W + a.X
		cy := float64(r[1])/m.Scale*a.H + a.Y
		w := float64(r[2]) / m.Scale * a.W
		h := float64(r[3]) / m.Scale * a.H
		fb := faceBox{x0: cx - w/2, y0: cy - h/2, x1: cx + w/2, y1: cy + h/2, score: score}
		for k := range 6 {
			fb.kp[2*k] = float64(r[4+2*k])/m.Scale*a.W + a.X
			fb.kp[2*k+1] = float64(r[5+2*k])/m.Scale*a.H + a.Y
		}
		cands = append(cands, fb)
	}
	return weightedNMS(cands, m.NMSThreshold), nil
}

func iou(a, b faceBox) float64 {
	ix := math.Min(a.x1, b.x1) - math.Max(a.x0, b.x0)
	iy := math.Min(a.y1, b.y1) - math.Max(a.y0, b.y0)
	if ix <= 0 || iy <= 0 {
		return 0
	}
	inter := ix * iy
	union := (a.x1-a.x0)*(a.y1-a.y0) + (b.x1-b.x0)*(b.y1-b.y0) - inter
	if union <= 0 {
		return 0
	}
	return inter / union
}

// weightedNMS is MediaPipe's NonMaxSuppressionCalculator WEIGHTED algorithm:
// take the best remaining box, collect every remaining box overlapping it by
// more than thresh (IoU), replace it by their score-weighted average (box and
// keypoints) keeping the best score, and repeat on the rest.
func weightedNMS(c []faceBox, thresh float64) []faceBox {
	sort.SliceStable(c, func(i, j int) bool { return c[i].score > c[j].score })
	var out []faceBox
	for len(c) > 0 {
		best := c[0]
		var rest []faceBox
		var sum faceBox
		total := 0.0
		for i, b := range c {
			if i == 0 || iou(best, b) > thresh {
				sum.x0 += b.x0 * b.score
				sum.y0 += b.y0 * b.score
				sum.x1 += b.x1 * b.score
				sum.y1 += b.y1 * b.score
				for k := range sum.kp {
					sum.kp[k] += b.kp[k] * b.score
				}
				total += b.score
			} else {
				rest = append(rest, b)
			}
		}
		m := best
		if total > 0 {
			m = faceBox{x0: sum.x0 / total, y0: sum.y0 / total, x1: sum.x1 / total, y1: sum.y1 / total, score: best.score}
			for k := range sum.kp {
				m.kp[k] = sum.kp[k] / total
			}
		}
		out = append(out, m)
		c = rest
	}
	return out
}
