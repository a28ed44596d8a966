package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/ipa-serving/ipa/dataplane/loadgen"
	"github.com/ipa-serving/ipa/orchestrator/predict"
)

// secondsPerDay is one day of the per-second trace.
const secondsPerDay = 86400

// PredictCmd trains and evaluates the load predictors (orchestrator/predict).
type PredictCmd struct {
	Train PredictTrainCmd `cmd:"" help:"Train the LSTM load predictor on days of the Twitter trace and write its weights."`
	Eval  PredictEvalCmd  `cmd:"" help:"Compare the load predictors on held-out days of the Twitter trace: under-prediction rate and error."`
}

// traceFlags select days of the trace.
type traceFlags struct {
	Trace       string  `placeholder:"FILE" type:"path" help:"Per-second trace: text, or the .tbz2 it ships in (default: the Twitter trace of the paper, built in)."`
	Damping     float64 `default:"8" help:"Divide each trace count by this and truncate, as the paper did (it used 8)."`
	KeepMissing bool    `name:"keep-missing" help:"Keep the trace's zero seconds (missing data); by default they are dropped, as the paper did."`
}

// load returns the per-second rates of days "A-B" (inclusive, from 0; the
// last day may be partial) and the path read.
func (f *traceFlags) load(days string) ([]float64, string, error) {
	a, b, err := parseDays(days)
	if err != nil {
		return nil, "", err
	}
	path := f.Trace
	if path == "" {
		path = loadgen.TwitterTrace
	}
	raw, err := loadgen.OpenTrace(path, 0, -1)
	if err != nil {
		return nil, "", err
	}
	start, end := a*secondsPerDay, min((b+1)*secondsPerDay, len(raw))
	if start >= len(raw) {
		return nil, "", fmt.Errorf("days %s start at second %d but the trace has only %d seconds (%.2f days)", days, start, len(raw), float64(len(raw))/secondsPerDay)
	}
	raw = raw[start:end]
	if !f.KeepMissing {
		raw = predict.DropMissing(raw)
	}
	series, err := loadgen.TraceWindow(raw, f.Damping)
	if err != nil {
		return nil, "", err
	}
	return series, path, nil
}

// parseDays parses "A-B" or "A" (days from 0, inclusive).
func parseDays(s string) (int, int, error) {
	as, bs, ok := strings.Cut(s, "-")
	if !ok {
		bs = as
	}
	a, err1 := strconv.Atoi(strings.TrimSpace(as))
	b, err2 := strconv.Atoi(strings.TrimSpace(bs))
	if err1 != nil || err2 != nil || a < 0 || b < a {
		return 0, 0, fmt.Errorf("days %q: write FIRST-LAST (inclusive, from 0), e.g. 0-13", s)
	}
	return a, b, nil
}

// PredictTrainCmd trains the LSTM.
type PredictTrainCmd struct {
	traceFlags `embed:""`
	TrainDays  string  `name:"train-days" default:"0-13" help:"Days of the trace to train on, FIRST-LAST inclusive (the paper: the first 14)."`
	Out        string  `default:"orchestrator/predict/weights/lstm.json" help:"Weights file to write."`
	Epochs     int     `default:"12" help:"Passes over the training windows (the paper: 30)."`
	Batch      int     `default:"64" help:"Mini-batch size."`
	LR         float64 `name:"lr" default:"0.001" help:"Adam learning rate."`
	Stride     int     `default:"10" help:"Seconds between training windows."`
	MaxSamples int     `name:"max-samples" default:"0" help:"Windows per epoch, drawn afresh each epoch (0: all)."`
	Hidden     int     `default:"25" help:"LSTM units."`
	Activation string  `default:"relu" enum:"relu,tanh" help:"Cell activation: ${enum} (the paper: relu)."`
	Seed       uint64  `default:"7" help:"Seed of initialisation and shuffling; the same flags give the same weights."`
	Workers    int     `default:"2" help:"Goroutines per batch (1-4); the weights do not depend on it."`
	Progress   bool    `default:"true" negatable:"" help:"Show a progress bar."`
}

// Validate refuses settings that cannot train.
func (c *PredictTrainCmd) Validate() error {
	if _, _, err := parseDays(c.TrainDays); err != nil {
		return err
	}
	return c.config().Validate()
}

func (c *PredictTrainCmd) config() predict.TrainConfig {
	a := predict.PaperArch
	a.Hidden, a.Activation = c.Hidden, c.Activation
	return predict.TrainConfig{Arch: a, Stride: c.Stride, Epochs: c.Epochs, BatchSize: c.Batch, LearningRate: c.LR,
		MaxSamples: c.MaxSamples, Seed: c.Seed, Workers: c.Workers}
}

// command is the command line that regenerates the weights, stored in them.
func (c *PredictTrainCmd) command() string {
	s := fmt.Sprintf("ipa predict train --train-days %s --damping %g --epochs %d --batch %d --lr %g --stride %d --max-samples %d --hidden %d --activation %s --seed %d",
		c.TrainDays, c.Damping, c.Epochs, c.Batch, c.LR, c.Stride, c.MaxSamples, c.Hidden, c.Activation, c.Seed)
	if c.KeepMissing {
		s += " --keep-missing"
	}
	return s
}

