package loadgen

import (
	"bufio"
	"cmp"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Report is the summary of a run; its JSON form is what `ipa load --report`
// writes. Accounting closes: Sent = Succeeded + Dropped + Failed.
type Report struct {
	Started         time.Time `json:"started"`
	DurationSeconds float64   `json:"duration_seconds"`
	Interrupted     bool      `json:"interrupted"`

	// Sent counts every request that came due, including those dropped
	// for client overload (never put on the wire).
	Sent      int `json:"sent"`
	Succeeded int `json:"succeeded"`
	Dropped   int `json:"dropped"`
	Failed    int `json:"failed"`

	DroppedByReason map[string]int `json:"dropped_by_reason"`
	FailedByReason  map[string]int `json:"failed_by_reason"`

	// Latency is over succeeded requests, from send to answer.
	Latency Latency `json:"latency_seconds"`

	// SLASeconds is 0 when no SLA was set; then SLAAttainment is null and
	// Goodput counts every success.
	SLASeconds float64 `json:"sla_seconds"`
	// SLAAttainment is the fraction of sent requests that succeeded within
	// the SLA (drops and failures count as misses, as in the paper).
	SLAAttainment *float64 `json:"sla_attainment"`
	// GoodputRPS is successes within the SLA per second of the run;
	// ThroughputRPS all successes; OfferedRPS all sent.
	GoodputRPS    float64 `json:"goodput_rps"`
	ThroughputRPS float64 `json:"throughput_rps"`
	OfferedRPS    float64 `json:"offered_rps"`

	// SendLag is how late the generator put requests on the wire: if its
	// p99 is not small against the latencies, the generator was the
	// bottleneck.
	SendLag     Latency `json:"send_lag_seconds"`
	MaxInflight int     `json:"max_inflight"`
}

// Latency holds quantiles in seconds (nearest rank).
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// quantiles returns nearest-rank quantiles of sorted durations.
func quantiles(sorted []time.Duration) Latency {
	if len(sorted) == 0 {
		return Latency{}
	}
	q := func(p float64) float64 { return quantile(sorted, p).Seconds() }
	var sum float64
	for _, d := range sorted {
		sum += d.Seconds()
	}
	return Latency{P50: q(0.50), P90: q(0.90), P99: q(0.99), Max: sorted[len(sorted)-1].Seconds(), Mean: sum / float64(len(sorted))}
}

// quantile is the nearest-rank p-quantile of sorted, which is not empty.
func quantile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// Report summarizes the run.
func (res *Result) Report() Report {
	rep := Report{
		Started:         res.Start,
		DurationSeconds: res.Elapsed.Seconds(),
		Interrupted:     res.Interrupted,
		Sent:            len(res.Records),
		SLASeconds:      res.SLA.Seconds(),
		MaxInflight:     res.MaxInflight,
	}
	drops, fails := map[string]int{}, map[string]int{}
	var lat, lag []time.Duration
	good := 0
	for i := range res.Records {
		r := &res.Records[i]
		switch r.Kind {
		case Succeeded:
			rep.Succeeded++
			lat = append(lat, r.Latency)
			if res.SLA <= 0 || r.Latency <= res.SLA {
				good++
			}
		case Dropped:
			rep.Dropped++
			drops[r.Reason]++
		default:
			rep.Failed++
			fails[r.Reason]++
		}
		if r.Reason != ReasonClientOverload {
			lag = append(lag, r.Sent-r.Scheduled)
		}
	}
	slices.Sort(lat)
	slices.Sort(lag)
	rep.Latency = quantiles(lat)
	rep.SendLag = quantiles(lag)
	rep.DroppedByReason = foldReasons(drops)
	rep.FailedByReason = foldReasons(fails)
	if res.SLA > 0 && rep.Sent > 0 {
		a := float64(good) / float64(rep.Sent)
		rep.SLAAttainment = &a
	}
	if s := res.Elapsed.Seconds(); s > 0 {
		rep.GoodputRPS = float64(good) / s
		rep.ThroughputRPS = float64(rep.Succeeded) / s
		rep.OfferedRPS = float64(rep.Sent) / s
	}
	return rep
}

// foldReasons keeps the maxReasons most frequent reasons and sums the rest.
func foldReasons(m map[string]int) map[string]int {
	if len(m) <= maxReasons {
		return m
	}
	type kv struct {
		k string
		n int
	}
	var all []kv
	for k, n := range m {
		all = append(all, kv{k, n})
	}
	slices.SortFunc(all, func(a, b kv) int { return cmp.Or(b.n-a.n, strings.Compare(a.k, b.k)) })
	out := map[string]int{}
	rest := 0
	for i, e := range all {
		if i < maxReasons-1 {
			out[e.k] = e.n
		} else {
			rest += e.n
		}
	}
	out[fmt.Sprintf("other reasons (%d distinct; see --records)", len(all)-maxReasons+1)] = rest
	return out
}

// WriteText prints the report for a person.
func (rep *Report) WriteText(w io.Writer) error {
	bw := bufio.NewWriter(w)
	pct := func(n int) string {
		if rep.Sent == 0 {
			return ""
		}
		return fmt.Sprintf(" (%.2f%%)", 100*float64(n)/float64(rep.Sent))
	}
	ms := func(s float64) string { return fmt.Sprintf("%.2f ms", s*1000) }
	fmt.Fprintf(bw, "sent %d in %.1f s (%.1f req/s offered)", rep.Sent, rep.DurationSeconds, rep.OfferedRPS)
	if rep.Interrupted {
		fmt.Fprint(bw, ", interrupted")
	}
	fmt.Fprintln(bw)
	fmt.Fprintf(bw, "  succeeded %8d%s\n", rep.Succeeded, pct(rep.Succeeded))
	fmt.Fprintf(bw, "  dropped   %8d%s\n", rep.Dropped, pct(rep.Dropped))
	writeReasons(bw, rep.DroppedByReason)
	fmt.Fprintf(bw, "  failed    %8d%s\n", rep.Failed, pct(rep.Failed))
	writeReasons(bw, rep.FailedByReason)
	l := rep.Latency
	fmt.Fprintf(bw, "latency (succeeded): p50 %s  p90 %s  p99 %s  max %s  mean %s\n", ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max), ms(l.Mean))
	if rep.SLAAttainment != nil {
		fmt.Fprintf(bw, "SLA %s: attainment %.2f%%, goodput %.1f req/s (throughput %.1f req/s)\n",
			time.Duration(rep.SLASeconds*float64(time.Second)), 100**rep.SLAAttainment, rep.GoodputRPS, rep.ThroughputRPS)
	} else {
		fmt.Fprintf(bw, "no SLA set: goodput = throughput %.1f req/s\n", rep.ThroughputRPS)
	}
	fmt.Fprintf(bw, "generator send lag: p99 %s  max %s\n", ms(rep.SendLag.P99), ms(rep.SendLag.Max))
	return bw.Flush()
}

