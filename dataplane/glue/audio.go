package glue

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Audio: the wake-word chain of openWakeWord (dscripka/openWakeWord,
// openwakeword/utils.py) with a Silero VAD gate in front.
//
//	WAV → PCM16 mono 16 kHz → VAD chunks (Silero) → melspectrogram per
//	80 ms with 30 ms of context → x/10+2 → 76-frame windows every 8 frames
//	(embedding) → the last W features (head) → score
//
// Nothing is resampled: a WAV that is not 16 kHz mono 16-bit PCM is refused
// with the sox command that converts it (a resampler good enough not to
// shift a wake-word model's scores is not a cheap piece of glue).

// Constants of openWakeWord's feature models.
const (
	// SampleRate is the rate every model of the chain was trained at.
	SampleRate = 16000
	// MelBins is the width of a melspectrogram frame.
	MelBins = 32
	// MelHop is the samples per melspectrogram frame (10 ms).
	MelHop = 160
	// EmbedFrames is the melspectrogram frames of one embedding window, and
	// EmbedStep the frames between windows (one feature per 80 ms).
	EmbedFrames = 76
	EmbedStep   = 8
	// EmbedDim is the size of one feature (the embedding's output).
	EmbedDim = 96
	// MelChunk is the samples openWakeWord adds per step (80 ms), with
	// MelContext samples before them (3 frames) for the melspectrogram.
	MelChunk   = 1280
	MelContext = 480
)

// ErrAudio marks a request body that is not audio the chain takes; the
// router answers 400 with its message.
var ErrAudio = errors.New("bad audio")

// DecodeWAV returns the samples of a RIFF/WAVE file holding 16-bit PCM,
// mono, at 16 kHz (format 1, or WAVE_FORMAT_EXTENSIBLE with the PCM
// sub-format), at most maxSamples of them. Chunks other than fmt and data
// are skipped; a data chunk longer than the file (a stream whose size was
// never filled in) is read to the end of the file. Errors wrap ErrAudio.
func DecodeWAV(b []byte, maxSamples int) ([]int16, error) {
	if len(b) < 12 || string(b[0:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return nil, fmt.Errorf("%w: not a WAV file (no RIFF/WAVE header); send 16 kHz mono 16-bit PCM WAV", ErrAudio)
	}
	var format, channels, bits uint16
	var rate uint32
	haveFmt := false
	p := b[12:]
	for len(p) >= 8 {
		id, size := string(p[0:4]), binary.LittleEndian.Uint32(p[4:8])
		body := p[8:]
		if uint64(size) > uint64(len(body)) {
			if id != "data" {
				return nil, fmt.Errorf("%w: WAV chunk %q claims %d bytes, %d are left", ErrAudio, id, size, len(body))
			}
			size = uint32(len(body))
		}
		body = body[:size]
		switch id {
		case "fmt ":
			if size < 16 {
				return nil, fmt.Errorf("%w: WAV fmt chunk of %d bytes; it needs 16", ErrAudio, size)
			}
			format, channels = binary.LittleEndian.Uint16(body[0:2]), binary.LittleEndian.Uint16(body[2:4])
			rate, bits = binary.LittleEndian.Uint32(body[4:8]), binary.LittleEndian.Uint16(body[14:16])
			if format == 0xFFFE && size >= 40 { // WAVE_FORMAT_EXTENSIBLE: the sub-format GUID's first two bytes
				format = binary.LittleEndian.Uint16(body[24:26])
			}
			haveFmt = true
		case "data":
			if !haveFmt {
				return nil, fmt.Errorf("%w: WAV data before its fmt chunk", ErrAudio)
			}
			if format != 1 || channels != 1 || rate != SampleRate || bits != 16 {
				return nil, fmt.Errorf("%w: WAV is format %d, %d channel(s), %d Hz, %d-bit; this pipeline takes PCM (format 1), mono, 16000 Hz, 16-bit — convert it with `sox in.wav -r 16000 -c 1 -b 16 -e signed-integer out.wav`",
					ErrAudio, format, channels, rate, bits)
			}
			n := len(body) / 2
			if n == 0 {
				return nil, fmt.Errorf("%w: the WAV holds no samples", ErrAudio)
			}
			if n > maxSamples {
				return nil, fmt.Errorf("%w: the WAV holds %.1f s of audio; the limit is %.1f s", ErrAudio, float64(n)/SampleRate, float64(maxSamples)/SampleRate)
			}
			s := make([]int16, n)
			for i := range s {
				s[i] = int16(binary.LittleEndian.Uint16(body[2*i:]))
			}
			return s, nil
		}
		p = p[8+int(size):]
		if size%2 == 1 && len(p) > 0 { // chunks are padded to even sizes
			p = p[1:]
		}
	}
	if !haveFmt {
		return nil, fmt.Errorf("%w: the WAV has no fmt chunk", ErrAudio)
	}
	return nil, fmt.Errorf("%w: the WAV has no data chunk", ErrAudio)
}

// EncodeWAV returns samples as a 16 kHz mono 16-bit PCM WAV file.
func EncodeWAV(samples []int16) []byte {
	b := make([]byte, 44+2*len(samples))
	copy(b[0:], "RIFF")
	binary.LittleEndian.PutUint32(b[4:], uint32(36+2*len(samples)))
	copy(b[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(b[16:], 16)
	binary.LittleEndian.PutUint16(b[20:], 1)
	binary.LittleEndian.PutUint16(b[22:], 1)
	binary.LittleEndian.PutUint32(b[24:], SampleRate)
	binary.LittleEndian.PutUint32(b[28:], 2*SampleRate)
	binary.LittleEndian.PutUint16(b[32:], 2)
	binary.LittleEndian.PutUint16(b[34:], 16)
	copy(b[36:], "data")
	binary.LittleEndian.PutUint32(b[40:], uint32(2*len(samples)))
	for i, s := range samples {
		binary.LittleEndian.PutUint16(b[44+2*i:], uint16(s))
	}
	return b
}

// VADChunks cuts samples into k = ⌈len/hop⌉ rows of width samples for a
// Silero VAD, scaled to [-1, 1): row i ends with the hop samples starting at
// i·hop (the last one zero-padded) and begins with the width − hop samples
// before them (zeros before the clip), as Silero's own wrapper prepends the
// previous chunk's last 64 samples to each 512 for v5. width ≥ hop ≥ 1.
func VADChunks(samples []int16, hop, width int) (rows []float32, k int) {
	if hop < 1 || width < hop {
		panic(fmt.Sprintf("glue.VADChunks: hop %d, width %d", hop, width))
	}
	k = (len(samples) + hop - 1) / hop
	ctx := width - hop
	rows = make([]float32, k*width)
	for i := 0; i < k; i++ {
		row := rows[i*width : (i+1)*width]
		start := i*hop - ctx
		for j := range row {
			if s := start + j; s >= 0 && s < len(samples) {
				row[j] = float32(samples[s]) / 32768
			}
		}
	}
	return rows, k
}

// MelRows cuts samples as openWakeWord's streaming feature extractor does
// (AudioFeatures._streaming_melspectrogram): m = ⌊len/MelChunk⌋ rows of
// MelContext + MelChunk samples, row i ending with the MelChunk samples at
// i·MelChunk and beginning with the MelContext before them (zeros before
// the clip); int16 values as floats, not scaled. Each row gives
// MelChunk/MelHop frames; a remainder shorter than MelChunk waits for more
// audio in a stream and is not scored here.
func MelRows(samples []int16) (rows []float32, m int) {
	m = len(samples) / MelChunk
	const width = MelContext + MelChunk
	rows = make([]float32, m*width)
	for i := 0; i < m; i++ {
		row := rows[i*width : (i+1)*width]
		start := i*MelChunk - MelContext
		for j := range row {
			if s := start + j; s >= 0 {
				row[j] = float32(samples[s])
			}
		}
	}
	return rows, m
}

// EmbedWindows turns the melspectrogram's frames (frames × MelBins, as
// the model answers them) into the embedding model's input: x/10 + 2
// (openWakeWord's scaling), then windows of EmbedFrames frames every
// EmbedStep frames, [n, EmbedFrames, MelBins, 1] flattened. n is 0 when
// there are fewer than EmbedFrames frames.
func EmbedWindows(mel []float32, frames int) (windows []float32, n int) {
	if len(mel) != frames*MelBins {
		panic(fmt.Sprintf("glue.EmbedWindows: %d values for %d frames", len(mel), frames))
	}
	if frames < EmbedFrames {
		return nil, 0
	}
	n = (frames-EmbedFrames)/EmbedStep + 1
	const per = EmbedFrames * MelBins
	windows = make([]float32, n*per)
	for w := 0; w < n; w++ {
		src := mel[w*EmbedStep*MelBins:]
		dst := windows[w*per : (w+1)*per]
		for i := range dst {
			dst[i] = src[i]/10 + 2
		}
	}
	return windows, n
}

// HeadWindows turns n features (n × EmbedDim) into the inputs of a
// wake-word head that reads width consecutive features: window h holds
// features h … h+width−1, [n−width+1, width, EmbedDim] flattened (none
// when n < width).
func HeadWindows(features []float32, n, width int) (windows []float32, h int) {
	if len(features) != n*EmbedDim || width < 1 {
		panic(fmt.Sprintf("glue.HeadWindows: %d values for %d features, width %d", len(features), n, width))
	}
	if n < width {
		return nil, 0
	}
	h = n - width + 1
	per := width * EmbedDim
	windows = make([]float32, h*per)
	for i := 0; i < h; i++ {
		copy(windows[i*per:(i+1)*per], features[i*EmbedDim:])
	}
	return windows, h
}

// HeadSpan returns the samples [start, end) that head window h of a head
// reading width features listens to: the melspectrogram frames of its
// first to its last embedding window, 10 ms each (frame j is computed from
// samples around j·MelHop; the span ignores the 30 ms of context).
func HeadSpan(h, width int) (start, end int) {
	first := h * EmbedStep
	last := (h+width-1)*EmbedStep + EmbedFrames
	return first * MelHop, last * MelHop
}

// MaxOver returns the largest of probs[i] over the chunks of hop samples
// that overlap [start, end) (0 when none does).
func MaxOver(probs []float32, hop, start, end int) float32 {
	var m float32
	for i := max(start/hop, 0); i < len(probs) && i*hop < end; i++ {
		m = max(m, probs[i])
	}
	return m
}

// Float32s reads little-endian FP32 data.
func Float32s(b []byte) []float32 {
	f := make([]float32, len(b)/4)
	for i := range f {
		f[i] = getF32(b, i)
	}
	return f
}

// Float32Bytes writes f as little-endian FP32 data.
func Float32Bytes(f []float32) []byte {
	b := make([]byte, 4*len(f))
	for i, x := range f {
		putF32(b, i, x)
	}
	return b
}
