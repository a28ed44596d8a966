package orchestrator

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/ipa-serving/ipa/orchestrator/promtest"
)

// vectorAnswer is an instant query's answer with one sample per series.
func vectorAnswer(samples map[string]string) string {
	var parts []string
	for labels, v := range samples {
		parts = append(parts, fmt.Sprintf(`{"metric":{%s},"value":[1700000000,%q]}`, labels, v))
	}
	return `{"status":"success","data":{"resultType":"vector","result":[` + strings.Join(parts, ",") + `]}}`
}

func TestPrometheusObserverPairsTheBatchCounters(t *testing.T) {
	const a = `"stage":"classify","variant":"resnet50","cores":"1","rows":"1"`
	const b = `"stage":"classify","variant":"resnet50","cores":"1","rows":"4"`
	const c = `"stage":"ocr-det","variant":"det-480","cores":"2","rows":"1"`
	answers := map[string]string{
		BatchesMetric:      vectorAnswer(map[string]string{a: "20", b: "0", c: "NaN"}),
		BatchSecondsMetric: vectorAnswer(map[string]string{a: "2.5", b: "0", c: "1"}),
	}
	var queries []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query().Get("query")
		mu.Lock()
		queries = append(queries, q)
		mu.Unlock()
		if r.URL.Path != "/api/v1/query" || r.URL.Query().Get("time") != "1700000000" {
			http.Error(w, "unexpected "+r.URL.String(), http.StatusBadRequest)
			return
		}
		for metric, body := range answers {
			if strings.Contains(q, "increase("+metric+"[30s])") {
				fmt.Fprint(w, body)
				return
			}
		}
		http.Error(w, "unexpected query "+q, http.StatusBadRequest)
	}))
	defer srv.Close()
	o := PrometheusObserver{URL: srv.URL, BatchWindow: 30 * time.Second, Now: func() time.Time { return time.Unix(1700000000, 0) }}
	got, err := o.Batches(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := BatchStats{Stage: "classify", Variant: "resnet50", Cores: 1, Rows: 1, Count: 20, Seconds: 2.5}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("batches %+v, want %+v alone (no batches of 4 rows, and ocr-det's count is NaN)", got, want)
	}
	if len(queries) != 2 || !strings.HasPrefix(queries[0], "sum by (stage, variant, cores, rows) (increase(") {
		t.Fatalf("queries %q", queries)
	}

	// A window shorter than two scrapes is widened.
	o.BatchWindow = time.Second
	if c, _ := o.BatchQueries(); !strings.Contains(c, "[15s]") {
		t.Fatalf("query for a 1 s window: %s", c)
	}
}

func TestParseBatchVectorRejectsWhatIsNoBatchCounter(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{vectorAnswer(map[string]string{`"stage":"s","variant":"v","cores":"x","rows":"1"`: "1"}), "not a stage's batch counter"},
		{vectorAnswer(map[string]string{`"stage":"s","variant":"v","cores":"1","rows":"0"`: "1"}), "not a stage's batch counter"},
		{vectorAnswer(map[string]string{`"variant":"v","cores":"1","rows":"1"`: "1"}), "not a stage's batch counter"},
		{vectorAnswer(map[string]string{`"stage":"s","variant":"v","cores":"1","rows":"1"`: "one"}), "malformed point"},
		{`{"status":"success","data":{"resultType":"matrix","result":[]}}`, `want "vector"`},
		{`{"status":"error","errorType":"bad_data","error":"parse error"}`, "parse error"},
		{`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"stage":"s","variant":"v","cores":"1","rows":"1"},"value":[1,"1"]},{"metric":{"stage":"s","variant":"v","cores":"1","rows":"1"},"value":[1,"2"]}]}}`, "appears twice"},
	} {
		if _, err := parseBatchVector([]byte(tc.body)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.body, err, tc.want)
		}
	}
}

func FuzzParseBatchVector(f *testing.F) {
	f.Add([]byte(vectorAnswer(map[string]string{`"stage":"s","variant":"v","cores":"1","rows":"4"`: "12.5"})))
	f.Add([]byte(vectorAnswer(map[string]string{`"stage":"s","variant":"v","cores":"1","rows":"4"`: "-Inf"})))
	f.Add([]byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[]}]}}`))
	f.Add([]byte(`{"status":"error"}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := parseBatchVector(body)
		if err != nil {
			return
		}
		for k, v := range out {
			if k.Stage == "" || k.Variant == "" || k.Cores < 1 || k.Rows < 1 || k.Count != 0 || k.Seconds != 0 || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				t.Fatalf("parsed %+v = %g", k, v)
			}
		}
	})
}

// TestPrometheusServerReadsTheStagesBatchCounters runs Debian's Prometheus
// against the counter pair a stage exposes (as dataplane/observed.go names
// and labels it, in the same library): 20 batches per second of 50 ms each.
// Batches must read them back with their mean engine time.
func TestPrometheusServerReadsTheStagesBatchCounters(t *testing.T) {
	bin := promtest.Bin(t)
	set := metrics.NewSet()
	const l = `{stage="classify",variant="resnet50",cores="1",rows="2"}`
	n := set.NewCounter(BatchesMetric + l)
	s := set.NewFloatCounter(BatchSecondsMetric + l)
	var mu sync.Mutex
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		set.WritePrometheus(w)
	}))
	defer target.Close()
	prom := promtest.Start(t, bin, strings.TrimPrefix(target.URL, "http://"))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // one batch every 50 ms, each pair moving together
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			mu.Lock()
			n.Inc()
			s.Add(0.05)
			mu.Unlock()
		}
	})
	defer func() { close(stop); wg.Wait() }()
	o := PrometheusObserver{URL: prom, BatchWindow: 10 * time.Second, Client: &http.Client{Timeout: 5 * time.Second}}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	var got []BatchStats
	promtest.WaitFor(t, ctx, "Prometheus to have 5 s of the batch counters", func() error {
		var err error
		got, err = o.Batches(ctx)
		switch {
		case err != nil:
			return err
		case len(got) != 1 || got[0].Count < 5*20*0.8:
			return fmt.Errorf("batches so far: %+v", got)
		}
		return nil
	})
	b := got[0]
	if b.Stage != "classify" || b.Variant != "resnet50" || b.Cores != 1 || b.Rows != 2 || math.Abs(b.Seconds/b.Count-0.05) > 0.0005 {
		t.Fatalf("read %+v: mean %.4g s, want 0.05 s per batch", b, b.Seconds/b.Count)
	}
}
