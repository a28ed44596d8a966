package router

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/dataplane/glue"
	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
)

const wakeSpec = `name: wake
sla: 2s
stages:
  - name: vad
    model: vad
    input: audio-vad
    audio: {gate: 0.5, threshold: 0.7}
  - name: mel
    model: mel
    input: audio-mel
  - name: embed
    model: embed
    input: audio-embed
  - name: wake
    model: head
    input: audio-wake
`

// wakeFakes are the four stages with the real models' interfaces: the VAD
// says 0.9 for a chunk whose last sample is loud, the melspectrogram
// answers 8 frames per row of the row's index, the embedding answers its
// window's first value, the head the mean of its features' first values.
func wakeFakes(t *testing.T, melCalls *atomic.Int32) ([]*models.Stage, []StageClient) {
	stages := []*models.Stage{
		fakeStage(t, "vad", []models.TensorSpec{spec("input", models.FP32, -1, 576)}, []models.TensorSpec{spec("output", models.FP32, -1, 1)}, nil),
		fakeStage(t, "mel", []models.TensorSpec{spec("input", models.FP32, -1, 1760)}, []models.TensorSpec{spec("output", models.FP32, -1, 1, -1, 32)}, nil),
		fakeStage(t, "embed", []models.TensorSpec{spec("input_1", models.FP32, -1, 76, 32, 1)}, []models.TensorSpec{spec("conv2d_19", models.FP32, -1, 1, 1, 96)}, nil),
		fakeStage(t, "head", []models.TensorSpec{spec("x", models.FP32, -1, 4, 96)}, []models.TensorSpec{spec("y", models.FP32, -1, 1)}, nil),
	}
	vad := fakeClient(func(in []models.Tensor) []models.Tensor {
		x := glue.Float32s(in[0].Data)
		k := in[0].Batch()
		p := make([]float32, k)
		for i := range p {
			p[i] = 0.1
			if x[(i+1)*576-1] > 0.2 {
				p[i] = 0.9
			}
		}
		return []models.Tensor{f32("output", []int64{int64(k), 1}, p...)}
	})
	mel := fakeClient(func(in []models.Tensor) []models.Tensor {
		melCalls.Add(1)
		m := in[0].Batch()
		v := make([]float32, m*8*32)
		for i := range v {
			v[i] = float32(i / (8 * 32))
		}
		return []models.Tensor{f32("output", []int64{int64(m), 1, 8, 32}, v...)}
	})
	embed := fakeClient(func(in []models.Tensor) []models.Tensor {
		x := glue.Float32s(in[0].Data)
		e := in[0].Batch()
		v := make([]float32, e*96)
		for i := 0; i < e; i++ {
			v[i*96] = x[i*76*32]
		}
		return []models.Tensor{f32("conv2d_19", []int64{int64(e), 1, 1, 96}, v...)}
	})
	head := fakeClient(func(in []models.Tensor) []models.Tensor {
		x := glue.Float32s(in[0].Data)
		h := in[0].Batch()
		v := make([]float32, h)
		for i := range v {
			for j := 0; j < 4; j++ {
				v[i] += x[(i*4+j)*96] / 4
			}
			v[i] /= 4 // scores in [0.5, …)
		}
		return []models.Tensor{f32("y", []int64{int64(h), 1}, v...)}
	})
	return stages, []StageClient{vad, mel, embed, head}
}

func outNamed(t *testing.T, out []models.Tensor, name string) models.Tensor {
	t.Helper()
	o, ok := outputNamed(out, name)
	if !ok {
		t.Fatalf("no output %q in %v", name, tensorNames(out))
	}
	return o
}

