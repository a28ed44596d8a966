package predict

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ipa-serving/ipa/dataplane/loadgen"
)

// seq returns 1, 2, …, n.
func seq(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = float64(i + 1)
	}
	return out
}

func TestPredictors(t *testing.T) {
	f := func(p Predictor, history []float64, want float64) {
		t.Helper()
		in := slices.Clone(history)
		if got := p.Predict(history); math.Abs(got-want) > 1e-12 {
			t.Fatalf("%v.Predict(%v) = %v, want %v", p, history, got, want)
		}
		if !slices.Equal(in, history) {
			t.Fatalf("%v modified its history", p)
		}
	}
	f(Reactive{}, nil, 0)
	f(Reactive{}, []float64{3}, 3)
	f(Reactive{}, seq(25), 25)
	f(Reactive{}, append([]float64{99}, seq(10)...), 10) // only the last 10 s count
	f(Reactive{}, []float64{9, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2}, 2)
	f(MaxWindow{Window: 3}, []float64{9, 1, 5, 2}, 5)
	f(MaxWindow{Window: 30}, []float64{9, 1, 5, 2}, 9)
	f(MaxWindow{}, []float64{9, 1, 5, 2}, 9)
	f(MaxWindow{Window: 3}, nil, 0)
	f(EWMA{Alpha: 1}, seq(25), 25)
	f(EWMA{Alpha: 0.5}, seq(20), 15)                    // chunks 10, 20: 0.5*20 + 0.5*10
	f(EWMA{Alpha: 0.5}, seq(25), 0.5*25+0.25*15+0.25*5) // chunks 5, 15, 25
	f(EWMA{Alpha: 0.5}, []float64{4, 4, 4}, 4)          // one partial chunk
	f(Margin{P: Reactive{}, Factor: 1.1}, seq(10), 11)  //
	f(Margin{P: MaxWindow{Window: 2}, Factor: 2}, seq(4), 8)
	// With less than 120 s the LSTM falls back to the maximum, as the original.
	l := newLSTM(PaperArch, Norm{Mean: 10, Std: 5}, rand.New(rand.NewPCG(1, 1)))
	f(l, []float64{3, 7, 2}, 7)
	f(l, nil, 0)
}

func TestChunkMaxima(t *testing.T) {
	f := func(h []float64, size, n int, want []float64) {
		t.Helper()
		if got := ChunkMaxima(h, size, n); !slices.Equal(got, want) {
			t.Fatalf("ChunkMaxima(%v, %d, %d) = %v, want %v", h, size, n, got, want)
		}
	}
	f(nil, 10, 12, []float64{})
	f(seq(5), 2, 0, []float64{1, 3, 5}) // aligned to the end: [1] [2 3] [4 5]
	f(seq(6), 2, 0, []float64{2, 4, 6})
	f(seq(6), 2, 2, []float64{4, 6})
	f([]float64{5, 1, 1, 7, 0, 0}, 3, 0, []float64{5, 7})
}

// constant predicts the same rate whatever the history.
type constant float64

func (c constant) Predict([]float64) float64 { return float64(c) }

func TestEvaluateOnATinySeries(t *testing.T) {
	// Decisions at t = 2 (history 1 2, actual peak max(3, 4) = 4) and t = 4
	// (history 1…4, actual peak max(5, 6) = 6).
	cfg := EvalConfig{Horizon: 2, Step: 2, Warmup: 2, Lookback: 10}
	f := func(p Predictor, want Metrics) {
		t.Helper()
		got := Evaluate(p, seq(6), cfg)
		if got != want {
			t.Fatalf("Evaluate(%v) = %+v, want %+v", p, got, want)
		}
	}
	f(Reactive{}, Metrics{N: 2, UnderRate: 1, MAE: 2, RMSE: 2, OverProvision: 0, MeanPeak: 5, MeanUnder: 2})
	f(constant(5), Metrics{N: 2, UnderRate: 0.5, MAE: 1, RMSE: 1, OverProvision: 0.5, MeanPeak: 5, MeanUnder: 0.5})
	f(constant(7), Metrics{N: 2, UnderRate: 0, MAE: 2, RMSE: math.Sqrt(5), OverProvision: 2, MeanPeak: 5, MeanUnder: 0})
	f(constant(4), Metrics{N: 2, UnderRate: 0.5, MAE: 1, RMSE: math.Sqrt(2), OverProvision: 0, MeanPeak: 5, MeanUnder: 1})
	if m := Evaluate(Reactive{}, seq(3), cfg); m != (Metrics{}) {
		t.Fatalf("a series too short for a decision gave %+v", m)
	}
}

func TestDropMissing(t *testing.T) {
	if got := DropMissing([]int{0, 3, 0, 0, 5, 1, 0}); !slices.Equal(got, []int{3, 5, 1}) {
		t.Fatalf("DropMissing = %v", got)
	}
}

// TestDefaultLSTMBeatsReactiveOnHeldOutTrace loads the embedded weights and
// evaluates them on six hours of day 14, which training never saw. It fails
// if the trace is missing: a skip is not a pass.
func TestDefaultLSTMBeatsReactiveOnHeldOutTrace(t *testing.T) {
	l, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	if info := l.Info(); info.Days != "0-13" || l.Arch() != PaperArch {
		t.Fatalf("embedded weights: days %q, arch %+v; want days 0-13 and the paper's arch", info.Days, l.Arch())
	}
	const day = 86400
	raw, err := loadgen.OpenTrace(loadgen.TwitterTrace, 14*day, 14*day+day/4)
	if err != nil {
		t.Fatal(err)
	}
	series, err := loadgen.TraceWindow(DropMissing(raw), 8)
	if err != nil {
		t.Fatal(err)
	}
	lm := Evaluate(l, series, EvalConfig{})
	rm := Evaluate(Reactive{}, series, EvalConfig{})
	t.Logf("held-out 6 h: lstm MAE %.3f RMSE %.3f under %.1f%%; reactive MAE %.3f RMSE %.3f under %.1f%%",
		lm.MAE, lm.RMSE, 100*lm.UnderRate, rm.MAE, rm.RMSE, 100*rm.UnderRate)
	if !(lm.MAE < rm.MAE) {
		t.Fatalf("LSTM MAE %.3f is not below reactive MAE %.3f on held-out day 14", lm.MAE, rm.MAE)
	}
	if !(lm.RMSE < rm.RMSE) {
		t.Fatalf("LSTM RMSE %.3f is not below reactive RMSE %.3f on held-out day 14", lm.RMSE, rm.RMSE)
	}
}
