package pipespec

import (
	"strings"
	"testing"

	"github.com/ipa-serving/ipa/models"
)

const audioSpec = `name: wake
sla: 2s
stages:
  - name: a
    model: det
    input: image
    audio: {chunk: 512, gate: 0.4, threshold: 0.6, max_seconds: 20}
  - name: b
    model: rec
    input: lines
`

// TestAudioSection: the audio section parses with its values, takes the
// defaults for what it leaves out, and every wrong value is a one-line
// error naming its line and field.
func TestAudioSection(t *testing.T) {
	p, err := Parse([]byte(audioSpec), repo(), first, next)
	if err != nil {
		t.Fatal(err)
	}
	if a := p.Stages[0].Audio.WithDefaults(); a != (models.Audio{Chunk: 512, Gate: 0.4, Threshold: 0.6, MaxSeconds: 20}) {
		t.Errorf("audio %+v", a)
	}
	if a := (*models.Audio)(nil).WithDefaults(); a != (models.Audio{Chunk: 512, Gate: 0.5, Threshold: 0.5, MaxSeconds: 30}) {
		t.Errorf("defaults %+v", a)
	}
	for _, tc := range []struct{ from, to, want string }{
		{"chunk: 512", "chunk: 8", "line 7 ($.stages[0].audio.chunk): chunk 8 must be in [32, 16000]"},
		{"gate: 0.4", "gate: 1.5", "($.stages[0].audio.gate): gate 1.5 is a probability"},
		{"gate: 0.4", "gate: .nan", "($.stages[0].audio.gate)"},
		{"threshold: 0.6", "threshold: -1", "($.stages[0].audio.threshold)"},
		{"max_seconds: 20", "max_seconds: 601", "($.stages[0].audio.max_seconds)"},
		{"max_seconds: 20", "rate: 8000", "unknown field"},
		{"    input: image\n    audio", "    audio", "name it with input: audio-vad"},
		{"    input: lines\n", "    input: lines\n    audio: {}\n", "($.stages[1].audio): the audio section goes on the first step"},
	} {
		_, err := Parse([]byte(strings.Replace(audioSpec, tc.from, tc.to, 1)), repo(), first, next)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s → %s: got %v, want one line containing %q", tc.from, tc.to, err, tc.want)
		}
	}
}

// FuzzParseAudioSection: no audio section panics the parser, and what
// parses validates again (the section's checks are pure).
func FuzzParseAudioSection(f *testing.F) {
	f.Add([]byte(audioSpec))
	f.Add([]byte(strings.Replace(audioSpec, "chunk: 512", "chunk: 1e9", 1)))
	f.Add([]byte(strings.Replace(audioSpec, "audio: {", "audio: {gate: .inf, ", 1)))
	f.Add([]byte("name: p\nstages:\n ! #000000000000000000000000000")) // panicked goccy/go-yaml 1.19.2
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<14 {
			return
		}
		p, err := Parse(b, repo(), first, next)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		if err := p.Validate(repo(), first, next); err != nil {
			t.Fatalf("parsed spec fails validation: %v", err)
		}
		for _, s := range p.Stages {
			if a := s.Audio.WithDefaults(); a.Chunk < 32 || a.Gate < 0 || a.Gate > 1 || a.MaxSeconds <= 0 {
				t.Fatalf("accepted audio %+v", a)
			}
		}
	})
}
