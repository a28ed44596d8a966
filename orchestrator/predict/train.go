package predict

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
)

// TrainConfig says how [Train] fits an [LSTM]. The zero value of a field
// means its default, given in its comment (the paper's where it has one).
type TrainConfig struct {
	Arch         Arch    // default PaperArch
	Stride       int     // seconds between consecutive samples; default 10 (the paper slides by 10 s)
	Epochs       int     // default 30 (paper)
	BatchSize    int     // default 64 (paper)
	LearningRate float64 // Adam step; default 1e-3 (Keras)
	ClipNorm     float64 // clip each batch gradient to this L2 norm; default 5, < 0 disables
	Validation   float64 // fraction of samples, the newest, held out to pick the best epoch; default 0.1, < 0 none
	MaxSamples   int     // if > 0, each epoch trains on this many samples drawn afresh from the training set
	Seed         uint64  // seeds initialisation and shuffling; default 7 (paper)
	Workers      int     // goroutines per batch, at most 4; default 1. The result does not depend on it

	// OnBatch, if set, is called after each batch with the batches done and
	// the total over all epochs.
	OnBatch func(done, total int)
	// OnEpoch, if set, is called after each epoch.
	OnEpoch func(EpochReport)
}

func (c TrainConfig) withDefaults() TrainConfig {
	if c.Arch == (Arch{}) {
		c.Arch = PaperArch
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Stride, 10)
	def(&c.Epochs, 30)
	def(&c.BatchSize, 64)
	def(&c.Workers, 1)
	if c.LearningRate == 0 {
		c.LearningRate = 1e-3
	}
	if c.ClipNorm == 0 {
		c.ClipNorm = 5
	}
	if c.Validation == 0 {
		c.Validation = 0.1
	}
	if c.Seed == 0 {
		c.Seed = 7
	}
	return c
}

// Validate checks a configuration after defaults are applied.
func (c TrainConfig) Validate() error {
	c = c.withDefaults()
	if err := c.Arch.Validate(); err != nil {
		return err
	}
	switch {
	case c.Stride < 1:
		return fmt.Errorf("stride %d s: must be at least 1", c.Stride)
	case c.Epochs < 1:
		return fmt.Errorf("epochs %d: must be at least 1", c.Epochs)
	case c.BatchSize < 1:
		return fmt.Errorf("batch size %d: must be at least 1", c.BatchSize)
	case !(c.LearningRate > 0):
		return fmt.Errorf("learning rate %v: must be positive", c.LearningRate)
	case c.Validation >= 0.9:
		return fmt.Errorf("validation fraction %v: must be below 0.9", c.Validation)
	case c.MaxSamples < 0:
		return fmt.Errorf("max samples %d: must not be negative", c.MaxSamples)
	case c.Workers < 1 || c.Workers > shards:
		return fmt.Errorf("workers %d: not in [1, %d]", c.Workers, shards)
	}
	return nil
}

// EpochReport is the outcome of one training epoch. Losses are mean squared
// errors of the normalised output.
type EpochReport struct {
	Epoch     int     `json:"epoch"`      // from 1
	TrainLoss float64 `json:"train_loss"` // mean over the epoch's batches, as Keras reports it
	ValLoss   float64 `json:"val_loss"`   // at the end of the epoch; NaN without validation samples
}

// Report is the outcome of [Train].
type Report struct {
	Samples    int           `json:"samples"`     // training samples
	ValSamples int           `json:"val_samples"` // validation samples
	Epochs     []EpochReport `json:"epochs"`
	BestEpoch  int           `json:"best_epoch"` // the epoch whose weights were kept (lowest validation loss, else the last)
	InitLoss   float64       `json:"init_loss"`  // training loss before the first step
	TrainLoss  float64       `json:"train_loss"` // of the kept weights, on all training samples
	ValLoss    float64       `json:"val_loss"`   // of the kept weights
	ValRMSE    float64       `json:"val_rmse"`   // of the kept weights, in requests per second
}

// ErrShortSeries is returned by [Train] when the series is too short to make
// a single training sample.
var ErrShortSeries = errors.New("series too short to train on")

// samples are the normalised inputs and targets of a series.
type samples struct {
	x [][]float64
	y []float64
}

// Windows returns the raw (unnormalised) samples of series for arch: for
// each t = Window*ChunkSeconds, +stride, … with t+HorizonSeconds <=
// len(series), the chunk maxima of the Window*ChunkSeconds seconds before t
// and the peak of the HorizonSeconds from t.
func Windows(series []float64, arch Arch, stride int) (x [][]float64, y []float64) {
	need := arch.Window * arch.ChunkSeconds
	for t := need; t+arch.HorizonSeconds <= len(series); t += stride {
		x = append(x, ChunkMaxima(series[t-need:t], arch.ChunkSeconds, arch.Window))
		y = append(y, maxOf(series[t:t+arch.HorizonSeconds]))
	}
	return x, y
}

