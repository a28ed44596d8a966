package router

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"image"
	"math"
	"path/filepath"
	"slices"
	"sync"

	"github.com/ipa-serving/ipa/dataplane/glue"
	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
)

// Image glues: the router decodes the request's image once and makes each
// stage's tensors in Go (dataplane/glue holds the model conventions).

// requestImage decodes the request's image: the raw body, or the first
// element of a V2 BYTES input.
func requestImage(req *Request) (image.Image, error) {
	if req.Image != nil {
		return req.Image, nil
	}
	b := req.Raw
	if req.V2 != nil {
		b = nil
		for _, t := range req.V2.Inputs {
			if t.DataType == models.BYTES && len(t.Data) >= 4 {
				n := binary.LittleEndian.Uint32(t.Data)
				if int(n) <= len(t.Data)-4 {
					b = t.Data[4 : 4+n]
				}
				break
			}
		}
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: %v", v2codec.ErrBadRequest, errNoImage)
	}
	img, err := glue.DecodeImage(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", v2codec.ErrBadRequest, err)
	}
	req.Image = img
	return img, nil
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

type faceData struct {
	img  image.Image
	geom glue.FaceGeometry
	size int
}

// keysCache holds the OCR character lists by path.
var keysCache sync.Map

func ocrKeys(st *Step) ([]string, error) {
	p := filepath.Join(st.RepoDir, st.Meta.Dir, st.Variant().Name, "ppocr_keys_v1.txt")
	if k, ok := keysCache.Load(p); ok {
		return k.([]string), nil
	}
	keys, err := glue.LoadKeysFile(p)
	if err != nil {
		return nil, err
	}
	keysCache.Store(p, keys)
	return keys, nil
}

// addImageGlues adds the glues of the image pipelines to g.
func addImageGlues(g Glues) {
	// image-imagenet: an image resized and normalised for the ImageNet
	// ladder, or V2 FP32 tensors passed as they are.
	g["image-imagenet"] = Glue{
		First: func(req *Request, st *Step) ([]*Item, error) {
			if req.V2 != nil && len(req.V2.Inputs) > 0 && req.V2.Inputs[0].DataType != models.BYTES {
				return tensorFirst(req, st)
			}
			img, err := requestImage(req)
			if err != nil {
				return nil, err
			}
			size, err := side(st, 2)
			if err != nil {
				return nil, err
			}
			return []*Item{{In: []models.Tensor{glue.ClassifyInput(img, st.inputs[0].Name, size)}}}, nil
		},
		Finish: finishTensors,
	}
	// image-ocr-det: the page, letterboxed to the det variant's side.
	g["image-ocr-det"] = Glue{
		First: func(req *Request, st *Step) ([]*Item, error) {
			img, err := requestImage(req)
			if err != nil {
				return nil, err
			}
			s, err := side(st, 2)
			if err != nil {
				return nil, err
			}
			t, g := glue.DetInput(img, s)
			t.Name = st.inputs[0].Name
			return []*Item{{In: []models.Tensor{t}, Data: detData{img, g}}}, nil
		},
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
		Finish: finishOCR,
	}
	// image-face: the image letterboxed to the BlazeFace variant's size.
	g["image-face"] = Glue{
		First: func(req *Request, st *Step) ([]*Item, error) {
			img, err := requestImage(req)
			if err != nil {
				return nil, err
			}
			s, err := side(st, 1)
			if err != nil {
				return nil, err
			}
			t, g := glue.FaceInput(img, s)
			t.Name = st.inputs[0].Name
			return []*Item{{In: []models.Tensor{t}, Data: faceData{img, g, s}}}, nil
		},
	}
	// face-crops: BlazeFace detections → one ImageNet-normalised crop each.
	g["face-crops"] = Glue{
		Next: func(parent *Item, st *Step) ([]*Item, error) {
			d, ok := parent.Data.(faceData)
			if !ok {
				return nil, fmt.Errorf("face-crops must follow image-face")
			}
			dets, err := glue.FaceBoxes(parent.Out, d.geom, d.size, 0.5)
			if err != nil {
				return nil, err
			}
			size, err := side(st, 2)
			if err != nil {
				return nil, err
			}
			items := make([]*Item, len(dets))
			for i, det := range dets {
				crop := glue.Crop(d.img, det.Box)
				items[i] = &Item{In: []models.Tensor{glue.ClassifyInput(crop, st.inputs[0].Name, size)}, Box: det.Box, Score: det.Score}
			}
			return items, nil
		},
		Finish: finishFaces,
	}
}

type ocrLine struct {
	box  image.Rectangle
	text string
	conf float32
}

// finishOCR answers text BYTES[n], boxes INT32[n,4] (x0,y0,x1,y1) and
// confidence FP32[n], in reading order.
func finishOCR(_ *Request, roots []*Item, last *Step) ([]models.Tensor, error) {
	keys, err := ocrKeys(last)
	if err != nil {
		return nil, err
	}
	var lines []ocrLine
	for _, root := range roots {
		for _, it := range root.Children {
			ld := it.Data.(linesData)
			for row, box := range ld.boxes {
				text, conf, err := glue.CTCDecode(it.Out[0], row, keys)
				if err != nil {
					return nil, err
				}
				lines = append(lines, ocrLine{box, text, conf})
			}
		}
	}
	slices.SortStableFunc(lines, func(a, b ocrLine) int {
		if c := cmp.Compare(a.box.Min.Y, b.box.Min.Y); c != 0 {
			return c
		}
		return cmp.Compare(a.box.Min.X, b.box.Min.X)
	})
	n := int64(len(lines))
	text := models.Tensor{Name: "text", DataType: models.BYTES, Shape: []int64{n}}
	boxes := models.Tensor{Name: "boxes", DataType: models.INT32, Shape: []int64{n, 4}, Data: make([]byte, 16*n)}
	conf := models.Tensor{Name: "confidence", DataType: models.FP32, Shape: []int64{n}, Data: make([]byte, 4*n)}
	for i, l := range lines {
		text.Data = binary.LittleEndian.AppendUint32(text.Data, uint32(len(l.text)))
		text.Data = append(text.Data, l.text...)
		putBox(boxes.Data[16*i:], l.box)
		binary.LittleEndian.PutUint32(conf.Data[4*i:], math.Float32bits(l.conf))
	}
	if text.Data == nil {
		text.Data = []byte{}
	}
	return []models.Tensor{text, boxes, conf}, nil
}

// finishFaces answers boxes INT32[n,4], face_score FP32[n], class INT32[n]
// (top-1 ImageNet index of the crop) and class_prob FP32[n].
func finishFaces(_ *Request, roots []*Item, _ *Step) ([]models.Tensor, error) {
	var faces []*Item
	for _, r := range roots {
		faces = append(faces, r.Children...)
	}
	n := int64(len(faces))
	boxes := models.Tensor{Name: "boxes", DataType: models.INT32, Shape: []int64{n, 4}, Data: make([]byte, 16*n)}
	score := models.Tensor{Name: "face_score", DataType: models.FP32, Shape: []int64{n}, Data: make([]byte, 4*n)}
	class := models.Tensor{Name: "class", DataType: models.INT32, Shape: []int64{n}, Data: make([]byte, 4*n)}
	prob := models.Tensor{Name: "class_prob", DataType: models.FP32, Shape: []int64{n}, Data: make([]byte, 4*n)}
	for i, f := range faces {
		putBox(boxes.Data[16*i:], f.Box)
		binary.LittleEndian.PutUint32(score.Data[4*i:], math.Float32bits(f.Score))
		top, err := glue.TopK(f.Out[0], 0, 1, nil)
		if err != nil {
			return nil, err
		}
		binary.LittleEndian.PutUint32(class.Data[4*i:], uint32(top[0].Index))
		binary.LittleEndian.PutUint32(prob.Data[4*i:], math.Float32bits(top[0].Prob))
	}
	return []models.Tensor{boxes, score, class, prob}, nil
}

func putBox(b []byte, r image.Rectangle) {
	for j, v := range [4]int{r.Min.X, r.Min.Y, r.Max.X, r.Max.Y} {
		binary.LittleEndian.PutUint32(b[4*j:], uint32(int32(v)))
	}
}
