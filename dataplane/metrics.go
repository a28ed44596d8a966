package dataplane

import (
	"fmt"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// Request outcomes, the values of the outcome label of ipa_stage_requests_total.
const (
	outcomeOK          = "ok"
	outcomeBadRequest  = "bad_request"
	outcomeQueueFull   = "queue_full"
	outcomeExpired     = "expired"
	outcomeCannotMeet  = "cannot_meet_deadline"
	outcomeUnavailable = "unavailable"
	outcomeError       = "error"
)

var outcomes = []string{outcomeOK, outcomeBadRequest, outcomeQueueFull, outcomeExpired, outcomeCannotMeet, outcomeUnavailable, outcomeError}

// batchBuckets are the upper bounds of ipa_stage_batch_size.
var batchBuckets = []float64{1, 2, 4, 8, 16, 32, 64, 128}

// stageMetrics are one stage's metrics, in their own metrics.Set so that
// several stages can live in one process (ipa local) and tests start clean.
// Histograms are Prometheus histograms because Prometheus computes quantiles
// from them (histogram_quantile); see the README's metrics table.
type stageMetrics struct {
	set       *metrics.Set
	requests  map[string]*metrics.Counter
	refusals  map[string]*metrics.Counter // by reason (admission.go)
	late      *metrics.Counter            // answers computed after their deadline
	queueWait *metrics.PrometheusHistogram
	batchSize *metrics.PrometheusHistogram
	reconfigs *metrics.Counter
	reconfDur *metrics.PrometheusHistogram

	// infer and errors are filled in newStageMetrics and read-only after.
	infer  map[string]*metrics.PrometheusHistogram
	errors map[string]*metrics.Counter
	obs    observed // batches and engine time per variant, cores and rows (observed.go)
}

func newStageMetrics(s *Stage) *stageMetrics {
	name := s.meta.Name
	set := metrics.NewSet()
	m := &stageMetrics{set: set, requests: map[string]*metrics.Counter{}, refusals: map[string]*metrics.Counter{},
		infer: map[string]*metrics.PrometheusHistogram{}, errors: map[string]*metrics.Counter{}}
	m.obs.set, m.obs.stage = set, name
	l := fmt.Sprintf(`{stage=%q}`, name)
	for _, o := range outcomes {
		m.requests[o] = set.NewCounter(fmt.Sprintf(`ipa_stage_requests_total{stage=%q,outcome=%q}`, name, o))
	}
	for _, r := range reasons {
		m.refusals[r] = set.NewCounter(fmt.Sprintf(`ipa_stage_refused_total{stage=%q,reason=%q}`, name, r))
	}
	set.NewGauge("ipa_stage_admission_wait_seconds"+l, s.predictedWait)
	m.late = set.NewCounter("ipa_stage_answered_late_total" + l)
	m.queueWait = set.NewPrometheusHistogram("ipa_stage_queue_wait_seconds" + l)
	m.batchSize = set.NewPrometheusHistogramExt("ipa_stage_batch_size"+l, batchBuckets)
	m.reconfigs = set.NewCounter("ipa_stage_reconfigurations_total" + l)
	m.reconfDur = set.NewPrometheusHistogram("ipa_stage_reconfigure_duration_seconds" + l)
	set.NewGauge("ipa_stage_queue_length"+l, func() float64 { return float64(s.b.Len()) })
	set.NewGauge("ipa_stage_replicas"+l, func() float64 { return float64(s.Config().Replicas) })
	set.NewGauge("ipa_stage_cores_per_replica"+l, func() float64 { return float64(s.Config().Cores) })
	set.NewGauge("ipa_stage_max_batch"+l, func() float64 { return float64(s.Config().MaxBatch) })
	set.NewGauge("ipa_stage_max_wait_seconds"+l, func() float64 { return s.Config().MaxWait.Seconds() })
	set.NewGauge("ipa_stage_ready"+l, func() float64 { return b2f(s.Ready()) })
	for _, v := range s.meta.Variants {
		vn := v.Name
		m.infer[vn] = set.NewPrometheusHistogram(fmt.Sprintf(`ipa_stage_inference_duration_seconds{stage=%q,variant=%q}`, name, vn))
		m.errors[vn] = set.NewCounter(fmt.Sprintf(`ipa_stage_engine_errors_total{stage=%q,variant=%q}`, name, vn))
		set.NewGauge(fmt.Sprintf(`ipa_stage_active_variant{stage=%q,variant=%q}`, name, vn), func() float64 {
			return b2f(s.Config().Variant == vn)
		})
	}
	metrics.RegisterSet(set)
	return m
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (m *stageMetrics) outcome(o string) { m.requests[o].Inc() }

func (m *stageMetrics) refused(reason string) { m.refusals[reason].Inc() }

func (m *stageMetrics) batch(variant string, rows int, d time.Duration) {
	m.batchSize.Update(float64(rows))
	if h := m.infer[variant]; h != nil {
		h.Update(d.Seconds())
	}
}

func (m *stageMetrics) engineError(variant string) {
	if c := m.errors[variant]; c != nil {
		c.Inc()
	}
}

func (m *stageMetrics) reconfigured(d time.Duration) {
	m.reconfigs.Inc()
	m.reconfDur.Update(d.Seconds())
}

func (m *stageMetrics) close() { metrics.UnregisterSet(m.set, true) }
