package optimizer

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestExactRefusesASearchTooLargeForIt: 2,000 stages of 2 variants ran for
// minutes at 2 GB; the metered search gives up within seconds with
// ErrTooLarge and points to HiGHS. (In sum mode the fronts of identical
// stages stay small and it solves the same shape.)
func TestExactRefusesASearchTooLargeForIt(t *testing.T) {
	for _, mode := range []AccuracyMode{Multiply} {
		// 2,000 copies of SyntheticProblem's first stage (later ones grow
		// slower than the SLA's 0.3 s per stage).
		p := SyntheticProblem(1, 2)
		p.Accuracy, p.SLA = mode, 2000*p.SLA
		for i := 1; i < 2000; i++ {
			p.Stages = append(p.Stages, Step{Name: fmt.Sprintf("c%d", i), Profile: "s0", Variants: p.Stages[0].Variants})
		}
		t0 := time.Now()
		_, err := Solve(p, Exact{}, nil)
		if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "--solver highs") {
			t.Fatalf("%s: err = %v, want ErrTooLarge suggesting --solver highs", mode, err)
		}
		t.Logf("%s: refused after %s: %v", mode, time.Since(t0), err)
	}
}
