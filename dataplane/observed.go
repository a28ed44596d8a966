package dataplane

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// BatchTotal is what a stage computed since it started with one variant,
// cores per replica and rows per batch: the batches and their engine time
// (the time in the model, as ipa_stage_inference_duration_seconds measures
// it). The controller compares the mean with the profile to correct it
// (orchestrator.Corrector).
type BatchTotal struct {
	Variant string
	Cores   int
	Rows    int
	Count   uint64
	Seconds float64
}

// observed keeps a stage's BatchTotals, exposed on /metrics as the
// counter pair ipa_stage_batches_total and
// ipa_stage_batch_engine_seconds_total{stage,variant,cores,rows}, for a
// remote controller through Prometheus, and the histogram
// ipa_stage_batch_engine_seconds of the same labels. A series is made on its first batch
// (the only allocation); after that recording a batch allocates nothing.
type observed struct {
	mu    sync.Mutex // guards cells and makes each pair of counters move together
	set   *metrics.Set
	stage string
	cells map[observedKey]*observedCell
}

type observedKey struct {
	variant     string
	cores, rows int
}

type observedCell struct {
	count   *metrics.Counter
	seconds *metrics.FloatCounter
	// times is the distribution of the same batches' engine times
	// (ipa_stage_batch_engine_seconds, vmrange buckets): what a
	// calibration of the simulator takes a variant's speed and spread in
	// serving from.
	times *metrics.Histogram
}

// observe records one successful batch of rows computed in d on a replica
// with cores threads.
func (m *stageMetrics) observe(variant string, cores, rows int, d time.Duration) {
	o := &m.obs
	o.mu.Lock()
	defer o.mu.Unlock()
	k := observedKey{variant, cores, rows}
	c := o.cells[k]
	if c == nil {
		if o.cells == nil {
			o.cells = map[observedKey]*observedCell{}
		}
		l := fmt.Sprintf(`{stage=%q,variant=%q,cores="%d",rows="%d"}`, o.stage, variant, cores, rows)
		c = &observedCell{count: o.set.GetOrCreateCounter("ipa_stage_batches_total" + l),
			seconds: o.set.GetOrCreateFloatCounter("ipa_stage_batch_engine_seconds_total" + l),
			times:   o.set.GetOrCreateHistogram("ipa_stage_batch_engine_seconds" + l)}
		o.cells[k] = c
	}
	c.count.Inc()
	c.seconds.Add(d.Seconds())
	c.times.Update(d.Seconds())
}

// BatchTotals returns what the stage computed since it started, per
// variant, cores and rows, in that order.
func (s *Stage) BatchTotals() []BatchTotal {
	o := &s.m.obs
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]BatchTotal, 0, len(o.cells))
	for k, c := range o.cells {
		out = append(out, BatchTotal{Variant: k.variant, Cores: k.cores, Rows: k.rows, Count: c.count.Get(), Seconds: c.seconds.Get()})
	}
	slices.SortFunc(out, func(a, b BatchTotal) int {
		return cmp.Or(strings.Compare(a.Variant, b.Variant), cmp.Compare(a.Cores, b.Cores), cmp.Compare(a.Rows, b.Rows))
	})
	return out
}
