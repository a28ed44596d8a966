package orchestrator

import (
	"context"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// The stages' batch counters (dataplane/observed.go), labelled stage,
// variant, cores and rows, which PrometheusObserver.Batches reads.
const (
	BatchesMetric      = "ipa_stage_batches_total"
	BatchSecondsMetric = "ipa_stage_batch_engine_seconds_total"
)

// promMinBatchWindow is the shortest span Batches asks increase() over,
// which needs two scrapes in its window: 15 s holds two at scrape intervals
// up to 7.5 s (ipa's setups scrape every second).
const promMinBatchWindow = 15 * time.Second

// BatchQueries returns the PromQL expressions Batches evaluates: the
// increase of each counter over the window, summed over the stages' pods
// (increase() takes each pod's restarts into account before the sum).
func (o PrometheusObserver) BatchQueries() (count, seconds string) {
	w := int(max(o.BatchWindow, promMinBatchWindow).Seconds())
	q := func(metric string) string {
		return fmt.Sprintf("sum by (stage, variant, cores, rows) (increase(%s[%ds]))", metric, w)
	}
	return q(BatchesMetric), q(BatchSecondsMetric)
}

// Batches implements BatchObserver: what the stages Prometheus scrapes
// computed over the last BatchWindow, per stage, variant, cores and rows.
// When BatchWindow is shorter than promMinBatchWindow, consecutive calls
// overlap and a batch is counted more than once: the mean engine time the
// correction compares is unaffected; its evidence weighs more.
func (o PrometheusObserver) Batches(ctx context.Context) ([]BatchStats, error) {
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	at := now().Unix()
	cq, sq := o.BatchQueries()
	counts, err := o.instant(ctx, cq, at)
	if err != nil {
		return nil, err
	}
	secs, err := o.instant(ctx, sq, at)
	if err != nil {
		return nil, err
	}
	var out []BatchStats
	for k, n := range counts {
		if s, ok := secs[k]; ok && n > 0 {
			b := k
			b.Count, b.Seconds = n, s
			out = append(out, b)
		}
	}
	slices.SortFunc(out, func(a, b BatchStats) int { return compareKeys(a.key(), b.key()) })
	return out, nil
}

// instant evaluates q at the Unix second at and returns its samples by
// series.
func (o PrometheusObserver) instant(ctx context.Context, q string, at int64) (map[BatchStats]float64, error) {
	body, err := o.query(ctx, q, at)
	if err != nil {
		return nil, err
	}
	out, err := parseBatchVector(body)
	if err != nil {
		return nil, fmt.Errorf("query %s to Prometheus at %s: %w", q, o.URL, err)
	}
	return out, nil
}

// query evaluates the instant query q at the Unix second at and returns
// Prometheus's answer.
func (o PrometheusObserver) query(ctx context.Context, q string, at int64) ([]byte, error) {
	v := url.Values{}
	v.Set("query", q)
	v.Set("time", strconv.FormatInt(at, 10))
	return o.api(ctx, "query", q, v)
}

// parseBatchVector parses an instant query's answer whose series are
// labelled stage, variant, cores and rows: the values by series (the key's
// Count and Seconds are zero). Non-finite and negative values are left out.
func parseBatchVector(body []byte) (map[BatchStats]float64, error) {
	r, err := parseEnvelope(body, "vector", "an instant query")
	if err != nil {
		return nil, err
	}
	out := make(map[BatchStats]float64, len(r.Data.Result))
	for _, s := range r.Data.Result {
		l := s.Metric
		cores, err1 := strconv.Atoi(l["cores"])
		rows, err2 := strconv.Atoi(l["rows"])
		if l["stage"] == "" || l["variant"] == "" || err1 != nil || err2 != nil || cores < 1 || rows < 1 {
			return nil, fmt.Errorf("series %s is not a stage's batch counter (labels stage, variant, cores ≥ 1, rows ≥ 1)", fmtLabels(l))
		}
		p, err := parsePoint(s.Value)
		if err != nil {
			return nil, fmt.Errorf("malformed point in series %s: %w", fmtLabels(l), err)
		}
		if math.IsNaN(p.V) || math.IsInf(p.V, 0) || p.V < 0 {
			continue
		}
		k := BatchStats{Stage: l["stage"], Variant: l["variant"], Cores: cores, Rows: rows}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("malformed answer: series %s appears twice", fmtLabels(l))
		}
		out[k] = p.V
	}
	return out, nil
}

// The router's fan-out totals per step (router.Pipeline.Rows), which
// PrometheusObserver.Fanout reads.
const (
	StepRequestsMetric = "ipa_router_step_requests_total"
	StepRowsMetric     = "ipa_router_step_rows_total"
)

// Fanout implements FanoutObserver: per step of Steps, the requests that
// reached it and the rows it was sent, summed over the routers Prometheus
// scrapes (a router that restarted starts its totals over; the loop skips
// an interval whose totals went down).
func (o PrometheusObserver) Fanout(ctx context.Context) (reached, rows []int64, err error) {
	if len(o.Steps) == 0 {
		return nil, nil, fmt.Errorf("prometheus observer: the pipeline's steps are not set")
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	at := now().Unix()
	read := func(metric string) ([]int64, error) {
		q := fmt.Sprintf("sum by (step) (%s{pipeline=%s})", metric, promQuote(o.Pipeline))
		body, err := o.query(ctx, q, at)
		if err != nil {
			return nil, err
		}
		r, err := parseEnvelope(body, "vector", "an instant query")
		if err != nil {
			return nil, fmt.Errorf("query %s to Prometheus at %s: %w", q, o.URL, err)
		}
		by := map[string]float64{}
		for _, s := range r.Data.Result {
			p, err := parsePoint(s.Value)
			if err != nil || math.IsNaN(p.V) || math.IsInf(p.V, 0) || p.V < 0 {
				return nil, fmt.Errorf("query %s to Prometheus at %s: series %s has no count", q, o.URL, fmtLabels(s.Metric))
			}
			by[s.Metric["step"]] = p.V
		}
		out := make([]int64, len(o.Steps))
		for i, step := range o.Steps {
			n, ok := by[step]
			if !ok {
				return nil, fmt.Errorf("no %s of step %q of pipeline %q in Prometheus at %s (a router older than fan-out counting?)", metric, step, o.Pipeline, o.URL)
			}
			out[i] = int64(n)
		}
		return out, nil
	}
	if reached, err = read(StepRequestsMetric); err != nil {
		return nil, nil, err
	}
	if rows, err = read(StepRowsMetric); err != nil {
		return nil, nil, err
	}
	return reached, rows, nil
}
