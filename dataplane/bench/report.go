package bench

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"
)

// HopTarget is how much the router's hop may add to a bare fasthttp reverse
// proxy's p50 (issue 14).
const HopTarget = 50 * time.Microsecond

// Print writes the report: per variant and per tensor size, the min and the
// median over rounds of each round's ratio or difference (each round
// measures its paths back to back, so they share the machine's noise).
func (r *Report) Print(w io.Writer) {
	c := r.Config
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "variant\traw items/s\tserved items/s\tserved p50\tserved÷raw min\tserved÷raw median\tper round\tCPU/item raw÷served min\tmedian\t\n")
	for _, s := range r.Served {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%s\t%.3f\t%.3f\t%s\t%.3f\t%.3f\t\n", s.Variant, median(s.Raw), median(s.Served), us(medianD(s.P50)),
			slices.Min(s.Ratio), median(s.Ratio), floats(s.Ratio), slices.Min(s.CPURatio), median(s.CPURatio))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nstage %s: `ipa stage`, 1 replica × %d thread(s), max batch 1; client `ipa bench-client` in another process, %d connections,\n"+
		"binary tensors over loopback; raw = ONNX Runtime loop on the same model and threads, run before and after each served run\n"+
		"(mean of the two). %d rounds of %s; medians of items/s, then min and median of the rounds' ratios. CPU/item: the raw\n"+
		"loop's CPU time per item over the stage server's (all threads, warm-up included); on a loaded machine the kernel gives\n"+
		"a server that waits for requests more of a core than a loop that never sleeps, and served÷raw can exceed 1.\n\n",
		c.Stage, c.Threads, c.Conns, c.Rounds, c.Duration)
	if len(r.Hops) == 0 {
		return
	}
	fmt.Fprintf(tw, "hop\ttensor\tdirect p50\tbare proxy p50\tipa router p50\trouter−proxy min\trouter−proxy median\tper round\t\n")
	for _, h := range r.Hops {
		diff := make([]time.Duration, len(h.Route))
		for i := range diff {
			diff[i] = h.Route[i] - h.Proxy[i]
		}
		var per []string
		for _, d := range diff {
			per = append(per, us(d))
		}
		fmt.Fprintf(tw, "%s/%s\t%d KB\t%s\t%s\t%s\t%s\t%s\t%v\t\n", h.Stage, h.Variant, h.Bytes/1000, us(medianD(h.Direct)), us(medianD(h.Proxy)),
			us(medianD(h.Route)), us(slices.Min(diff)), us(medianD(diff)), per)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nrouter hop: one request in flight from `ipa bench-client`, in turn (a new random order each\n"+
		"cycle) straight to `ipa stage`, through a bare fasthttp reverse proxy (`ipa bench-proxy`) and through `ipa router`\n"+
		"(tensor glue, one step); %d rounds of %s (%s per path).\n"+
		"target: router p50 ≤ bare proxy p50 + %s.\n", c.Rounds, 3*c.HopDuration, c.HopDuration, HopTarget)
}

func us(d time.Duration) string { return d.Round(time.Microsecond).String() }

func floats(xs []float64) string {
	s := ""
	for i, x := range xs {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%.3f", x)
	}
	return s
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianD(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
