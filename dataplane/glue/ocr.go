package glue

import (
	"bufio"
	"fmt"
	"image"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/ipa-serving/ipa/models"
	"golang.org/x/image/draw"
)

// PaddleOCR constants (PaddleOCR tools/infer/utility.py and the det/rec
// preprocessing operators in ppocr/data/imaug/operators.py).
const (
	// DetInputName and RecInputName are the input tensor names of the
	// paddle2onnx exports of PP-OCRv4 det and rec.
	DetInputName = "x"
	RecInputName = "x"
	// DetThresh is PaddleOCR's det_db_thresh: pixels of the probability map
	// above it are text.
	DetThresh = 0.3
	// DetMinArea is the smallest component (in map pixels) DetBoxes keeps by
	// default: PaddleOCR drops boxes whose shorter side is under 3 px
	// (DBPostProcess min_size = 3), i.e. at least 3×3.
	DetMinArea = 9
	// DetUnclipRatio is PaddleOCR's det_db_unclip_ratio: DB's map marks a
	// shrunk text kernel, grown back by area·ratio/perimeter on every side.
	DetUnclipRatio = 1.5
	// DetHalo is the part of the det map's text region that does not scale
	// with the text, in map pixels: on the pages of dataplane/glue/ocrset
	// (v1, seed 1, 24 pages, det-480/640/960) the region above DetThresh is
	// 0.385 × the font size + 3.0 map pixels high at every input size.
	DetHalo = 3.0
	// DetRefSide is the input side at which DetUnclipRatio reads best: the
	// smallest det variant, det-480 (see DetBoxes).
	DetRefSide = 480
	// DetHaloGain scales the padding that makes up for the halo a larger
	// input lacks (DetBoxes): 1 gives boxes of det-480's size, more gives
	// larger inputs roomier crops. Chosen on ocrset seed 2 (24 pages; the
	// measured accuracies use seed 1): the pipeline's CER at det-640/960 was
	// 4.0/5.9 % without, 2.3/2.1 % with gain 1, 1.7/1.3 % with 1.5, det-480
	// 2.1 % throughout. Gains 2 and 2.5 read seed 2 better still (1.2/1.0 %,
	// 1.2/0.8 %), but the box of a skewed line, tall already, grew to 2.6×
	// the font and into the next line, and det-960 dropped letters from it.
	DetHaloGain = 1.5
	// RecHeight is the input height of the PP-OCRv3/v4 recognisers
	// (rec_image_shape "3, 48, 320").
	RecHeight = 48
)

// DefaultRecWidths are the default width buckets of RecInput: PaddleOCR's
// 320 (rec_image_shape) and two doublings, so that a page's crops take at most
// three distinct shapes. Widths must be multiples of 8 (the recogniser emits
// one CTC step per 8 input columns).
var DefaultRecWidths = []int{320, 640, 1280}

// PaddleOCR det normalisation (NormalizeImage in the det config: scale 1/255,
// ImageNet mean and std). PaddleOCR reads images with OpenCV, so the model's
// channel 0 is blue: the mean/std below are applied to B,G,R in that order,
// exactly as PaddleOCR does.
var (
	detMean = [3]float32{0.485, 0.456, 0.406}
	detStd  = [3]float32{0.229, 0.224, 0.225}
	// detLUT is indexed by the model's channel (B,G,R) and an 8-bit value.
	detLUT = newLUT(detMean, detStd)
	// recLUT: PaddleOCR resize_norm_img: x/255, −0.5, /0.5, i.e. −1..1.
	recLUT = newLUT([3]float32{0.5, 0.5, 0.5}, [3]float32{0.5, 0.5, 0.5})
)

// DetGeometry records how DetInput placed the image in the tensor, to map the
// probability map back to the original image.
type DetGeometry struct {
	// Width and Height of the original image.
	Width, Height int
	// ResizedW×ResizedH is the area of the tensor, at its top-left corner,
	// that holds the resized image; the rest is padding.
	ResizedW, ResizedH int
	// InputW×InputH is the spatial size of the tensor.
	InputW, InputH int
	// Origin is img.Bounds().Min, added back to the boxes.
	Origin image.Point
}

