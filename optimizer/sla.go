package optimizer

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/ipa-serving/ipa/profiles"
)

// DefaultSLAFactor is IPA's sla_factor, the same in every config (IPA.md §2.7).
const DefaultSLAFactor = 5

// DeriveSLA computes the end-to-end SLA the way the paper did
// (Task.sla and Pipeline.sla, IPA.md §2.2):
//
//	SLA_stage(s) = 5 · mean_{v ∈ V_s} ( factor · L99[s, v, c_last(v), b_min(v)] )
//	SLA          = Σ_s SLA_stage(s)
//
// L99 is the p99 latency of the smallest profiled batch size of variant v at
// c_last(v), the last core count of the variant's profile. The original took
// the last CSV entry, which in the paper's series is the largest core count
// (its comment says "minimum resource" but the code takes the last); the
// profile format sorts configs by cores, so here it is always the largest.
// The 5 is hard-coded in the original besides factor (sla_factor, 5 in every
// config, DefaultSLAFactor), so with the default the stage SLA is 25 × the
// mean batch-1 p99 of its variants at their largest core count. The
// original's latency_margin is not applied: profiles here are measured to
// saturation, and a margin, if wanted, belongs in the factor. Step.Variants
// and Step.Profile choose the variants and profile stage; Variant.Cores is
// ignored, as the original ignored the base allocation here.
func DeriveSLA(prof *profiles.Profile, stages []Step, factor float64) (time.Duration, error) {
	if prof == nil || len(stages) == 0 {
		return 0, errors.New("need a profile and at least one stage")
	}
	if !(factor > 0) || math.IsInf(factor, 0) {
		return 0, fmt.Errorf("sla factor %v must be positive and finite", factor)
	}
	total := 0.0
	for _, st := range stages {
		if len(st.Variants) == 0 {
			return 0, fmt.Errorf("stage %q offers no variants", st.Name)
		}
		sum := 0.0
		for _, v := range st.Variants {
			vp := prof.Variant(st.profileName(), v.Name)
			if vp == nil {
				return 0, fmt.Errorf("stage %q variant %q is not in the profile", st.Name, v.Name)
			}
			last := vp.Configs[len(vp.Configs)-1]
			sum += factor * last.Points[0].LatencyP99
		}
		total += 5 * sum / float64(len(st.Variants))
	}
	return seconds(total), nil
}
