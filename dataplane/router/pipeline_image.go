package router

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"math"
	"path/filepath"
	"slices"

	"github.com/ipa-serving/ipa/dataplane/glue"
	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
)

// Image glues: the router decodes the request's image once and makes each
// stage's tensors in Go (dataplane/glue holds the model conventions).

// ImageInput is the V2 input of the image pipelines: BYTES, one element per
// image (PNG or JPEG bytes, or their base64).
var ImageInput = models.TensorSpec{Name: "image", DataType: models.BYTES, Shape: []int64{models.Dynamic}}

// MaxImages is the most images one request may carry.
const MaxImages = 64

// requestImages decodes the request's images: the raw body (one image), or
// every element of the V2 BYTES input "image" (a batch: each is an item of
// the answer).
func requestImages(req *Request) ([]image.Image, error) {
	if req.Images != nil {
		return req.Images, nil
	}
	var elems [][]byte
	if req.V2 == nil {
		if len(req.Raw) == 0 {
			return nil, fmt.Errorf("%w: %v", v2codec.ErrBadRequest, errNoImage)
		}
		elems = [][]byte{req.Raw}
	} else {
		var err error
		if elems, err = imageElements(req.V2); err != nil {
			return nil, fmt.Errorf("%w: %v", v2codec.ErrBadRequest, err)
		}
	}
	imgs := make([]image.Image, len(elems))
	budget := glue.MaxPixels // for all the request's images together
	for i, b := range elems {
		img, err := glue.DecodeImageDataWithin(b, budget)
		if err != nil {
			if errors.Is(err, glue.ErrTooLarge) && i > 0 {
				err = fmt.Errorf("%v (the limit is for all the request's images together: %d of them took %.1f megapixels)", err, i, float64(glue.MaxPixels-budget)/1e6)
			}
			if req.V2 != nil {
				return nil, fmt.Errorf("%w: input %q element %d of %d: %v", v2codec.ErrBadRequest, ImageInput.Name, i, len(elems), err)
			}
			return nil, fmt.Errorf("%w: %v", v2codec.ErrBadRequest, err)
		}
		budget -= img.Bounds().Dx() * img.Bounds().Dy()
		imgs[i] = img
	}
	req.Images = imgs
	return imgs, nil
}

// imageElements checks that a V2 request to an image pipeline carries
// exactly the input "image", BYTES with at least one element, and returns
// its elements.
func imageElements(r *v2codec.InferRequest) ([][]byte, error) {
	if len(r.Inputs) != 1 || r.Inputs[0].Name != ImageInput.Name || r.Inputs[0].DataType != models.BYTES {
		var got []string
		for _, t := range r.Inputs {
			got = append(got, fmt.Sprintf("%s %s%s", t.Name, t.DataType, models.FormatShape(t.Shape)))
		}
		return nil, fmt.Errorf("%v; this pipeline takes one input %q BYTES [N] (N images, PNG or JPEG bytes or base64), got %v", errNoImage, ImageInput.Name, got)
	}
	t := r.Inputs[0]
	n := models.Elements(t.Shape)
	if n < 1 {
		return nil, fmt.Errorf("input %q has shape %s: no image; send shape [N] with N >= 1", t.Name, models.FormatShape(t.Shape))
	}
	if n > MaxImages {
		return nil, fmt.Errorf("input %q holds %d images; send at most %d per request", t.Name, n, MaxImages)
	}
	elems := make([][]byte, 0, n)
	b := t.Data
	for i := 0; i < n; i++ {
		if len(b) < 4 {
			return nil, fmt.Errorf("input %q: element %d of %d is missing", t.Name, i, n)
		}
		m := binary.LittleEndian.Uint32(b)
		if uint64(m) > uint64(len(b)-4) {
			return nil, fmt.Errorf("input %q: element %d claims %d bytes, %d are left", t.Name, i, m, len(b)-4)
		}
		if m == 0 {
			return nil, fmt.Errorf("input %q: element %d of %d is empty; every element must hold an image", t.Name, i, n)
		}
		elems = append(elems, b[4:4+m])
		b = b[4+m:]
	}
	return elems, nil
}

