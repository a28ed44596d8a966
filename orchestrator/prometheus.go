package orchestrator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ArrivalsMetric is the router's counter of arrivals per pipeline, the
// series PrometheusObserver reads.
const ArrivalsMetric = "ipa_router_arrivals_total"

// promStampLabel marks, in PrometheusObserver's query, the series that carry
// the timestamps of the counter's samples instead of its values.
const promStampLabel = "ipa_observer_field"

// Limits of one PrometheusObserver query.
const (
	// promSlack is how many seconds before the requested window the query
	// starts, so that the window still has data when the newest sample is
	// up to a minute old (scrape interval plus ingestion).
	promSlack = 60
	// promMaxSeconds keeps a query under Prometheus's limit of 11,000
	// points per series.
	promMaxSeconds = 10000
	// promMaxBody bounds the answer read into memory.
	promMaxBody = 32 << 20
)

// PrometheusObserver reads a pipeline's arrivals from a Prometheus server that
// scrapes the router's /metrics, through the HTTP API's /api/v1/query_range.
//
// Resolution. Prometheus only knows the counter ipa_router_arrivals_total at
// its scrape times, every scrape interval (1 s, 15 s, …), while the
// controller wants counts per second. The observer therefore asks for the raw
// samples, not for rate() or increase() (whose windows would have to match a
// scrape interval the observer does not know): one query at step 1 s returns,
// per router series, the counter and, through timestamp(), the time of the
// sample each step saw:
//
//	ipa_router_arrivals_total{pipeline="P"}
//	  or label_replace(timestamp(ipa_router_arrivals_total{pipeline="P"}), "ipa_observer_field", "timestamp", "", "")
//
// Distinct timestamps give back every scrape (two scrapes within one step
// merge into the later one, which only coarsens). Between two consecutive
// samples of a series the increase is spread evenly over the time between
// them and split into whole Unix seconds by overlap; the series are summed
// in Go, after differencing, so that a restart of one router (its counter
// goes down: the increase is the new value, as in Prometheus's increase())
// does not disturb the others. A missed scrape or a stale gap just makes a
// longer interval over which the increase is spread.
//
// Limits. Totals over a window are exact whatever the scrape interval (up to
// the counter's value at the window's two edges, interpolated); the shape
// inside one scrape interval is unknowable, so a burst shorter than the
// scrape interval is seen as its mean over that interval: scrape every
// second for per-second peaks. The window ends at the last complete second
// before the newest sample of every live series (a series that has a value
// at the query's last step), so it lags the wall clock by about one scrape
// interval. It starts no earlier than the first sample Prometheus has, so
// Rates may return fewer than the asked seconds right after Prometheus or
// the router started; arrivals before a series' first scrape are not
// counted, as in Prometheus.
type PrometheusObserver struct {
	URL      string // Prometheus base URL, e.g. http://127.0.0.1:9090 (a path prefix is kept)
	Pipeline string // value of the counter's pipeline label
	Client   *http.Client
	Now      func() time.Time // nil means time.Now
	// BatchWindow is the span Batches reads the stages' batch counters
	// over: the controller's interval (at least promMinBatchWindow).
	BatchWindow time.Duration
	// Steps are the pipeline's steps in order, for Fanout.
	Steps []string
}

// Query returns the PromQL expression the observer evaluates.
func (o PrometheusObserver) Query() string {
	sel := ArrivalsMetric + `{pipeline=` + promQuote(o.Pipeline) + `}`
	return sel + ` or label_replace(timestamp(` + sel + `), "` + promStampLabel + `", "timestamp", "", "")`
}

// promQuote returns s as a PromQL double-quoted string. PromQL strings
// follow Go's escaping rules, so strconv.Quote is exact, including for
// quotes, backslashes, newlines and invalid UTF-8.
func promQuote(s string) string { return strconv.Quote(s) }

// Rates implements Observer: the per-second arrival counts of the last
// complete seconds Prometheus knows, oldest first, at most seconds of them.
func (o PrometheusObserver) Rates(ctx context.Context, seconds int) ([]float64, error) {
	_, counts, err := o.window(ctx, seconds)
	return counts, err
}

