package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/ipa-serving/ipa/dataplane/loadgen"
	"github.com/ipa-serving/ipa/models"
)

// LoadCmd is an open-loop load generator in the spirit of IPA's load tester:
// a constant rate, a step pattern or a window of the Twitter trace, sent to a
// router's or stage's infer URL; it reports what became of every request.
type LoadCmd struct {
	URL string `name:"url" required:"" placeholder:"URL" help:"Infer URL of the router or a stage, e.g. http://127.0.0.1:8080/v2/models/ocr/infer."`

	LoadPattern `embed:""`

	SLA         time.Duration `name:"sla" default:"0s" help:"Latency objective: sent as the Ipa-Timeout header and used for SLA attainment and goodput (0: none)."`
	Timeout     time.Duration `default:"30s" help:"Client-side limit on one request; a request that hits it fails."`
	MaxInflight int           `name:"max-inflight" default:"1024" help:"Outstanding requests at most; a request due beyond this is dropped as client overload, never queued."`

	Body          string   `placeholder:"FILE" type:"path" help:"Send this file as the body of every request (e.g. a JPEG or PNG)."`
	ContentType   string   `name:"content-type" help:"Content-Type of --body (default: from the file name)."`
	Tensor        []string `sep:"none" placeholder:"NAME:DATATYPE:SHAPE" help:"Send a V2 request with a random tensor, e.g. input:FP32:1x3x224x224; repeat for more inputs."`
	BinaryTensors bool     `name:"binary-tensors" default:"true" negatable:"" help:"Send --tensor data with the binary tensor extension (--no-binary-tensors: JSON)."`

	Report     string `placeholder:"FILE" help:"Write the summary as JSON (sent, succeeded, dropped, failed, latency_seconds, …)."`
	Records    string `placeholder:"FILE" help:"Write one record per request: CSV if FILE ends in .csv, else JSON lines."`
	PlotDir    string `name:"plot-dir" placeholder:"DIR" help:"Render plots here: offered load and throughput, latency over time, latency CDF against the SLA."`
	PlotFormat string `name:"plot-format" default:"svg" enum:"svg,png" help:"Format of the plots: ${enum}."`
	Progress   bool   `default:"true" negatable:"" help:"Show a progress bar on a terminal."`
}

// LoadPattern is the offered load of `ipa load` and `ipa simulate`: its
// shape, its arrivals within each second and their seed.
type LoadPattern struct {
	Pattern   string        `default:"constant" enum:"constant,step,trace" help:"Offered load: constant (--rate), step (--steps) or trace (a window of --trace)."`
	Rate      float64       `default:"10" help:"Requests per second (--pattern constant)."`
	Steps     string        `placeholder:"DUR@RATE,…" help:"Step pattern (--pattern step): DURATION@RATE steps, e.g. 10s@5,20s@40,10s@5."`
	Trace     string        `placeholder:"FILE" type:"path" help:"Per-second trace (--pattern trace): text, or the .tbz2 it ships in (default: the Twitter trace of the paper, built in)."`
	Start     int           `default:"1301160" help:"First second of the trace window (default: the paper's bursty window, 1301160-1302360)."`
	End       int           `default:"1302360" help:"End second (exclusive) of the trace window; --end=-1: the end of the trace."`
	Damping   float64       `default:"8" help:"Divide each trace count by this and truncate, as the paper did (it used 8)."`
	TimeScale float64       `name:"time-scale" default:"1" help:"Seconds one trace second lasts (--pattern trace): 0.5 replays the window twice as fast, at twice the rate."`
	Arrivals  string        `default:"poisson" enum:"poisson,burst,exponential,equal" help:"Arrivals within each second: poisson (a Poisson process at the second's rate: requests spread over it, their number per second varies), burst (IPA's tester: exactly the second's count at independent exponential offsets from its start, so at 375/s 99 % leave in its first 13 ms; 'exponential' is its old name) or equal (evenly spaced)."`
	Duration  time.Duration `default:"0s" help:"Stop scheduling after this long (0: the pattern's end)."`
	Total     int           `default:"0" help:"Stop after this many requests (0: no limit)."`
	Seed      uint64        `default:"1" help:"Seed of the arrival times and random tensors; the same seed gives the same schedule."`
	// MaxRequests bounds the schedule: every request's record is kept.
	MaxRequests int64 `name:"max-requests" default:"10000000" help:"Refuse a load that schedules more requests than this (0: no limit): a record of every request is kept, about 500 bytes each."`
}

