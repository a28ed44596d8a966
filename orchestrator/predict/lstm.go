package predict

import (
	"fmt"
	"math"
)

// Activations of the LSTM's cell input and output (the gates are always
// sigmoid). The paper used ReLU (Keras LSTM(25, activation='relu')).
const (
	ActivationReLU = "relu"
	ActivationTanh = "tanh"
)

// Arch is the shape of an [LSTM].
type Arch struct {
	Window         int    `json:"window"`          // input length: this many Chunk-second maxima (paper: 12)
	ChunkSeconds   int    `json:"chunk_seconds"`   // seconds per input chunk (paper: 10)
	HorizonSeconds int    `json:"horizon_seconds"` // the output is the peak of this many next seconds (paper: 20)
	Hidden         int    `json:"hidden"`          // LSTM units (paper: 25)
	Activation     string `json:"activation"`      // ActivationReLU or ActivationTanh
}

// PaperArch is the predictor of IPA.md §3.3.
var PaperArch = Arch{Window: 12, ChunkSeconds: Chunk, HorizonSeconds: 20, Hidden: 25, Activation: ActivationReLU}

// Validate checks the shape.
func (a Arch) Validate() error {
	switch {
	case a.Window < 1 || a.Window > 1024:
		return fmt.Errorf("window %d is not in [1, 1024]", a.Window)
	case a.ChunkSeconds < 1:
		return fmt.Errorf("chunk of %d s: must be at least 1 s", a.ChunkSeconds)
	case a.HorizonSeconds < 1:
		return fmt.Errorf("horizon of %d s: must be at least 1 s", a.HorizonSeconds)
	case a.Hidden < 1 || a.Hidden > 1024:
		return fmt.Errorf("hidden size %d is not in [1, 1024]", a.Hidden)
	case a.Activation != ActivationReLU && a.Activation != ActivationTanh:
		return fmt.Errorf("activation %q: want %q or %q", a.Activation, ActivationReLU, ActivationTanh)
	}
	return nil
}

// Norm scales rates for the network: x' = (x - Mean) / Std in, and the
// inverse out. Both are requests per second.
type Norm struct {
	Mean float64 `json:"mean"`
	Std  float64 `json:"std"`
}

// LSTM is the paper's load predictor: the last Window maxima of
// ChunkSeconds-second chunks of the history, normalised, run through one
// LSTM layer and a dense unit, give the peak rate of the next
// HorizonSeconds. With less history than Window chunks it falls back to the
// maximum of the history, as the original does. An LSTM is immutable and
// safe for concurrent use.
type LSTM struct {
	arch Arch
	norm Norm
	p    []float64 // parameters, laid out by offsets
	info TrainInfo
}

// Parameter layout (gate-major rows, gate order i, f, g, o as Keras, input
// size 1): wx[4H], wh[4H][H], b[4H], wd[H], bd.
type offsets struct{ h, wx, wh, b, wd, bd, n int }

func layout(h int) offsets {
	g := 4 * h
	o := offsets{h: h, wx: 0, wh: g}
	o.b = o.wh + g*h
	o.wd = o.b + g
	o.bd = o.wd + h
	o.n = o.bd + 1
	return o
}

// Arch returns the shape of l.
func (l *LSTM) Arch() Arch { return l.arch }

// Norm returns the normalisation constants of l.
func (l *LSTM) Norm() Norm { return l.norm }

// Info returns how l was trained (zero if unknown).
func (l *LSTM) Info() TrainInfo { return l.info }

func (l *LSTM) String() string { return "lstm" }

// Predict returns the predicted peak rate (requests per second) of the next
// HorizonSeconds: never negative, and the maximum of its input window if
// the network overflows.
func (l *LSTM) Predict(history []float64) float64 {
	need := l.arch.Window * l.arch.ChunkSeconds
	if len(history) < need {
		return maxOf(history)
	}
	x := ChunkMaxima(history[len(history)-need:], l.arch.ChunkSeconds, l.arch.Window)
	for i := range x {
		x[i] = (x[i] - l.norm.Mean) / l.norm.Std
	}
	var t tape
	t.init(l.arch.Window, l.arch.Hidden)
	y := l.forward(x, &t)*l.norm.Std + l.norm.Mean
	if math.IsNaN(y) || math.IsInf(y, 0) { // only weights that overflow get here
		return maxOf(history[len(history)-need:])
	}
	return max(y, 0)
}