// TestAudioGlues runs the wake-word glue on fake stages: chunks, the
// gate, the windows and what a window answers, and the refusals.
func TestAudioGlues(t *testing.T) {
	var melCalls atomic.Int32
	stages, clients := wakeFakes(t, &melCalls)
	p, err := build(parseSpec(t, wakeSpec, stages...), stages, clients...)
	if err != nil {
		t.Fatal(err)
	}
	if got := models.TensorNames(p.Inputs()); strings.Join(got, ",") != "audio" {
		t.Fatalf("inputs %v", got)
	}
	// 2 s: quiet, then loud from 1 s on (chunks 31… are loud: their last sample is).
	clip := make([]int16, 2*glue.SampleRate)
	for i := glue.SampleRate; i < len(clip); i++ {
		clip[i] = 16000
	}
	out, _, err := p.Run(context.Background(), &Request{Raw: glue.EncodeWAV(clip)}, time.Time{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	vad := glue.Float32s(outNamed(t, out, "vad").Data)
	if len(vad) != 63 || vad[30] != 0.1 || vad[31] != 0.9 {
		t.Fatalf("vad %v", vad)
	}
	// 25 mel steps of 8 frames = 200 frames → 16 embeddings → 13 windows of 4.
	score := glue.Float32s(outNamed(t, out, "score").Data)
	winVAD := glue.Float32s(outNamed(t, out, "window_vad").Data)
	det := outNamed(t, out, "detected").Data
	if len(score) != 13 || len(winVAD) != 13 || len(det) != 13 {
		t.Fatalf("%d scores", len(score))
	}
	for h := range score {
		// Features are the first frame of each embedding window, x/10+2 of
		// mel row ⌊8e/8⌋ = e: the head averages rows h…h+3 /4.
		want := (float32(h)+1.5)/10/4 + 0.5
		start, end := glue.HeadSpan(h, 4)
		if d := score[h] - want; d > 1e-6 || d < -1e-6 {
			t.Errorf("window %d: score %v, want %v", h, score[h], want)
		}
		if wv := glue.MaxOver(vad, 512, start, end); winVAD[h] != wv || (det[h] == 1) != (score[h] >= 0.7 && wv >= 0.5) {
			t.Errorf("window %d: vad %v detected %d (score %v, chunks %v)", h, winVAD[h], det[h], score[h], wv)
		}
	}
	if det[0] != 0 || det[12] != 1 {
		t.Errorf("detected %v", det)
	}

	// Silence: the gate stays closed, the mel stage is never asked.
	before := melCalls.Load()
	out, tim, err := p.Run(context.Background(), &Request{Raw: glue.EncodeWAV(make([]int16, glue.SampleRate))}, time.Time{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if melCalls.Load() != before || len(tim) != 1 || outNamed(t, out, "score").Shape[0] != 0 || outNamed(t, out, "vad").Shape[0] != 32 {
		t.Fatalf("silence: mel calls %d→%d, %d steps ran, outputs %v", before, melCalls.Load(), len(tim), out)
	}

	// The WAV in a V2 BYTES input works as the body does.
	wav := glue.EncodeWAV(clip)
	elem := binary.LittleEndian.AppendUint32(nil, uint32(len(wav)))
	v2 := &v2codec.InferRequest{Inputs: []models.Tensor{{Name: "audio", DataType: models.BYTES, Shape: []int64{1}, Data: append(elem, wav...)}}}
	if out, _, err := p.Run(context.Background(), &Request{V2: v2}, time.Time{}, nil); err != nil || outNamed(t, out, "score").Shape[0] != 13 {
		t.Fatalf("V2: %v", err)
	}

	// Refusals are bad requests that say what to send.
	for _, tc := range []struct {
		req  *Request
		want string
	}{
		{&Request{}, "POST a WAV body"},
		{&Request{Raw: []byte("hello")}, "not a WAV file"},
		{&Request{Raw: glue.EncodeWAV(make([]int16, 31*glue.SampleRate))}, "the limit is 30.0 s"},
		{&Request{V2: &v2codec.InferRequest{Inputs: []models.Tensor{f32("audio", []int64{1})}}}, `one input "audio" BYTES [1]`},
	} {
		_, _, err := p.Run(context.Background(), tc.req, time.Time{}, nil)
		if !errors.Is(err, v2codec.ErrBadRequest) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want a bad request containing %q", err, tc.want)
		}
	}
}
