package optimizer

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkSolve times compile + solve + check over BenchCases (stages
// 1…10 × variants 1…10, multiply and sum). Brute force runs only where its
// raw space is at most 10^7 plans. optimizer/highs runs the same grid with
// HiGHS next to the exact solver.
func BenchmarkSolve(b *testing.B) {
	for _, s := range []Solver{Exact{}, BruteForce{}} {
		for _, c := range BenchCases() {
			if _, ok := s.(BruteForce); ok && c.RawPlans > 1e7 {
				continue
			}
			b.Run(s.Name()+"/"+c.Name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := Solve(c.Problem, s, nil); err != nil && !errors.Is(err, ErrInfeasible) {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkSolvePaperPipelines times the golden problems (the paper's five
// pipelines and the video baselines) per solver; the target is <= 1 ms.
func BenchmarkSolvePaperPipelines(b *testing.B) {
	benchPaper(b, []Solver{Exact{}})
}

func benchPaper(b *testing.B, solvers []Solver) {
	inputs, _ := filepath.Glob("testdata/*.input")
	for _, s := range solvers {
		for _, in := range inputs {
			raw, err := os.ReadFile(in)
			if err != nil {
				b.Fatal(err)
			}
			p, err := ReadProblem(bytes.NewReader(raw))
			if err != nil {
				b.Fatal(err)
			}
			b.Run(s.Name()+"/"+strings.TrimSuffix(filepath.Base(in), ".input"), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := Solve(p, s, nil); err != nil && !errors.Is(err, ErrInfeasible) {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