// recordBytes is about what a run holds per request (measured: ipa
// simulate of a million requests, at 1e5/s for 10 s, peaked at 504 MB).
const recordBytes = 500

// load builds the offered load the flags ask for, with its slot length,
// and refuses one of more than MaxRequests requests.
func (c *LoadPattern) load() (loadgen.Load, time.Duration, error) {
	if c.MaxRequests < 0 {
		return nil, 0, fmt.Errorf("--max-requests %d: give a positive number (0: no limit)", c.MaxRequests)
	}
	load, slot, err := c.shape()
	if err != nil {
		return nil, 0, err
	}
	if n := expected(load, slot, c.Duration, c.Total); c.MaxRequests > 0 && n > c.MaxRequests {
		return nil, 0, fmt.Errorf("this load schedules %d requests, more than --max-requests %d: a record of each is kept (about %.3g GB here); shorten it (--duration, --total, --end, a higher --damping) or raise --max-requests",
			n, c.MaxRequests, float64(n)*recordBytes/1e9)
	}
	return load, slot, nil
}

// shape builds the offered load the flags ask for, with its slot length.
func (c *LoadPattern) shape() (loadgen.Load, time.Duration, error) {
	switch {
	case c.Duration < 0:
		return nil, 0, fmt.Errorf("--duration %s: give a positive duration (0: the pattern's end)", c.Duration)
	case c.Total < 0:
		return nil, 0, fmt.Errorf("--total %d: give a positive number of requests (0: no limit)", c.Total)
	}
	switch c.Pattern {
	case "constant":
		if !(c.Rate > 0) || math.IsInf(c.Rate, 0) {
			return nil, 0, fmt.Errorf("--rate %v: give a positive number of requests per second", c.Rate)
		}
		if c.Duration <= 0 && c.Total <= 0 {
			return nil, 0, errors.New("--pattern constant has no end: set --duration (e.g. 60s) or --total (a window of the trace is --pattern trace with --start and --end)")
		}
		return loadgen.Constant(c.Rate), time.Second, nil
	case "step":
		if c.Steps == "" {
			return nil, 0, errors.New("--pattern step needs --steps, e.g. --steps 10s@5,20s@40,10s@5")
		}
		counts, err := loadgen.ParseSteps(c.Steps)
		if err != nil {
			return nil, 0, fmt.Errorf("--steps: %w", err)
		}
		return counts, time.Second, nil
	default: // trace
		path := c.Trace
		if !(c.TimeScale > 0) || math.IsInf(c.TimeScale, 0) {
			return nil, 0, fmt.Errorf("--time-scale %v: give a positive number of seconds per trace second", c.TimeScale)
		}
		end := c.End
		if end < 0 {
			end = -1
		}
		trace, err := loadgen.OpenTrace(path, c.Start, end)
		if err != nil {
			return nil, 0, fmt.Errorf("%w; check --trace, --start and --end", err)
		}
		counts, err := loadgen.TraceWindow(trace, c.Damping)
		if err != nil {
			return nil, 0, fmt.Errorf("--damping: %w", err)
		}
		return counts, time.Duration(c.TimeScale * float64(time.Second)), nil
	}
}

// body builds the request body the flags ask for.
func (c *LoadCmd) body(rng *rand.Rand) (loadgen.BodyBuilder, error) {
	switch {
	case c.Body != "" && len(c.Tensor) > 0:
		return nil, errors.New("pass --body or --tensor, not both")
	case c.Body != "":
		return loadgen.FileBody(c.Body, c.ContentType)
	case len(c.Tensor) > 0:
		if c.ContentType != "" {
			return nil, errors.New("--content-type goes with --body; --tensor requests are V2 JSON or binary")
		}
		var specs []models.TensorSpec
		for _, t := range c.Tensor {
			s, err := loadgen.ParseTensorSpec(t)
			if err != nil {
				return nil, fmt.Errorf("--tensor: %w", err)
			}
			specs = append(specs, s)
		}
		return loadgen.TensorBody(specs, c.BinaryTensors, rng)
	}
	return nil, errors.New("say what to send: --body FILE [--content-type TYPE] (e.g. an image) or --tensor NAME:DATATYPE:SHAPE (random V2 tensor)")
}

