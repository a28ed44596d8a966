package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/ipa-serving/ipa/dataplane/glue"
	"github.com/ipa-serving/ipa/models"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// speechLike returns seconds of a synthetic voiced sound at 16 kHz: a
// 120 Hz glottal tone (±20 Hz vibrato at 3 Hz) through three formants
// (700, 1200, 2500 Hz), amplitude-modulated at 4 Hz like syllables, with
// a little noise. Silero VAD v5 scores its chunks 0.1–0.8 (above the gate
// of 0.5 in most syllables); a pure tone or white noise stays below 0.11.
func speechLike(seconds float64, rng *rand.Rand) []int16 {
	n := int(seconds * glue.SampleRate)
	s := make([]int16, n)
	for i := range s {
		t := float64(i) / glue.SampleRate
		phase := 2*math.Pi*120*t + 20.0/3*(1-math.Cos(2*math.Pi*3*t))
		v := 0.0
		for h := 1; h <= 30; h++ {
			f := float64(h) * (120 + 20*math.Sin(2*math.Pi*3*t))
			amp := math.Exp(-math.Pow((f-700)/200, 2)) + 0.6*math.Exp(-math.Pow((f-1200)/250, 2)) + 0.3*math.Exp(-math.Pow((f-2500)/300, 2)) + 0.05
			v += amp * math.Sin(float64(h)*phase)
		}
		v = 0.05*v*(0.5+0.5*math.Sin(2*math.Pi*4*t)) + 0.002*rng.NormFloat64()
		s[i] = int16(max(-1, min(1, v)) * 32767)
	}
	return s
}

