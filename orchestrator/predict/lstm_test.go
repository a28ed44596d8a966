package predict

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"
)

// TestBackwardMatchesFiniteDifferences checks every parameter's gradient
// from back-propagation through time against a central finite difference of
// the loss, for both activations.
func TestBackwardMatchesFiniteDifferences(t *testing.T) {
	f := func(act string, seed uint64) {
		t.Helper()
		a := Arch{Window: 5, ChunkSeconds: 1, HorizonSeconds: 1, Hidden: 4, Activation: act}
		rng := rand.New(rand.NewPCG(seed, 1))
		l := newLSTM(a, Norm{Mean: 0, Std: 1}, rng)
		for i := range l.p { // move off the initialisation (zero biases) so every path carries gradient
			l.p[i] += 0.3 * rng.NormFloat64()
		}
		var s samples
		for range 3 {
			x := make([]float64, a.Window)
			for i := range x {
				x[i] = rng.NormFloat64()
			}
			s.x = append(s.x, x)
			s.y = append(s.y, rng.NormFloat64())
		}
		batch := []int{0, 1, 2}
		grads := make([][]float64, shards)
		for i := range grads {
			grads[i] = make([]float64, len(l.p))
		}
		tapes := make([]tape, shards)
		l.gradient(s, batch, grads, tapes, 1)
		g := make([]float64, len(l.p))
		for _, gw := range grads {
			for i, v := range gw {
				g[i] += v
			}
		}
		const h = 1e-6
		var worst float64
		for i := range l.p {
			p0 := l.p[i]
			l.p[i] = p0 + h
			up := l.loss(s, 1)
			l.p[i] = p0 - h
			down := l.loss(s, 1)
			l.p[i] = p0
			num := (up - down) / (2 * h)
			rel := math.Abs(num-g[i]) / max(math.Abs(num)+math.Abs(g[i]), 1e-6)
			worst = max(worst, rel)
			if rel > 1e-4 {
				t.Errorf("%s: parameter %d: backward %.9g, finite difference %.9g (relative error %.2g)", act, i, g[i], num, rel)
			}
		}
		t.Logf("%s: worst relative error over %d parameters: %.2g", act, len(l.p), worst)
	}
	f(ActivationTanh, 1)
	f(ActivationTanh, 2)
	f(ActivationReLU, 3)
	f(ActivationReLU, 4)
}

// periodic returns a noisy sine-shaped load of n seconds with period 600 s.
func periodic(n int, seed uint64) []float64 {
	rng := rand.New(rand.NewPCG(seed, 2))
	out := make([]float64, n)
	for i := range out {
		out[i] = 20 + 10*math.Sin(2*math.Pi*float64(i)/600) + rng.Float64()*2
	}
	return out
}

func TestTrainingReducesLossOnAPeriodicSeries(t *testing.T) {
	series := periodic(20000, 1)
	cfg := TrainConfig{Arch: Arch{Window: 12, ChunkSeconds: 10, HorizonSeconds: 20, Hidden: 8, Activation: ActivationReLU},
		Epochs: 15, BatchSize: 32, LearningRate: 5e-3, Seed: 3, Workers: 2}
	l, rep, err := Train(series, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("init %.4f → train %.4f, val %.4f (RMSE %.2f req/s), best epoch %d", rep.InitLoss, rep.TrainLoss, rep.ValLoss, rep.ValRMSE, rep.BestEpoch)
	if !(rep.TrainLoss < rep.InitLoss/10) {
		t.Fatalf("training loss went from %.4f to %.4f; want at least a tenfold drop", rep.InitLoss, rep.TrainLoss)
	}
	if !(rep.ValLoss < 0.1) {
		t.Fatalf("validation loss %.4f; want < 0.1 on a periodic series", rep.ValLoss)
	}
	test := periodic(6000, 9)
	if lm, rm := Evaluate(l, test, EvalConfig{}), Evaluate(Reactive{}, test, EvalConfig{}); !(lm.MAE < rm.MAE) {
		t.Fatalf("trained LSTM MAE %.3f is not below reactive %.3f on a periodic series", lm.MAE, rm.MAE)
	}
}

func TestTrainingIsDeterministicAcrossWorkers(t *testing.T) {
	series := periodic(3000, 4)
	cfg := TrainConfig{Arch: Arch{Window: 12, ChunkSeconds: 10, HorizonSeconds: 20, Hidden: 4, Activation: ActivationReLU}, Epochs: 2, Seed: 5}
	cfg.Workers = 1
	a, _, err := Train(series, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Workers = 3
	b, _, err := Train(series, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range a.p {
		if a.p[i] != b.p[i] {
			t.Fatalf("parameter %d: %v with 1 worker, %v with 3", i, a.p[i], b.p[i])
		}
	}
}

func TestTrainRejectsAShortSeries(t *testing.T) {
	_, _, err := Train(make([]float64, 100), TrainConfig{})
	if err == nil {
		t.Fatal("trained on 100 s; want ErrShortSeries")
	}
}

func TestWeightsRoundTripExactly(t *testing.T) {
	l := newLSTM(PaperArch, Norm{Mean: 7.5, Std: 3.25}, rand.New(rand.NewPCG(1, 2)))
	l.SetInfo(TrainInfo{Days: "0-13", Seed: 7})
	var buf bytes.Buffer
	if err := l.WriteWeights(&buf); err != nil {
		t.Fatal(err)
	}
	m, err := LoadWeights(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if m.Arch() != l.Arch() || m.Norm() != l.Norm() || m.Info() != l.Info() {
		t.Fatalf("header changed: %+v %+v %+v", m.Arch(), m.Norm(), m.Info())
	}
	for i := range l.p {
		if l.p[i] != m.p[i] {
			t.Fatalf("parameter %d: wrote %v, read %v", i, l.p[i], m.p[i])
		}
	}
	h := periodic(300, 1)
	if a, b := l.Predict(h), m.Predict(h); a != b {
		t.Fatalf("predictions differ: %v vs %v", a, b)
	}
}

func TestLoadWeightsRejectsBadFiles(t *testing.T) {
	f := func(in string) {
		t.Helper()
		if _, err := LoadWeights(bytes.NewReader([]byte(in))); err == nil {
			t.Fatalf("loaded %s", in)
		} else {
			t.Log(err)
		}
	}
	f(``)
	f(`{"version":2,"model":"lstm"}`)
	f(`{"version":1,"model":"arima"}`)
	f(`{"version":1,"model":"lstm","arch":{"window":12,"chunk_seconds":10,"horizon_seconds":20,"hidden":1,"activation":"relu"},"norm":{"mean":1,"std":0}}`)
	f(`{"version":1,"model":"lstm","arch":{"window":12,"chunk_seconds":10,"horizon_seconds":20,"hidden":1,"activation":"relu"},"norm":{"mean":1,"std":1},"kernel":[1,2,3]}`)
	f(`{"version":1,"model":"lstm","extra":1}`)
}