// window is Rates plus the Unix second the first count belongs to.
func (o PrometheusObserver) window(ctx context.Context, seconds int) (int64, []float64, error) {
	if seconds < 1 || seconds > promMaxSeconds {
		return 0, nil, fmt.Errorf("prometheus observer: %d seconds of history asked; ask for 1 to %d", seconds, promMaxSeconds)
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	end := now().Unix()
	start := end - int64(seconds) - promSlack
	q := o.Query()
	body, err := o.get(ctx, q, start, end)
	if err != nil {
		return 0, nil, err
	}
	res, err := parseQueryRange(body)
	if err != nil {
		return 0, nil, fmt.Errorf("query %s to Prometheus at %s: %w", q, o.URL, err)
	}
	if len(res) == 0 {
		return 0, nil, fmt.Errorf("no series for pipeline %[2]q in Prometheus at %[1]s: query %[3]s returned nothing from %[4]s to %[5]s; check that Prometheus scrapes the router's /metrics and that the pipeline is named right",
			o.URL, o.Pipeline, q, time.Unix(start, 0).UTC().Format(time.RFC3339), time.Unix(end, 0).UTC().Format(time.RFC3339))
	}
	series, err := pairSamples(res, end*1000)
	if err != nil {
		return 0, nil, fmt.Errorf("query %s to Prometheus at %s: %w", q, o.URL, err)
	}
	lo, counts, err := perSecond(series, seconds)
	if err != nil {
		return 0, nil, fmt.Errorf("pipeline %q in Prometheus at %s: %w", o.Pipeline, o.URL, err)
	}
	return lo, counts, nil
}

// get runs the range query and returns the body of a 200 answer.
func (o PrometheusObserver) get(ctx context.Context, q string, start, end int64) ([]byte, error) {
	v := url.Values{}
	v.Set("query", q)
	v.Set("start", strconv.FormatInt(start, 10))
	v.Set("end", strconv.FormatInt(end, 10))
	v.Set("step", "1")
	return o.api(ctx, "query_range", q, v)
}

// api calls /api/v1/{endpoint} with v (query q) and returns the body of a
// 200 answer.
func (o PrometheusObserver) api(ctx context.Context, endpoint, q string, v url.Values) ([]byte, error) {
	u := strings.TrimRight(o.URL, "/") + "/api/v1/" + endpoint + "?" + v.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("prometheus observer: bad Prometheus URL %q: %w", o.URL, err)
	}
	c := o.Client
	if c == nil {
		c = &http.Client{Timeout: 5 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach Prometheus at %s: %w; check that it runs and that the URL is right", o.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, promMaxBody+1))
	if err != nil {
		return nil, fmt.Errorf("reading the answer of Prometheus at %s: %w", o.URL, err)
	}
	if len(b) > promMaxBody {
		return nil, fmt.Errorf("the Prometheus server at %s answered more than %d MiB to query %s; does the pipeline label match too many series?", o.URL, promMaxBody>>20, q)
	}
	if resp.StatusCode != http.StatusOK {
		var e promResponse
		if json.Unmarshal(b, &e) == nil && e.Status == "error" {
			return nil, fmt.Errorf("the Prometheus server at %s answered %s to query %s: %s: %s", o.URL, resp.Status, q, e.ErrorType, e.Error)
		}
		return nil, fmt.Errorf("the Prometheus server at %s answered %s to GET /api/v1/%s: %s; is the URL a Prometheus server?", o.URL, resp.Status, endpoint, snippet(b))
	}
	return b, nil
}

func snippet(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}

// promResponse is the envelope of every Prometheus HTTP API answer.
type promResponse struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
	Data      struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string   `json:"metric"`
			Values [][]json.RawMessage `json:"values"` // a range query's
			Value  []json.RawMessage   `json:"value"`  // an instant query's
		} `json:"result"`
	} `json:"data"`
}

// promSeries is one series of a range query: its labels and its points,
// T in Unix milliseconds, strictly ascending.
type promSeries struct {
	Labels map[string]string
	Points []promPoint
}

