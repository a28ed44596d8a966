// Package predict forecasts the arrival rate a pipeline must be provisioned
// for: given the per-second arrival rates seen so far, the peak rate of the
// next horizon (IPA.md §3.3: the next 20 s).
//
// Units: a history holds requests per second, one value per second, oldest
// first; every predictor returns requests per second (a peak, not a count
// over the horizon).
//
// Predictors:
//   - [Reactive]: the peak of the last 10-second chunk (the paper's
//     "reactive" predictor on 10-s maxima).
//   - [MaxWindow]: the peak of the last Window seconds.
//   - [EWMA]: an exponentially weighted mean of the 10-second maxima.
//   - [LSTM]: the paper's model: the last 12 ten-second maxima, scaled,
//     through one LSTM layer of 25 units (ReLU activation, sigmoid gates,
//     as Keras' LSTM(25, activation='relu')) and a dense output, predicting
//     the peak of the next 20 s. [Train] fits it in pure Go: BPTT over the
//     12-step window, Adam, MSE, mini-batches, deterministic given a seed.
//   - [Margin]: any predictor times a safety factor (1.1 = +10 %).
//
// [Evaluate] replays a series decision by decision and reports the
// under-prediction rate, MAE, RMSE and over-provisioning of a predictor.
//
// # Default weights
//
// weights/lstm.json is embedded and loaded by [Default]. It was trained on
// days 0–13 of the Twitter trace (missing seconds, the zeros, dropped; then
// ÷8 and truncated, as the paper did). Training is deterministic (the same
// flags on the same architecture give the same file, whatever --workers);
// regenerate it from the repository root, in about five minutes on two
// cores, with:
//
//	ipa predict train --train-days 0-13 \
//	    --epochs 12 --seed 7 --out orchestrator/predict/weights/lstm.json
//
// and evaluated on the held-out days by
//
//	ipa predict eval --days 14-21
//
// The package does no I/O except through io.Reader and io.Writer, reads no
// clock, and is deterministic given a seed.
package predict
