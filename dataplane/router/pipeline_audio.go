package router

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ipa-serving/ipa/dataplane/glue"
	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
)

// Audio glues: a wake-word pipeline of four steps, each a Go glue named in
// the spec (the rest — models, variants, SLA, batching — is YAML):
//
//	audio-vad    WAV → VAD chunks [K, width]           (Silero VAD; first step, with the audio section)
//	audio-mel    80 ms steps [M, 480+1280], if any chunk passed the gate (melspectrogram)
//	audio-embed  x/10+2, 76-frame windows [E, 76, 32, 1]               (embedding)
//	audio-wake   the last W features per window [H, W, 96]             (a wake-word head; ends the pipeline)
//
// One request is one item at every step (its chunks and windows are the
// rows of the item's batch). A clip no chunk of which reaches the gate stops
// after the VAD: the later steps have no work and the answer has no windows.
// The VAD runs on each chunk on its own (a zero state: the variants are
// added with --const state=0), not as a stream.

// AudioInput is the V2 input of the audio pipelines: BYTES [1], one WAV
// (or the WAV as the raw body).
var AudioInput = models.TensorSpec{Name: "audio", DataType: models.BYTES, Shape: []int64{1}}

// The outputs of an audio pipeline.
var audioOutputSpecs = []models.TensorSpec{
	{Name: "vad", DataType: models.FP32, Shape: []int64{models.Dynamic}},        // per chunk of `chunk` samples
	{Name: "score", DataType: models.FP32, Shape: []int64{models.Dynamic}},      // per head window
	{Name: "window_vad", DataType: models.FP32, Shape: []int64{models.Dynamic}}, // the highest VAD probability in the window
	{Name: "detected", DataType: models.BOOL, Shape: []int64{models.Dynamic}},   // score ≥ threshold and window_vad ≥ gate
	{Name: "window_end", DataType: models.FP32, Shape: []int64{models.Dynamic}}, // seconds from the clip's start
}

// audioReq is what the audio glues keep on a request's items.
type audioReq struct {
	cfg     models.Audio
	samples []int16
	vad     []float32
	width   int   // features per head window
	wake    *Item // the head's item, when the chain got that far
}

func addAudioGlues(g Glues) {
	g["audio-vad"] = Glue{First: audioVAD, Inputs: func(*Step) []models.TensorSpec { return []models.TensorSpec{AudioInput} }}
	g["audio-mel"] = Glue{Next: audioMel}
	g["audio-embed"] = Glue{Next: audioEmbed}
	g["audio-wake"] = Glue{Next: audioWake, Finish: audioFinish, Outputs: func(*Step) []models.TensorSpec { return audioOutputSpecs }}
}

// audioBody returns the request's WAV: the raw body, or the one element of
// the V2 BYTES input "audio".
func audioBody(req *Request) ([]byte, error) {
	if req.V2 == nil {
		if len(req.Raw) == 0 {
			return nil, errors.New("the request carries no audio: POST a WAV body (16 kHz mono 16-bit PCM), or a V2 BYTES input \"audio\" holding one")
		}
		return req.Raw, nil
	}
	in := req.V2.Inputs
	if len(in) != 1 || in[0].Name != AudioInput.Name || in[0].DataType != models.BYTES || models.Elements(in[0].Shape) != 1 {
		var got []string
		for _, t := range in {
			got = append(got, fmt.Sprintf("%s %s%s", t.Name, t.DataType, models.FormatShape(t.Shape)))
		}
		return nil, fmt.Errorf("this pipeline takes one input %q BYTES [1] holding a WAV, got %v", AudioInput.Name, got)
	}
	b := in[0].Data
	if len(b) < 4 || uint64(binary.LittleEndian.Uint32(b)) != uint64(len(b)-4) {
		return nil, fmt.Errorf("input %q: its one element is malformed", AudioInput.Name)
	}
	return b[4:], nil
}

