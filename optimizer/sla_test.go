package optimizer

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestDeriveSLAIsTheOriginals25TimesMeanBatch1P99(t *testing.T) {
	p := tiny()
	// Stage a: mean(0.1, 0.4) = 0.25; stage b: 0.05. 25 x 0.3 = 7.5 s.
	got, err := DeriveSLA(p.Profiles, p.Stages, DefaultSLAFactor)
	if err != nil || got != 7500*time.Millisecond {
		t.Fatalf("DeriveSLA = %v, %v; want 7.5", got, err)
	}
	// The largest core count and the smallest batch are the ones used.
	q := SyntheticProblem(1, 2)
	got, _ = DeriveSLA(q.Profiles, q.Stages, 1)
	want := 5 * (q.Profiles.Variant("s0", "v0").Config(8).Points[0].LatencyP99 + q.Profiles.Variant("s0", "v1").Config(8).Points[0].LatencyP99) / 2
	if math.Abs(got.Seconds()-want) > 1e-9 {
		t.Fatalf("DeriveSLA = %v, want %v", got, want)
	}
	if _, err := DeriveSLA(p.Profiles, p.Stages, 0); err == nil || !strings.Contains(err.Error(), "positive") {
		t.Fatalf("factor 0: %v", err)
	}
}
