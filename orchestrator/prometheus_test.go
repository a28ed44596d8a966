package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/ipa-serving/ipa/orchestrator/promtest"
)

// fakeSample is one scrape: its time in Unix ms and the counter's value.
type fakeSample struct {
	ms int64
	v  float64
}

// fakeSeries is one router's counter as Prometheus stored it.
type fakeSeries struct {
	labels  map[string]string // without __name__
	samples []fakeSample
	staleAt int64 // Unix ms of a staleness marker; 0 for none
}

// fakePrometheus answers /api/v1/query_range like Prometheus for exactly the
// observer's query of pipeline: at every step the newest sample at or before
// it (within the 5-minute look-back, not after a staleness marker), the
// counter's value and, for timestamp(), the sample's time.
func fakePrometheus(t *testing.T, pipeline string, series []fakeSeries) *httptest.Server {
	t.Helper()
	want := PrometheusObserver{Pipeline: pipeline}.Query()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.URL.Path != "/api/v1/query_range" || q.Get("query") != want || q.Get("step") != "1" {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"status":"error","errorType":"bad_data","error":"fake: unexpected %s query %q step %q"}`, r.URL.Path, q.Get("query"), q.Get("step"))
			return
		}
		start, err1 := strconv.ParseInt(q.Get("start"), 10, 64)
		end, err2 := strconv.ParseInt(q.Get("end"), 10, 64)
		if err1 != nil || err2 != nil {
			http.Error(w, "fake: start and end must be integers", http.StatusBadRequest)
			return
		}
		type out struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
		}
		var result []out
		for _, s := range series {
			cnt := out{Metric: map[string]string{"__name__": ArrivalsMetric}}
			ts := out{Metric: map[string]string{promStampLabel: "timestamp"}}
			for k, v := range s.labels {
				cnt.Metric[k], ts.Metric[k] = v, v
			}
			for step := start; step <= end; step++ {
				ms := step * 1000
				if s.staleAt != 0 && ms >= s.staleAt {
					break
				}
				var cur *fakeSample
				for i := range s.samples {
					if s.samples[i].ms <= ms && s.samples[i].ms > ms-300_000 {
						cur = &s.samples[i]
					}
				}
				if cur == nil {
					continue
				}
				cnt.Values = append(cnt.Values, [2]any{step, strconv.FormatFloat(cur.v, 'f', -1, 64)})
				ts.Values = append(ts.Values, [2]any{step, strconv.FormatFloat(float64(cur.ms)/1000, 'f', 3, 64)})
			}
			if len(cnt.Values) > 0 {
				result = append(result, cnt, ts)
			}
		}
		b, _ := json.Marshal(map[string]any{"status": "success", "data": map[string]any{"resultType": "matrix", "result": result}})
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv
}

const testBase = 1_700_000_000 // a whole Unix second

// every returns n samples, period ms apart from Unix ms first, the counter
// going up by inc each time from 0.
func every(first, period int64, n int, inc float64) []fakeSample {
	out := make([]fakeSample, n)
	for i := range out {
		out[i] = fakeSample{first + int64(i)*period, float64(i) * inc}
	}
	return out
}

func at(secs ...float64) []int64 {
	out := make([]int64, len(secs))
	for i, s := range secs {
		out[i] = testBase*1000 + int64(math.Round(s*1000))
	}
	return out
}

func samples(times []int64, values ...float64) []fakeSample {
	out := make([]fakeSample, len(times))
	for i := range times {
		out[i] = fakeSample{times[i], values[i]}
	}
	return out
}

func TestPrometheusObserverSpreadsIncreasesOverScrapeIntervals(t *testing.T) {
	p := map[string]string{"pipeline": "p", "job": "ipa", "instance": "a:8080"}
	p2 := map[string]string{"pipeline": "p", "job": "ipa", "instance": "b:8080"}
	repeat := func(v float64, n int) []float64 {
		out := make([]float64, n)
		for i := range out {
			out[i] = v
		}
		return out
	}
	cases := []struct {
		name    string
		series  []fakeSeries
		now     float64 // seconds after testBase
		seconds int
		lo      int64 // first second of the answer, after testBase
		want    []float64
	}{{
		name:   "1s scrapes at a 250 ms offset, 10/s",
		series: []fakeSeries{{labels: p, samples: every(testBase*1000+250, 1000, 100, 10)}},
		now:    100.5, seconds: 10, lo: 89, // newest sample 99.250: seconds up to 99 are complete
		want: repeat(10, 10),
	}, {
		// A burst inside one 5 s scrape interval is seen as its mean over
		// that interval; scrapes that saw no change keep the other seconds at 0.
		name:   "5s scrapes, 50 arrivals between the scrapes at 10 and 15",
		series: []fakeSeries{{labels: p, samples: samples(at(0, 5, 10, 15, 20), 0, 0, 0, 50, 50)}},
		now:    22.3, seconds: 20, lo: 0,
		want: append(append(repeat(0, 10), repeat(10, 5)...), repeat(0, 5)...),
	}, {
		name:   "counter reset: the router restarted between 2 and 3",
		series: []fakeSeries{{labels: p, samples: samples(at(0, 1, 2, 3, 4), 100, 110, 120, 4, 14)}},
		now:    4.9, seconds: 10, lo: 0, // fewer seconds than asked: Prometheus knows only 4
		want: []float64{10, 10, 4, 10},
	}, {
		name:   "missed scrape at 2.5: its increase is spread over 1.5 to 3.5",
		series: []fakeSeries{{labels: p, samples: samples(at(0.5, 1.5, 3.5, 4.5), 0, 10, 40, 50)}},
		now:    5, seconds: 3, lo: 1,
		want: []float64{12.5, 15, 12.5},
	}, {
		name: "two routers, one restarts: series are differenced before they are summed",
		series: []fakeSeries{
			{labels: p, samples: samples(at(0, 1, 2, 3, 4, 5), 0, 5, 10, 15, 20, 25)},
			{labels: p2, samples: samples(at(0, 1, 2, 3, 4, 5), 50, 53, 1, 4, 7, 10)},
		},
		now: 5.5, seconds: 5, lo: 0,
		want: []float64{8, 6, 8, 8, 8},
	}, {
		name: "a router that went away counts until its last sample and does not hold the window back",
		series: []fakeSeries{
			{labels: p, samples: samples(at(0, 1, 2, 3, 4, 5), 0, 5, 10, 15, 20, 25)},
			{labels: p2, samples: samples(at(0, 1, 2), 0, 2, 4), staleAt: at(3)[0]},
		},
		now: 5.5, seconds: 5, lo: 0,
		want: []float64{7, 7, 5, 5, 5},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := fakePrometheus(t, "p", tc.series)
			now := time.UnixMilli(testBase*1000 + int64(tc.now*1000))
			o := PrometheusObserver{URL: srv.URL, Pipeline: "p", Now: func() time.Time { return now }}
			lo, got, err := o.window(context.Background(), tc.seconds)
			if err != nil {
				t.Fatal(err)
			}
			if lo != testBase+tc.lo || !near(got, tc.want, 1e-9) {
				t.Fatalf("window starts at base+%d with %v, want base+%d with %v", lo-testBase, got, tc.lo, tc.want)
			}
			rates, err := o.Rates(context.Background(), tc.seconds)
			if err != nil || !near(rates, tc.want, 1e-9) {
				t.Fatalf("Rates = %v, %v; want %v", rates, err, tc.want)
			}
		})
	}
}

func near(got, want []float64, tol float64) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if math.Abs(got[i]-want[i]) > tol {
			return false
		}
	}
	return true
}

func TestPrometheusObserverNeedsAWholeSecondOfLiveSamples(t *testing.T) {
	p := map[string]string{"pipeline": "p"}
	for name, tc := range map[string]struct {
		series []fakeSeries
		want   string
	}{
		"one scrape":         {[]fakeSeries{{labels: p, samples: samples(at(0.5), 3)}}, "not one whole second yet"},
		"every target stale": {[]fakeSeries{{labels: p, samples: samples(at(0, 1, 2), 0, 1, 2), staleAt: at(3)[0]}}, "stale"},
	} {
		t.Run(name, func(t *testing.T) {
			srv := fakePrometheus(t, "p", tc.series)
			now := time.Unix(testBase+5, 0)
			_, err := PrometheusObserver{URL: srv.URL, Pipeline: "p", Now: func() time.Time { return now }}.Rates(context.Background(), 10)
			if !errors.Is(err, errNoSamples) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want errNoSamples saying %q", err, tc.want)
			}
		})
	}
}

func TestPrometheusObserverQueryEscapesThePipeline(t *testing.T) {
	for pipeline, literal := range map[string]string{
		"ocr":            `"ocr"`,
		`we"ird\name`:    `"we\"ird\\name"`,
		"two\nlines`'":   `"two\nlines` + "`" + `'"`,
		"bad utf8 \xff}": `"bad utf8 \xff}"`,
	} {
		o := PrometheusObserver{Pipeline: pipeline}
		sel := ArrivalsMetric + `{pipeline=` + literal + `}`
		want := sel + ` or label_replace(timestamp(` + sel + `), "ipa_observer_field", "timestamp", "", "")`
		if got := o.Query(); got != want {
			t.Errorf("pipeline %q: query\n%s\nwant\n%s", pipeline, got, want)
		}
		// What the server receives is the same text, start/end/step included.
		var got url2
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got = url2{r.URL.Path, r.URL.Query().Get("query"), r.URL.Query().Get("start"), r.URL.Query().Get("end"), r.URL.Query().Get("step")}
			io.WriteString(w, `{"status":"success","data":{"resultType":"matrix","result":[]}}`)
		}))
		o.URL = srv.URL + "/prefix/"
		o.Now = func() time.Time { return time.Unix(testBase, 700e6) }
		o.Rates(context.Background(), 30)
		srv.Close()
		if w := (url2{"/prefix/api/v1/query_range", want, strconv.Itoa(testBase - 30 - promSlack), strconv.Itoa(testBase), "1"}); got != w {
			t.Errorf("pipeline %q: server got %+v, want %+v", pipeline, got, w)
		}
	}
}