// onlyInput returns the active variant's one input, checking it is FP32
// of the rank the glue makes.
func onlyInput(st *Step, rank int) (models.TensorSpec, error) {
	in := st.Variant().Inputs
	if len(in) != 1 || in[0].DataType != models.FP32 || len(in[0].Shape) != rank {
		return models.TensorSpec{}, fmt.Errorf("glue %q needs a model with one FP32 input of rank %d; variant %q of stage %q has %v",
			st.Spec.Input, rank, st.Variant().Name, st.Spec.Model, in)
	}
	return in[0], nil
}

// firstOutput returns the first output of an item, checking its datatype
// and element count (0: any).
func firstOutput(it *Item, elems int) ([]float32, []int64, error) {
	if len(it.Out) == 0 || it.Out[0].DataType != models.FP32 {
		return nil, nil, fmt.Errorf("the previous step answered %v; want an FP32 output first", tensorNames(it.Out))
	}
	t := it.Out[0]
	if elems > 0 && models.Elements(t.Shape) != elems {
		return nil, nil, fmt.Errorf("the previous step's output %q is %s; want %d values", t.Name, models.FormatShape(t.Shape), elems)
	}
	return glue.Float32s(t.Data), t.Shape, nil
}

// audioVAD decodes the WAV and makes one item of its VAD chunks.
func audioVAD(req *Request, st *Step) ([]*Item, error) {
	cfg := st.Spec.Audio.WithDefaults()
	b, err := audioBody(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", v2codec.ErrBadRequest, err)
	}
	samples, err := glue.DecodeWAV(b, int(cfg.MaxSeconds*glue.SampleRate))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", v2codec.ErrBadRequest, err)
	}
	in, err := onlyInput(st, 2)
	if err != nil {
		return nil, err
	}
	width := int(in.Shape[1])
	if width <= 0 {
		width = cfg.Chunk
	}
	if width < cfg.Chunk {
		return nil, fmt.Errorf("variant %q takes %d samples, less than the chunk of %d", st.Variant().Name, width, cfg.Chunk)
	}
	rows, k := glue.VADChunks(samples, cfg.Chunk, width)
	ar := &audioReq{cfg: cfg, samples: samples}
	t := models.Tensor{Name: in.Name, DataType: models.FP32, Shape: []int64{int64(k), int64(width)}, Data: glue.Float32Bytes(rows)}
	return []*Item{{In: []models.Tensor{t}, Data: ar}}, nil
}

// audioMel reads the VAD's probabilities and, when a chunk passes the
// gate, makes the melspectrogram's input: the whole clip.
func audioMel(parent *Item, st *Step) ([]*Item, error) {
	ar, ok := parent.Data.(*audioReq)
	if !ok {
		return nil, errors.New("audio-mel follows audio-vad")
	}
	k := (len(ar.samples) + ar.cfg.Chunk - 1) / ar.cfg.Chunk
	vad, _, err := firstOutput(parent, k)
	if err != nil {
		return nil, err
	}
	ar.vad = vad
	rows, m := glue.MelRows(ar.samples)
	if glue.MaxOver(vad, 1, 0, len(vad)) < float32(ar.cfg.Gate) || m == 0 {
		return nil, nil // no speech (or too short): nothing to score
	}
	in, err := onlyInput(st, 2)
	if err != nil {
		return nil, err
	}
	if w := in.Shape[1]; w > 0 && w != glue.MelContext+glue.MelChunk {
		return nil, fmt.Errorf("variant %q of stage %q takes %d samples; the audio glue sends openWakeWord's %d (pin it with --shape %s=-1,%d)", st.Variant().Name, st.Spec.Model, w, glue.MelContext+glue.MelChunk, in.Name, glue.MelContext+glue.MelChunk)
	}
	t := models.Tensor{Name: in.Name, DataType: models.FP32, Shape: []int64{int64(m), glue.MelContext + glue.MelChunk}, Data: glue.Float32Bytes(rows)}
	return []*Item{{In: []models.Tensor{t}, Data: ar}}, nil
}

