package predict

import (
	"fmt"
	"math"
)

// Chunk is the aggregation step, in seconds, of the 10-second maxima the
// paper's predictors read (IPA.md §3.3).
const Chunk = 10

// Predictor forecasts a peak arrival rate.
type Predictor interface {
	// Predict returns the predicted peak arrival rate, in requests per
	// second, of the next horizon, given history: per-second arrival rates
	// (requests per second), oldest first. An empty history predicts 0.
	// Predict must not modify history.
	Predict(history []float64) float64
}

// Compile-time guards.
var (
	_ Predictor = Reactive{}
	_ Predictor = MaxWindow{}
	_ Predictor = EWMA{}
	_ Predictor = (*LSTM)(nil)
	_ Predictor = Margin{}
)

// ChunkMaxima returns the maxima of consecutive size-second chunks of
// history, aligned to its end (the last chunk ends at the newest second; the
// first one may be shorter), oldest first. It returns at most n chunks, or
// all of them if n <= 0.
func ChunkMaxima(history []float64, size, n int) []float64 {
	if size < 1 {
		panic("BUG: chunk size < 1")
	}
	k := (len(history) + size - 1) / size
	if n > 0 && k > n {
		k = n
	}
	out := make([]float64, k)
	end := len(history)
	for j := k - 1; j >= 0; j-- {
		start := max(end-size, 0)
		out[j] = maxOf(history[start:end])
		end = start
	}
	return out
}

func maxOf(xs []float64) float64 {
	m := math.Inf(-1)
	for _, x := range xs {
		m = max(m, x)
	}
	if len(xs) == 0 {
		return 0
	}
	return m
}

// Reactive predicts that the next peak equals the peak of the last 10-second
// chunk (the paper's "reactive" predictor: the last 10-s maximum).
type Reactive struct{}

// Predict returns the maximum of the last Chunk seconds of history.
func (Reactive) Predict(history []float64) float64 {
	return maxOf(history[max(len(history)-Chunk, 0):])
}

func (Reactive) String() string { return "reactive" }

// MaxWindow predicts the peak of the last Window seconds (the paper's "max"
// predictor over its look-back). Window <= 0 means the whole history.
type MaxWindow struct {
	Window int // seconds
}

// Predict returns the maximum of the last Window seconds of history.
func (m MaxWindow) Predict(history []float64) float64 {
	if m.Window <= 0 {
		return maxOf(history)
	}
	return maxOf(history[max(len(history)-m.Window, 0):])
}

func (m MaxWindow) String() string { return fmt.Sprintf("max-%ds", m.Window) }

// EWMA predicts an exponentially weighted moving average of the 10-second
// maxima of history: s = Alpha*x + (1-Alpha)*s, oldest chunk first, s
// starting at the first chunk. Alpha is in (0, 1]; 1 is [Reactive].
type EWMA struct {
	Alpha float64
}

// Predict returns the smoothed 10-second maximum.
func (e EWMA) Predict(history []float64) float64 {
	ch := ChunkMaxima(history, Chunk, 0)
	if len(ch) == 0 {
		return 0
	}
	s := ch[0]
	for _, x := range ch[1:] {
		s = e.Alpha*x + (1-e.Alpha)*s
	}
	return s
}

func (e EWMA) String() string { return fmt.Sprintf("ewma-%g", e.Alpha) }

// Margin scales another predictor's output by Factor (1.1 provisions 10 %
// above the prediction). The paper's margin is round(p*(1+m/100)); rounding
// is left to the caller, which knows whether it wants whole requests.
type Margin struct {
	P      Predictor
	Factor float64
}

// Predict returns Factor times m.P's prediction.
func (m Margin) Predict(history []float64) float64 { return m.Factor * m.P.Predict(history) }

func (m Margin) String() string { return fmt.Sprintf("%v×%g", m.P, m.Factor) }

// DropMissing returns the trace without its zero seconds. The Twitter trace
// has 37,899 of them, periods the archive is missing (IPA.md §5.1); the
// paper removed them before training. The result is a new slice.
func DropMissing(trace []int) []int {
	out := make([]int, 0, len(trace))
	for _, v := range trace {
		if v != 0 {
			out = append(out, v)
		}
	}
	return out
}
