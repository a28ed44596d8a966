package sim

import (
	"bytes"
	"context"

	"os"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ipa-serving/ipa/batcher"
	"github.com/ipa-serving/ipa/dataplane/loadgen"
	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/optimizer"
	"github.com/ipa-serving/ipa/orchestrator"
	"github.com/ipa-serving/ipa/orchestrator/predict"
	"github.com/ipa-serving/ipa/profiles"
)

func classifyProfile(t testing.TB) *profiles.Profile {
	t.Helper()
	f, err := os.Open("../../profiles/measured/classify.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := profiles.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// classifyOptions is the classify pipeline under load with the LSTM and
// the exact solver.
func classifyOptions(t testing.TB, load loadgen.Load, log *bytes.Buffer) Options {
	t.Helper()
	prof := classifyProfile(t)
	var vs []optimizer.Variant
	acc := map[string]float64{"shufflenet": 58, "squeezenet": 56.85, "inception-v2": 73.5, "alexnet": 54.8, "inception-v1": 67.23,
		"resnet50": 74.93, "densenet121": 60.96, "zfnet512": 55.97, "vgg19": 73.72}
	for _, v := range prof.Stage("classify").Variants {
		vs = append(vs, optimizer.Variant{Name: v.Name, Accuracy: acc[v.Name]})
	}
	lstm, err := predict.Default()
	if err != nil {
		t.Fatal(err)
	}
	initial := models.StageConfig{Variant: "squeezenet", MaxBatch: 4, MaxWait: 2 * time.Millisecond, Replicas: 1, Cores: 1}
	opt := Options{
		Pipeline: "classify", SLA: time.Second, Profiles: prof, Load: load, Seed: 7,
		Steps:        []Step{{Name: "classify", Initial: initial}},
		StartupDelay: LocalStartupDelay, GlueCost: 3 * time.Millisecond,
		Adapt: &Adaptation{
			Config:    orchestrator.Config{Interval: 10 * time.Second, History: 120, Margin: 1.1},
			Problem:   optimizer.Problem{Stages: []optimizer.Stage{{Name: "classify", Variants: vs}}, Profiles: prof, SLA: time.Second, Alpha: 1, Beta: 0.05, Gamma: 1e-6, ScalingCap: 16, CoreCapacity: 8},
			Solver:    optimizer.Exact{},
			Predictor: lstm,
		},
	}
	if log != nil {
		opt.Decisions = log
	}
	return opt
}

// output is everything a run writes, as bytes.
func output(t *testing.T, opt Options) []byte {
	t.Helper()
	var log bytes.Buffer
	opt.Decisions = &log
	res, err := Run(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	rep := res.Load.Report()
	var out bytes.Buffer
	out.Write(log.Bytes())
	if err := rep.WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	if err := loadgen.WriteRecords(&out, res.Load.Records, loadgen.JSONLines); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func stepLoad(t testing.TB) loadgen.Counts {
	l, err := loadgen.ParseSteps("60s@5,60s@40,60s@80,60s@5")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestSimulateIsDeterministic(t *testing.T) {
	opt := classifyOptions(t, stepLoad(t), nil)
	a, b := output(t, opt), output(t, opt)
	if !bytes.Equal(a, b) {
		t.Fatalf("two runs with seed %d differ (%d vs %d bytes)", opt.Seed, len(a), len(b))
	}
	opt.Seed++
	if bytes.Equal(a, output(t, opt)) {
		t.Fatal("another seed gave the same bytes")
	}
}

// TestSimulateConservesRequests: every request the load sent is answered
// exactly once (succeeded, dropped or failed), answers come after sending,
// and the late ones are successes past the SLA.
func TestSimulateConservesRequests(t *testing.T) {
	load := stepLoad(t)
	opt := classifyOptions(t, load, nil)
	opt.Adapt.Problem.CoreCapacity = 2 // overload: 80/s cannot be carried at any accuracy on 2 cores with the glue
	opt.MaxQueue = 64                  // and some 429s
	res, err := Run(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	if want := int(load.Total()); len(res.Load.Records) != want {
		t.Fatalf("%d records for a load of %d requests", len(res.Load.Records), want)
	}
	rep := res.Load.Report()
	if rep.Sent != rep.Succeeded+rep.Dropped+rep.Failed {
		t.Fatalf("sent %d != succeeded %d + dropped %d + failed %d", rep.Sent, rep.Succeeded, rep.Dropped, rep.Failed)
	}
	late := 0
	for i, r := range res.Load.Records {
		if r.Seq != i {
			t.Fatalf("record %d has seq %d", i, r.Seq)
		}
		switch r.Kind {
		case loadgen.Succeeded:
			if r.Status != 200 || r.Latency <= 0 {
				t.Fatalf("success %+v", r)
			}
			if r.Latency > opt.SLA {
				late++
			}
		case loadgen.Dropped:
			if r.Reason == "" || (r.Status != 504 && r.Status != 429 && r.Reason != loadgen.ReasonClientOverload) {
				t.Fatalf("drop %+v", r)
			}
		default:
			t.Fatalf("failure %+v", r)
		}
	}
	if rep.Dropped == 0 || rep.DroppedByReason == nil {
		t.Fatalf("an overloaded run dropped nothing: %+v", rep)
	}
	t.Logf("sent %d: succeeded %d (late %d), dropped %d %v", rep.Sent, rep.Succeeded, late, rep.Dropped, rep.DroppedByReason)
	if len(res.Decisions) != 24 {
		t.Fatalf("%d decisions in 240 s at 10 s", len(res.Decisions))
	}
}

// TestBatchingMatchesBlockingNext is the differential test: a recorded
// arrival sequence fed to the real batcher with replica goroutines blocked
// in Next (as dataplane/worker.go runs it, under synctest's virtual time)
// forms the same batches, at the same times, with the same deadline drops,
// as the simulator's polled batcher.
func TestBatchingMatchesBlockingNext(t *testing.T) {
	const replicas = 2
	service := func(rows int) time.Duration { return time.Duration(4+3*rows) * time.Millisecond }
	prof := &profiles.Profile{Version: 1, Stages: []profiles.StageProfile{{Name: "s", Variants: []profiles.VariantProfile{{Name: "v",
		Configs: []profiles.Config{{Cores: 1}}}}}}}
	for b := 1; b <= 8; b++ {
		l := service(b).Seconds()
		prof.Stages[0].Variants[0].Configs[0].Points = append(prof.Stages[0].Variants[0].Configs[0].Points,
			profiles.Point{Batch: b, LatencyP50: l, LatencyP99: l, Throughput: float64(b) / l})
	}
	load, err := loadgen.ParseSteps("3s@50,3s@400,3s@100")
	if err != nil {
		t.Fatal(err)
	}
	cfg := models.StageConfig{Variant: "v", MaxBatch: 4, MaxWait: 3 * time.Millisecond, Replicas: replicas, Cores: 1}
	sla := 60 * time.Millisecond
	opt := Options{Pipeline: "p", SLA: sla, Profiles: prof, Load: load, Seed: 3, Steps: []Step{{Name: "s", Initial: cfg}}}

	type batch struct {
		at   time.Duration
		seqs []int
	}
	var simBatches []batch
	res, err := run(context.Background(), opt, func(at time.Duration, seqs []int) { simBatches = append(simBatches, batch{at, seqs}) })
	if err != nil {
		t.Fatal(err)
	}
	// The recorded arrivals: what the simulator sent.
	var arrivals []time.Duration
	for _, r := range res.Load.Records {
		arrivals = append(arrivals, r.Sent)
	}
	simDrops := map[int]time.Duration{}
	for _, r := range res.Load.Records {
		if r.Kind == loadgen.Dropped {
			simDrops[r.Seq] = r.Sent + r.Latency
		}
	}

	var realBatches []batch
	realDrops := map[int]time.Duration{}
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var mu sync.Mutex
		type item struct {
			seq      int
			deadline time.Time
		}
		b, err := batcher.New[item](batcher.Config{MaxBatch: cfg.MaxBatch, MaxWait: cfg.MaxWait, MaxQueue: 1024},
			batcher.OnExpire(func(it item, _ error) {
				mu.Lock()
				realDrops[it.seq] = time.Since(start)
				mu.Unlock()
			}))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for range replicas {
			wg.Go(func() { // dataplane/worker.go's loop
				var dst []item
				for {
					got, err := b.Next(ctx, dst[:0])
					if err != nil {
						return
					}
					now := time.Now()
					seqs, live := []int{}, 0
					for _, it := range got {
						seqs = append(seqs, it.seq)
						if !now.Before(it.deadline) {
							mu.Lock()
							realDrops[it.seq] = now.Sub(start)
							mu.Unlock()
							continue
						}
						live++
					}
					mu.Lock()
					realBatches = append(realBatches, batch{now.Sub(start), seqs})
					mu.Unlock()
					if live > 0 {
						time.Sleep(service(live))
					}
					dst = got
				}
			})
		}
		for seq, at := range arrivals {
			time.Sleep(time.Until(start.Add(at)))
			now := time.Now()
			if err := b.Submit(item{seq, now.Add(sla)}, 1, now.Add(sla)); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Second)
		cancel()
		wg.Wait()
	})
	if len(simBatches) == 0 || len(simDrops) == 0 {
		t.Fatalf("a weak test: %d batches, %d drops", len(simBatches), len(simDrops))
	}
	order := func(a, b batch) int {
		if a.at != b.at {
			return int(a.at - b.at)
		}
		return a.seqs[0] - b.seqs[0]
	}
	slices.SortFunc(simBatches, order)
	slices.SortFunc(realBatches, order)
	if len(simBatches) != len(realBatches) {
		t.Fatalf("simulated %d batches, real %d", len(simBatches), len(realBatches))
	}
	for i := range simBatches {
		s, r := simBatches[i], realBatches[i]
		if s.at != r.at || !slices.Equal(s.seqs, r.seqs) {
			t.Fatalf("batch %d: simulated %v at %v, real %v at %v", i, s.seqs, s.at, r.seqs, r.at)
		}
	}
	if len(simDrops) != len(realDrops) {
		t.Fatalf("simulated %d deadline drops, real %d", len(simDrops), len(realDrops))
	}
	for seq, at := range simDrops {
		if realDrops[seq] != at {
			t.Fatalf("request %d dropped at %v in the simulation, at %v for real", seq, at, realDrops[seq])
		}
	}
	t.Logf("%d requests, %d batches, %d deadline drops: identical", len(arrivals), len(simBatches), len(simDrops))
}

func BenchmarkSimulateStepsLSTM(b *testing.B) {
	opt := classifyOptions(b, stepLoad(b), nil)
	for b.Loop() {
		if _, err := Run(context.Background(), opt); err != nil {
			b.Fatal(err)
		}
	}
}