// DetInput turns img into the input of the PP-OCRv4 text detector, a tensor
// named "x" of shape [1,3,S,S] with S = side rounded up to a multiple of 32
// (the DB network downsamples by 32): img is resized keeping its aspect ratio
// so that it fits side×side, placed at the top-left corner and padded with
// zeros (PaddleOCR pads its inputs with zeros after normalisation);
// normalised as PaddleOCR does (B,G,R channel order, (x/255 − mean)/std with
// the ImageNet mean and std). PaddleOCR's own DetResizeForTest stretches the
// image to multiples of 32 instead; the stage's models take a fixed square.
// It panics if side < 1.
func DetInput(img image.Image, side int) (models.Tensor, DetGeometry) {
	if side < 1 {
		panic(fmt.Sprintf("glue.DetInput: side %d < 1", side))
	}
	s := (side + 31) / 32 * 32
	b := img.Bounds()
	g := DetGeometry{Width: b.Dx(), Height: b.Dy(), InputW: s, InputH: s, Origin: b.Min}
	t := fp32(DetInputName, 1, 3, int64(s), int64(s))
	if b.Empty() {
		return t, g
	}
	scale := math.Min(float64(side)/float64(g.Width), float64(side)/float64(g.Height))
	g.ResizedW = min(side, max(1, int(math.Round(float64(g.Width)*scale))))
	g.ResizedH = min(side, max(1, int(math.Round(float64(g.Height)*scale))))
	rgba := resized(img, g.ResizedW, g.ResizedH, draw.BiLinear)
	writeNCHWRect(t.Data, rgba, rgba.Bounds(), s, s, detLUT, true)
	return t, g
}

// DetBoxes returns the text boxes found in row of prob, the detector's
// probability map of shape [N,1,H,W], in the coordinates of the original
// image, in reading order (top to bottom, then left to right).
//
// This is a simplified DB post-processing (PaddleOCR DBPostProcess without
// polygons): pixels above thresh (DetThresh) form 4-connected components;
// components with fewer than minArea pixels (DetMinArea) are dropped; each
// component's bounding box is grown on every side by DB's unclip offset
// area·DetUnclipRatio/perimeter (≈ 0.75× its height for a long line) plus
// the halo padding below, scaled to the original image and clipped to it.
// Rotated text is not handled (no minimum-area rectangles) and there is no
// box-score filter (box_thresh).
//
// Halo padding. The map's text region carries a halo of DetHalo map pixels
// whatever the input size, i.e. DetHalo/scale original pixels: it is a large
// part of the region at a small input and a small one at a large input. DB's
// unclip, proportional to the region, therefore made boxes tighter as the
// input grew (capitals' boxes 34 → 29 → 27 px at det-480/640/960), and the
// recogniser drops the spaces between words in tight crops (det-960 read
// "WARNING:HIGHVOLTAGE"; CER 2.1 / 4.2 / 6.1 % on ocrset seed 1). The unclip
// offset now gets (1+DetUnclipRatio)/2 · DetHalo · DetHaloGain ·
// (side/DetRefSide − 1) map pixels more on every side, side being the
// input's: what the halo adds to a det-480 box, which a larger input's
// region lacks (with DetHaloGain 1), so the padding grows with the
// detection resolution and boxes keep their size in the original image.
//
// MODELS.md §5 padded by half the box height instead; on rendered pages the
// unclip offset reads more spaces right (the recogniser drops spaces when the
// crop is tight) and never fewer characters.
func DetBoxes(prob models.Tensor, row int, g DetGeometry, thresh float32, minArea int) ([]image.Rectangle, error) {
	if err := checkFP32(prob, 4, row); err != nil {
		return nil, fmt.Errorf("glue.DetBoxes: %w", err)
	}
	if prob.Shape[1] != 1 {
		return nil, fmt.Errorf("glue.DetBoxes: tensor %q has %d channels; expected 1", prob.Name, prob.Shape[1])
	}
	H, W := int(prob.Shape[2]), int(prob.Shape[3])
	if g.ResizedW > W || g.ResizedH > H {
		return nil, fmt.Errorf("glue.DetBoxes: map %d×%d is smaller than the resized image %d×%d", W, H, g.ResizedW, g.ResizedH)
	}
	if g.ResizedW == 0 || g.ResizedH == 0 {
		return nil, nil
	}
	w, h := g.ResizedW, g.ResizedH
	base := row * H * W
	on := make([]bool, w*h)
	for y := range h {
		for x := range w {
			on[y*w+x] = getF32(prob.Data, base+y*W+x) > thresh
		}
	}
	sx := float64(g.Width) / float64(w)
	sy := float64(g.Height) / float64(h)
	halo := (1 + DetUnclipRatio) / 2 * DetHalo * DetHaloGain * max(0, float64(max(g.InputW, g.InputH))/DetRefSide-1)
	var boxes []image.Rectangle
	stack := make([]int, 0, 256)
	for start := range on {
		if !on[start] {
			continue
		}
		on[start] = false
		stack = append(stack[:0], start)
		n := 0
		x0, y0, x1, y1 := w, h, -1, -1
		for len(stack) > 0 {
			p := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			n++
			x, y := p%w, p/w
			x0, y0, x1, y1 = min(x0, x), min(y0, y), max(x1, x), max(y1, y)
			if x > 0 && on[p-1] {
				on[p-1] = false
				stack = append(stack, p-1)
			}
			if x+1 < w && on[p+1] {
				on[p+1] = false
				stack = append(stack, p+1)
			}
			if y > 0 && on[p-w] {
				on[p-w] = false
				stack = append(stack, p-w)
			}
			if y+1 < h && on[p+w] {
				on[p+w] = false
				stack = append(stack, p+w)
			}
		}
		if n < minArea {
			continue
		}
		// DB unclip of the component's rectangle: offset = area·ratio/perimeter.
		cw, ch := float64(x1-x0+1), float64(y1-y0+1)
		pad := cw*ch*DetUnclipRatio/(2*(cw+ch)) + halo
		r := image.Rect(
			int(math.Floor((float64(x0)-pad)*sx)), int(math.Floor((float64(y0)-pad)*sy)),
			int(math.Ceil((float64(x1+1)+pad)*sx)), int(math.Ceil((float64(y1+1)+pad)*sy)),
		).Intersect(image.Rect(0, 0, g.Width, g.Height))
		if !r.Empty() {
			boxes = append(boxes, r.Add(g.Origin))
		}
	}
	sort.SliceStable(boxes, func(i, j int) bool {
		if boxes[i].Min.Y != boxes[j].Min.Y {
			return boxes[i].Min.Y < boxes[j].Min.Y
		}
		return boxes[i].Min.X < boxes[j].Min.X
	})
	return boxes, nil
}

