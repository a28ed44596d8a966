package sim

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ipa-serving/ipa/batcher"
	"github.com/ipa-serving/ipa/dataplane/loadgen"
	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/profiles"
)

// TestBatchingMatchesBlockingNext is the differential test: a recorded
// arrival sequence fed to the real batcher with replica goroutines blocked
// in Next (as dataplane/worker.go runs it, under synctest's virtual time)
// forms the same batches, at the same times, with the same deadline drops
// and the same admission (batcher.Estimator, as dataplane/admission.go
// uses it), as the simulator's polled batcher.
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
	sla := 150 * time.Millisecond
	opt := Options{Pipeline: Pipeline{Name: "p", SLA: sla, Profiles: prof, Steps: []Step{{Name: "s", Initial: cfg}}}, Load: load, Seed: 3}

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
	refused, late := 0, 0
	for _, r := range res.Load.Records {
		if r.Kind == loadgen.Dropped {
			simDrops[r.Seq] = r.Sent + r.Latency
			if r.Status == 429 {
				refused++
			}
			if strings.Contains(r.Reason, "not computed") {
				late++
			}
		}
	}
	t.Logf("%d refused at arrival, %d dropped by the worker's check", refused, late)

	var realBatches []batch
	realDrops := map[int]time.Duration{}
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var mu sync.Mutex
		type item struct {
			seq               int
			arrived, deadline time.Time
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
		est := batcher.NewEstimator[estKey](nil, 0)
		key := estKey{cfg.Variant, cfg.Cores}
		drop := func(seq int, at time.Time) {
			mu.Lock()
			realDrops[seq] = at.Sub(start)
			mu.Unlock()
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
					seqs, live := []int{}, []item{}
					for _, it := range got {
						seqs = append(seqs, it.seq)
						if !now.Before(it.deadline) {
							drop(it.seq, now)
							continue
						}
						live = append(live, it)
					}
					rows, left, fate := make([]int, len(live)), make([]time.Duration, len(live)), make([]batcher.Fate, len(live))
					for i, it := range live {
						rows[i], left[i] = 1, batcher.Usable(it.deadline, it.arrived, now)
					}
					if est.Fit(key, rows, left, fate) {
						kept, later := live[:0], []item(nil)
						for i, it := range live {
							switch fate[i] {
							case batcher.Late:
								drop(it.seq, now)
							case batcher.Later:
								later = append(later, it)
							default:
								kept = append(kept, it)
							}
						}
						for i := len(later) - 1; i >= 0; i-- {
							if err := b.Requeue(later[i], 1, later[i].arrived, later[i].deadline); err != nil {
								t.Error(err)
							}
						}
						live = kept
					}
					mu.Lock()
					realBatches = append(realBatches, batch{now.Sub(start), seqs})
					mu.Unlock()
					if len(live) > 0 {
						slot := est.Begin(key, len(live))
						time.Sleep(service(len(live)))
						est.End(slot, true)
					}
					dst = got
				}
			})
		}
		for seq, at := range arrivals {
			time.Sleep(time.Until(start.Add(at)))
			now := time.Now()
			ahead := batcher.Ahead{Rows: b.Len(), Size: 1, MaxBatch: cfg.MaxBatch, Replicas: replicas}
			if v, _ := est.Decide(key, ahead, batcher.Usable(now.Add(sla), now, now)); v != batcher.Admit {
				drop(seq, now)
				continue
			}
			if err := b.Submit(item{seq, now, now.Add(sla)}, 1, now.Add(sla)); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Second)
		cancel()
		wg.Wait()
	})
	if len(simBatches) == 0 || len(simDrops) == 0 || refused == 0 {
		t.Fatalf("a weak test: %d batches, %d drops, %d refused at arrival", len(simBatches), len(simDrops), refused)
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
