package highs

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipa-serving/ipa/optimizer"
)

// BenchmarkSolve runs optimizer.BenchCases with HiGHS next to the exact
// solver, its baseline in the same invocation (STYLE §3.8 bullet 30).
func BenchmarkSolve(b *testing.B) {
	for _, s := range []optimizer.Solver{Solver{}, optimizer.Exact{}} {
		for _, c := range optimizer.BenchCases() {
			b.Run(s.Name()+"/"+c.Name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := optimizer.Solve(c.Problem, s, nil); err != nil && !errors.Is(err, optimizer.ErrInfeasible) {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkSolvePaperPipelines times optimizer's golden problems (the
// paper's five pipelines and the video baselines) with HiGHS and the exact
// solver.
func BenchmarkSolvePaperPipelines(b *testing.B) {
	inputs, _ := filepath.Glob("../testdata/*.input")
	for _, s := range []optimizer.Solver{Solver{}, optimizer.Exact{}} {
		for _, in := range inputs {
			raw, err := os.ReadFile(in)
			if err != nil {
				b.Fatal(err)
			}
			var p optimizer.Problem
			if err := json.Unmarshal(raw, &p); err != nil {
				b.Fatal(err)
			}
			b.Run(s.Name()+"/"+strings.TrimSuffix(filepath.Base(in), ".input"), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := optimizer.Solve(&p, s, nil); err != nil && !errors.Is(err, optimizer.ErrInfeasible) {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
