package predict

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sync"
)

// WeightsVersion is the version of the weights file format that
// [WriteWeights] writes and [LoadWeights] reads.
const WeightsVersion = 1

// TrainInfo records how a model was trained; it is stored with the weights.
type TrainInfo struct {
	Command      string  `json:"command,omitempty"` // the command line that regenerates the file
	Trace        string  `json:"trace,omitempty"`   // base name of the trace
	Days         string  `json:"days,omitempty"`    // training days, e.g. "0-13"
	Damping      float64 `json:"damping,omitempty"` // the trace was divided by this (paper: 8)
	Seed         uint64  `json:"seed,omitempty"`
	Epochs       int     `json:"epochs,omitempty"`
	BestEpoch    int     `json:"best_epoch,omitempty"`
	BatchSize    int     `json:"batch_size,omitempty"`
	LearningRate float64 `json:"learning_rate,omitempty"`
	Stride       int     `json:"stride_seconds,omitempty"`
	MaxSamples   int     `json:"max_samples_per_epoch,omitempty"`
	Samples      int     `json:"samples,omitempty"`
	ValSamples   int     `json:"val_samples,omitempty"`
	TrainLoss    float64 `json:"train_loss,omitempty"` // normalised MSE
	ValLoss      float64 `json:"val_loss,omitempty"`   // normalised MSE
	ValRMSE      float64 `json:"val_rmse,omitempty"`   // requests per second
}

// weightsFile is the JSON form of an LSTM. Gate order i, f, g, o (Keras);
// the input size is 1, so the kernel has one weight per gate unit.
type weightsFile struct {
	Version         int         `json:"version"`
	Model           string      `json:"model"`
	Arch            Arch        `json:"arch"`
	Norm            Norm        `json:"norm"`
	Kernel          []float64   `json:"kernel"`           // [4H]
	RecurrentKernel [][]float64 `json:"recurrent_kernel"` // [4H][H]: row j feeds gate unit j
	Bias            []float64   `json:"bias"`             // [4H]
	DenseKernel     []float64   `json:"dense_kernel"`     // [H]
	DenseBias       float64     `json:"dense_bias"`
	Training        TrainInfo   `json:"training"`
}

// SetInfo records how l was trained; it is written with the weights.
func (l *LSTM) SetInfo(info TrainInfo) { l.info = info }

// WriteWeights writes l as indented JSON. Floats are written in their
// shortest exact form, so [LoadWeights] restores l bit for bit.
func (l *LSTM) WriteWeights(w io.Writer) error {
	H := l.arch.Hidden
	o := layout(H)
	f := weightsFile{Version: WeightsVersion, Model: "lstm", Arch: l.arch, Norm: l.norm,
		Kernel: l.p[o.wx : o.wx+4*H], Bias: l.p[o.b : o.b+4*H], DenseKernel: l.p[o.wd : o.wd+H], DenseBias: l.p[o.bd],
		Training: l.info}
	for j := range 4 * H {
		f.RecurrentKernel = append(f.RecurrentKernel, l.p[o.wh+j*H:o.wh+(j+1)*H])
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	if err := enc.Encode(f); err != nil {
		return fmt.Errorf("cannot write LSTM weights: %w", err)
	}
	return nil
}

// LoadWeights reads an LSTM written by [LSTM.WriteWeights].
func LoadWeights(r io.Reader) (*LSTM, error) {
	var f weightsFile
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("cannot decode LSTM weights: %w", err)
	}
	if f.Version != WeightsVersion {
		return nil, fmt.Errorf("LSTM weights version %d: this build reads version %d; regenerate them with `ipa predict train`", f.Version, WeightsVersion)
	}
	if f.Model != "lstm" {
		return nil, fmt.Errorf("weights are for model %q, not lstm", f.Model)
	}
	if err := f.Arch.Validate(); err != nil {
		return nil, fmt.Errorf("LSTM weights: %w", err)
	}
	if !(f.Norm.Std > 0) || math.IsInf(f.Norm.Std, 0) || math.IsNaN(f.Norm.Mean) || math.IsInf(f.Norm.Mean, 0) {
		return nil, fmt.Errorf("LSTM weights: normalisation mean %v, std %v: want finite values and std > 0", f.Norm.Mean, f.Norm.Std)
	}
	H := f.Arch.Hidden
	o := layout(H)
	check := func(name string, got, want int) error {
		if got != want {
			return fmt.Errorf("LSTM weights: %s has %d values; hidden size %d needs %d", name, got, H, want)
		}
		return nil
	}
	if err := check("kernel", len(f.Kernel), 4*H); err != nil {
		return nil, err
	}
	if err := check("recurrent_kernel", len(f.RecurrentKernel), 4*H); err != nil {
		return nil, err
	}
	if err := check("bias", len(f.Bias), 4*H); err != nil {
		return nil, err
	}
	if err := check("dense_kernel", len(f.DenseKernel), H); err != nil {
		return nil, err
	}
	p := make([]float64, o.n)
	copy(p[o.wx:], f.Kernel)
	for j, row := range f.RecurrentKernel {
		if err := check(fmt.Sprintf("recurrent_kernel row %d", j), len(row), H); err != nil {
			return nil, err
		}
		copy(p[o.wh+j*H:], row)
	}
	copy(p[o.b:], f.Bias)
	copy(p[o.wd:], f.DenseKernel)
	p[o.bd] = f.DenseBias
	for i, v := range p {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("LSTM weights: parameter %d is %v", i, v)
		}
	}
	return &LSTM{arch: f.Arch, norm: f.Norm, p: p, info: f.Training}, nil
}

//go:embed weights/lstm.json
var defaultWeights []byte

var defaultLSTM = sync.OnceValues(func() (*LSTM, error) { return LoadWeights(bytes.NewReader(defaultWeights)) })

// Default returns the LSTM trained on days 0–13 of the Twitter trace that is
// embedded in the binary (weights/lstm.json; doc.go says how to regenerate
// it). Every call returns the same, immutable, predictor.
func Default() (*LSTM, error) { return defaultLSTM() }