// Train fits an LSTM to series (per-second rates, requests per second,
// oldest first) by back-propagation through time, Adam and a mean squared
// error loss over mini-batches. It keeps the weights of the epoch with the
// lowest validation loss. Given the same series and configuration (Workers
// aside) it returns the same weights.
func Train(series []float64, cfg TrainConfig) (*LSTM, Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, Report{}, err
	}
	cfg = cfg.withDefaults()
	a := cfg.Arch
	rx, ry := Windows(series, a, cfg.Stride)
	nVal := 0
	if cfg.Validation > 0 {
		nVal = int(float64(len(ry)) * cfg.Validation)
	}
	if len(ry)-nVal < 1 {
		return nil, Report{}, fmt.Errorf("%w: %d s give %d samples; need at least %d s", ErrShortSeries, len(series), len(ry), a.Window*a.ChunkSeconds+a.HorizonSeconds+1)
	}
	nTrain := len(ry) - nVal
	// Normalise by the training inputs' statistics.
	var sum, sq float64
	var n int
	for _, xs := range rx[:nTrain] {
		for _, v := range xs {
			sum += v
			sq += v * v
			n++
		}
	}
	mean := sum / float64(n)
	std := math.Sqrt(max(sq/float64(n)-mean*mean, 0))
	if std < 1e-6 {
		std = 1
	}
	norm := Norm{Mean: mean, Std: std}
	scale := func(rx [][]float64, ry []float64) samples {
		s := samples{x: make([][]float64, len(ry)), y: make([]float64, len(ry))}
		for i := range ry {
			s.x[i] = make([]float64, len(rx[i]))
			for j, v := range rx[i] {
				s.x[i][j] = (v - mean) / std
			}
			s.y[i] = (ry[i] - mean) / std
		}
		return s
	}
	train, val := scale(rx[:nTrain], ry[:nTrain]), scale(rx[nTrain:], ry[nTrain:])

	rng := rand.New(rand.NewPCG(cfg.Seed, 0x1b5a))
	l := newLSTM(a, norm, rng)
	rep := Report{Samples: nTrain, ValSamples: nVal, InitLoss: l.loss(train, cfg.Workers)}

	perEpoch := nTrain
	if cfg.MaxSamples > 0 {
		perEpoch = min(perEpoch, cfg.MaxSamples)
	}
	nb := (perEpoch + cfg.BatchSize - 1) / cfg.BatchSize
	opt := newAdam(len(l.p), cfg.LearningRate)
	grads := make([][]float64, shards)
	tapes := make([]tape, shards)
	for w := range grads {
		grads[w] = make([]float64, len(l.p))
	}
	best := append([]float64(nil), l.p...)
	bestLoss := math.Inf(1)
	idx := make([]int, nTrain)
	for i := range idx {
		idx[i] = i
	}
	done := 0
	for ep := 1; ep <= cfg.Epochs; ep++ {
		rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		var epLoss float64
		for b := range nb {
			batch := idx[b*cfg.BatchSize : min((b+1)*cfg.BatchSize, perEpoch)]
			epLoss += l.gradient(train, batch, grads, tapes, cfg.Workers) * float64(len(batch))
			g := grads[0]
			for _, gw := range grads[1:] {
				for i, v := range gw {
					g[i] += v
				}
			}
			if cfg.ClipNorm > 0 {
				var ss float64
				for _, v := range g {
					ss += v * v
				}
				if nrm := math.Sqrt(ss); nrm > cfg.ClipNorm {
					for i := range g {
						g[i] *= cfg.ClipNorm / nrm
					}
				}
			}
			opt.step(l.p, g)
			done++
			if cfg.OnBatch != nil {
				cfg.OnBatch(done, nb*cfg.Epochs)
			}
		}
		er := EpochReport{Epoch: ep, TrainLoss: epLoss / float64(perEpoch), ValLoss: math.NaN()}
		sel := er.TrainLoss
		if nVal > 0 {
			er.ValLoss = l.loss(val, cfg.Workers)
			sel = er.ValLoss
		}
		if nVal == 0 || sel < bestLoss {
			bestLoss = sel
			copy(best, l.p)
			rep.BestEpoch = ep
		}
		rep.Epochs = append(rep.Epochs, er)
		if cfg.OnEpoch != nil {
			cfg.OnEpoch(er)
		}
	}
	copy(l.p, best)
	rep.TrainLoss = l.loss(train, cfg.Workers)
	rep.ValLoss = math.NaN()
	rep.ValRMSE = math.NaN()
	if nVal > 0 {
		rep.ValLoss = l.loss(val, cfg.Workers)
		rep.ValRMSE = math.Sqrt(rep.ValLoss) * std
	}
	l.info = TrainInfo{Seed: cfg.Seed, Epochs: cfg.Epochs, BestEpoch: rep.BestEpoch, BatchSize: cfg.BatchSize,
		LearningRate: cfg.LearningRate, Stride: cfg.Stride, MaxSamples: cfg.MaxSamples, Samples: nTrain, ValSamples: nVal,
		TrainLoss: rep.TrainLoss, ValLoss: nanToZero(rep.ValLoss), ValRMSE: nanToZero(rep.ValRMSE)}
	return l, rep, nil
}

