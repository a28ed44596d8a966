package predict

import "math"

// EvalConfig says how [Evaluate] replays a series. The zero value of a
// field means its default.
type EvalConfig struct {
	Horizon  int // seconds whose peak is predicted; default 20 (paper)
	Step     int // seconds between decisions; default 10 (the controller's interval)
	Warmup   int // first decision at this second; default 120 (the LSTM's window)
	Lookback int // seconds of history given to the predictor; default 600
}

func (c EvalConfig) withDefaults() EvalConfig {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Horizon, 20)
	def(&c.Step, 10)
	def(&c.Warmup, 120)
	def(&c.Lookback, 600)
	return c
}

// Metrics compare predicted and actual peaks over the decisions of a replay.
// Rates are requests per second.
type Metrics struct {
	N             int     `json:"n"`                    // decisions
	UnderRate     float64 `json:"under_rate"`           // fraction of decisions whose predicted peak < actual peak
	MAE           float64 `json:"mae"`                  // mean |predicted - actual|
	RMSE          float64 `json:"rmse"`                 // sqrt(mean (predicted - actual)²)
	OverProvision float64 `json:"over_provision"`       // mean max(predicted - actual, 0): capacity paid for and unused
	MeanPeak      float64 `json:"mean_peak"`            // mean actual peak, for scale
	MeanUnder     float64 `json:"mean_under_provision"` // mean max(actual - predicted, 0): load left unprovisioned
}

// Evaluate replays series (per-second rates, oldest first): at each second
// t = Warmup, Warmup+Step, … with t+Horizon <= len(series) it asks p for a
// prediction from series[t-Lookback:t] and compares it with the actual peak
// of series[t:t+Horizon]. A series too short for one decision gives N = 0
// and zero metrics.
func Evaluate(p Predictor, series []float64, cfg EvalConfig) Metrics {
	cfg = cfg.withDefaults()
	var m Metrics
	var under, abs, sq, over, peak, short float64
	for t := cfg.Warmup; t+cfg.Horizon <= len(series); t += cfg.Step {
		pred := p.Predict(series[max(t-cfg.Lookback, 0):t])
		actual := maxOf(series[t : t+cfg.Horizon])
		e := pred - actual
		if pred < actual {
			under++
		}
		abs += math.Abs(e)
		sq += e * e
		over += max(e, 0)
		short += max(-e, 0)
		peak += actual
		m.N++
	}
	if m.N == 0 {
		return m
	}
	n := float64(m.N)
	m.UnderRate, m.MAE, m.RMSE = under/n, abs/n, math.Sqrt(sq/n)
	m.OverProvision, m.MeanPeak, m.MeanUnder = over/n, peak/n, short/n
	return m
}
