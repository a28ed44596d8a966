package optimizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/profiles"
)

var (
	update    = flag.Bool("update", false, "rewrite testdata/*.golden from the exact solver's plans")
	genInputs = flag.Bool("gen-inputs", false, "rewrite testdata/*.input from paperCases (then review them)")
)

// FormatPlan renders a plan as the stable text the golden files hold.
func formatPlan(pl Plan, err error) string {
	var b strings.Builder
	if err != nil {
		fmt.Fprintf(&b, "error: %v\n", err)
	}
	fmt.Fprintf(&b, "solver %s fallback %v\n", pl.Solver, pl.Fallback)
	for _, s := range pl.Stages {
		flags := ""
		if s.Estimated {
			flags += " estimated"
		}
		if s.Changed {
			flags += " changed"
		}
		fmt.Fprintf(&b, "stage %-10s variant %-28s cores %d batch %2d replicas %3d  p99 %.4fs queue %.4fs capacity %.4g/s accuracy %.4g%s\n",
			s.Stage, s.Variant, s.Cores, s.Batch, s.Replicas, s.ProfiledLatency.Seconds(), s.Queue.Seconds(), s.Throughput, s.Accuracy, flags)
	}
	fmt.Fprintf(&b, "latency %.4fs throughput %.4g/s headroom %.4g/s accuracy %.6g cost %d cores objective %.9g changes %d\n",
		pl.Latency.Seconds(), pl.Throughput, pl.Headroom, pl.Accuracy, pl.Cost, pl.Objective, pl.Changes)
	return b.String()
}

// TestGoldenPlansForThePapersPipelines solves every testdata/*.input with the
// exact solver and compares with *.golden; regenerate with
// `go test ./optimizer -update`, read the diff, commit what you understand.
func TestGoldenPlansForThePapersPipelines(t *testing.T) {
	if *genInputs {
		for name, p := range paperCases() {
			b, err := json.MarshalIndent(p, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join("testdata", name+".input"), append(b, '\n'), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	inputs, _ := filepath.Glob("testdata/*.input")
	if len(inputs) < 8 {
		t.Fatalf("found %d golden inputs, want the paper's pipelines", len(inputs))
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(in, ".input")
		t.Run(filepath.Base(name), func(t *testing.T) {
			b, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			p, err := ReadProblem(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("cannot load %s: %v", in, err)
			}
			pl, err := Solve(p, Exact{}, nil)
			if err != nil && !errors.Is(err, ErrInfeasible) {
				t.Fatal(err)
			}
			got := formatPlan(pl, err)
			if *update {
				if err := os.WriteFile(name+".golden", []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(name + ".golden")
			if err != nil {
				t.Fatalf("%v (run go test ./optimizer -update)", err)
			}
			if got != string(want) {
				t.Fatalf("plan differs from %s.golden:\n--- got\n%s--- want\n%s", name, got, want)
			}
		})
	}
}

// FuzzReadProblem fuzzes the problem-file parser (seeds: small documents in
// testdata/fuzz/FuzzReadProblem; the 60 KB golden inputs made each new
// input's minimisation take a minute). Whatever the bytes, ReadProblem
// returns a valid problem or a one-line error; a problem it returns writes
// back (MarshalJSON) to a document that reads back to the same problem;
// and the exact solver's answer to a small one passes Check (Solve runs
// it) or is a clean, one-line refusal.
func FuzzReadProblem(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ReadProblem(bytes.NewReader(b))
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error of more than one line: %q", err)
			}
			return
		}
		once, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("cannot write back what was read: %v", err)
		}
		q, err := ReadProblem(bytes.NewReader(once))
		if err != nil {
			t.Fatalf("cannot read back what was written: %v\n%s", err, once)
		}
		if twice, _ := json.Marshal(q); !bytes.Equal(once, twice) {
			t.Fatalf("round trip changed the problem:\n%s\n%s", once, twice)
		}
		in, err := Compile(p)
		if err != nil {
			t.Fatalf("ReadProblem accepted a problem Compile refuses: %v", err)
		}
		size := 1.0
		for _, sp := range in.Stages {
			size *= float64(len(sp.Options) + 1)
		}
		if size > 1e4 {
			return
		}
		_, err = Solve(p, Exact{}, nil)
		switch {
		case err == nil, errors.Is(err, ErrInfeasible), errors.Is(err, ErrTooLarge),
			strings.Contains(err.Error(), "cannot hold"), strings.Contains(err.Error(), "no profiled configuration"):
		default:
			t.Fatalf("Solve: %v", err)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Fatalf("error of more than one line: %q", err)
		}
	})
}

