package glue

import (
	"fmt"
	"image"
	"sort"

	"github.com/ipa-serving/ipa/models"
)

// ImageNet normalisation of torchvision's reference training/evaluation
// scripts (transforms.Normalize(mean=[0.485, 0.456, 0.406],
// std=[0.229, 0.224, 0.225]) on RGB values scaled to 0..1), used by the ONNX
// model zoo's classifier READMEs.
var (
	ImageNetMean = [3]float32{0.485, 0.456, 0.406}
	ImageNetStd  = [3]float32{0.229, 0.224, 0.225}
)

// ImageNetPrep is the torchvision ImageNet evaluation transform as a
// declarative preprocessing (the size comes from the model's input):
// resize so the shorter side is round(256·size/224), centre-crop
// size×size, RGB scaled to 0..1 and normalised with ImageNetMean and
// ImageNetStd, NCHW.
var ImageNetPrep = models.ImagePrep{Resize: models.ResizeShorterSide, Mean: f64(ImageNetMean[:]), Std: f64(ImageNetStd[:])}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// ClassifyInput turns img into the FP32 NCHW tensor [1,3,size,size] named
// name that an ImageNet classifier takes: Preprocess with ImageNetPrep. An
// empty img gives the tensor of a black image. It panics if size < 1.
//
// The light_* classifiers of the repository come from caffe2 exports whose
// original training used other conventions; their weights are placeholders
// (MODELS.md §3), so the common torchvision convention is used for all.
func ClassifyInput(img image.Image, name string, size int) models.Tensor {
	if size < 1 {
		panic(fmt.Sprintf("glue.ClassifyInput: size %d < 1", size))
	}
	p, err := NewPrep(ImageNetPrep, models.TensorSpec{Name: name, DataType: models.FP32, Shape: []int64{-1, 3, int64(size), int64(size)}})
	if err != nil {
		panic("BUG: glue.ClassifyInput: " + err.Error())
	}
	t, _ := Preprocess(img, p, name)
	return t
}

// writeNCHWRect writes the window r of src (an RGBA at origin 0,0) into
// data as 3 planes of planeW×planeH, normalised by lut (indexed by the
// tensor's channel). bgr makes the tensor's channels B,G,R. Pixels of r
// outside src are left as they are in data.
func writeNCHWRect(data []byte, src *image.RGBA, r image.Rectangle, planeW, planeH int, lut *channelLUT, bgr bool) {
	plane := planeW * planeH
	r = r.Intersect(src.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		row := src.Pix[y*src.Stride:]
		for x := r.Min.X; x < r.Max.X; x++ {
			p := row[4*x : 4*x+3]
			i := (y-r.Min.Y)*planeW + (x - r.Min.X)
			for c := range 3 { // c: R, G, B in src
				o := c // the tensor channel, which indexes lut
				if bgr {
					o = 2 - c
				}
				putF32(data, o*plane+i, lut[o][p[c]])
			}
		}
	}
}

// Class is one entry of a classifier's top-k list.
type Class struct {
	Index int     `json:"index"`
	Label string  `json:"label"`
	Prob  float32 `json:"prob"`
}

// TopK returns the k most probable classes of row of prob, a classifier
// output of shape [N,C] or [N,C,1,1] (densenet121 and squeezenet), highest
// first (ties by lower index). labels[i] names class i; classes without a
// label (labels nil or short) are called "class i". The ImageNet label list
// is not in the repository (opencv-doc ships one in model-output order:
// classification_classes_ILSVRC2012.txt).
func TopK(prob models.Tensor, row, k int, labels []string) ([]Class, error) {
	rank := len(prob.Shape)
	if rank != 2 && rank != 4 {
		rank = 2 // let checkFP32 report the shape
	}
	if err := checkFP32(prob, rank, row); err != nil {
		return nil, fmt.Errorf("glue.TopK: %w", err)
	}
	if rank == 4 && (prob.Shape[2] != 1 || prob.Shape[3] != 1) {
		return nil, fmt.Errorf("glue.TopK: tensor %q has shape %v; expected [N,C] or [N,C,1,1]", prob.Name, prob.Shape)
	}
	n := int(prob.Shape[1])
	k = max(0, min(k, n))
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	base := row * n
	sort.SliceStable(idx, func(a, b int) bool {
		return getF32(prob.Data, base+idx[a]) > getF32(prob.Data, base+idx[b])
	})
	out := make([]Class, k)
	for i, c := range idx[:k] {
		label := fmt.Sprintf("class %d", c)
		if c < len(labels) {
			label = labels[c]
		}
		out[i] = Class{Index: c, Label: label, Prob: getF32(prob.Data, base+c)}
	}
	return out, nil
}
