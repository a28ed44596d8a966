package experiment

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/ipa-serving/ipa/orchestrator/sim"
	"github.com/ipa-serving/ipa/profiles"
)

// minEngineSamples is the fewest batches a calibration takes a variant's
// engine times from: below it, a 99th percentile is one or two batches.
const minEngineSamples = 100

// probeRequests is the fewest requests a probe (File.Probe) may send a
// variant: a Poisson count of mean 160 falls below minEngineSamples about
// once in a million probes.
const probeRequests = 160

// snapshot is what calibration snapshots (ipa local's /metrics after a
// load: a real run's metrics.txt) hold of one pipeline: the router's glue
// times and the stages' engine times, as histograms.
type snapshot struct {
	glue    histogram
	engines map[engineKey]histogram
	// totals are the sums and counts of the series probeHop takes means
	// of, by family and step ("" for the glue).
	totals map[totalKey]total
}

// totalKey names a series summed over its other labels: a family (one of
// the means below) and the pipeline's step.
type totalKey struct{ family, step string }

// total is a series' sum and count; for the engine, weighted by rows (a
// row waits its whole batch: Σ sum × rows and Σ count × rows).
type total struct{ sum, n float64 }

// mean is the total's sum over its count; ok is false without samples.
func (t total) mean() (float64, bool) {
	if t.n <= 0 {
		return 0, false
	}
	return t.sum / t.n, true
}

// The families whose _sum and _count a snapshot is read for (probeHop).
const (
	glueFamily        = "ipa_router_glue_seconds"
	routerStageFamily = "ipa_router_stage_duration_seconds"
	queueWaitFamily   = "ipa_stage_queue_wait_seconds"
	engineFamily      = "ipa_stage_batch_engine_seconds"
)

// engineKey names one series of engine times: the profile's stage, the
// variant, cores per replica and rows per batch.
type engineKey struct {
	stage, variant string
	cores, rows    int
}

func newSnapshot() *snapshot {
	return &snapshot{glue: histogram{}, engines: map[engineKey]histogram{}, totals: map[totalKey]total{}}
}

// Histograms a snapshot is read for.
const (
	glueBuckets   = "ipa_router_glue_seconds_bucket"
	engineBuckets = "ipa_stage_batch_engine_seconds_bucket"
)

// read adds the buckets of pipe's glue histogram (ipa_router_glue_seconds)
// and of its steps' engine histograms (ipa_stage_batch_engine_seconds) in
// the snapshot at path. A snapshot with neither is an error.
func (s *snapshot) read(path string, pipe sim.Pipeline) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("calibration: %w", err)
	}
	found := false
	for line := range strings.Lines(string(b)) {
		name, rest, ok := strings.Cut(line, "{")
		if ok && s.addTotal(name, rest, pipe) {
			continue
		}
		if !ok || (name != glueBuckets && name != engineBuckets) {
			continue
		}
		labels, count, err := parseSample(rest)
		if err != nil {
			return fmt.Errorf("calibration %s: %w: %q", path, err, strings.TrimSpace(line))
		}
		rng, err := parseRange(labels["vmrange"])
		if err != nil {
			return fmt.Errorf("calibration %s: %w: %q", path, err, strings.TrimSpace(line))
		}
		if name == glueBuckets {
			if labels["pipeline"] == pipe.Name {
				s.glue[rng] += count
				found = true
			}
			continue
		}
		i := slices.IndexFunc(pipe.Steps, func(st sim.Step) bool { return st.Name == labels["stage"] })
		cores, err1 := strconv.Atoi(labels["cores"])
		rows, err2 := strconv.Atoi(labels["rows"])
		if i < 0 || err1 != nil || err2 != nil || cores < 1 || rows < 1 {
			continue // another pipeline's stage, or no batch shape
		}
		k := engineKey{cmp.Or(pipe.Steps[i].Profile, pipe.Steps[i].Name), labels["variant"], cores, rows}
		if s.engines[k] == nil {
			s.engines[k] = histogram{}
		}
		s.engines[k][rng] += count
		found = true
	}
	if !found {
		return fmt.Errorf("calibration %s: no ipa_router_glue_seconds or ipa_stage_batch_engine_seconds of pipeline %q (a snapshot of ipa local's /metrics after a load)", path, pipe.Name)
	}
	return nil
}

// addTotal adds a _sum or _count sample of the families probeHop uses to
// s.totals (rest is what follows the sample's brace), reporting whether
// the sample was one (a malformed one is left to be skipped).
func (s *snapshot) addTotal(name, rest string, pipe sim.Pipeline) bool {
	family, isSum := strings.CutSuffix(name, "_sum")
	if !isSum {
		var isCount bool
		if family, isCount = strings.CutSuffix(name, "_count"); !isCount {
			return false
		}
	}
	switch family {
	case glueFamily, routerStageFamily, queueWaitFamily, engineFamily:
	default:
		return false
	}
	labels, x, err := parseSample(rest)
	if err != nil {
		return true
	}
	if p, ok := labels["pipeline"]; ok && p != pipe.Name {
		return true // another pipeline's
	}
	k := totalKey{family: family, step: labels["stage"]} // the glue has no stage label: ""
	if family == engineFamily {
		rows, err := strconv.Atoi(labels["rows"])
		if err != nil || rows < 1 {
			return true
		}
		x *= float64(rows)
	}
	t := s.totals[k]
	if isSum {
		t.sum += x
	} else {
		t.n += x
	}
	s.totals[k] = t
	return true
}

