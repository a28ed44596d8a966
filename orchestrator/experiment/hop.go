package experiment

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ipa-serving/ipa/orchestrator/sim"
)

// probeHop returns the time a request of a probe spent between processes
// (sim.Options.HopCost): the mean latency its client measured (the probe's
// load-report.json, beside the snapshot at path) less what the simulator
// models, from the snapshot's sums: the router's glue, and at each step the
// stage's queue wait and its engine time per row (each request waits its
// whole batch). What is left is the uploads, the tensors' trips to the
// stages, the answers and the router's work outside its glue.
//
// A step whose requests send it more than one item (a fan-out: the stage
// counts more waits than the router counts steps) is taken as the router
// saw it (its level's wall time, items in parallel): its own hop is not
// told apart. ok is false when the probe answered fewer than
// minEngineSamples requests, or has no load report (a snapshot on its own).
func probeHop(path string, pipe sim.Pipeline) (hop time.Duration, ok bool, err error) {
	var rep struct {
		Succeeded int `json:"succeeded"`
		Latency   struct {
			Mean float64 `json:"mean"`
		} `json:"latency_seconds"`
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(path), LoadReportFile))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil // a snapshot on its own
	} else if err != nil {
		return 0, false, fmt.Errorf("probe: %w", err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		return 0, false, fmt.Errorf("probe %s: %w", filepath.Join(filepath.Dir(path), LoadReportFile), err)
	}
	if rep.Succeeded < minEngineSamples {
		return 0, false, nil
	}
	m, err := readSums(path)
	if err != nil {
		return 0, false, err
	}
	glue, ok := m.mean(fmt.Sprintf(`ipa_router_glue_seconds{pipeline=%q}`, pipe.Name))
	if !ok {
		return 0, false, fmt.Errorf("probe %s: no ipa_router_glue_seconds of pipeline %q", path, pipe.Name)
	}
	left := rep.Latency.Mean - glue
	for _, st := range pipe.Steps {
		routerKey := fmt.Sprintf(`ipa_router_stage_duration_seconds{pipeline=%q,stage=%q}`, pipe.Name, st.Name)
		routerSec, ok := m.mean(routerKey)
		if !ok {
			return 0, false, fmt.Errorf("probe %s: no ipa_router_stage_duration_seconds of step %q", path, st.Name)
		}
		waitKey := fmt.Sprintf(`ipa_stage_queue_wait_seconds{stage=%q}`, st.Name)
		wait, ok := m.mean(waitKey)
		engine, rows := m.engineRow(st.Name)
		if !ok || rows == 0 || m.count[waitKey] != m.count[routerKey] {
			left -= routerSec // a fan-out, or a stage the snapshot does not have
			continue
		}
		left -= wait + engine
	}
	return time.Duration(max(left, 0) * float64(time.Second)), true, nil
}

// sums are the _sum and _count samples of a metrics snapshot, by series
// (the name without its suffix, with its labels as written).
type sums struct{ sum, count map[string]float64 }

// readSums reads the _sum and _count samples of the snapshot at path.
func readSums(path string) (sums, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return sums{}, fmt.Errorf("probe: %w", err)
	}
	m := sums{sum: map[string]float64{}, count: map[string]float64{}}
	for line := range strings.Lines(string(b)) {
		series, value, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok || strings.HasPrefix(series, "#") {
			continue
		}
		name, labels, _ := strings.Cut(series, "{")
		var into map[string]float64
		switch {
		case strings.HasSuffix(name, "_sum"):
			into, name = m.sum, strings.TrimSuffix(name, "_sum")
		case strings.HasSuffix(name, "_count"):
			into, name = m.count, strings.TrimSuffix(name, "_count")
		default:
			continue
		}
		var x float64
		if _, err := fmt.Sscan(value, &x); err != nil {
			return sums{}, fmt.Errorf("probe %s: malformed sample %q", path, strings.TrimSpace(line))
		}
		if labels != "" {
			name += "{" + labels
		}
		into[name] += x
	}
	return m, nil
}

// mean is series' sum over its count; ok is false without samples.
func (m sums) mean(series string) (float64, bool) {
	n := m.count[series]
	if n <= 0 {
		return 0, false
	}
	return m.sum[series] / n, true
}

// engineRow is stage's engine time per row, as each row waits its whole
// batch (ipa_stage_batch_engine_seconds by rows: Σ sum × rows ÷ Σ count ×
// rows), and the rows counted.
func (m sums) engineRow(stage string) (seconds, rows float64) {
	prefix := fmt.Sprintf(`ipa_stage_batch_engine_seconds{stage=%q,`, stage)
	var weighted float64
	for series, n := range m.count {
		if !strings.HasPrefix(series, prefix) {
			continue
		}
		_, r, ok := strings.Cut(series, `,rows="`)
		r, _, _ = strings.Cut(r, `"`)
		k, err := strconv.Atoi(r)
		if !ok || err != nil || k < 1 {
			continue
		}
		weighted += m.sum[series] * float64(k)
		rows += n * float64(k)
	}
	if rows == 0 {
		return 0, 0
	}
	return weighted / rows, rows
}

// medianHop is the median of the probes' hops (0 without any).
func medianHop(h []time.Duration) time.Duration {
	if len(h) == 0 {
		return 0
	}
	slices.Sort(h)
	return h[len(h)/2]
}