// TestNewcomerServesAWakeWordPipeline plays the README's audio walkthrough:
// raw ONNX files from npm (Silero VAD v4 and v5, openWakeWord's
// melspectrogram and embedding, the Apache-2.0 hello_deepa head) become a
// user repository through `ipa models add` — Silero's scalar sampling rate
// and recurrent state are baked in as constants with --const and
// --batch-axis, and their next state dropped with --drop-output — the
// committed examples/wakeword/wakeword.yaml chains them with the audio glue,
// `ipa profile --quick` measures it, `ipa local` serves it with the
// controller on, and the answers to a WAV match the same chain run
// directly in ONNX Runtime on the raw files, chunk by chunk and window by
// window (batch 1, Silero fed its own sr and zero state).
func TestNewcomerServesAWakeWordPipeline(t *testing.T) {
	n, raw, lib := newNewcomer(t, "silero")
	spec, err := os.ReadFile("examples/wakeword/wakeword.yaml")
	if err != nil {
		t.Fatal(err)
	}
	silero := func(f string) string { return filepath.Join(raw, "silero", f) }
	oww := func(f string) string { return filepath.Join(raw, "openwakeword", f) }

	// Silero as shipped: a scalar input; inspect says which flag fixes it.
	n.refused("--const sr=VALUE", "models", "inspect", silero("silero_vad_v5.onnx"))
	sileroV5 := []string{"--const", "sr=16000", "--const", "state=0", "--batch-axis", "state=1", "--drop-output", "stateN"}
	out := n.ok(append([]string{"models", "inspect", silero("silero_vad_v5.onnx"), "--check-shape", "input=-1,576"}, sileroV5...)...)
	for _, want := range []string{"input     input FP32[-1,-1]", "output    output FP32[-1,1]", "constant  sr INT64[] = 16000",
		"constant  state FP32[2,-1,128] = 0 (batch on dimension 1)", "dropped   output stateN", "batch     dynamic"} {
		if !strings.Contains(out, want) {
			t.Fatalf("inspect with the constants: no %q in\n%s", want, out)
		}
	}
	vadFlags := func(variant, acc string) []string {
		return []string{"--stage", "vad", "--variant", variant, "--accuracy", acc, "--metric", "VAD ROC-AUC",
			"--source", `silero-vad wiki "Quality Metrics" (Jun 2024)`, "--license", "MIT"}
	}
	n.refused("--const state=VALUE, and --batch-axis state=K", append([]string{"models", "add", silero("silero_vad_v5.onnx"), "--const", "sr=16000"}, vadFlags("silero-v5", "0.96")...)...)
	n.refused("--batch-axis state=1", append([]string{"models", "add", silero("silero_vad_v5.onnx"), "--const", "sr=16000", "--const", "state=0"}, vadFlags("silero-v5", "0.96")...)...)
	n.ok(append(append([]string{"models", "add", silero("silero_vad_v5.onnx"), "--shape", "input=-1,576"}, sileroV5...), vadFlags("silero-v5", "0.96")...)...)
	n.ok(append([]string{"models", "add", silero("silero_vad_legacy.onnx"), "--shape", "input=-1,512",
		"--const", "sr=16000", "--const", "h=0", "--const", "c=0", "--batch-axis", "h=1", "--batch-axis", "c=1",
		"--drop-output", "hn", "--drop-output", "cn"}, vadFlags("silero-v4", "0.91")...)...)
	manifest := fmt.Sprintf(`metric: none published (one variant)
source: placeholder
variants:
  - {file: %s, stage: oww-mel, variant: oww-mel, accuracy: 1, shape: {input: [-1, 1760]}}
  - {file: %s, stage: oww-embed, variant: oww-embed, accuracy: 1}
  - {file: %s, stage: wake-word, variant: hello-deepa, accuracy: 1, license: Apache-2.0}
`, oww("melspectrogram.onnx"), oww("embedding_model.onnx"), oww("hello_deepa.onnx"))
	os.WriteFile(filepath.Join(n.dir, "models.yaml"), []byte(manifest), 0o644)
	n.ok("models", "add", "models.yaml")
	out = n.ok("models", "list")
	for _, want := range []string{"silero-v4", "silero-v5", "oww-mel", "oww-embed", "hello-deepa", "0.96?"} {
		if !strings.Contains(out, want) {
			t.Fatalf("models list: no %q in\n%s", want, out)
		}
	}

	os.WriteFile(filepath.Join(n.dir, "wakeword.yaml"), spec, 0o644)
	n.ok("profile", "--pipeline", "wakeword.yaml", "--quick", "--out", "wake-profile.json")
	addr := freeAddr(t)
	local := n.cmd("local", "--pipeline", "wakeword.yaml", "--controller.profile", "wake-profile.json", "--controller.interval", "1s",
		"--controller.decision-log", "decisions.jsonl", "--http.listen-addr", addr)
	var log bytes.Buffer
	local.Stdout, local.Stderr = &log, &log
	if err := local.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- local.Wait() }()
	t.Cleanup(func() {
		local.Process.Signal(os.Interrupt)
		<-exited
		if t.Failed() {
			t.Logf("ipa local:\n%s", log.String())
		}
	})
	waitFor(t, 3*time.Minute, func() error {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("ipa local exited before it was ready: %v", err)
		default:
		}
		r, err := http.Get("http://" + addr + "/v2/health/ready")
		if err != nil {
			return err
		}
		r.Body.Close()
		if r.StatusCode != 200 {
			return fmt.Errorf("ready: %d", r.StatusCode)
		}
		return nil
	})
	var meta struct {
		Inputs, Outputs []struct {
			Name, Datatype string
			Shape          []int64
		}
	}
	if err := json.Unmarshal(get(t, "http://"+addr+"/v2/models/wakeword"), &meta); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(meta.Inputs, meta.Outputs); got != "[{audio BYTES [1]}] [{vad FP32 [-1]} {score FP32 [-1]} {window_vad FP32 [-1]} {detected BOOL [-1]} {window_end FP32 [-1]}]" {
		t.Fatalf("V2 metadata: %s", got)
	}

	// 0.5 s of silence, 4 s of the synthetic voice, 0.5 s of silence.
	rng := rand.New(rand.NewPCG(7, 11))
	clip := append(append(make([]int16, 8000), speechLike(4, rng)...), make([]int16, 8000)...)
	if err := mlrt.Init(lib); err != nil {
		t.Fatal(err)
	}
	ref := directWake(t, raw)
	defer ref.close()
	// Both VAD variants: each asked for through the admin API (the
	// controller may switch back: then ask again).
	for _, want := range []string{"silero-v5", "silero-v4"} {
		compared := false
		for attempt := 0; !compared && attempt < 10; attempt++ {
			r, err := http.Post("http://"+addr+"/admin/stages/vad", "application/json", strings.NewReader(`{"variant":"`+want+`"}`))
			if err != nil {
				t.Fatal(err)
			}
			r.Body.Close()
			if r.StatusCode != 200 {
				t.Fatalf("switch to %s: %d", want, r.StatusCode)
			}
			ans := inferWAV(t, addr, glue.EncodeWAV(clip), 200)
			if v := ans.param("vad_variant"); v != want {
				continue // the controller switched it in between
			}
			compareWake(t, ans, ref.chain(t, clip, want), len(clip), want)
			if want == "silero-v5" && len(ans.floats("score")) == 0 {
				t.Fatalf("silero-v5 kept the gate closed on the voice (VAD max %v): the wake-word steps were not checked", slicesMax(ans.floats("vad")))
			}
			compared = true
		}
		if !compared {
			t.Fatalf("no answer computed by %s in 10 requests", want)
		}
	}

	// A pure tone and white noise: the VAD keeps the gate closed, so the
	// wake-word steps have no work and the answer has no windows.
	quiet := make([]int16, 3*glue.SampleRate)
	for i := range quiet {
		quiet[i] = int16(8000*math.Sin(2*math.Pi*440*float64(i)/glue.SampleRate) + 1000*rng.NormFloat64())
	}
	ans := inferWAV(t, addr, glue.EncodeWAV(quiet), 200)
	if vad := ans.floats("vad"); len(vad) != 94 || slicesMax(vad) >= 0.5 || len(ans.floats("score")) != 0 || ans.param("mel_variant") != "" {
		t.Fatalf("tone and noise: %d chunks, VAD max %v, %d windows, mel ran %q", len(vad), slicesMax(vad), len(ans.floats("score")), ans.param("mel_variant"))
	}
	// Audio the chain does not take is a 400 that says what to send.
	b := glue.EncodeWAV(quiet[:100])
	b[24], b[25] = 0x44, 0xAC // 44100 Hz
	if msg := inferError(t, addr, b, 400); !strings.Contains(msg, "44100 Hz") || !strings.Contains(msg, "sox") {
		t.Fatalf("a 44.1 kHz WAV: %s", msg)
	}
	if msg := inferError(t, addr, []byte("hello"), 400); !strings.Contains(msg, "not a WAV file") {
		t.Fatalf("a text body: %s", msg)
	}
	// The controller is on: it logs a decision every interval.
	waitFor(t, time.Minute, func() error {
		b, _ := os.ReadFile(filepath.Join(n.dir, "decisions.jsonl"))
		if lines := bytes.Count(b, []byte("\n")); lines < 2 {
			return fmt.Errorf("%d decisions logged", lines)
		}
		return nil
	})
}