func nanToZero(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return v
}

// newLSTM initialises weights as Keras does, except the recurrent kernel:
// Glorot-uniform kernels (Keras uses an orthogonal recurrent kernel), zero
// biases except a forget-gate bias of 1, a Glorot-uniform dense layer.
func newLSTM(a Arch, norm Norm, rng *rand.Rand) *LSTM {
	H := a.Hidden
	o := layout(H)
	p := make([]float64, o.n)
	glorot := func(dst []float64, fanIn, fanOut int) {
		lim := math.Sqrt(6 / float64(fanIn+fanOut))
		for i := range dst {
			dst[i] = (2*rng.Float64() - 1) * lim
		}
	}
	glorot(p[o.wx:o.wx+4*H], 1, 4*H)
	glorot(p[o.wh:o.wh+4*H*H], H, 4*H)
	for k := range H {
		p[o.b+H+k] = 1
	}
	glorot(p[o.wd:o.wd+H], H, 1)
	return &LSTM{arch: a, norm: norm, p: p}
}

// shards is the fixed number of parts a batch or a loss is split into.
// Each part is summed on its own and the parts in order, so results do not
// depend on how many goroutines share the parts.
const shards = 4

// parallel runs f(0) … f(shards-1) on workers goroutines.
func parallel(workers int, f func(shard int)) {
	if workers <= 1 {
		for s := range shards {
			f(s)
		}
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for s := w; s < shards; s += workers {
				f(s)
			}
		})
	}
	wg.Wait()
}

// gradient computes the mean squared error of the batch and its gradient;
// the gradient is the sum of grads (one per shard).
func (l *LSTM) gradient(s samples, batch []int, grads [][]float64, tapes []tape, workers int) float64 {
	var losses [shards]float64
	n := float64(len(batch))
	parallel(workers, func(w int) {
		g := grads[w]
		clear(g)
		t := &tapes[w]
		t.init(l.arch.Window, l.arch.Hidden)
		lo, hi := w*len(batch)/shards, (w+1)*len(batch)/shards
		for _, i := range batch[lo:hi] {
			y := l.forward(s.x[i], t)
			e := y - s.y[i]
			losses[w] += e * e
			l.backward(s.x[i], t, 2*e/n, g)
		}
	})
	var sum float64
	for _, v := range losses {
		sum += v
	}
	return sum / n
}

// loss returns the mean squared error of l on s.
func (l *LSTM) loss(s samples, workers int) float64 {
	if len(s.y) == 0 {
		return math.NaN()
	}
	var sums [shards]float64
	parallel(workers, func(w int) {
		var t tape
		t.init(l.arch.Window, l.arch.Hidden)
		for i := w * len(s.y) / shards; i < (w+1)*len(s.y)/shards; i++ {
			e := l.forward(s.x[i], &t) - s.y[i]
			sums[w] += e * e
		}
	})
	var sum float64
	for _, v := range sums {
		sum += v
	}
	return sum / float64(len(s.y))
}

// adam is the Adam optimiser with Keras' defaults (β1 0.9, β2 0.999, ε 1e-7).
type adam struct {
	lr   float64
	m, v []float64
	t    int
}

func newAdam(n int, lr float64) *adam {
	return &adam{lr: lr, m: make([]float64, n), v: make([]float64, n)}
}

func (a *adam) step(p, g []float64) {
	const b1, b2, eps = 0.9, 0.999, 1e-7
	a.t++
	c1 := 1 - math.Pow(b1, float64(a.t))
	c2 := 1 - math.Pow(b2, float64(a.t))
	for i, gi := range g {
		a.m[i] = b1*a.m[i] + (1-b1)*gi
		a.v[i] = b2*a.v[i] + (1-b2)*gi*gi
		p[i] -= a.lr * (a.m[i] / c1) / (math.Sqrt(a.v[i]/c2) + eps)
	}
}
