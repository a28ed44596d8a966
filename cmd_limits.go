package main

import (
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/optimizer"
	"github.com/ipa-serving/ipa/profiles"
)

// hostLimits returns the ceilings of this process's stages: this host's
// cores and memory (dataplane.ReadHost), and the shipped memory model for
// the stages of the repository at dir.
func hostLimits(cfg dataplane.LimitsConfig, dir string) (*dataplane.Limits, error) {
	return dataplane.NewLimits(cfg, dataplane.ReadHost(), memoryEstimate(profiles.MeasuredMemory(), dir))
}

// memoryEstimate is the memory model of a stage whose replicas load every
// variant of meta (the repository at dir has their files).
func memoryEstimate(mem *profiles.Memory, dir string) dataplane.MemoryEstimate {
	return func(meta *models.Stage, cfg models.StageConfig) (once, replica int64) {
		e := mem.Estimate(meta.Name, variantFiles(dir, meta), cfg.MaxBatch)
		return e.Once, e.Replica
	}
}

// variantFiles lists the variants of meta with the sizes of their model
// files (0 when unreadable: the estimate then assumes a small file).
func variantFiles(dir string, meta *models.Stage) []profiles.VariantFile {
	out := make([]profiles.VariantFile, len(meta.Variants))
	for i, v := range meta.Variants {
		out[i].Name = v.Name
		if fi, err := os.Stat(filepath.Join(dir, meta.Dir, v.Name, v.File)); err == nil {
			out[i].FileBytes = fi.Size()
		}
	}
	return out
}

// coreCapacity returns the core budget of the controller's plans in this
// process: --controller.core-capacity, by default the host's cores (no
// oversubscription: the plan's replicas should not share cores), never
// above the limits' ceiling.
func coreCapacity(f ControllerFlags, limits *dataplane.Limits) (int, error) {
	host := limits.Host()
	switch {
	case f.CoreCapacity == 0:
		return max(1, int(math.Floor(host.CPUs+1e-9))), nil
	case f.CoreCapacity > limits.Cores():
		return 0, fmt.Errorf("%w: --controller.core-capacity %d exceeds this host's ceiling of %d cores (%s × --limits.oversubscribe): lower it",
			dataplane.ErrOverLimit, f.CoreCapacity, limits.Cores(), host.Source)
	}
	return f.CoreCapacity, nil
}

// planWithin returns the edit that keeps the controller's plans inside the
// process's ceilings: the core budget (coreCapacity) and, by memory, the
// replicas per stage (Limits.ReplicaCap at the largest batch each stage
// may plan).
func planWithin(capacity int, limits *dataplane.Limits, stages []*dataplane.Stage, log *slog.Logger) func(*optimizer.Problem) {
	host := limits.Host()
	return func(p *optimizer.Problem) {
		p.CoreCapacity = capacity
		batches := make([]int, len(stages))
		for i := range stages {
			batches[i] = largestBatch(p, i)
		}
		replicaCap, err := limits.ReplicaCap(stages, batches)
		if err != nil {
			log.Warn("planning without a memory cap on replicas", "err", err)
			return
		}
		scalingCap := p.ScalingCap
		if scalingCap == 0 {
			scalingCap = optimizer.DefaultScalingCap
		}
		if replicaCap > 0 && replicaCap < scalingCap {
			p.ScalingCap = replicaCap
		}
		log.Info("plan ceilings", "core_capacity", p.CoreCapacity, "scaling_cap", p.ScalingCap, "memory_replica_cap", replicaCap, "host", host.Source)
	}
}

// largestBatch is the largest batch the plan may give step i: the largest
// candidate or profiled batch of its variants, under the batch cap.
func largestBatch(p *optimizer.Problem, i int) int {
	b := 1
	for _, c := range p.Batches {
		b = max(b, c)
	}
	if len(p.Batches) == 0 && p.Profiles != nil {
		st := p.Stages[i]
		name := st.Profile
		if name == "" {
			name = st.Name
		}
		for _, v := range st.Variants {
			if vp := p.Profiles.Variant(name, v.Name); vp != nil {
				for _, c := range vp.Configs {
					b = max(b, slices.Max(c.Batches()))
				}
			}
		}
	}
	if p.BatchCap > 0 {
		b = min(b, p.BatchCap)
	}
	return b
}