// compareWake checks an answer against the chain run directly.
func compareWake(t *testing.T, ans *answer, want wakeResult, samples int, variant string) {
	t.Helper()
	vad, score, winVAD, ends := ans.floats("vad"), ans.floats("score"), ans.floats("window_vad"), ans.floats("window_end")
	var detected []bool
	ans.data("detected", &detected)
	if slicesMax(want.vad) < 0.5 {
		want.score = nil // the gate stays closed: nothing is scored
	}
	if len(vad) != len(want.vad) || len(score) != len(want.score) || len(winVAD) != len(score) || len(detected) != len(score) || len(ends) != len(score) {
		t.Fatalf("%s: %d chunks, %d windows (%d %d %d); directly %d chunks, %d windows", variant, len(vad), len(score), len(winVAD), len(detected), len(ends), len(want.vad), len(want.score))
	}
	// Batched in ipa, one by one directly: float sums in another order.
	const tol = 1e-4
	var dv, ds float64
	for i := range vad {
		dv = max(dv, math.Abs(float64(vad[i]-want.vad[i])))
	}
	if dv > tol {
		t.Fatalf("%s: VAD differs by up to %g from the direct run", variant, dv)
	}
	for i := range score {
		ds = max(ds, math.Abs(float64(score[i]-want.score[i])))
		start, end := glue.HeadSpan(i, want.width)
		wv := glue.MaxOver(vad, 512, start, end)
		if winVAD[i] != wv || detected[i] != (score[i] >= 0.5 && wv >= 0.5) || ends[i] != float32(min(end, samples))/glue.SampleRate {
			t.Fatalf("window %d: vad %v detected %v end %v; from the chunks: vad %v, end %v", i, winVAD[i], detected[i], ends[i], wv, end)
		}
	}
	if ds > tol {
		t.Fatalf("%s: scores differ by up to %g from the direct run", variant, ds)
	}
	if len(score) == 0 {
		t.Logf("%s: %d chunks (VAD max %.3f), the gate stayed closed: no windows; largest difference from ONNX Runtime run directly: VAD %.2g (tolerance %g)", variant, len(vad), slicesMax(vad), dv, tol)
		return
	}
	t.Logf("%s: %d chunks (VAD max %.3f), %d windows, hello_deepa scores %.2g…%.2g, %d detected; largest difference from ONNX Runtime run directly: VAD %.2g, score %.2g (tolerance %g)",
		variant, len(vad), slicesMax(vad), len(score), slicesMin(score), slicesMax(score), countTrue(detected), dv, ds, tol)
}

