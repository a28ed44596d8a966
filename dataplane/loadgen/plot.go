package loadgen

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// Plot file names under the --plot-dir, before the extension.
const (
	PlotLoad    = "load"        // offered load and achieved throughput per second
	PlotLatency = "latency"     // p50 and p99 latency per second
	PlotCDF     = "latency-cdf" // latency CDF with the SLA marked
)

var (
	colorOffered = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	colorGood    = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
	colorBad     = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	colorP99     = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	colorSLA     = color.RGBA{R: 0x55, G: 0x55, B: 0x55, A: 0xff}
)

// WritePlots renders the run's plots into dir (created if missing) in
// format "svg" or "png" and returns the files written.
func WritePlots(dir, format string, res *Result) ([]string, error) {
	format = strings.ToLower(format)
	if format != "svg" && format != "png" {
		return nil, fmt.Errorf("plot format %q: use svg or png", format)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create --plot-dir: %w", err)
	}
	secs := res.Seconds()
	var files []string
	for _, p := range []struct {
		name string
		make func([]Second, *Result) (*plot.Plot, error)
	}{{PlotLoad, loadPlot}, {PlotLatency, latencyPlot}, {PlotCDF, cdfPlot}} {
		pl, err := p.make(secs, res)
		if err != nil {
			return files, fmt.Errorf("cannot plot %s: %w", p.name, err)
		}
		path := filepath.Join(dir, p.name+"."+format)
		if err := pl.Save(9*vg.Inch, 4*vg.Inch, path); err != nil {
			return files, fmt.Errorf("cannot write %s: %w", path, err)
		}
		files = append(files, path)
	}
	return files, nil
}

func addLine(p *plot.Plot, name string, pts plotter.XYs, c color.Color, dashed bool) error {
	if len(pts) == 0 {
		return nil
	}
	l, err := plotter.NewLine(pts)
	if err != nil {
		return err
	}
	l.Color = c
	l.Width = vg.Points(1.2)
	if dashed {
		l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
	}
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Legend.Top = true
	p.Legend.XOffs = -vg.Points(4)
	p.Add(plotter.NewGrid())
	return p
}

func loadPlot(secs []Second, res *Result) (*plot.Plot, error) {
	p := newPlot("Offered load and achieved throughput", "time (s)", "requests per second")
	p.Legend.Left = true
	p.Legend.XOffs = vg.Points(40)
	var off, ok, bad plotter.XYs
	for _, s := range secs {
		x := float64(s.T)
		off = append(off, plotter.XY{X: x, Y: float64(s.Offered)})
		ok = append(ok, plotter.XY{X: x, Y: float64(s.Succeeded)})
		bad = append(bad, plotter.XY{X: x, Y: float64(s.Dropped + s.Failed)})
	}
	p.Y.Min = 0
	if err := addLine(p, "offered", off, colorOffered, false); err != nil {
		return nil, err
	}
	if err := addLine(p, "succeeded", ok, colorGood, false); err != nil {
		return nil, err
	}
	return p, addLine(p, "dropped + failed", bad, colorBad, false)
}

func latencyPlot(secs []Second, res *Result) (*plot.Plot, error) {
	p := newPlot("Latency of succeeded requests, by second sent", "time (s)", "latency (ms)")
	var p50, p99 plotter.XYs
	for _, s := range secs {
		if s.P50 > 0 {
			p50 = append(p50, plotter.XY{X: float64(s.T), Y: ms(s.P50)})
			p99 = append(p99, plotter.XY{X: float64(s.T), Y: ms(s.P99)})
		}
	}
	p.Y.Min = 0
	if err := addLine(p, "p50", p50, colorOffered, false); err != nil {
		return nil, err
	}
	if err := addLine(p, "p99", p99, colorP99, false); err != nil {
		return nil, err
	}
	if res.SLA > 0 && len(secs) > 0 {
		end := float64(secs[len(secs)-1].T)
		sla := plotter.XYs{{X: 0, Y: ms(res.SLA)}, {X: end, Y: ms(res.SLA)}}
		if err := addLine(p, "SLA "+res.SLA.String(), sla, colorSLA, true); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// maxCDFPoints bounds the CDF's points; more do not show.
const maxCDFPoints = 2000

func cdfPlot(_ []Second, res *Result) (*plot.Plot, error) {
	p := newPlot("Latency CDF of succeeded requests", "latency (ms)", "fraction of succeeded requests")
	var lat []time.Duration
	for i := range res.Records {
		if r := &res.Records[i]; r.Kind == Succeeded {
			lat = append(lat, r.Latency)
		}
	}
	slices.Sort(lat)
	var pts plotter.XYs
	step := max(1, len(lat)/maxCDFPoints)
	for i := 0; i < len(lat); i += step {
		pts = append(pts, plotter.XY{X: ms(lat[i]), Y: float64(i+1) / float64(len(lat))})
	}
	if n := len(lat); n > 0 && pts[len(pts)-1].Y < 1 {
		pts = append(pts, plotter.XY{X: ms(lat[n-1]), Y: 1})
	}
	p.Y.Min, p.Y.Max = 0, 1
	p.X.Min = 0
	if err := addLine(p, "CDF", pts, colorOffered, false); err != nil {
		return nil, err
	}
	if res.SLA > 0 {
		sla := plotter.XYs{{X: ms(res.SLA), Y: 0}, {X: ms(res.SLA), Y: 1}}
		if err := addLine(p, "SLA "+res.SLA.String(), sla, colorSLA, true); err != nil {
			return nil, err
		}
	}
	p.Legend.Left = false
	p.Legend.Top = false
	p.Legend.YOffs = vg.Points(20)
	return p, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
