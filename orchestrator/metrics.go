package orchestrator

import (
	"fmt"
	"sync"

	"github.com/VictoriaMetrics/metrics"

	"github.com/ipa-serving/ipa/optimizer"
)

// metricsSet holds the controller's ipa_controller_* metrics in their own
// set (several controllers can share a process, tests start clean).
type metricsSet struct {
	set           *metrics.Set
	solveDur      *metrics.PrometheusHistogram
	observeErrors *metrics.Counter

	mu        sync.Mutex // guards observed, predicted, replicas, batch, factor, evidence
	observed  float64
	predicted float64
	replicas  map[string]float64
	batch     map[string]float64
	factor    map[[2]string]float64 // (step, variant)
	evidence  map[[2]string]float64
}

// newMetrics registers the loop's metrics; with correct, the profile
// correction of every offered variant too.
func newMetrics(stages []optimizer.Step, correct bool) *metricsSet {
	m := &metricsSet{set: metrics.NewSet(), replicas: map[string]float64{}, batch: map[string]float64{},
		factor: map[[2]string]float64{}, evidence: map[[2]string]float64{}}
	m.solveDur = m.set.NewPrometheusHistogram("ipa_controller_solve_duration_seconds")
	m.observeErrors = m.set.NewCounter("ipa_controller_observe_errors_total")
	for _, r := range []string{"optimal", "infeasible", "error"} {
		m.set.NewCounter(fmt.Sprintf(`ipa_controller_solves_total{result=%q}`, r))
	}
	m.set.NewGauge("ipa_controller_observed_rate", func() float64 { m.mu.Lock(); defer m.mu.Unlock(); return m.observed })
	m.set.NewGauge("ipa_controller_predicted_rate", func() float64 { m.mu.Lock(); defer m.mu.Unlock(); return m.predicted })
	for _, st := range stages {
		name := st.Name
		m.set.NewGauge(fmt.Sprintf(`ipa_controller_plan_replicas{stage=%q}`, name), func() float64 { m.mu.Lock(); defer m.mu.Unlock(); return m.replicas[name] })
		m.set.NewGauge(fmt.Sprintf(`ipa_controller_plan_batch{stage=%q}`, name), func() float64 { m.mu.Lock(); defer m.mu.Unlock(); return m.batch[name] })
		for _, v := range st.Variants {
			if !correct {
				break
			}
			k := [2]string{name, v.Name}
			m.factor[k] = 1
			m.set.NewGauge(fmt.Sprintf(`ipa_controller_profile_correction{stage=%q,variant=%q}`, name, v.Name), func() float64 { m.mu.Lock(); defer m.mu.Unlock(); return m.factor[k] })
			m.set.NewGauge(fmt.Sprintf(`ipa_controller_profile_evidence_batches{stage=%q,variant=%q}`, name, v.Name), func() float64 { m.mu.Lock(); defer m.mu.Unlock(); return m.evidence[k] })
		}
	}
	metrics.RegisterSet(m.set)
	return m
}

func (m *metricsSet) solves(result string) {
	m.set.GetOrCreateCounter(fmt.Sprintf(`ipa_controller_solves_total{result=%q}`, result)).Inc()
}

func (m *metricsSet) update(d *Decision) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.observed, m.predicted = d.Observed, d.Predicted
	if d.Plan != nil {
		for _, sp := range d.Plan.Stages {
			m.replicas[sp.Stage], m.batch[sp.Stage] = float64(sp.Replicas), float64(sp.Batch)
		}
	}
}

// correction records the factor a step's variant is planned with and the
// batches behind it.
func (m *metricsSet) correction(stage, variant string, factor, evidence float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := [2]string{stage, variant}
	m.factor[k], m.evidence[k] = factor, evidence
}

func (m *metricsSet) close() { metrics.UnregisterSet(m.set, true) }
