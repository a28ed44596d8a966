package models

import "fmt"

// Audio configures the audio glue of a pipeline (the wake-word glues of
// dataplane/router: audio-vad, audio-mel, audio-embed, audio-wake). It is
// given on the first step, whose Go glue (input: audio-vad) decodes the
// request's WAV; the later audio glues read it from there.
//
//	audio: {chunk: 512, gate: 0.5, threshold: 0.5, max_seconds: 30}
type Audio struct {
	// Chunk is the hop of the VAD, in samples at 16 kHz (default 512, Silero
	// VAD's 32 ms); a variant whose input is wider takes the samples before
	// each chunk as context (Silero v5: 576 = 64 + 512).
	Chunk int `yaml:"chunk,omitempty" json:"chunk,omitempty"`
	// Gate is the VAD probability a clip needs somewhere for the wake-word
	// steps to run at all, and a window needs for a detection (default 0.5).
	Gate float64 `yaml:"gate,omitempty" json:"gate,omitempty"`
	// Threshold is the wake-word score of a detection (default 0.5).
	Threshold float64 `yaml:"threshold,omitempty" json:"threshold,omitempty"`
	// MaxSeconds bounds a request's audio (default 30).
	MaxSeconds float64 `yaml:"max_seconds,omitempty" json:"max_seconds,omitempty"`
}

// Defaults of Audio.
const (
	DefaultAudioChunk      = 512
	DefaultAudioGate       = 0.5
	DefaultAudioThreshold  = 0.5
	DefaultAudioMaxSeconds = 30
	MaxAudioSeconds        = 600
)

// WithDefaults returns a with its zero fields set to the defaults (nil: all).
func (a *Audio) WithDefaults() Audio {
	var r Audio
	if a != nil {
		r = *a
	}
	if r.Chunk == 0 {
		r.Chunk = DefaultAudioChunk
	}
	if r.Gate == 0 {
		r.Gate = DefaultAudioGate
	}
	if r.Threshold == 0 {
		r.Threshold = DefaultAudioThreshold
	}
	if r.MaxSeconds == 0 {
		r.MaxSeconds = DefaultAudioMaxSeconds
	}
	return r
}

// validate checks the audio section of step i.
func (a *Audio) validate(s *Step, i int) error {
	at := fmt.Sprintf("$.stages[%d].audio", i)
	switch {
	case i != 0:
		return fieldErr(at, "the audio section goes on the first step (the one that decodes the request's WAV)")
	case s.Declarative():
		return fieldErr(at, "the audio section configures the audio glue: name it with input: audio-vad")
	case a.Chunk < 0 || a.Chunk != 0 && (a.Chunk < 32 || a.Chunk > 16000):
		return fieldErr(at+".chunk", "chunk %d must be in [32, 16000] samples (default %d)", a.Chunk, DefaultAudioChunk)
	case !finite(a.Gate) || a.Gate < 0 || a.Gate > 1:
		return fieldErr(at+".gate", "gate %v is a probability in [0, 1] (default %v)", a.Gate, DefaultAudioGate)
	case !finite(a.Threshold) || a.Threshold < 0 || a.Threshold > 1:
		return fieldErr(at+".threshold", "threshold %v is a score in [0, 1] (default %v)", a.Threshold, DefaultAudioThreshold)
	case !finite(a.MaxSeconds) || a.MaxSeconds < 0 || a.MaxSeconds > MaxAudioSeconds:
		return fieldErr(at+".max_seconds", "max_seconds %v must be in (0, %d] (default %d)", a.MaxSeconds, MaxAudioSeconds, DefaultAudioMaxSeconds)
	}
	return nil
}