// side returns dimension d of the active variant's first input.
func side(st *Step, d int) (int, error) {
	sh := st.Variant().Inputs[0].Shape
	if d >= len(sh) || sh[d] <= 0 {
		return 0, fmt.Errorf("variant %q of stage %q has no fixed input size (shape %s)", st.Variant().Name, st.Spec.Name, models.FormatShape(sh))
	}
	return int(sh[d]), nil
}

type detData struct {
	img  image.Image
	geom glue.DetGeometry
}

type linesData struct {
	boxes []image.Rectangle // the box of each row of the item's batch of crops
}

func ocrKeys(st *Step) ([]string, error) {
	return loadLines(filepath.Join(st.VariantDir(), "ppocr_keys_v1.txt"))
}

// addImageGlues adds the glues of the image pipelines to g.
func addImageGlues(g Glues) {
	// image-ocr-det: the page, letterboxed to the det variant's side.
	g["image-ocr-det"] = Glue{
		First: func(req *Request, st *Step) ([]*Item, error) {
			imgs, err := requestImages(req)
			if err != nil {
				return nil, err
			}
			s, err := side(st, 2)
			if err != nil {
				return nil, err
			}
			items := make([]*Item, len(imgs))
			for i, img := range imgs {
				t, g := glue.DetInput(img, s)
				t.Name = st.inputs[0].Name
				items[i] = &Item{In: []models.Tensor{t}, Data: detData{img, g}}
			}
			return items, nil
		},
		Inputs: func(*Step) []models.TensorSpec { return []models.TensorSpec{ImageInput} },
	}
	// ocr-lines: probability map → line boxes → crops 48 pixels high, one
	// item per width bucket (each a batch of lines).
	g["ocr-lines"] = Glue{
		Next: func(parent *Item, st *Step) ([]*Item, error) {
			d, ok := parent.Data.(detData)
			if !ok {
				return nil, fmt.Errorf("ocr-lines must follow image-ocr-det")
			}
			boxes, err := glue.DetBoxes(parent.Out[0], 0, d.geom, glue.DetThresh, glue.DetMinArea)
			if err != nil {
				return nil, err
			}
			tensors, rows := glue.RecInput(d.img, boxes, 48, glue.DefaultRecWidths)
			items := make([]*Item, len(tensors))
			for i, t := range tensors {
				t.Name = st.inputs[0].Name
				ld := linesData{}
				for _, r := range rows[i] {
					ld.boxes = append(ld.boxes, boxes[r])
				}
				items[i] = &Item{In: []models.Tensor{t}, Data: ld}
			}
			return items, nil
		},
		Finish:  finishOCR,
		Outputs: func(*Step) []models.TensorSpec { return ocrOutputs },
	}
	addPresets(g)
}

type ocrLine struct {
	item int
	box  image.Rectangle
	text string
	conf float32
}

// itemOutput is the output of the detection pipelines that says which
// image of the request each row belongs to.
var itemOutput = models.TensorSpec{Name: "item", DataType: models.INT32, Shape: []int64{models.Dynamic}}

// ocrOutputs are the outputs of finishOCR.
var ocrOutputs = []models.TensorSpec{
	{Name: "text", DataType: models.BYTES, Shape: []int64{models.Dynamic}},
	{Name: "boxes", DataType: models.INT32, Shape: []int64{models.Dynamic, 4}},
	{Name: "confidence", DataType: models.FP32, Shape: []int64{models.Dynamic}},
	itemOutput,
}