type promPoint struct {
	T int64
	V float64
}

// promMaxUnix bounds the timestamps accepted (year 5138), far from
// int64 milliseconds' overflow.
const promMaxUnix = 1e11

// promMaxCount is the largest counter value float64 counts exactly (2^53).
const promMaxCount = 1 << 53

// parseQueryRange parses a /api/v1/query_range answer: a matrix of series
// whose values are [unix seconds, "decimal string"] pairs.
func parseQueryRange(body []byte) ([]promSeries, error) {
	r, err := parseEnvelope(body, "matrix", "a range query")
	if err != nil {
		return nil, err
	}
	out := make([]promSeries, 0, len(r.Data.Result))
	for _, s := range r.Data.Result {
		ps := promSeries{Labels: s.Metric, Points: make([]promPoint, 0, len(s.Values))}
		for _, pair := range s.Values {
			p, err := parsePoint(pair)
			if err != nil {
				return nil, fmt.Errorf("malformed point in series %s: %w", fmtLabels(s.Metric), err)
			}
			if n := len(ps.Points); n > 0 && p.T <= ps.Points[n-1].T {
				return nil, fmt.Errorf("malformed series %s: step %d ms not after %d ms", fmtLabels(s.Metric), p.T, ps.Points[n-1].T)
			}
			ps.Points = append(ps.Points, p)
		}
		out = append(out, ps)
	}
	return out, nil
}

// parseEnvelope parses an answer of the HTTP API whose result must be of
// type want (what query asked for it).
func parseEnvelope(body []byte, want, query string) (*promResponse, error) {
	var r promResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("malformed answer (%v): %s", err, snippet(body))
	}
	switch r.Status {
	case "success":
	case "error":
		return nil, fmt.Errorf("the Prometheus server reports an error: %s: %s", r.ErrorType, r.Error)
	default:
		return nil, fmt.Errorf("malformed answer: status %q, want \"success\": %s", r.Status, snippet(body))
	}
	if r.Data.ResultType != want {
		return nil, fmt.Errorf("malformed answer: resultType %q, want %q from %s", r.Data.ResultType, want, query)
	}
	return &r, nil
}

func parsePoint(pair []json.RawMessage) (promPoint, error) {
	if len(pair) != 2 {
		return promPoint{}, fmt.Errorf("%d elements, want [time, \"value\"]", len(pair))
	}
	var ts float64
	if err := json.Unmarshal(pair[0], &ts); err != nil {
		return promPoint{}, fmt.Errorf("time %s: %v", pair[0], err)
	}
	if !(ts >= 0 && ts <= promMaxUnix) {
		return promPoint{}, fmt.Errorf("time %s out of range", pair[0])
	}
	var s string
	if err := json.Unmarshal(pair[1], &s); err != nil {
		return promPoint{}, fmt.Errorf("value %s is not a string: %v", pair[1], err)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return promPoint{}, fmt.Errorf("value %q: %v", s, err)
	}
	return promPoint{T: int64(math.Round(ts * 1000)), V: v}, nil
}

func fmtLabels(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + strconv.Quote(l[k]))
	}
	b.WriteByte('}')
	return b.String()
}

// counterSamples is one counter series rebuilt from its scrapes.
type counterSamples struct {
	Name string
	T    []int64 // sample times, Unix ms, strictly ascending
	V    []float64
	Live bool // has a value at the query's last step
}

