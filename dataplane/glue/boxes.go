package glue

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"

	"github.com/ipa-serving/ipa/models"
)

// Box is a scored box. Its coordinates are in the space its producer
// documents: DecodeBoxes and FaceInputBoxes give a model input's pixels.
type Box struct {
	X0, Y0, X1, Y1 float64
	Score          float32
}

// DecodeBoxes reads the boxes a detector output holds: boxes of shape
// [K,4] or [1,K,4] in format (models.BoxXYXY, BoxYXYX, BoxXYWH,
// BoxCXCYWH; "" is xyxy), in pixels of a w×h input or, with normalized, in
// 0…1 of it; scores (nil: every box scores 1) of shape [K], [1,K], [K,1]
// or [1,K,1]. FP32, FP64, INT32 and INT64 tensors are read.
func DecodeBoxes(boxes models.Tensor, scores *models.Tensor, format string, normalized bool, w, h int) ([]Box, error) {
	sh := boxes.Shape
	if len(sh) == 3 && sh[0] == 1 {
		sh = sh[1:]
	}
	if len(sh) != 2 || sh[1] != 4 {
		return nil, fmt.Errorf("boxes %q have shape %s; want [K,4] or [1,K,4]", boxes.Name, models.FormatShape(boxes.Shape))
	}
	coords, err := Floats(boxes)
	if err != nil {
		return nil, err
	}
	k := int(sh[0])
	if len(coords) != 4*k {
		return nil, fmt.Errorf("boxes %q: %d values for shape %s", boxes.Name, len(coords), models.FormatShape(boxes.Shape))
	}
	var sc []float64
	if scores != nil {
		if n := models.Elements(scores.Shape); n != k || len(scores.Shape) > 3 || len(scores.Shape) == 0 {
			return nil, fmt.Errorf("scores %q have shape %s; want one score per box of %q ([%d], [1,%d] or [%d,1])", scores.Name, models.FormatShape(scores.Shape), boxes.Name, k, k, k)
		}
		if sc, err = Floats(*scores); err != nil {
			return nil, err
		}
	}
	fx, fy := 1.0, 1.0
	if normalized {
		fx, fy = float64(w), float64(h)
	}
	out := make([]Box, k)
	for i := range k {
		a, b, c, d := coords[4*i], coords[4*i+1], coords[4*i+2], coords[4*i+3]
		var x0, y0, x1, y1 float64
		switch format {
		case "", models.BoxXYXY:
			x0, y0, x1, y1 = a, b, c, d
		case models.BoxYXYX:
			x0, y0, x1, y1 = b, a, d, c
		case models.BoxXYWH:
			x0, y0, x1, y1 = a, b, a+c, b+d
		case models.BoxCXCYWH:
			x0, y0, x1, y1 = a-c/2, b-d/2, a+c/2, b+d/2
		default:
			return nil, fmt.Errorf("box format %q is not one of xyxy, yxyx, xywh, cxcywh", format)
		}
		box := Box{X0: x0 * fx, Y0: y0 * fy, X1: x1 * fx, Y1: y1 * fy, Score: 1}
		if sc != nil {
			box.Score = float32(sc[i])
		}
		out[i] = box
	}
	return out, nil
}

// SelectBoxes keeps the boxes scoring at least thresh whose coordinates are
// finite and ordered (x0 < x1, y0 < y1), best first (ties in input order);
// drops every box that overlaps a better kept one by an IoU above nms (0:
// no suppression); and keeps at most max.
func SelectBoxes(boxes []Box, thresh float32, nms float64, max int) []Box {
	var c []Box
	for _, b := range boxes {
		ok := !math.IsNaN(float64(b.Score)) && b.Score >= thresh
		for _, v := range [4]float64{b.X0, b.Y0, b.X1, b.Y1} {
			ok = ok && !math.IsNaN(v) && !math.IsInf(v, 0)
		}
		if ok && b.X0 < b.X1 && b.Y0 < b.Y1 {
			c = append(c, b)
		}
	}
	sort.SliceStable(c, func(i, j int) bool { return c[i].Score > c[j].Score })
	var kept []Box
	for _, b := range c {
		if len(kept) >= max {
			break
		}
		if nms > 0 && overlaps(kept, b, nms) {
			continue
		}
		kept = append(kept, b)
	}
	return kept
}

