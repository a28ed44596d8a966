package optimizer

import (
	"errors"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/profiles"
)

// decimalProblem is a pipeline of one-variant, one-core, batch-1 stages
// with the given p99 latencies and per-replica throughput h, at load λ and
// the given SLA.
func decimalProblem(lats []float64, h, lambda float64, sla time.Duration) *Problem {
	p := &Problem{Profiles: &profiles.Profile{Version: profiles.Version}, ArrivalRate: lambda, SLA: sla, Alpha: 1, Beta: 0.1}
	for i, l := range lats {
		name := string(rune('a' + i))
		p.Profiles.Stages = append(p.Profiles.Stages, profiles.StageProfile{Name: name, Variants: []profiles.VariantProfile{{Name: "v",
			Configs: []profiles.Config{{Cores: 1, Points: []profiles.Point{{Batch: 1, LatencyP50: l, LatencyP99: l, Throughput: h}}}}}}})
		p.Stages = append(p.Stages, Step{Name: name, Variants: []Variant{{Name: "v", Accuracy: 50}}})
	}
	return p
}

// TestDecimalBoundariesAreFeasible: 0.1 s + 0.2 s meets an SLA of 0.3 s,
// and λ = 0.9/s over 0.3/s per replica needs 3 replicas, in every solver
// and in Check; a budget or load beyond Tolerance is still refused.
func TestDecimalBoundariesAreFeasible(t *testing.T) {
	a, b, h, three := 0.1, 0.2, 0.3, 3.0 // variables: Go's constant arithmetic is exact
	if a+b <= 0.3 || three*h >= 0.9 {
		t.Fatal("the float64 arithmetic of this test's premise changed")
	}
	for _, s := range solvers() {
		p := decimalProblem([]float64{0.1, 0.2}, 0.3, 0.9, 300*time.Millisecond)
		pl, err := Solve(p, s, nil)
		if err != nil {
			t.Fatalf("%s: 0.1 s + 0.2 s within 0.3 s at 0.9/s over 0.3/s: %v", s.Name(), err)
		}
		for _, st := range pl.Stages {
			if st.Replicas != 3 {
				t.Fatalf("%s: stage %s has %d replicas, want 3 (3 x 0.3/s carries 0.9/s)", s.Name(), st.Stage, st.Replicas)
			}
		}
		if err := Check(p, pl); err != nil {
			t.Fatalf("%s: Check: %v", s.Name(), err)
		}
		// One nanosecond under 0.3 s is 3.3e-9 relative: beyond Tolerance.
		p.SLA -= time.Nanosecond
		if _, err := Solve(p, s, nil); !errors.Is(err, ErrInfeasible) {
			t.Fatalf("%s: SLA 0.299999999 s: %v, want infeasible", s.Name(), err)
		}
	}
	// Check agrees with the solvers on a plan just over the boundary.
	p := decimalProblem([]float64{0.1, 0.2}, 0.3, 0.9, 300*time.Millisecond)
	pl, err := Solve(p, Exact{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.ArrivalRate = 0.9 * (1 + 2*Tolerance)
	if err := Check(p, pl); err == nil {
		t.Fatal("Check accepts 3 x 0.3/s for λ 2e-9 above 0.9/s")
	}
}

func TestToleranceComparisons(t *testing.T) {
	a, b, h, three := 0.1, 0.2, 0.3, 3.0
	for _, c := range []struct {
		lat, budget float64
		want        bool
	}{{a + b, 0.3, true}, {0.3 * (1 + Tolerance), 0.3, true}, {0.3 * (1 + 2*Tolerance), 0.3, false}, {1e-3, 1e-3, true}, {2e-3, 1e-3, false}} {
		if got := WithinBudget(c.lat, c.budget); got != c.want {
			t.Errorf("WithinBudget(%v, %v) = %v", c.lat, c.budget, got)
		}
	}
	for _, c := range []struct {
		capacity, lambda float64
		want             bool
	}{{three * h, 0.9, true}, {0, 0, true}, {0.9 * (1 - 2*Tolerance), 0.9, false}, {1, 0, true}} {
		if got := Carries(c.capacity, c.lambda); got != c.want {
			t.Errorf("Carries(%v, %v) = %v", c.capacity, c.lambda, got)
		}
	}
}
