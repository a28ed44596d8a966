package experiment

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Rows returns the summary rows of runs, in file order.
func Rows(runs []*Run) []Row {
	out := make([]Row, len(runs))
	for i, r := range runs {
		out[i] = r.Row
	}
	return out
}

// WriteMarkdown writes the summary table as Markdown.
func WriteMarkdown(w io.Writer, rows []Row) error {
	var b bytes.Buffer
	b.WriteString("| pipeline | window | system | requests | PAS | cost (cores) | dropped | late | SLA violations | p99 (s) | changes |\n")
	b.WriteString("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %.2f | %.2f | %d | %d | %d (%.2f %%) | %.3f | %d |\n",
			r.Pipeline, r.Window, r.System, r.Requests, r.PAS, r.Cost, r.Dropped, r.Late, r.Violations, r.ViolationsPct, r.P99, r.Changes)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// WriteCSV writes the summary table as CSV.
func WriteCSV(w io.Writer, rows []Row) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"pipeline", "window", "system", "requests", "pas", "cost_cores", "dropped", "late", "violations", "violations_pct", "p99_seconds", "changes"})
	f := func(x float64) string { return strconv.FormatFloat(x, 'f', 4, 64) }
	for _, r := range rows {
		cw.Write([]string{r.Pipeline, r.Window, r.System, strconv.Itoa(r.Requests), f(r.PAS), f(r.Cost), strconv.Itoa(r.Dropped),
			strconv.Itoa(r.Late), strconv.Itoa(r.Violations), f(r.ViolationsPct), f(r.P99), strconv.Itoa(r.Changes)})
	}
	cw.Flush()
	return cw.Error()
}

// WriteJSON writes the summary table as a JSON array.
func WriteJSON(w io.Writer, rows []Row) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(rows)
}

// palette colours the systems.
var palette = []color.Color{color.RGBA{0x1f, 0x77, 0xb4, 0xff}, color.RGBA{0xff, 0x7f, 0x0e, 0xff}, color.RGBA{0x2c, 0xa0, 0x2c, 0xff},
	color.RGBA{0xd6, 0x27, 0x28, 0xff}, color.RGBA{0x94, 0x67, 0xbd, 0xff}, color.RGBA{0x8c, 0x56, 0x4b, 0xff}, color.RGBA{0x7f, 0x7f, 0x7f, 0xff}}

// WriteFigure renders the paper's Figure 8 for one pipeline: a column per
// window, rows for load, PAS, cost and SLA violations per interval, a line
// per system, as SVG, or PNG when path ends in .png.
func WriteFigure(path string, runs []*Run, pipeline string, windows, systems []string) error {
	metrics := []struct {
		name string
		y    func(r *Run, i int) float64
	}{
		{"load (req/s)", func(r *Run, i int) float64 { return r.Intervals[i].Observed }},
		{"PAS", func(r *Run, i int) float64 { return r.PAS[i] }},
		{"cost (cores)", func(r *Run, i int) float64 { return r.Cost[i] }},
		{"SLA violations", func(r *Run, i int) float64 { return float64(r.Intervals[i].Drops + r.Intervals[i].Late) }},
	}
	find := map[[2]string]*Run{}
	for _, r := range runs {
		if r.Pipeline == pipeline {
			find[[2]string{r.Window, r.System}] = r
		}
	}
	plots := make([][]*plot.Plot, len(metrics))
	for m, met := range metrics {
		plots[m] = make([]*plot.Plot, len(windows))
		for w, win := range windows {
			p := plot.New()
			p.Add(plotter.NewGrid())
			if m == 0 {
				p.Title.Text = win
			}
			if w == 0 {
				p.Y.Label.Text = met.name
			}
			if m == len(metrics)-1 {
				p.X.Label.Text = "seconds"
			}
			for s, sys := range systems {
				r := find[[2]string{win, sys}]
				if r == nil || (m == 0 && s > 0) { // the load is the same for every system
					continue
				}
				pts := make(plotter.XYs, len(r.Intervals))
				for i := range r.Intervals {
					pts[i] = plotter.XY{X: r.Intervals[i].Start.Seconds(), Y: met.y(r, i)}
				}
				l, err := plotter.NewLine(pts)
				if err != nil {
					return err
				}
				l.Color = palette[s%len(palette)]
				l.Width = vg.Points(1)
				if m == 0 {
					l.Color = color.Black
				}
				p.Add(l)
				if m == 1 && w == 0 {
					p.Legend.Add(sys, l)
				}
			}
			p.Legend.Top = true
			plots[m][w] = p
		}
	}
	width, height := vg.Length(len(windows))*4*vg.Inch, vg.Length(len(metrics))*2.2*vg.Inch
	var c interface {
		vg.CanvasSizer
		io.WriterTo
	}
	if filepath.Ext(path) == ".png" {
		c = vgimg.PngCanvas{Canvas: vgimg.New(width, height)}
	} else {
		c = vgsvg.New(width, height)
	}
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: len(metrics), Cols: len(windows), PadX: vg.Millimeter * 2, PadY: vg.Millimeter * 2,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(plots, tiles, dc)
	for m := range plots {
		for w := range plots[m] {
			plots[m][w].Draw(canvases[m][w])
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// WriteAll writes summary.md, summary.csv, summary.json and one
// figure-PIPELINE.FORMAT (svg or png) per pipeline into out, and returns
// the files.
func WriteAll(out, format string, f *File, runs []*Run) ([]string, error) {
	rows := Rows(runs)
	var files []string
	for _, x := range []struct {
		name  string
		write func(io.Writer, []Row) error
	}{{"summary.md", WriteMarkdown}, {"summary.csv", WriteCSV}, {"summary.json", WriteJSON}} {
		var b bytes.Buffer
		if err := x.write(&b, rows); err != nil {
			return files, err
		}
		path := filepath.Join(out, x.name)
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			return files, err
		}
		files = append(files, path)
	}
	var windows []string
	for _, w := range f.Windows {
		windows = append(windows, w.Name)
	}
	pipes := map[string]bool{}
	for _, r := range runs {
		if pipes[r.Pipeline] {
			continue
		}
		pipes[r.Pipeline] = true
		path := filepath.Join(out, "figure-"+r.Pipeline+"."+format)
		if err := WriteFigure(path, runs, r.Pipeline, windows, f.Systems); err != nil {
			return files, err
		}
		files = append(files, path)
	}
	return files, nil
}