// paperProfile makes a profile of one stage: per variant a batch-1,
// one-core p99 base latency (seconds, from IPA.md §6.5 and §8 where known,
// plausible otherwise), latency (0.35 + 0.65·b)·base/c^0.6, p99 = 1.25·p50
// and throughput 0.95·b/p50.
func paperProfile(stage string, bases map[string]float64, order []string, batches []int) profiles.StageProfile {
	sp := profiles.StageProfile{Name: stage}
	for _, v := range order {
		vp := profiles.VariantProfile{Name: v}
		for _, c := range []int{1, 2, 4, 8} {
			cfg := profiles.Config{Cores: c}
			for _, b := range batches {
				p50 := bases[v] / 1.25 * (0.35 + 0.65*float64(b)) / math.Pow(float64(c), 0.6)
				p50 = math.Round(p50*1e5) / 1e5
				cfg.Points = append(cfg.Points, profiles.Point{Batch: b, LatencyP50: p50, LatencyP99: math.Round(1.25*p50*1e5) / 1e5,
					Throughput: math.Round(0.95*float64(b)/p50*1e3) / 1e3, Samples: 100})
			}
			vp.Configs = append(vp.Configs, cfg)
		}
		sp.Variants = append(sp.Variants, vp)
	}
	return sp
}

type paperStage struct {
	name    string
	order   []string
	base    map[string]float64
	acc     map[string]float64
	batches []int
}

func paperProblem(stages []paperStage, sla time.Duration, lambda, alpha, beta float64, batchCap int, normalize bool) *Problem {
	p := &Problem{
		Profiles: &profiles.Profile{Version: 1, Measured: profiles.Meta{Tool: "optimizer golden_test paperProfile (synthetic)", Repetitions: 1,
			Notes: "synthetic: batch-1 one-core p99 from IPA.md §6.5/§8 where known; (0.35+0.65b)/c^0.6 scaling"}},
		ArrivalRate: lambda, SLA: sla, Alpha: alpha, Beta: beta, Gamma: 1e-6, Accuracy: Multiply,
		Normalize: normalize, BatchCap: batchCap, ScalingCap: 100,
	}
	for _, st := range stages {
		p.Profiles.Stages = append(p.Profiles.Stages, paperProfile(st.name, st.base, st.order, st.batches))
		s := Step{Name: st.name}
		for _, v := range st.order {
			s.Variants = append(s.Variants, Variant{Name: v, Accuracy: st.acc[v]})
		}
		p.Stages = append(p.Stages, s)
	}
	return p
}

