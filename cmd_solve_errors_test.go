package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/optimizer"
)

// solveDoc returns a small feasible problem document to edit: one stage of
// SyntheticProblem, or stages[0] x stages[1] of it.
func solveDoc(t *testing.T, stages ...int) map[string]any {
	t.Helper()
	p := optimizer.SyntheticProblem(1, 2)
	if len(stages) == 2 {
		p = optimizer.SyntheticProblem(stages[0], stages[1])
	}
	var doc map[string]any
	if err := json.Unmarshal(must(json.Marshal(p)), &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// writeDoc writes doc (a map, or raw bytes) to a file and returns its path.
func writeDoc(t *testing.T, doc any) string {
	t.Helper()
	b, ok := doc.([]byte)
	if !ok {
		var err error
		if b, err = json.Marshal(doc); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "problem.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSolveCommandFailsWithOneLineOnBadInput runs `ipa solve`'s command
// in-process on bad inputs: each must fail (a non-zero exit) with a
// one-line message saying what is wrong, and never hang.
func TestSolveCommandFailsWithOneLineOnBadInput(t *testing.T) {
	edit := func(f func(map[string]any)) string {
		doc := solveDoc(t)
		f(doc)
		return writeDoc(t, doc)
	}
	variant := func(d map[string]any) map[string]any {
		return d["stages"].([]any)[0].(map[string]any)["variants"].([]any)[0].(map[string]any)
	}
	rate := 20.0
	for _, c := range []struct {
		name string
		cmd  SolveCmd
		want string
	}{
		{"no such file", SolveCmd{Problem: filepath.Join(t.TempDir(), "nope.json")}, "no such file"},
		{"directory", SolveCmd{Problem: t.TempDir()}, "is a directory"},
		{"dev zero", SolveCmd{Problem: "/dev/zero"}, "larger than 64 MiB"},
		{"empty", SolveCmd{Problem: writeDoc(t, []byte{})}, "empty"},
		{"not JSON", SolveCmd{Problem: writeDoc(t, []byte("{\n\"stages\": oops"))}, "invalid JSON at line 2"},
		{"trailing data", SolveCmd{Problem: writeDoc(t, append(must(json.Marshal(solveDoc(t))), " {}"...))}, "invalid character"},
		{"unknown field", SolveCmd{Problem: edit(func(d map[string]any) { d["slo"] = 1 })}, `unknown field "slo"`},
		{"missing arrival_rate", SolveCmd{Problem: edit(func(d map[string]any) { delete(d, "arrival_rate") })}, `"arrival_rate" is missing`},
		{"missing accuracy", SolveCmd{Problem: edit(func(d map[string]any) { delete(variant(d), "accuracy") })}, `variant "v0": "accuracy" is missing`},
		{"wrong type", SolveCmd{Problem: edit(func(d map[string]any) { d["alpha"] = "1" })}, "cannot unmarshal string"},
		{"negative sla", SolveCmd{Problem: edit(func(d map[string]any) { d["sla_seconds"] = -1 })}, "sla_seconds -1"},
		{"replicas 2^62", SolveCmd{Problem: edit(func(d map[string]any) {
			d["baseline"] = "switch"
			d["current"] = []any{map[string]any{"variant": "v0", "cores": 1, "max_batch": 1, "replicas": 1 << 62}}
		})}, "current replicas 4611686018427387904 must be in [1, 1048576]"},
		{"cores 2^40", SolveCmd{Problem: edit(func(d map[string]any) {
			d["current"] = []any{map[string]any{"variant": "v0", "cores": 1 << 40, "max_batch": 1, "replicas": 1}}
		})}, "current cores 1099511627776"},
		{"scaling cap", SolveCmd{Problem: edit(func(d map[string]any) { d["scaling_cap"] = 1 << 40 })}, "scaling_cap 1099511627776"},
		{"infeasible", SolveCmd{Problem: edit(func(d map[string]any) { d["sla_seconds"] = 0.001 }), Solver: "exact"}, "applying the max-throughput fallback"},
		{"brute too large", SolveCmd{Problem: writeDoc(t, solveDoc(t, 3, 3)), Solver: "brute"}, "use --solver exact or highs"},
		{"no profile", SolveCmd{}, "give --profile FILE"},
		{"no rate", SolveCmd{Profile: "profile.json"}, "give --rate"},
		{"empty models dir", SolveCmd{Profile: "builtin:ocr", Rate: &rate, Pipeline: PipelineFlags{Pipeline: "ocr"}}, "--models.dir is empty"},
		{"missing profile file", SolveCmd{Profile: filepath.Join(t.TempDir(), "nope.json"), Rate: &rate}, "no such file"},
		{"fanout negative", SolveCmd{Problem: edit(func(d map[string]any) { d["stages"].([]any)[0].(map[string]any)["fanout"] = -2 })}, "fanout -2 must be"},
		{"fanout of no step", SolveCmd{Profile: "builtin:ocr", Rate: &rate, Fanout: []string{"lines=4"}, Pipeline: PipelineFlags{Pipeline: "ocr"}, Models: RepoFlags{Dir: modelsDir(t)}}, `has no step "lines"`},
		{"fanout not a number", SolveCmd{Profile: "builtin:ocr", Rate: &rate, Fanout: []string{"rec=many"}, Pipeline: PipelineFlags{Pipeline: "ocr"}, Models: RepoFlags{Dir: modelsDir(t)}}, "want STEP=ITEMS"},
		{"negative --sla", SolveCmd{Profile: "builtin:ocr", Rate: &rate, SLA: -time.Second, Pipeline: PipelineFlags{Pipeline: "ocr"}, Models: RepoFlags{Dir: modelsDir(t)}}, "--sla -1s: give a positive duration"},
		{"negative --derive-sla", SolveCmd{Profile: "builtin:ocr", Rate: &rate, DeriveSLA: -5, Pipeline: PipelineFlags{Pipeline: "ocr"}, Models: RepoFlags{Dir: modelsDir(t)}}, "--derive-sla -5: give a positive factor"},
		{"NaN --derive-sla", SolveCmd{Profile: "builtin:ocr", Rate: &rate, DeriveSLA: math.NaN(), Pipeline: PipelineFlags{Pipeline: "ocr"}, Models: RepoFlags{Dir: modelsDir(t)}}, "--derive-sla NaN"},
		{"no plan at all", SolveCmd{Profile: "builtin:ocr", Rate: &rate, CoreCapacity: 1, Pipeline: PipelineFlags{Pipeline: "ocr"}, Models: RepoFlags{Dir: modelsDir(t)}}, "cannot hold even the smallest configuration"},
	} {
		var out bytes.Buffer
		err := c.cmd.run(&out)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: err = %v, want one line with %q", c.name, err, c.want)
		}
		if c.name == "no plan at all" && out.Len() > 0 {
			t.Errorf("no plan at all: printed %q besides the error", out.String())
		}
		if c.name == "infeasible" && (!errors.Is(err, optimizer.ErrInfeasible) || !strings.Contains(out.String(), "INFEASIBLE")) {
			t.Errorf("infeasible: err %v, output %s", err, out.String())
		}
	}
}

func must[T any](x T, err error) T {
	if err != nil {
		panic(err)
	}
	return x
}

// TestSolveCommandSolvesAProblemFile is the good path of the same command.
func TestSolveCommandSolvesAProblemFile(t *testing.T) {
	path := writeDoc(t, solveDoc(t))
	for _, s := range []string{"highs", "exact"} {
		var out bytes.Buffer
		if err := (&SolveCmd{Problem: path, Solver: s, Output: "json"}).run(&out); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		var pl optimizer.Plan
		if err := json.Unmarshal(out.Bytes(), &pl); err != nil || len(pl.Stages) != 1 || pl.Solver != s {
			t.Fatalf("%s: plan %s, %v", s, out.String(), err)
		}
	}
}