// finishOCR answers text BYTES[n], boxes INT32[n,4] (x0,y0,x1,y1),
// confidence FP32[n] and item INT32[n] (the request image of each line):
// the lines of image 0 in reading order, then those of image 1, ….
func finishOCR(_ *Request, roots []*Item, last *Step) ([]models.Tensor, error) {
	keys, err := ocrKeys(last)
	if err != nil {
		return nil, err
	}
	var lines []ocrLine
	for r, root := range roots {
		for _, it := range root.Children {
			ld := it.Data.(linesData)
			for row, box := range ld.boxes {
				text, conf, err := glue.CTCDecode(it.Out[0], row, keys)
				if err != nil {
					return nil, err
				}
				lines = append(lines, ocrLine{r, box, text, conf})
			}
		}
	}
	slices.SortStableFunc(lines, func(a, b ocrLine) int {
		if c := cmp.Compare(a.item, b.item); c != 0 {
			return c
		}
		if c := cmp.Compare(a.box.Min.Y, b.box.Min.Y); c != 0 {
			return c
		}
		return cmp.Compare(a.box.Min.X, b.box.Min.X)
	})
	n := int64(len(lines))
	text := models.Tensor{Name: "text", DataType: models.BYTES, Shape: []int64{n}}
	boxes := models.Tensor{Name: "boxes", DataType: models.INT32, Shape: []int64{n, 4}, Data: make([]byte, 16*n)}
	conf := models.Tensor{Name: "confidence", DataType: models.FP32, Shape: []int64{n}, Data: make([]byte, 4*n)}
	item := models.Tensor{Name: itemOutput.Name, DataType: models.INT32, Shape: []int64{n}, Data: make([]byte, 4*n)}
	for i, l := range lines {
		text.Data = binary.LittleEndian.AppendUint32(text.Data, uint32(len(l.text)))
		text.Data = append(text.Data, l.text...)
		putBox(boxes.Data[16*i:], l.box)
		binary.LittleEndian.PutUint32(conf.Data[4*i:], math.Float32bits(l.conf))
		binary.LittleEndian.PutUint32(item.Data[4*i:], uint32(l.item))
	}
	if text.Data == nil {
		text.Data = []byte{}
	}
	return []models.Tensor{text, boxes, conf, item}, nil
}

func putBox(b []byte, r image.Rectangle) {
	for j, v := range [4]int{r.Min.X, r.Min.Y, r.Max.X, r.Max.Y} {
		binary.LittleEndian.PutUint32(b[4*j:], uint32(int32(v)))
	}
}

// addPresets adds the built-in glues that are declarative underneath:
// names for image, crops and output sections, and the BlazeFace decoder.
func addPresets(g Glues) {
	// image-imagenet: the torchvision ImageNet transform (glue.ImageNetPrep)
	// at the variant's input size; V2 FP32 tensors pass as they are.
	g["image-imagenet"] = Glue{PresetFirst: true, Preset: func(p *models.Pipeline, i int, _ *Step) {
		prep := glue.ImageNetPrep
		p.Stages[i].Image = &prep
	}}
	// image-face: BlazeFace's letterboxed NHWC −1..1 input (glue.FacePrep).
	g["image-face"] = Glue{PresetFirst: true, Preset: func(p *models.Pipeline, i int, _ *Step) {
		prep := glue.FacePrep
		p.Stages[i].Image = &prep
	}}
	// face-crops: BlazeFace detections (score ≥ 0.5) → one ImageNet crop
	// each; unless the spec has its own output section, the answer is
	// boxes INT32[n,4], face_score FP32[n], class INT32[n] and class_prob
	// FP32[n] (top-1 of the classifier), item INT32[n].
	g["face-crops"] = Glue{PresetNext: true, Preset: func(p *models.Pipeline, i int, st *Step) {
		p.Stages[i].Crops = &models.Crops{Decoder: "blazeface", Threshold: 0.5, Image: glue.ImageNetPrep}
		if p.Output == nil && i == len(p.Stages)-1 {
			_, out := st.Meta.Interface()
			p.Output = &models.Output{TopK: &models.TopK{From: out[0].Name, K: 1}, Rename: map[string]string{models.OutScore: "face_score"},
				Select: []string{models.OutBoxes, "face_score", models.OutClass, models.OutClassProb, models.OutItem}}
		}
	}}
	// blazeface: MediaPipe's anchors and weighted NMS for the detector's
	// input size (front 128, back 256).
	g["blazeface"] = Glue{Decoder: func(outputs []models.Tensor, det *Step, threshold float32) ([]glue.Box, error) {
		size, err := side(det, 1)
		if err != nil {
			return nil, err
		}
		return glue.FaceInputBoxes(outputs, size, threshold)
	}}
}
