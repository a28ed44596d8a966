// Package report renders a run of the adaptation loop the way the paper's
// Figure 8 does: load and predicted load, each stage's variant accuracy and
// replicas, cost, and — when the load generator's records are given — p99
// latency against the SLA and drops, per interval; plus a summary table.
// It reads the decision log (orchestrator.Decision lines) and ipa load's
// JSON-lines records; it may import orchestrator and gonum/plot.
package report

import (
	"bufio"
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/ipa-serving/ipa/orchestrator"
)

// Request is one line of ipa load's --records (JSON lines).
type Request struct {
	Sent    float64 `json:"sent_seconds"`
	Latency float64 `json:"latency_seconds"`
	Outcome string  `json:"outcome"`
}

// ReadDecisions reads a decision log.
func ReadDecisions(r io.Reader) ([]orchestrator.Decision, error) {
	var out []orchestrator.Decision
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for n := 1; sc.Scan(); n++ {
		var d orchestrator.Decision
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			return nil, fmt.Errorf("decision log line %d: %w", n, err)
		}
		if d.Time.IsZero() {
			return nil, fmt.Errorf(`decision log line %d has no "time": a decision log is what ipa local --controller.decision-log, ipa controller or ipa simulate write`, n)
		}
		out = append(out, d)
	}
	return out, sc.Err()
}

// ReadRequests reads ipa load's JSON-lines records.
func ReadRequests(r io.Reader) ([]Request, error) {
	var out []Request
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		var q Request
		if err := json.Unmarshal(sc.Bytes(), &q); err != nil {
			return nil, fmt.Errorf("records line %d: %w", n, err)
		}
		if q.Outcome == "" {
			return nil, fmt.Errorf(`records line %d has no "outcome": records are what ipa load --records or ipa simulate write`, n)
		}
		out = append(out, q)
	}
	return out, sc.Err()
}

// Interval is one decision interval with the requests sent during it.
type Interval struct {
	Start             time.Duration // since the first decision
	Observed, Pred    float64
	Cost              int
	Accuracy          float64
	Replicas          []int
	StageAccuracy     []float64
	Sent, Drops, Late int
	P99               float64
}

// Summary is the run in a few numbers.
type Summary struct {
	Intervals, Changes, Fallbacks, Errors int
	MeanAccuracy, MeanCost                float64
	Sent, Drops, Late                     int
	// Violations = drops + late (the paper's SLA violations).
	Violations int
}

// Build aligns requests (times relative to loadStart) with decisions.
func Build(ds []orchestrator.Decision, reqs []Request, loadStart time.Time, sla time.Duration) ([]Interval, Summary) {
	var iv []Interval
	var sum Summary
	if len(ds) == 0 {
		return nil, sum
	}
	t0 := ds[0].Time
	for _, d := range ds {
		sum.Intervals++
		sum.Changes += len(d.Changes)
		if d.Fallback {
			sum.Fallbacks++
		}
		if d.Error != "" {
			sum.Errors++
		}
		in := Interval{Start: d.Time.Sub(t0), Observed: d.Observed, Pred: d.Predicted}
		if d.Plan != nil {
			in.Cost, in.Accuracy = d.Plan.Cost, d.Plan.Accuracy
			for _, sp := range d.Plan.Stages {
				in.Replicas = append(in.Replicas, sp.Replicas)
				in.StageAccuracy = append(in.StageAccuracy, sp.Accuracy)
			}
		}
		sum.MeanAccuracy += in.Accuracy
		sum.MeanCost += float64(in.Cost)
		iv = append(iv, in)
	}
	sum.MeanAccuracy /= float64(len(iv))
	sum.MeanCost /= float64(len(iv))
	lat := make([][]float64, len(iv))
	for _, q := range reqs {
		at := loadStart.Add(time.Duration(q.Sent * float64(time.Second))).Sub(t0)
		// The interval that was running when the request was sent.
		i := max(0, sort.Search(len(iv), func(k int) bool { return iv[k].Start > at })-1)
		iv[i].Sent++
		sum.Sent++
		switch {
		case q.Outcome != "succeeded":
			iv[i].Drops++
			sum.Drops++
		case sla > 0 && q.Latency > sla.Seconds():
			iv[i].Late++
			sum.Late++
			lat[i] = append(lat[i], q.Latency)
		default:
			lat[i] = append(lat[i], q.Latency)
		}
	}
	for i := range iv {
		if l := lat[i]; len(l) > 0 {
			slices.Sort(l)
			iv[i].P99 = l[min(len(l)-1, len(l)*99/100)]
		}
	}
	sum.Violations = sum.Drops + sum.Late
	return iv, sum
}