// tape holds one sample's forward pass for back-propagation through time.
type tape struct {
	h, c  [][]float64 // [T+1][H]: states before step t are h[t], c[t]
	gates [][]float64 // [T][4H]: i, f, g, o after activation
	ac    [][]float64 // [T][H]: act(c[t+1])
	dz    []float64   // [4H] scratch
	dh    []float64   // [H] scratch
	dc    []float64   // [H] scratch
	dhp   []float64   // [H] scratch
}

func (t *tape) init(steps, h int) {
	if len(t.h) == steps+1 && len(t.dh) == h {
		return
	}
	mk := func(n, m int) [][]float64 {
		buf := make([]float64, n*m)
		out := make([][]float64, n)
		for i := range out {
			out[i] = buf[i*m : (i+1)*m : (i+1)*m]
		}
		return out
	}
	t.h, t.c = mk(steps+1, h), mk(steps+1, h)
	t.gates, t.ac = mk(steps, 4*h), mk(steps, h)
	t.dz = make([]float64, 4*h)
	t.dh, t.dc, t.dhp = make([]float64, h), make([]float64, h), make([]float64, h)
}

func sigmoid(z float64) float64 { return 1 / (1 + math.Exp(-z)) }

// forward runs the normalised inputs x through the network, recording on t,
// and returns the normalised output.
func (l *LSTM) forward(x []float64, t *tape) float64 {
	H := l.arch.Hidden
	o := layout(H)
	p := l.p
	relu := l.arch.Activation == ActivationReLU
	clear(t.h[0])
	clear(t.c[0])
	for s, xs := range x {
		hp, cp, hn, cn, gs, ac := t.h[s], t.c[s], t.h[s+1], t.c[s+1], t.gates[s], t.ac[s]
		for j := range 4 * H {
			z := p[o.wx+j]*xs + p[o.b+j]
			row := p[o.wh+j*H : o.wh+(j+1)*H]
			for k, w := range row {
				z += w * hp[k]
			}
			switch {
			case j >= 2*H && j < 3*H: // g
				if relu {
					z = max(z, 0)
				} else {
					z = math.Tanh(z)
				}
			default:
				z = sigmoid(z)
			}
			gs[j] = z
		}
		for k := range H {
			i, f, g, og := gs[k], gs[H+k], gs[2*H+k], gs[3*H+k]
			cn[k] = f*cp[k] + i*g
			if relu {
				ac[k] = max(cn[k], 0)
			} else {
				ac[k] = math.Tanh(cn[k])
			}
			hn[k] = og * ac[k]
		}
	}
	y := p[o.bd]
	for k, hk := range t.h[len(x)] {
		y += p[o.wd+k] * hk
	}
	return y
}

// backward adds to grad the gradient of a loss whose derivative with
// respect to the output is dy, for the pass recorded on t.
func (l *LSTM) backward(x []float64, t *tape, dy float64, grad []float64) {
	H := l.arch.Hidden
	o := layout(H)
	p := l.p
	relu := l.arch.Activation == ActivationReLU
	T := len(x)
	hT := t.h[T]
	for k := range H {
		grad[o.wd+k] += dy * hT[k]
		t.dh[k] = dy * p[o.wd+k]
	}
	grad[o.bd] += dy
	clear(t.dc)
	dz, dh, dc := t.dz, t.dh, t.dc
	for s := T - 1; s >= 0; s-- {
		gs, ac, cn, cp, hp := t.gates[s], t.ac[s], t.c[s+1], t.c[s], t.h[s]
		for k := range H {
			i, f, g, og := gs[k], gs[H+k], gs[2*H+k], gs[3*H+k]
			var dact, dg float64
			if relu {
				if cn[k] > 0 {
					dact = 1
				}
				if g > 0 {
					dg = 1
				}
			} else {
				dact = 1 - ac[k]*ac[k]
				dg = 1 - g*g
			}
			dz[3*H+k] = dh[k] * ac[k] * og * (1 - og)
			dck := dc[k] + dh[k]*og*dact
			dz[k] = dck * g * i * (1 - i)
			dz[H+k] = dck * cp[k] * f * (1 - f)
			dz[2*H+k] = dck * i * dg
			dc[k] = dck * f
		}
		clear(t.dhp)
		for j, d := range dz {
			if d == 0 {
				continue
			}
			grad[o.wx+j] += d * x[s]
			grad[o.b+j] += d
			row := p[o.wh+j*H : o.wh+(j+1)*H]
			grow := grad[o.wh+j*H : o.wh+(j+1)*H]
			for k := range H {
				grow[k] += d * hp[k]
				t.dhp[k] += row[k] * d
			}
		}
		copy(dh, t.dhp)
	}
}