// GroupLines groups boxes into text lines: two boxes share a line when their
// vertical overlap is at least half the height of the shorter one. It returns
// the lines top to bottom, each as indexes into boxes from left to right, so
// a page's text is the lines' recognised words joined by spaces.
func GroupLines(boxes []image.Rectangle) [][]int {
	order := make([]int, len(boxes))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		ca := boxes[order[a]].Min.Y + boxes[order[a]].Max.Y
		cb := boxes[order[b]].Min.Y + boxes[order[b]].Max.Y
		return ca < cb
	})
	var lines [][]int
	var spans []image.Rectangle // vertical extent of each line (X unused)
	for _, i := range order {
		b := boxes[i]
		placed := false
		for l := range lines {
			lo, hi := max(b.Min.Y, spans[l].Min.Y), min(b.Max.Y, spans[l].Max.Y)
			if 2*(hi-lo) >= min(b.Dy(), spans[l].Dy()) {
				lines[l] = append(lines[l], i)
				spans[l] = spans[l].Union(b)
				placed = true
				break
			}
		}
		if !placed {
			lines = append(lines, []int{i})
			spans = append(spans, b)
		}
	}
	for _, l := range lines {
		slices.SortStableFunc(l, func(a, b int) int { return boxes[a].Min.X - boxes[b].Min.X })
	}
	sort.SliceStable(lines, func(a, b int) bool { return spans[a].Min.Y+spans[a].Max.Y < spans[b].Min.Y+spans[b].Max.Y })
	return lines
}