type url2 struct{ path, query, start, end, step string }

func TestPrometheusObserverErrorsSayWhatWentWrong(t *testing.T) {
	cases := []struct {
		name   string
		status int
		body   string
		want   []string
	}{
		{"bad query", 400, `{"status":"error","errorType":"bad_data","error":"1:27: parse error: unexpected <EOF>"}`,
			[]string{"400", "bad_data", "parse error: unexpected <EOF>", "ipa_router_arrivals_total{pipeline=\"p\"}"}},
		{"timeout", 503, `{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}`,
			[]string{"503", "timeout", "query timed out"}},
		{"not Prometheus", 404, "404 page not found\n", []string{"404", "page not found", "is the URL a Prometheus server?"}},
		{"error with status 200", 200, `{"status":"error","errorType":"execution","error":"many-to-many matching not allowed"}`,
			[]string{"execution", "many-to-many"}},
		{"malformed JSON", 200, `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{}`,
			[]string{"malformed answer", "unexpected end of JSON input"}},
		{"not a matrix", 200, `{"status":"success","data":{"resultType":"vector","result":[]}}`,
			[]string{`resultType "vector"`}},
		{"value not a string", 200, `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"pipeline":"p"},"values":[[1,2]]}]}}`,
			[]string{"malformed point", "not a string"}},
		{"counter without timestamps", 200, `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"ipa_router_arrivals_total","pipeline":"p"},"values":[[1,"2"]]}]}}`,
			[]string{`{pipeline="p"} comes without its counter or its sample timestamps`}},
		{"negative counter", 200, `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"pipeline":"p"},"values":[[1,"-2"]]},{"metric":{"pipeline":"p","ipa_observer_field":"timestamp"},"values":[[1,"0.5"]]}]}}`,
			[]string{"value -2, which is no arrival counter"}},
		{"no series", 200, `{"status":"success","data":{"resultType":"matrix","result":[]}}`,
			[]string{`no series for pipeline "p"`, "query ipa_router_arrivals_total{pipeline=\"p\"} or label_replace", "returned nothing from"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			_, err := PrometheusObserver{URL: srv.URL, Pipeline: "p"}.Rates(context.Background(), 10)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	if _, err := (PrometheusObserver{URL: "http://127.0.0.1:1", Pipeline: "p"}).Rates(context.Background(), 0); err == nil || !strings.Contains(err.Error(), "ask for 1 to") {
		t.Errorf("0 seconds: err = %v", err)
	}
}

// TestPrometheusObserverUnreachable: a closed port fails at once, a server
// that never answers fails at the client's timeout or the context's deadline.
func TestPrometheusObserverUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	_, err = PrometheusObserver{URL: closed, Pipeline: "p"}.Rates(context.Background(), 10)
	if err == nil || !strings.Contains(err.Error(), "cannot reach Prometheus at "+closed) {
		t.Fatalf("closed port: err = %v", err)
	}

	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hang.Close()
	defer close(release)
	for name, o := range map[string]PrometheusObserver{
		"client timeout":   {URL: hang.URL, Pipeline: "p", Client: &http.Client{Timeout: 300 * time.Millisecond}},
		"context deadline": {URL: hang.URL, Pipeline: "p"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
		if name == "client timeout" {
			ctx = context.Background()
		}
		start := time.Now()
		_, err := o.Rates(ctx, 10)
		cancel()
		if took := time.Since(start); err == nil || took > 3*time.Second || !strings.Contains(err.Error(), "cannot reach Prometheus") {
			t.Errorf("%s: err = %v after %s, want a 'cannot reach' error within the timeout", name, err, took)
		}
	}
}

// FuzzParseQueryRange feeds arbitrary answers through the parser and the
// per-second arithmetic: no panic, and an accepted answer gives at most the
// asked seconds, each finite and non-negative.
func FuzzParseQueryRange(f *testing.F) {
	f.Add([]byte(`{"status":"success","data":{"resultType":"matrix","result":[` +
		`{"metric":{"__name__":"ipa_router_arrivals_total","pipeline":"p"},"values":[[1700000000,"0"],[1700000001,"10"],[1700000002,"20"]]},` +
		`{"metric":{"pipeline":"p","ipa_observer_field":"timestamp"},"values":[[1700000000,"1699999999.250"],[1700000001,"1700000000.250"],[1700000002,"1700000001.250"]]}]}}`))
	f.Add([]byte(`{"status":"success","data":{"resultType":"matrix","result":[` +
		`{"metric":{"pipeline":"p"},"values":[[1700000000,"7"],[1700000001,"3"],[1700000002,"3"]]},` +
		`{"metric":{"pipeline":"p","ipa_observer_field":"timestamp"},"values":[[1700000000,"1699999990"],[1700000001,"1700000000.5"],[1700000002,"1700000000.5"]]}]}}`))
	f.Add([]byte(`{"status":"error","errorType":"bad_data","error":"parse error"}`))
	f.Add([]byte(`{"status":"success","data":{"resultType":"matrix","result":[]}}`))
	f.Add([]byte(`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1e300,"NaN"],[2,"+Inf"]]}]}}`))
	f.Add([]byte(`[1,2`))
	f.Fuzz(func(t *testing.T, body []byte) {
		res, err := parseQueryRange(body)
		if err != nil {
			return
		}
		series, err := pairSamples(res, 1_700_000_002_000)
		if err != nil {
			return
		}
		const seconds = 30
		_, counts, err := perSecond(series, seconds)
		if err != nil {
			return
		}
		if len(counts) == 0 || len(counts) > seconds {
			t.Fatalf("%d counts for %d seconds", len(counts), seconds)
		}
		for _, c := range counts {
			if math.IsNaN(c) || math.IsInf(c, 0) || c < -1e-9 {
				t.Fatalf("count %g in %v", c, counts)
			}
		}
	})
}

// TestPrometheusServerReadsTheRouterCounter runs Debian's Prometheus
// (IPA_PROMETHEUS, installed by scripts/prometheus.sh) against a /metrics
// endpoint whose counter goes up at 20/s for 7 s, then at 50/s, scraped
// every second, and checks the per-second counts and their sum against the
// injected arrivals.
func TestPrometheusServerReadsTheRouterCounter(t *testing.T) {
	bin := promtest.Bin(t)

	// The router's counter, served by the same library the router uses.
	const r1, r2 = 20.0, 50.0 // arrivals per second before and after t1
	const other, odd = 7.0, 3.0
	const oddName = `we"ird\pipe`
	set := metrics.NewSet()
	cnt := set.NewCounter(`ipa_router_arrivals_total{pipeline="p"}`)
	cntOther := set.NewCounter(`ipa_router_arrivals_total{pipeline="p-other"}`)
	cntOdd := set.NewCounter(fmt.Sprintf("ipa_router_arrivals_total{pipeline=%q}", oddName))
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { set.WritePrometheus(w) }))
	defer target.Close()

	prom := promtest.Start(t, bin, strings.TrimPrefix(target.URL, "http://"))
	o := PrometheusObserver{URL: prom, Pipeline: "p", Client: &http.Client{Timeout: 5 * time.Second}}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()

	// Two scrapes of the idle counter first, so that the window can start
	// before the arrivals do.
	promtest.WaitFor(t, ctx, "Prometheus to scrape the counter twice", func() error { _, _, err := o.window(ctx, 1); return err })

	t0 := time.Now()
	t1 := t0.Add(7 * time.Second)
	// N is the number of arrivals injected by time t.
	N := func(t time.Time) float64 {
		switch {
		case t.Before(t0):
			return 0
		case t.Before(t1):
			return r1 * t.Sub(t0).Seconds()
		}
		return r1*t1.Sub(t0).Seconds() + r2*t.Sub(t1).Seconds()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // keeps the counters at the injected count, every 5 ms
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			now := time.Now()
			cnt.Set(uint64(N(now)))
			cntOther.Set(uint64(other * now.Sub(t0).Seconds()))
			cntOdd.Set(uint64(odd * now.Sub(t0).Seconds()))
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	// Wait until Prometheus knows 4 whole seconds after t1, then ask for
	// the window from 2 s after t0: both ends at a steady rate.
	sec := func(t time.Time) int64 { return t.Add(time.Second - 1).Unix() } // first whole second at or after t
	var end int64
	promtest.WaitFor(t, ctx, "Prometheus to have 4 s of samples after the rate change", func() error {
		lo, c, err := o.window(ctx, 1)
		if err != nil {
			return err
		}
		if end = lo + int64(len(c)); end < sec(t1)+4 {
			return fmt.Errorf("samples until %s", time.Unix(end, 0).Format(time.TimeOnly))
		}
		return nil
	})
	seconds := int(end - (sec(t0) + 2))
	rates, err := o.Rates(ctx, seconds)
	if err != nil || len(rates) != seconds {
		t.Fatalf("Rates(%d) = %v, %v; want %d counts", seconds, rates, err, seconds)
	}
	lo, counts, err := o.window(ctx, seconds)
	if err != nil {
		t.Fatal(err)
	}

	// Tolerances: a steady second is within ±4 arrivals of the injected
	// count (the counter is set every 5 ms and read a few ms after the
	// scrape's timestamp, on a busy machine); a second within 2 s of t1,
	// whose scrape interval straddles the change, lies between the two
	// rates; the sum over the window, whose ends are steady, within ±4.
	const tol = 4.0
	var sum, want float64
	for i, c := range counts {
		k := time.Unix(lo+int64(i), 0)
		truth := N(k.Add(time.Second)) - N(k)
		sum, want = sum+c, want+truth
		dist := min(k.Sub(t1).Abs(), k.Add(time.Second).Sub(t1).Abs())
		switch {
		case !k.After(t1) && k.Add(time.Second).After(t1) || dist < 2*time.Second:
			if c < r1-tol || c > r2+tol {
				t.Errorf("second %s (at t1%+.1fs): %.2f arrivals, want between %g and %g", k.Format(time.TimeOnly), k.Sub(t1).Seconds(), c, r1, r2)
			}
		case math.Abs(c-truth) > tol:
			t.Errorf("second %s (at t1%+.1fs): %.2f arrivals, injected %.2f (±%g)", k.Format(time.TimeOnly), k.Sub(t1).Seconds(), c, truth, tol)
		}
	}
	t.Logf("%d seconds from t0%+.1fs: %s; sum %.2f, injected %.2f", len(counts), time.Unix(lo, 0).Sub(t0).Seconds(), fmtCounts(counts), sum, want)
	if math.Abs(sum-want) > tol {
		t.Errorf("sum over the window %.2f, injected %.2f (±%g)", sum, want, tol)
	}

	// A label value with a quote and a backslash reaches the right series.
	oddObs := PrometheusObserver{URL: prom, Pipeline: oddName}
	lo, counts, err = oddObs.window(ctx, 8)
	if err != nil {
		t.Fatalf("pipeline %q: %v", oddName, err)
	}
	sum = 0
	for _, c := range counts {
		sum += c
	}
	if span := float64(len(counts)); math.Abs(sum-odd*span) > tol {
		t.Errorf("pipeline %q: %.2f arrivals in %g s from %s, want %g/s (±%g)", oddName, sum, span, time.Unix(lo, 0).Format(time.TimeOnly), odd, tol)
	}

	// A pipeline Prometheus never saw: the error names the query.
	_, err = PrometheusObserver{URL: prom, Pipeline: "nope"}.Rates(ctx, 10)
	if err == nil || !strings.Contains(err.Error(), `no series for pipeline "nope"`) || !strings.Contains(err.Error(), `{pipeline="nope"}`) {
		t.Errorf("unknown pipeline: err = %v", err)
	}
	// A query Prometheus rejects: its errorType and text come back.
	_, err = PrometheusObserver{URL: prom, Pipeline: "p"}.get(ctx, "sum(", time.Now().Unix()-10, time.Now().Unix())
	if err == nil || !strings.Contains(err.Error(), "bad_data") || !strings.Contains(err.Error(), "400") {
		t.Errorf("bad query: err = %v", err)
	}
}

func fmtCounts(c []float64) string {
	s := make([]string, len(c))
	for i, v := range c {
		s[i] = strconv.FormatFloat(v, 'f', 1, 64)
	}
	return "[" + strings.Join(s, " ") + "]"
}