func writeReasons(w io.Writer, m map[string]int) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(m[b]-m[a], strings.Compare(a, b)) })
	for _, k := range keys {
		fmt.Fprintf(w, "    %8d  %s\n", m[k], k)
	}
}

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(rep)
}

// RecordFormat is how WriteRecords writes records.
type RecordFormat uint8

const (
	// JSONLines writes one JSON object per line.
	JSONLines RecordFormat = iota
	// CSV writes a header line and one row per request.
	CSV
)

// RecordFormatFor picks CSV for a name ending in .csv, else JSON lines.
func RecordFormatFor(name string) RecordFormat {
	if strings.HasSuffix(strings.ToLower(name), ".csv") {
		return CSV
	}
	return JSONLines
}

var recordColumns = []string{"seq", "scheduled_seconds", "sent_seconds", "latency_seconds", "outcome", "status", "reason"}

// WriteRecords writes one line per request: its sequence number, scheduled
// and actual send times and latency (seconds from the start of the run),
// outcome, HTTP status and reason.
func WriteRecords(w io.Writer, recs []Record, f RecordFormat) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	sec := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 6, 64) }
	if f == CSV {
		cw := csv.NewWriter(bw)
		if err := cw.Write(recordColumns); err != nil {
			return err
		}
		row := make([]string, len(recordColumns))
		for i := range recs {
			r := &recs[i]
			row[0], row[1], row[2], row[3] = strconv.Itoa(r.Seq), sec(r.Scheduled), sec(r.Sent), sec(r.Latency)
			row[4], row[5], row[6] = r.Kind.String(), strconv.Itoa(r.Status), r.Reason
			if err := cw.Write(row); err != nil {
				return err
			}
		}
		cw.Flush()
		if err := cw.Error(); err != nil {
			return err
		}
		return bw.Flush()
	}
	var line []byte
	for i := range recs {
		r := &recs[i]
		line = append(line[:0], `{"seq":`...)
		line = strconv.AppendInt(line, int64(r.Seq), 10)
		line = append(line, `,"scheduled_seconds":`...)
		line = append(line, sec(r.Scheduled)...)
		line = append(line, `,"sent_seconds":`...)
		line = append(line, sec(r.Sent)...)
		line = append(line, `,"latency_seconds":`...)
		line = append(line, sec(r.Latency)...)
		line = append(line, `,"outcome":"`...)
		line = append(line, r.Kind.String()...)
		line = append(line, `","status":`...)
		line = strconv.AppendInt(line, int64(r.Status), 10)
		if r.Reason != "" {
			line = append(line, `,"reason":`...)
			q, _ := json.Marshal(r.Reason)
			line = append(line, q...)
		}
		line = append(line, "}\n"...)
		if _, err := bw.Write(line); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// Second is one second of a run, for plots.
type Second struct {
	// T is the second's start, from the start of the run.
	T int
	// Offered counts requests scheduled in this second; Succeeded,
	// Dropped and Failed count answers that arrived in it.
	Offered, Succeeded, Dropped, Failed int
	// P50 and P99 are latencies of the succeeded requests sent in this
	// second, 0 when none.
	P50, P99 time.Duration
}

// Seconds bins the run by second.
func (res *Result) Seconds() []Second {
	n := int(math.Ceil(res.Elapsed.Seconds()))
	for i := range res.Records {
		r := &res.Records[i]
		n = max(n, int((r.Sent+r.Latency)/time.Second)+1, int(r.Scheduled/time.Second)+1)
	}
	out := make([]Second, n)
	lats := make([][]time.Duration, n)
	for i := range out {
		out[i].T = i
	}
	for i := range res.Records {
		r := &res.Records[i]
		out[int(r.Scheduled/time.Second)].Offered++
		done := &out[int((r.Sent+r.Latency)/time.Second)]
		switch r.Kind {
		case Succeeded:
			done.Succeeded++
			s := int(r.Sent / time.Second)
			lats[s] = append(lats[s], r.Latency)
		case Dropped:
			done.Dropped++
		default:
			done.Failed++
		}
	}
	for i, l := range lats {
		if len(l) > 0 {
			slices.Sort(l)
			out[i].P50, out[i].P99 = quantile(l, 0.5), quantile(l, 0.99)
		}
	}
	return out
}
