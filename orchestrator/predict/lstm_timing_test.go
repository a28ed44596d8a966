package predict

import "testing"

// BenchmarkPredict compares one decision of the LSTM with the reactive
// baseline on 600 s of history.
func BenchmarkPredict(b *testing.B) {
	l, err := Default()
	if err != nil {
		b.Fatal(err)
	}
	h := periodic(600, 1)
	for _, p := range []Predictor{Reactive{}, EWMA{Alpha: 0.5}, l} {
		b.Run(p.(interface{ String() string }).String(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.Predict(h)
			}
		})
	}
}
