package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/ipa-serving/ipa/profiles"
)

// z99 is the 0.99 quantile of the standard normal distribution.
const z99 = 2.3263478740408408

// serviceKey names one service-time distribution.
type serviceKey struct {
	stage, variant string
	cores, rows    int
}

// logNormal is a batch's service time: median·exp(σ·N(0,1)).
type logNormal struct {
	median, sigma float64 // seconds
}

func (d logNormal) draw(rng *rand.Rand) time.Duration {
	x := d.median
	if d.sigma > 0 {
		x *= math.Exp(d.sigma * rng.NormFloat64())
	}
	return time.Duration(x * 1e9)
}

// fitLogNormal fits a log-normal to a median and a 99th percentile.
func fitLogNormal(p50, p99 float64) logNormal {
	d := logNormal{median: p50}
	if p99 > p50 && p50 > 0 {
		d.sigma = math.Log(p99/p50) / z99
	}
	return d
}

// services caches the distributions of a profile.
type services struct {
	prof  *profiles.Profile
	cache map[serviceKey]logNormal
}

// dist returns the service-time distribution of a batch of rows on one
// replica of stage's variant with cores. Batch sizes inside the measured
// range are looked up (estimated as the optimizer estimates them); beyond
// it, the largest measured batch's time grows in proportion to rows. Cores
// the profile did not measure take the nearest measured count's times
// scaled by measured/actual cores.
func (s *services) dist(stage, variant string, cores, rows int) (logNormal, error) {
	k := serviceKey{stage, variant, cores, rows}
	if d, ok := s.cache[k]; ok {
		return d, nil
	}
	vp := s.prof.Variant(stage, variant)
	if vp == nil {
		return logNormal{}, fmt.Errorf("the profile has no variant %q of stage %q", variant, stage)
	}
	measured := vp.Cores()
	c := measured[0]
	for _, m := range measured {
		if abs(m-cores) < abs(c-cores) {
			c = m
		}
	}
	cfg := vp.Config(c)
	batches := cfg.Batches()
	b := min(max(rows, batches[0]), batches[len(batches)-1])
	pt, err := cfg.Lookup(b)
	if err != nil {
		return logNormal{}, fmt.Errorf("stage %q variant %q: %w", stage, variant, err)
	}
	scale := float64(rows) / float64(b) * float64(c) / float64(cores)
	if rows < b { // below the smallest measured batch: no faster than it
		scale = float64(c) / float64(cores)
	}
	d := fitLogNormal(pt.LatencyP50*scale, pt.LatencyP99*scale)
	s.cache[k] = d
	return d, nil
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
