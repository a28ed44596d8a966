package predict

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// FuzzLoadWeights feeds LoadWeights arbitrary files: it must return an error
// or a predictor that predicts a finite, non-negative rate, never panic.
func FuzzLoadWeights(f *testing.F) {
	var buf bytes.Buffer
	l := newLSTM(Arch{Window: 2, ChunkSeconds: 1, HorizonSeconds: 1, Hidden: 2, Activation: ActivationTanh}, Norm{Mean: 1, Std: 2}, rand.New(rand.NewPCG(1, 1)))
	if err := l.WriteWeights(&buf); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte(`{"version":1,"model":"lstm","arch":{"window":1,"chunk_seconds":1,"horizon_seconds":1,"hidden":1,"activation":"relu"},"norm":{"mean":0,"std":1},"kernel":[1,1,1,1],"recurrent_kernel":[[1],[1],[1],[1]],"bias":[0,0,0,0],"dense_kernel":[1],"dense_bias":0}`))
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		m, err := LoadWeights(bytes.NewReader(data))
		if err != nil {
			return
		}
		h := make([]float64, m.Arch().Window*m.Arch().ChunkSeconds)
		for i := range h {
			h[i] = float64(i % 7)
		}
		if p := m.Predict(h); !(p >= 0) {
			t.Fatalf("predicted %v", p)
		}
	})
}