func overlaps(kept []Box, b Box, nms float64) bool {
	for _, k := range kept {
		if boxIoU(k, b) > nms {
			return true
		}
	}
	return false
}

func boxIoU(a, b Box) float64 {
	return iou(faceBox{x0: a.X0, y0: a.Y0, x1: a.X1, y1: a.Y1}, faceBox{x0: b.X0, y0: b.Y0, x1: b.X1, y1: b.Y1})
}

// Grow returns b grown by margin × its width and height on every side.
func (b Box) Grow(margin float64) Box {
	dx, dy := (b.X1-b.X0)*margin, (b.Y1-b.Y0)*margin
	return Box{X0: b.X0 - dx, Y0: b.Y0 - dy, X1: b.X1 + dx, Y1: b.Y1 + dy, Score: b.Score}
}

// Floats returns the elements of a FP32, FP64, INT32 or INT64 tensor.
func Floats(t models.Tensor) ([]float64, error) {
	n := models.Elements(t.Shape)
	if n < 0 || t.DataType.Size() == 0 || len(t.Data) != n*t.DataType.Size() {
		return nil, fmt.Errorf("tensor %q (%s%s) has %d bytes", t.Name, t.DataType, models.FormatShape(t.Shape), len(t.Data))
	}
	out := make([]float64, n)
	for i := range out {
		switch t.DataType {
		case models.FP32:
			out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:])))
		case models.FP64:
			out[i] = math.Float64frombits(binary.LittleEndian.Uint64(t.Data[8*i:]))
		case models.INT32:
			out[i] = float64(int32(binary.LittleEndian.Uint32(t.Data[4*i:])))
		case models.INT64:
			out[i] = float64(int64(binary.LittleEndian.Uint64(t.Data[8*i:])))
		default:
			return nil, fmt.Errorf("tensor %q is %s; boxes and scores are FP32, FP64, INT32 or INT64", t.Name, t.DataType)
		}
	}
	return out, nil
}

// Softmax returns the softmax of an FP32 tensor over its last dimension
// (max-subtracted, so large logits do not overflow).
func Softmax(t models.Tensor) (models.Tensor, error) {
	if t.DataType != models.FP32 || len(t.Shape) == 0 {
		return models.Tensor{}, fmt.Errorf("softmax of %q: want an FP32 tensor of rank ≥ 1, have %s%s", t.Name, t.DataType, models.FormatShape(t.Shape))
	}
	n := models.Elements(t.Shape)
	if n < 0 || len(t.Data) != 4*n {
		return models.Tensor{}, fmt.Errorf("softmax of %q: %d bytes for shape %s", t.Name, len(t.Data), models.FormatShape(t.Shape))
	}
	out := models.Tensor{Name: t.Name, DataType: t.DataType, Shape: append([]int64(nil), t.Shape...), Data: make([]byte, len(t.Data))}
	c := int(t.Shape[len(t.Shape)-1])
	if c == 0 {
		return out, nil
	}
	for r := 0; r < n/c; r++ {
		m := float32(math.Inf(-1))
		for i := range c {
			m = max(m, getF32(t.Data, r*c+i))
		}
		var sum float64
		for i := range c {
			sum += math.Exp(float64(getF32(t.Data, r*c+i) - m))
		}
		for i := range c {
			putF32(out.Data, r*c+i, float32(math.Exp(float64(getF32(t.Data, r*c+i)-m))/sum))
		}
	}
	return out, nil
}