// parseSample reads `k="v",…} count` (what follows a sample's name and
// its brace).
func parseSample(s string) (map[string]string, float64, error) {
	labels := map[string]string{}
	for {
		k, rest, ok := strings.Cut(s, `="`)
		if !ok || k == "" {
			return nil, 0, errors.New("malformed labels")
		}
		v, rest, ok := strings.Cut(rest, `"`)
		if !ok {
			return nil, 0, errors.New("malformed labels")
		}
		labels[k] = v
		switch {
		case strings.HasPrefix(rest, ","):
			s = rest[1:]
			continue
		case strings.HasPrefix(rest, "}"):
			n, err := strconv.ParseFloat(strings.TrimSpace(rest[1:]), 64)
			if err != nil || !(n >= 0) || math.IsInf(n, 0) {
				return nil, 0, errors.New("malformed count")
			}
			return labels, n, nil
		}
		return nil, 0, errors.New("malformed labels")
	}
}

// parseRange reads a vmrange label: "1.000e-02...1.136e-02".
func parseRange(s string) ([2]float64, error) {
	lo, hi, ok := strings.Cut(s, "...")
	l, err1 := strconv.ParseFloat(lo, 64)
	u, err2 := strconv.ParseFloat(hi, 64)
	if !ok || err1 != nil || err2 != nil || !(l >= 0 && u > l) || math.IsInf(u, 0) {
		return [2]float64{}, errors.New("malformed bucket range")
	}
	return [2]float64{l, u}, nil
}

// histogram sums VictoriaMetrics' vmrange buckets: count by [low, high).
type histogram map[[2]float64]float64

// quantiles returns the median and the 99th percentile, each interpolated
// geometrically within its bucket, and the number of samples; ok is false
// without samples.
func (h histogram) quantiles() (p50, p99, n float64, ok bool) {
	type bucket struct{ lo, hi, n float64 }
	var bs []bucket
	for k, c := range h {
		bs = append(bs, bucket{k[0], k[1], c})
		n += c
	}
	if n == 0 {
		return 0, 0, 0, false
	}
	slices.SortFunc(bs, func(a, b bucket) int { return cmp.Compare(a.lo, b.lo) })
	q := func(p float64) float64 {
		want, cum := p*n, 0.0
		for _, b := range bs {
			if b.n > 0 && cum+b.n >= want {
				f := (want - cum) / b.n
				if b.lo == 0 {
					return b.hi * f
				}
				return b.lo * math.Pow(b.hi/b.lo, f)
			}
			cum += b.n
		}
		return bs[len(bs)-1].hi
	}
	return q(0.5), q(0.99), n, true
}

// engineSpeeds returns, per (stage, variant) the snapshot measured in at
// least minEngineSamples batches of some shape, how many times the
// profile's median its batches took in serving (the median over its
// shapes): a factor that outranks the decision logs' corrections, whose
// means count every batch slowed by what ran beside it.
func (s *snapshot) engineSpeeds(prof *profiles.Profile) map[[2]string]float64 {
	ratios := map[[2]string][]float64{}
	for k, h := range s.engines {
		p50, _, n, ok := h.quantiles()
		if !ok || n < minEngineSamples {
			continue
		}
		pt, err := prof.Lookup(k.stage, k.variant, k.cores, k.rows)
		if err != nil || pt.LatencyP50 <= 0 {
			continue
		}
		v := [2]string{k.stage, k.variant}
		ratios[v] = append(ratios[v], p50/pt.LatencyP50)
	}
	out := map[[2]string]float64{}
	for v, r := range ratios {
		slices.Sort(r)
		out[v] = r[len(r)/2]
	}
	return out
}

// setEngineTimes sets, in truth (a calibrated copy of a profile), each
// measured point that the snapshot measured in at least minEngineSamples
// batches to the median and 99th percentile it measured in serving.
func (s *snapshot) setEngineTimes(truth *profiles.Profile) {
	for k, h := range s.engines {
		p50, p99, n, ok := h.quantiles()
		if !ok || n < minEngineSamples || p50 <= 0 {
			continue
		}
		v := truth.Variant(k.stage, k.variant)
		if v == nil {
			continue
		}
		c := v.Config(k.cores)
		if c == nil {
			continue
		}
		for i := range c.Points {
			if pt := &c.Points[i]; pt.Batch == k.rows {
				pt.LatencyP50, pt.LatencyP99 = p50, max(p99, p50)
				pt.Throughput = float64(k.rows) / p50
			}
		}
	}
}
