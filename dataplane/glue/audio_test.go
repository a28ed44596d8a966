package glue

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

func TestDecodeWAVRoundTrip(t *testing.T) {
	in := []int16{0, 1, -1, 32767, -32768, 1234}
	got, err := DecodeWAV(EncodeWAV(in), 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(in) {
		t.Fatalf("got %v", got)
	}
	for i := range in {
		if got[i] != in[i] {
			t.Fatalf("sample %d: %d, want %d", i, got[i], in[i])
		}
	}
	// An odd-sized chunk before fmt is skipped with its pad byte; a data
	// chunk whose size was never filled in (streaming) is read to the end.
	b := EncodeWAV(in)
	list := append([]byte("LIST\x03\x00\x00\x00abc\x00"), b[12:]...)
	b2 := append(append([]byte{}, b[:12]...), list...)
	binary.LittleEndian.PutUint32(b2[len(b2)-2*len(in)-4:], 0xFFFFFFFF)
	if got, err := DecodeWAV(b2, 100); err != nil || len(got) != len(in) || got[3] != 32767 {
		t.Fatalf("LIST chunk, open-ended data: %v %v", got, err)
	}
}

// TestDecodeWAVRefusals: every refusal wraps ErrAudio and says what to send.
func TestDecodeWAVRefusals(t *testing.T) {
	good := EncodeWAV(make([]int16, 10))
	with := func(off int, v uint32, size int) []byte {
		b := append([]byte{}, good...)
		if size == 2 {
			binary.LittleEndian.PutUint16(b[off:], uint16(v))
		} else {
			binary.LittleEndian.PutUint32(b[off:], v)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		b    []byte
		max  int
		want string
	}{
		{"empty", nil, 100, "not a WAV file"},
		{"png", []byte("\x89PNG\r\n\x1a\n0000"), 100, "not a WAV file"},
		{"44.1 kHz", with(24, 44100, 4), 100, "44100 Hz"},
		{"stereo", with(22, 2, 2), 100, "2 channel(s)"},
		{"8-bit", with(34, 8, 2), 100, "8-bit"},
		{"float", with(20, 3, 2), 100, "format 3"},
		{"too long", good, 5, "the limit is"},
		{"no samples", EncodeWAV(nil), 100, "no samples"},
		{"no data", good[:36], 100, "no data chunk"},
		{"no fmt", append(append([]byte{}, good[:12]...), good[36:]...), 100, "before its fmt chunk"},
		{"short fmt", with(16, 8, 4), 100, "fmt chunk of 8 bytes"},
		{"fmt too long", with(16, 1000, 4), 100, `chunk "fmt " claims 1000 bytes`},
	} {
		_, err := DecodeWAV(tc.b, tc.max)
		if !errors.Is(err, ErrAudio) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want ErrAudio containing %q", tc.name, err, tc.want)
		}
	}
	if _, err := DecodeWAV(with(24, 44100, 4), 100); !strings.Contains(err.Error(), "sox in.wav -r 16000") {
		t.Errorf("the refusal does not say how to convert: %v", err)
	}
}

func FuzzDecodeWAV(f *testing.F) {
	f.Add(EncodeWAV([]int16{1, 2, 3}))
	f.Add(EncodeWAV(nil))
	f.Add([]byte("RIFF\x00\x00\x00\x00WAVEdata\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeWAV(b, 1000)
		if err != nil {
			if !errors.Is(err, ErrAudio) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if len(s) == 0 || len(s) > 1000 || 2*len(s) > len(b) {
			t.Fatalf("%d samples from %d bytes", len(s), len(b))
		}
	})
}

func TestVADChunks(t *testing.T) {
	s := []int16{16384, 2, 3, 4, 5}
	rows, k := VADChunks(s, 2, 3)
	want := []float32{0, 0.5, 2.0 / 32768, 2.0 / 32768, 3.0 / 32768, 4.0 / 32768, 4.0 / 32768, 5.0 / 32768, 0}
	if k != 3 || len(rows) != len(want) {
		t.Fatalf("k %d rows %v", k, rows)
	}
	for i := range want {
		if rows[i] != want[i] {
			t.Fatalf("rows %v, want %v", rows, want)
		}
	}
}

func TestEmbedAndHeadWindows(t *testing.T) {
	frames := EmbedFrames + 2*EmbedStep + 3 // 3 windows, 3 frames spare
	mel := make([]float32, frames*MelBins)
	for i := range mel {
		mel[i] = float32(i / MelBins) // the frame index
	}
	w, n := EmbedWindows(mel, frames)
	if n != 3 || len(w) != 3*EmbedFrames*MelBins {
		t.Fatalf("n %d", n)
	}
	// Window 2 starts at frame 16, scaled x/10+2.
	if got := w[2*EmbedFrames*MelBins]; got != 16.0/10+2 {
		t.Errorf("window 2 starts with %v", got)
	}
	if _, n := EmbedWindows(mel[:75*MelBins], 75); n != 0 {
		t.Errorf("75 frames gave %d windows", n)
	}
	feat := make([]float32, 5*EmbedDim)
	for i := range feat {
		feat[i] = float32(i / EmbedDim)
	}
	hw, h := HeadWindows(feat, 5, 3)
	if h != 3 || hw[2*3*EmbedDim] != 2 || hw[len(hw)-1] != 4 {
		t.Fatalf("h %d", h)
	}
	if _, h := HeadWindows(feat[:2*EmbedDim], 2, 3); h != 0 {
		t.Errorf("2 features, width 3: %d windows", h)
	}
	if s, e := HeadSpan(1, 16); s != 1280 || e != (8+15*8+76)*160 {
		t.Errorf("span %d %d", s, e)
	}
	if m := MaxOver([]float32{0.1, 0.9, 0.2, 0.95}, 512, 600, 1500); m != 0.9 {
		t.Errorf("max over chunks 1-2: %v", m)
	}
}

func TestMelRows(t *testing.T) {
	s := make([]int16, 2*MelChunk+5)
	for i := range s {
		s[i] = int16(i % 1000)
	}
	rows, m := MelRows(s)
	const w = MelContext + MelChunk
	if m != 2 || len(rows) != 2*w {
		t.Fatalf("m %d", m)
	}
	// Row 0: 480 zeros, then samples 0…1279; row 1: samples 800…2559.
	if rows[MelContext-1] != 0 || rows[MelContext] != 0 || rows[MelContext+1] != 1 || rows[w] != float32(800%1000) || rows[2*w-1] != float32(2559%1000) {
		t.Fatalf("rows %v %v %v", rows[MelContext+1], rows[w], rows[2*w-1])
	}
	if _, m := MelRows(s[:MelChunk-1]); m != 0 {
		t.Errorf("a clip shorter than a step gave %d rows", m)
	}
}