// RecInput cuts boxes out of img and turns them into recogniser inputs (named
// "x", FP32 [n,3,height,width]), one tensor per width bucket used, buckets in
// ascending width. rows[i][r] is the index in boxes of row r of tensors[i].
//
// As PaddleOCR's resize_norm_img does, each crop is resized to height keeping
// its aspect ratio (width ceil(height·w/h)), normalised with (x/255 − 0.5)/0.5
// in B,G,R order and padded on the right with zeros up to the width of the
// smallest bucket that holds it; a crop wider than the last bucket is
// squeezed to that width. widthBuckets nil means DefaultRecWidths; height ≤ 0
// means RecHeight. An empty box gives a row of padding.
func RecInput(img image.Image, boxes []image.Rectangle, height int, widthBuckets []int) (tensors []models.Tensor, rows [][]int) {
	if height <= 0 {
		height = RecHeight
	}
	if len(widthBuckets) == 0 {
		widthBuckets = DefaultRecWidths
	}
	buckets := slices.Clone(widthBuckets)
	slices.Sort(buckets)
	type item struct {
		box, width int
	}
	byBucket := make([][]item, len(buckets))
	for i, r := range boxes {
		r = r.Intersect(img.Bounds())
		w := 0
		if !r.Empty() {
			w = max(1, int(math.Ceil(float64(height)*float64(r.Dx())/float64(r.Dy()))))
		}
		k, _ := slices.BinarySearch(buckets, w)
		if k == len(buckets) {
			k, w = len(buckets)-1, buckets[len(buckets)-1]
		}
		byBucket[k] = append(byBucket[k], item{i, w})
	}
	for k, items := range byBucket {
		if len(items) == 0 {
			continue
		}
		bw := buckets[k]
		t := fp32(RecInputName, int64(len(items)), 3, int64(height), int64(bw))
		itemBytes := 4 * 3 * height * bw
		idx := make([]int, len(items))
		for j, it := range items {
			idx[j] = it.box
			if it.width == 0 {
				continue
			}
			crop := resized(Crop(img, boxes[it.box]), it.width, height, draw.BiLinear)
			writeNCHWRect(t.Data[j*itemBytes:(j+1)*itemBytes], crop, crop.Bounds(), bw, height, recLUT, true)
		}
		tensors = append(tensors, t)
		rows = append(rows, idx)
	}
	return tensors, rows
}

// CTCDecode reads row of probs, the recogniser's CTC output of shape [N,T,C],
// greedily as PaddleOCR's CTCLabelDecode does: the most probable class at each
// step, repeats collapsed, blanks dropped. Class 0 is the CTC blank, class i
// in 1..len(keys) is keys[i-1], and class len(keys)+1 is a space
// (use_space_char). confidence is the mean probability of the emitted
// characters (0 for an empty text).
func CTCDecode(probs models.Tensor, row int, keys []string) (text string, confidence float32, err error) {
	if err := checkFP32(probs, 3, row); err != nil {
		return "", 0, fmt.Errorf("glue.CTCDecode: %w", err)
	}
	T, C := int(probs.Shape[1]), int(probs.Shape[2])
	if C != len(keys)+2 {
		return "", 0, fmt.Errorf("glue.CTCDecode: tensor %q has %d classes; %d keys need %d (blank + keys + space)", probs.Name, C, len(keys), len(keys)+2)
	}
	var sb strings.Builder
	var sum float64
	n := 0
	prev := -1
	base := row * T * C
	for t := range T {
		best, bp := 0, float32(math.Inf(-1))
		for c := range C {
			if p := getF32(probs.Data, base+t*C+c); p > bp {
				best, bp = c, p
			}
		}
		if best != 0 && best != prev {
			if best <= len(keys) {
				sb.WriteString(keys[best-1])
			} else {
				sb.WriteByte(' ')
			}
			sum += float64(bp)
			n++
		}
		prev = best
	}
	if n > 0 {
		confidence = float32(sum / float64(n))
	}
	return sb.String(), confidence, nil
}

// LoadKeysFile reads the character dictionary at path (see LoadKeys).
func LoadKeysFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the OCR character list: %w", err)
	}
	defer f.Close()
	return LoadKeys(f)
}

// LoadKeys reads a PaddleOCR character dictionary (ppocr_keys_v1.txt, next to
// the rec model): one character per line, in class order (class i+1 is line
// i). Line endings (\n or \r\n) are stripped; nothing else is.
func LoadKeys(r io.Reader) ([]string, error) {
	var keys []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		keys = append(keys, strings.TrimSuffix(sc.Text(), "\r"))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cannot read the OCR character dictionary: %w", err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("the OCR character dictionary is empty")
	}
	return keys, nil
}