// Run trains and writes the weights.
func (c *PredictTrainCmd) Run(g *Globals) error {
	log := g.Logger()
	series, path, err := c.load(c.TrainDays)
	if err != nil {
		return err
	}
	cfg := c.config()
	log.Info("training LSTM", "trace", path, "days", c.TrainDays, "seconds", len(series), "epochs", c.Epochs, "seed", c.Seed)
	var bar *progressbar.ProgressBar
	cfg.OnBatch = func(done, total int) {
		if !c.Progress {
			return
		}
		if bar == nil {
			bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionSetWidth(30),
				progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true), progressbar.OptionSetElapsedTime(true),
				progressbar.OptionSetDescription("epoch 1"), progressbar.OptionClearOnFinish())
		}
		bar.Set(done)
	}
	cfg.OnEpoch = func(e predict.EpochReport) {
		if bar != nil {
			bar.Describe(fmt.Sprintf("epoch %d (last: train %.4f, val %.4f)", e.Epoch+1, e.TrainLoss, e.ValLoss))
		}
		log.Debug("epoch", "epoch", e.Epoch, "train_loss", e.TrainLoss, "val_loss", e.ValLoss)
	}
	began := time.Now()
	l, rep, err := predict.Train(series, cfg)
	if err != nil {
		return fmt.Errorf("cannot train on days %s: %w", c.TrainDays, err)
	}
	if bar != nil {
		bar.Finish()
	}
	elapsed := time.Since(began)
	info := l.Info()
	info.Command, info.Trace, info.Days, info.Damping = c.command(), filepath.Base(path), c.TrainDays, c.Damping
	l.SetInfo(info)
	for _, e := range rep.Epochs {
		fmt.Fprintf(os.Stderr, "epoch %2d  train loss %.5f  val loss %.5f\n", e.Epoch, e.TrainLoss, e.ValLoss)
	}
	fmt.Fprintf(os.Stderr, "trained in %s on %d windows (%d held out): loss %.5f → %.5f, validation %.5f (RMSE %.2f req/s), kept epoch %d\n",
		elapsed.Round(time.Second), rep.Samples, rep.ValSamples, rep.InitLoss, rep.TrainLoss, rep.ValLoss, rep.ValRMSE, rep.BestEpoch)
	return writeFile(c.Out, l.WriteWeights)
}

// PredictEvalCmd compares the predictors.
type PredictEvalCmd struct {
	traceFlags `embed:""`
	Days       string  `default:"14-21" help:"Held-out days of the trace to evaluate on, FIRST-LAST inclusive."`
	Weights    string  `placeholder:"FILE" type:"path" help:"LSTM weights (default: the ones built in, orchestrator/predict/weights/lstm.json)."`
	Margin     float64 `default:"1.1" help:"Factor of the margin predictor (LSTM × margin)."`
	MaxWindow  int     `name:"max-window" default:"120" help:"Seconds of the max-window predictor."`
	Alpha      float64 `default:"0.5" help:"Smoothing factor of the EWMA predictor over 10-s maxima."`
	Horizon    int     `default:"20" help:"Seconds whose peak is predicted."`
	Step       int     `default:"10" help:"Seconds between decisions."`
}

// Validate refuses settings that cannot evaluate.
func (c *PredictEvalCmd) Validate() error {
	if _, _, err := parseDays(c.Days); err != nil {
		return err
	}
	switch {
	case !(c.Margin > 0):
		return fmt.Errorf("--margin %v: give a positive factor, e.g. 1.1", c.Margin)
	case c.MaxWindow < 1:
		return fmt.Errorf("--max-window %d: give at least 1 second", c.MaxWindow)
	case !(c.Alpha > 0 && c.Alpha <= 1):
		return fmt.Errorf("--alpha %v: give a factor in (0, 1]", c.Alpha)
	case c.Horizon < 1 || c.Step < 1:
		return fmt.Errorf("--horizon and --step must be at least 1 second")
	}
	return nil
}

// Run prints the comparison table.
func (c *PredictEvalCmd) Run(g *Globals) error {
	series, path, err := c.load(c.Days)
	if err != nil {
		return err
	}
	lstm, err := predict.Default()
	if c.Weights != "" {
		f, ferr := os.Open(c.Weights)
		if ferr != nil {
			return ferr
		}
		lstm, err = predict.LoadWeights(f)
		f.Close()
	}
	if err != nil {
		return fmt.Errorf("cannot load the LSTM: %w", err)
	}
	preds := []struct {
		name string
		p    predict.Predictor
	}{
		{"reactive (last 10 s max)", predict.Reactive{}},
		{fmt.Sprintf("max-window %d s", c.MaxWindow), predict.MaxWindow{Window: c.MaxWindow}},
		{fmt.Sprintf("ewma α=%g (10 s maxima)", c.Alpha), predict.EWMA{Alpha: c.Alpha}},
		{"lstm", lstm},
		{fmt.Sprintf("lstm × %g", c.Margin), predict.Margin{P: lstm, Factor: c.Margin}},
	}
	cfg := predict.EvalConfig{Horizon: c.Horizon, Step: c.Step}
	fmt.Printf("trace %s, days %s (%d s, ÷%g", filepath.Base(path), c.Days, len(series), c.Damping)
	if !c.KeepMissing {
		fmt.Print(", missing seconds dropped")
	}
	fmt.Printf("); a decision every %d s predicts the peak of the next %d s\n", c.Step, c.Horizon)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "predictor\tdecisions\tunder-predicted %\tMAE req/s\tRMSE req/s\tover-provision req/s\tunder-provision req/s\tmean peak req/s\t")
	for _, p := range preds {
		m := predict.Evaluate(p.p, series, cfg)
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.3f\t%.3f\t%.3f\t%.3f\t%.2f\t\n", p.name, m.N, 100*m.UnderRate, m.MAE, m.RMSE, m.OverProvision, m.MeanUnder, m.MeanPeak)
	}
	return tw.Flush()
}