// WritePlots renders the Figure-8 view into dir as format (svg or png).
func WritePlots(dir, format string, iv []Interval, stages []string, sla time.Duration) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	x := func(in Interval) float64 { return in.Start.Seconds() }
	series := func(f func(Interval) float64) plotter.XYs {
		pts := make(plotter.XYs, len(iv))
		for i, in := range iv {
			pts[i] = plotter.XY{X: x(in), Y: f(in)}
		}
		return pts
	}
	palette := []color.Color{color.RGBA{0x1f, 0x77, 0xb4, 0xff}, color.RGBA{0xff, 0x7f, 0x0e, 0xff}, color.RGBA{0x2c, 0xa0, 0x2c, 0xff},
		color.RGBA{0xd6, 0x27, 0x28, 0xff}, color.RGBA{0x94, 0x67, 0xbd, 0xff}}
	type line struct {
		name string
		pts  plotter.XYs
	}
	var files []string
	save := func(name, title, y string, lines []line) error {
		p := plot.New()
		p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, "seconds", y
		p.Add(plotter.NewGrid())
		for i, l := range lines {
			pl, err := plotter.NewLine(l.pts)
			if err != nil {
				return err
			}
			pl.Color = palette[i%len(palette)]
			pl.Width = vg.Points(1.2)
			p.Add(pl)
			p.Legend.Add(l.name, pl)
		}
		p.Legend.Top = true
		path := filepath.Join(dir, name+"."+format)
		files = append(files, path)
		return p.Save(9*vg.Inch, 3.5*vg.Inch, path)
	}
	if err := save("load", "load", "requests/s", []line{{"observed", series(func(in Interval) float64 { return in.Observed })},
		{"predicted (with margin)", series(func(in Interval) float64 { return in.Pred })}}); err != nil {
		return files, err
	}
	var reps, accs []line
	for s, name := range stages {
		reps = append(reps, line{name, series(func(in Interval) float64 { return at(in.Replicas, s) })})
		accs = append(accs, line{name, series(func(in Interval) float64 { return atF(in.StageAccuracy, s) })})
	}
	if err := save("replicas", "replicas per stage", "replicas", reps); err != nil {
		return files, err
	}
	if err := save("accuracy", "variant accuracy per stage (the optimizer's accuracy term)", "accuracy", accs); err != nil {
		return files, err
	}
	if err := save("cost", "cost", "cores", []line{{"cores", series(func(in Interval) float64 { return float64(in.Cost) })}}); err != nil {
		return files, err
	}
	lat := []line{{"p99 latency", series(func(in Interval) float64 { return in.P99 })}}
	if sla > 0 {
		lat = append(lat, line{"SLA", series(func(Interval) float64 { return sla.Seconds() })})
	}
	if err := save("latency", "p99 latency per interval", "seconds", lat); err != nil {
		return files, err
	}
	return files, save("violations", "SLA violations per interval", "requests", []line{
		{"dropped", series(func(in Interval) float64 { return float64(in.Drops) })},
		{"late", series(func(in Interval) float64 { return float64(in.Late) })}})
}

func at(xs []int, i int) float64 {
	if i < len(xs) {
		return float64(xs[i])
	}
	return 0
}

func atF(xs []float64, i int) float64 {
	if i < len(xs) {
		return xs[i]
	}
	return 0
}

// WriteSummary prints the summary table.
func WriteSummary(w io.Writer, s Summary) {
	fmt.Fprintf(w, "intervals %d, configuration changes %d, fallbacks %d, errors %d\n", s.Intervals, s.Changes, s.Fallbacks, s.Errors)
	fmt.Fprintf(w, "mean accuracy term %.4f, mean cost %.2f cores\n", s.MeanAccuracy, s.MeanCost)
	if s.Sent > 0 {
		fmt.Fprintf(w, "requests %d: dropped %d, late %d → SLA violations %d (%.2f%%)\n", s.Sent, s.Drops, s.Late, s.Violations, 100*float64(s.Violations)/float64(s.Sent))
	}
}