// expected returns how many requests the run will schedule, or -1 when
// that is not known in advance.
func expected(load loadgen.Load, slot, duration time.Duration, total int) int64 {
	n := int64(-1)
	if counts, ok := load.(loadgen.Counts); ok {
		var sum float64
		for i, v := range counts {
			if duration > 0 && time.Duration(i)*slot >= duration {
				break
			}
			sum += v
		}
		n = int64(sum)
	} else if r, ok := load.(loadgen.Constant); ok && duration > 0 {
		n = int64(float64(r) * duration.Seconds())
	}
	if total > 0 && (n < 0 || int64(total) < n) {
		n = int64(total)
	}
	return n
}

// Run sends the load, prints the report and writes the files asked for.
func (c *LoadCmd) Run(g *Globals) error {
	log := g.Logger().With("role", "load")
	if c.MaxInflight < 1 {
		return fmt.Errorf("--max-inflight %d: give at least 1", c.MaxInflight)
	}
	load, slot, err := c.load()
	if err != nil {
		return err
	}
	body, err := c.body(rand.New(rand.NewPCG(c.Seed, 0x7e5)))
	if err != nil {
		return err
	}
	target, err := loadgen.NewHTTPTarget(c.URL, body, loadgen.HTTPOptions{SLA: c.SLA, Timeout: c.Timeout, MaxConns: c.MaxInflight})
	if err != nil {
		return err
	}
	defer target.Close()
	proc, err := loadgen.ParseProcess(c.Arrivals)
	if err != nil {
		return err
	}
	r := &loadgen.Runner{
		Target:      target,
		Arrivals:    loadgen.NewArrivals(load, proc, slot, rand.New(rand.NewPCG(c.Seed, 0xa44))),
		MaxInflight: c.MaxInflight,
		Duration:    c.Duration,
		Total:       c.Total,
		SLA:         c.SLA,
	}
	want := expected(load, slot, c.Duration, c.Total)
	log.Info("sending", "url", c.URL, "pattern", c.Pattern, "arrivals", proc.String(), "requests", want, "max_inflight", c.MaxInflight)

	ctx := signalContext(log)
	stopBar := c.progress(r, want)
	res, err := r.Run(ctx)
	stopBar()
	if err != nil {
		return err
	}
	rep := res.Report()
	if err := rep.WriteText(os.Stdout); err != nil {
		return err
	}
	if err := c.writeFiles(res, &rep, log.Info); err != nil {
		return err
	}
	if rep.Sent > 0 && rep.Succeeded == 0 {
		return fmt.Errorf("no request succeeded (%d dropped, %d failed); see the reasons above", rep.Dropped, rep.Failed)
	}
	return nil
}

// writeFiles writes --report, --records and --plot-dir.
func (c *LoadCmd) writeFiles(res *loadgen.Result, rep *loadgen.Report, info func(string, ...any)) error {
	write := func(path string, fill func(*os.File) error) error {
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("cannot write: %w", err)
		}
		if err := fill(f); err != nil {
			f.Close()
			return fmt.Errorf("cannot write %s: %w", path, err)
		}
		return f.Close()
	}
	if c.Report != "" {
		if err := write(c.Report, func(f *os.File) error { return rep.WriteJSON(f) }); err != nil {
			return err
		}
		info("wrote report", "file", c.Report)
	}
	if c.Records != "" {
		if err := write(c.Records, func(f *os.File) error {
			return loadgen.WriteRecords(f, res.Records, loadgen.RecordFormatFor(c.Records))
		}); err != nil {
			return err
		}
		info("wrote records", "file", c.Records, "records", len(res.Records))
	}
	if c.PlotDir != "" {
		files, err := loadgen.WritePlots(c.PlotDir, c.PlotFormat, res)
		if err != nil {
			return err
		}
		info("wrote plots", "files", files)
	}
	return nil
}

// progress shows a bar of answered requests on a terminal until the
// returned function is called.
func (c *LoadCmd) progress(r *loadgen.Runner, want int64) (stop func()) {
	fi, err := os.Stderr.Stat()
	if !c.Progress || err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return func() {}
	}
	bar := progressbar.NewOptions64(want,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetPredictTime(want > 0),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			p := r.Progress()
			bar.Describe(fmt.Sprintf("sent %d ok %d dropped %d failed %d in flight %d", p.Sent, p.Succeeded, p.Dropped, p.Failed, p.Inflight))
			_ = bar.Set64(p.Succeeded + p.Dropped + p.Failed)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		cancel()
		<-done
		_ = bar.Finish()
		_ = bar.Clear()
	}
}