// paperCases are the pipelines of IPA.md §8 with the parameters of §2.7.
func paperCases() map[string]*Problem {
	video := []paperStage{
		{"detect", []string{"yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x"},
			map[string]float64{"yolov5n": 0.093, "yolov5s": 0.2, "yolov5m": 0.347, "yolov5l": 0.7, "yolov5x": 1.2},
			map[string]float64{"yolov5n": 45.7, "yolov5s": 56.8, "yolov5m": 64.1, "yolov5l": 67.3, "yolov5x": 68.9}, []int{1, 2, 8, 32, 64}},
		{"classify", []string{"resnet18", "resnet34", "resnet50", "resnet101", "resnet152"},
			map[string]float64{"resnet18": 0.07, "resnet34": 0.11, "resnet50": 0.135, "resnet101": 0.24, "resnet152": 0.3},
			map[string]float64{"resnet18": 69.75, "resnet34": 73.31, "resnet50": 76.13, "resnet101": 77.37, "resnet152": 78.31}, []int{1, 2, 8, 32, 64}},
	}
	audio := paperStage{"audio", []string{"s2t-small", "s2t-medium", "s2t-large"},
		map[string]float64{"s2t-small": 0.373, "s2t-medium": 0.788, "s2t-large": 2.31},
		map[string]float64{"s2t-small": -41.28, "s2t-medium": -35.12, "s2t-large": -33.26}, []int{1, 2, 4, 8}}
	qa := paperStage{"nlp-qa", []string{"roberta-base-squad2", "xlm-roberta-base-squad2"},
		map[string]float64{"roberta-base-squad2": 0.05, "xlm-roberta-base-squad2": 0.053},
		map[string]float64{"roberta-base-squad2": 82.9125, "xlm-roberta-base-squad2": 77.141}, []int{1, 2, 4, 8}}
	sent := paperStage{"nlp-sent", []string{"distilbert-sst2", "bert-sentiment", "distilbert-sentiment", "roberta-sentiment"},
		map[string]float64{"distilbert-sst2": 0.04, "bert-sentiment": 0.08, "distilbert-sentiment": 0.04, "roberta-sentiment": 0.08},
		map[string]float64{"distilbert-sst2": 91.1, "bert-sentiment": 79.90, "distilbert-sentiment": 79.63, "roberta-sentiment": 83.03}, []int{1, 2, 4, 8}}
	sum := paperStage{"nlp-sum", []string{"distilbart-1-1", "distilbart-12-1", "distilbart-6-6", "distilbart-12-3", "distilbart-9-6", "distilbart-12-6"},
		map[string]float64{"distilbart-1-1": 0.2, "distilbart-12-1": 0.3, "distilbart-6-6": 0.5, "distilbart-12-3": 0.55, "distilbart-9-6": 0.7, "distilbart-12-6": 0.9},
		map[string]float64{"distilbart-1-1": 32.26, "distilbart-12-1": 33.37, "distilbart-6-6": 35.73, "distilbart-12-3": 36.39, "distilbart-9-6": 36.61, "distilbart-12-6": 36.99}, []int{1, 2, 4, 8}}
	li := paperStage{"nlp-li", []string{"xlm-roberta-langid"}, map[string]float64{"xlm-roberta-langid": 0.15}, map[string]float64{"xlm-roberta-langid": 99.59}, []int{1, 2, 4, 8}}
	trans := paperStage{"nlp-trans", []string{"opus-mt-fr-en", "opus-mt-tc-big-fr-en"},
		map[string]float64{"opus-mt-fr-en": 0.4, "opus-mt-tc-big-fr-en": 1.2},
		map[string]float64{"opus-mt-fr-en": 33.1, "opus-mt-tc-big-fr-en": 34.4}, []int{1, 2, 4, 8}}

	light := func(p *Problem, replicas ...int) []models.StageConfig {
		var cur []models.StageConfig
		for i, s := range p.Stages {
			cur = append(cur, models.StageConfig{Variant: s.Variants[0].Name, Cores: 1, MaxBatch: 1, Replicas: replicas[i]})
		}
		return cur
	}
	cases := map[string]*Problem{}
	cases["video-ipa"] = paperProblem(video, 6890*time.Millisecond, 20, 2, 1, 8, false)
	c := paperProblem(video, 6890*time.Millisecond, 4, 2, 1, 8, false)
	c.Compat = true
	cases["video-compat-low-load"] = c
	c = paperProblem(video, 6890*time.Millisecond, 20, 2, 1, 8, false)
	c.Current, c.Baseline = light(c, 1, 1), Scale
	cases["video-fa2-low"] = c
	c = paperProblem(video, 6890*time.Millisecond, 20, 2, 1, 8, false)
	c.Current, c.Baseline = light(c, 3, 3), Switch
	cases["video-rim"] = c
	c = paperProblem(video, 6890*time.Millisecond, 20, 2, 1, 8, false)
	c.CoreCapacity = 24
	c.Current = light(c, 1, 1)
	cases["video-capacity-24"] = c
	c = paperProblem(video, 300*time.Millisecond, 2000, 2, 1, 8, false)
	c.ScalingCap = 10
	cases["video-infeasible"] = c
	cases["audio-qa"] = paperProblem([]paperStage{audio, qa}, 9230*time.Millisecond, 10, 10, 0.5, 1, true)
	cases["audio-sent"] = paperProblem([]paperStage{audio, sent}, 9420*time.Millisecond, 10, 30, 0.5, 1, true)
	cases["sum-qa"] = paperProblem([]paperStage{sum, qa}, 3840*time.Millisecond, 10, 10, 0.5, 1, true)
	cases["nlp"] = paperProblem([]paperStage{li, trans, sum}, 17610*time.Millisecond, 10, 40, 0.5, 1, true)
	c = paperProblem(video, 6890*time.Millisecond, 20, 2, 1, 8, false)
	c.Accuracy, c.Normalize = Sum, true
	cases["video-sum-normalized"] = c
	return cases
}