// pairSamples joins each counter series with its timestamp series and
// keeps one sample per distinct scrape. lastStep is the query's end in
// Unix ms.
func pairSamples(res []promSeries, lastStep int64) ([]counterSamples, error) {
	type pair struct{ counter, stamps *promSeries }
	pairs := map[string]*pair{}
	for i := range res {
		s := &res[i]
		l := map[string]string{}
		for k, v := range s.Labels {
			if k != "__name__" && k != promStampLabel {
				l[k] = v
			}
		}
		key := fmtLabels(l)
		p := pairs[key]
		if p == nil {
			p = &pair{}
			pairs[key] = p
		}
		slot := &p.counter
		if s.Labels[promStampLabel] == "timestamp" {
			slot = &p.stamps
		}
		if *slot != nil {
			return nil, fmt.Errorf("malformed answer: series %s appears twice", fmtLabels(s.Labels))
		}
		*slot = s
	}
	keys := make([]string, 0, len(pairs))
	for k := range pairs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]counterSamples, 0, len(keys))
	for _, key := range keys {
		p := pairs[key]
		if p.counter == nil || p.stamps == nil {
			return nil, fmt.Errorf("malformed answer: series %s comes without its counter or its sample timestamps", key)
		}
		stamp := make(map[int64]float64, len(p.stamps.Points))
		for _, pt := range p.stamps.Points {
			stamp[pt.T] = pt.V
		}
		cs := counterSamples{Name: key}
		for _, pt := range p.counter.Points {
			sec, ok := stamp[pt.T]
			if !ok {
				continue
			}
			if !(sec >= 0 && sec <= promMaxUnix) {
				return nil, fmt.Errorf("malformed answer: series %s: sample time %g out of range", key, sec)
			}
			if !(pt.V >= 0 && pt.V <= promMaxCount) {
				return nil, fmt.Errorf("series %s has the value %g, which is no arrival counter (0 to 2^53); does the query select the right metric?", key, pt.V)
			}
			t := int64(math.Round(sec * 1000))
			if n := len(cs.T); n > 0 {
				if t == cs.T[n-1] {
					continue // the same scrape, seen again at a later step
				}
				if t < cs.T[n-1] {
					return nil, fmt.Errorf("malformed answer: series %s: sample times go back from %d to %d ms", key, cs.T[n-1], t)
				}
			}
			cs.T, cs.V = append(cs.T, t), append(cs.V, pt.V)
		}
		if n := len(p.counter.Points); n > 0 && p.counter.Points[n-1].T == lastStep {
			_, cs.Live = stamp[lastStep]
		}
		out = append(out, cs)
	}
	return out, nil
}

// errNoSamples is wrapped by perSecond's errors when Prometheus does not yet
// know a whole second.
var errNoSamples = errors.New("not enough samples")

// perSecond spreads each series' increases evenly between its samples, sums
// the series and returns the counts of whole Unix seconds [lo, E), oldest
// first, where E is the last whole second before the newest sample of every
// live series and lo = max(E-seconds, first second after the first sample).
func perSecond(series []counterSamples, seconds int) (int64, []float64, error) {
	var last, first int64 = math.MaxInt64, math.MaxInt64
	live := false
	for _, s := range series {
		if len(s.T) == 0 {
			continue
		}
		first = min(first, s.T[0])
		if s.Live {
			live = true
			last = min(last, s.T[len(s.T)-1])
		}
	}
	if !live {
		return 0, nil, fmt.Errorf("%w: no series has a current sample (every router target is down or stale); check Prometheus's targets page", errNoSamples)
	}
	end := floorDiv(last, 1000)
	lo := max(end-int64(seconds), ceilDiv(first, 1000))
	if lo >= end {
		return 0, nil, fmt.Errorf("%w: samples cover %s to %s, not one whole second yet; wait for the next scrapes",
			errNoSamples, time.UnixMilli(first).UTC().Format(time.RFC3339Nano), time.UnixMilli(last).UTC().Format(time.RFC3339Nano))
	}
	counts := make([]float64, end-lo)
	loMs, endMs := lo*1000, end*1000
	for _, s := range series {
		for i := 1; i < len(s.T); i++ {
			t0, t1 := s.T[i-1], s.T[i]
			inc := s.V[i] - s.V[i-1]
			if inc < 0 { // counter reset: the router restarted from zero
				inc = s.V[i]
			}
			a, b := max(t0, loMs), min(t1, endMs)
			if inc == 0 || a >= b {
				continue
			}
			for k := floorDiv(a, 1000); k*1000 < b; k++ {
				from, to := max(a, k*1000), min(b, (k+1)*1000)
				counts[k-lo] += inc * float64(to-from) / float64(t1-t0)
			}
		}
	}
	return lo, counts, nil
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func ceilDiv(a, b int64) int64 { return -floorDiv(-a, b) }