func inferWAV(t *testing.T, addr string, wav []byte, status int) *answer {
	t.Helper()
	r, err := http.Post("http://"+addr+"/v2/models/wakeword/infer", "audio/wav", bytes.NewReader(wav))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode != status {
		t.Fatalf("infer: %d %s", r.StatusCode, b)
	}
	var a answer
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatal(err)
	}
	return &a
}

func inferError(t *testing.T, addr string, body []byte, status int) string {
	t.Helper()
	r, err := http.Post("http://"+addr+"/v2/models/wakeword/infer", "audio/wav", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var e struct{ Error string }
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode != status || json.Unmarshal(b, &e) != nil || e.Error == "" {
		t.Fatalf("status %d, body %s; want %d with a V2 error", r.StatusCode, b, status)
	}
	return e.Error
}

// wakeRef runs the wake-word chain directly in ONNX Runtime on the raw
// files: every Silero chunk and every head window alone (batch 1), Silero
// with its own sr and zero state inputs.
type wakeRef struct {
	raw             string
	mel, embed, hed *mlrt.Session
	vad             map[string]*ort.DynamicAdvancedSession
	width           int
}

type wakeResult struct {
	vad, score []float32
	width      int
}

func directWake(t *testing.T, raw string) *wakeRef {
	t.Helper()
	open := func(f string) *mlrt.Session {
		p := filepath.Join(raw, "openwakeword", f)
		in, out, err := mlrt.Inspect(p)
		if err != nil {
			t.Fatal(err)
		}
		s, err := mlrt.Open(p, &models.Variant{Name: "direct", Stage: "direct", File: f, Inputs: in, Outputs: out, MaxBatch: 1}, mlrt.Options{Threads: 1, SkipWarmup: true})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	r := &wakeRef{raw: raw, vad: map[string]*ort.DynamicAdvancedSession{}, mel: open("melspectrogram.onnx"), embed: open("embedding_model.onnx"), hed: open("hello_deepa.onnx")}
	r.width = int(r.hed.Variant().Inputs[0].Shape[1])
	return r
}

func (r *wakeRef) close() {
	r.mel.Close()
	r.embed.Close()
	r.hed.Close()
	for _, s := range r.vad {
		s.Destroy()
	}
}

func run1(t *testing.T, s *mlrt.Session, shape []int64, x []float32) []float32 {
	t.Helper()
	in := s.Variant().Inputs[0]
	out, err := s.Run(t.Context(), []models.Tensor{{Name: in.Name, DataType: models.FP32, Shape: shape, Data: glue.Float32Bytes(x)}})
	if err != nil {
		t.Fatal(err)
	}
	return glue.Float32s(out[0].Data)
}

func (r *wakeRef) chain(t *testing.T, clip []int16, vadVariant string) wakeResult {
	t.Helper()
	res := wakeResult{width: r.width}
	// Silero, chunk by chunk, as its own wrapper feeds it: v5 with 64
	// samples of context, v4 without.
	width := map[string]int{"silero-v4": 512, "silero-v5": 576}[vadVariant]
	if width == 0 {
		t.Fatalf("unknown VAD variant %q", vadVariant)
	}
	rows, k := glue.VADChunks(clip, 512, width)
	for i := 0; i < k; i++ {
		res.vad = append(res.vad, r.silero(t, vadVariant, rows[i*width:(i+1)*width]))
	}
	// openWakeWord's features, step by step, then every head window alone.
	melRows, m := glue.MelRows(clip)
	const mw = glue.MelContext + glue.MelChunk
	var mel []float32
	for i := 0; i < m; i++ {
		mel = append(mel, run1(t, r.mel, []int64{1, mw}, melRows[i*mw:(i+1)*mw])...)
	}
	windows, e := glue.EmbedWindows(mel, len(mel)/glue.MelBins)
	const ew = glue.EmbedFrames * glue.MelBins
	var feats []float32
	for i := 0; i < e; i++ {
		feats = append(feats, run1(t, r.embed, []int64{1, glue.EmbedFrames, glue.MelBins, 1}, windows[i*ew:(i+1)*ew])...)
	}
	heads, h := glue.HeadWindows(feats, e, r.width)
	hw := r.width * glue.EmbedDim
	for i := 0; i < h; i++ {
		res.score = append(res.score, run1(t, r.hed, []int64{1, int64(r.width), glue.EmbedDim}, heads[i*hw:(i+1)*hw])[0])
	}
	return res
}

// silero runs one chunk through the raw Silero file with sr 16000 and a
// zero recurrent state, with onnxruntime_go itself (ipa's sessions take no
// scalar).
func (r *wakeRef) silero(t *testing.T, variant string, chunk []float32) float32 {
	t.Helper()
	file, names, states := "silero_vad_v5.onnx", []string{"input", "state", "sr"}, map[string][]int64{"state": {2, 1, 128}}
	if variant == "silero-v4" {
		file, names, states = "silero_vad_legacy.onnx", []string{"input", "sr", "h", "c"}, map[string][]int64{"h": {2, 1, 64}, "c": {2, 1, 64}}
	}
	s := r.vad[variant]
	if s == nil {
		var err error
		if s, err = ort.NewDynamicAdvancedSession(filepath.Join(r.raw, "silero", file), names, []string{"output"}, nil); err != nil {
			t.Fatal(err)
		}
		r.vad[variant] = s
	}
	x, err := ort.NewTensor(ort.NewShape(1, int64(len(chunk))), chunk)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Destroy()
	sr, err := ort.NewScalar[int64](16000)
	if err != nil {
		t.Fatal(err)
	}
	defer sr.Destroy()
	vals := make([]ort.Value, len(names))
	for i, name := range names {
		switch name {
		case "input":
			vals[i] = x
		case "sr":
			vals[i] = sr
		default:
			z, err := ort.NewEmptyTensor[float32](ort.NewShape(states[name]...))
			if err != nil {
				t.Fatal(err)
			}
			defer z.Destroy()
			vals[i] = z
		}
	}
	out := []ort.Value{nil}
	if err := s.Run(vals, out); err != nil {
		t.Fatal(err)
	}
	defer out[0].Destroy()
	return out[0].(*ort.Tensor[float32]).GetData()[0]
}

func slicesMax(v []float32) float32 {
	m := float32(math.Inf(-1))
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

func slicesMin(v []float32) float32 {
	m := float32(math.Inf(1))
	for _, x := range v {
		m = min(m, x)
	}
	return m
}

func countTrue(b []bool) int {
	n := 0
	for _, x := range b {
		if x {
			n++
		}
	}
	return n
}