// audioEmbed turns the melspectrogram [1,1,F,32] into embedding windows.
func audioEmbed(parent *Item, st *Step) ([]*Item, error) {
	mel, shape, err := firstOutput(parent, 0)
	if err != nil {
		return nil, err
	}
	if len(shape) != 4 || shape[1] != 1 || shape[3] != glue.MelBins {
		return nil, fmt.Errorf("the melspectrogram answered %s; want [rows,1,frames,%d]", models.FormatShape(shape), glue.MelBins)
	}
	windows, n := glue.EmbedWindows(mel, int(shape[0]*shape[2])) // the rows' frames, in order
	if n == 0 {
		return nil, nil
	}
	in, err := onlyInput(st, 4)
	if err != nil {
		return nil, err
	}
	t := models.Tensor{Name: in.Name, DataType: models.FP32, Shape: []int64{int64(n), glue.EmbedFrames, glue.MelBins, 1}, Data: glue.Float32Bytes(windows)}
	return []*Item{{In: []models.Tensor{t}, Data: parent.Data}}, nil
}

// audioWake turns the features [E,1,1,96] into the head's windows of the
// active variant's width (its input's dimension 1).
func audioWake(parent *Item, st *Step) ([]*Item, error) {
	ar, ok := parent.Data.(*audioReq)
	if !ok {
		return nil, errors.New("audio-wake follows audio-embed")
	}
	feats, shape, err := firstOutput(parent, 0)
	if err != nil {
		return nil, err
	}
	if len(shape) == 0 || models.Elements(shape) != int(shape[0])*glue.EmbedDim {
		return nil, fmt.Errorf("the embedding answered %s; want [n,1,1,%d]", models.FormatShape(shape), glue.EmbedDim)
	}
	in, err := onlyInput(st, 3)
	if err != nil {
		return nil, err
	}
	if in.Shape[1] <= 0 || in.Shape[2] != glue.EmbedDim {
		return nil, fmt.Errorf("variant %q of stage %q takes %s; a wake-word head takes [n,features,%d] with a fixed number of features", st.Variant().Name, st.Spec.Model, models.FormatShape(in.Shape), glue.EmbedDim)
	}
	ar.width = int(in.Shape[1])
	windows, h := glue.HeadWindows(feats, int(shape[0]), ar.width)
	if h == 0 {
		return nil, nil
	}
	t := models.Tensor{Name: in.Name, DataType: models.FP32, Shape: []int64{int64(h), int64(ar.width), glue.EmbedDim}, Data: glue.Float32Bytes(windows)}
	it := &Item{In: []models.Tensor{t}, Data: ar}
	ar.wake = it
	return []*Item{it}, nil
}

// audioFinish answers the chunks' VAD probabilities and, per head window,
// its score, its highest VAD probability, whether it is a detection and
// where it ends.
func audioFinish(_ *Request, roots []*Item, _ *Step) ([]models.Tensor, error) {
	if len(roots) != 1 {
		return nil, fmt.Errorf("BUG: the audio glue made %d root items", len(roots))
	}
	ar, ok := roots[0].Data.(*audioReq)
	if !ok {
		return nil, errors.New("audio-wake ends a pipeline that starts with audio-vad")
	}
	var scores []float32
	if ar.wake != nil {
		var err error
		if scores, _, err = firstOutput(ar.wake, 0); err != nil {
			return nil, err
		}
	}
	h := len(scores)
	winVAD, ends := make([]float32, h), make([]float32, h)
	detected := make([]byte, h)
	for i := range scores {
		start, end := glue.HeadSpan(i, ar.width)
		winVAD[i] = glue.MaxOver(ar.vad, ar.cfg.Chunk, start, end)
		ends[i] = float32(min(end, len(ar.samples))) / glue.SampleRate
		if scores[i] >= float32(ar.cfg.Threshold) && winVAD[i] >= float32(ar.cfg.Gate) {
			detected[i] = 1
		}
	}
	f := func(i int, v []float32) models.Tensor {
		s := audioOutputSpecs[i]
		return models.Tensor{Name: s.Name, DataType: s.DataType, Shape: []int64{int64(len(v))}, Data: glue.Float32Bytes(v)}
	}
	return []models.Tensor{
		f(0, ar.vad), f(1, scores), f(2, winVAD),
		{Name: audioOutputSpecs[3].Name, DataType: models.BOOL, Shape: []int64{int64(h)}, Data: detected},
		f(4, ends),
	}, nil
}
