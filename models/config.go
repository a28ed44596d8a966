package models

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// StageConfig is the knob setting of one stage: which variant serves, how
// requests are batched, and how many replicas run on how many cores each.
type StageConfig struct {
	Variant string `json:"variant" yaml:"variant"`
	// MaxBatch is the largest batch the stage forms (>= 1).
	MaxBatch int `json:"max_batch" yaml:"max_batch"`
	// MaxWait is how long the oldest queued request may wait for a batch to fill.
	MaxWait time.Duration `json:"max_wait" yaml:"max_wait"`
	// Replicas is the number of concurrent engine instances (>= 1).
	Replicas int `json:"replicas" yaml:"replicas"`
	// Cores is the number of intra-op threads per replica (>= 1).
	Cores int `json:"cores" yaml:"cores"`
}

// Validate checks the ranges of c.
func (c StageConfig) Validate() error {
	switch {
	case c.Variant == "":
		return fmt.Errorf("variant must be set")
	case c.MaxBatch < 1 || c.MaxBatch > 1024:
		return fmt.Errorf("max_batch %d out of range [1, 1024]", c.MaxBatch)
	case c.MaxWait < 0 || c.MaxWait > time.Minute:
		return fmt.Errorf("max_wait %s out of range [0, 1m]", c.MaxWait)
	case c.Replicas < 1 || c.Replicas > 256:
		return fmt.Errorf("replicas %d out of range [1, 256]", c.Replicas)
	case c.Cores < 1 || c.Cores > 256:
		return fmt.Errorf("cores %d out of range [1, 256]", c.Cores)
	}
	return nil
}

// ParseStageConfig reads the short form VARIANT[/BATCH[/REPLICAS[/CORES]]]
// used on command lines and in experiment files (e.g. "resnet50/4/2/1").
// Omitted numbers are 1; MaxWait is base's. The result is validated.
func ParseStageConfig(s string, base StageConfig) (StageConfig, error) {
	parts := strings.Split(s, "/")
	c := StageConfig{Variant: strings.TrimSpace(parts[0]), MaxBatch: 1, Replicas: 1, Cores: 1, MaxWait: base.MaxWait}
	if len(parts) > 4 || c.Variant == "" {
		return StageConfig{}, fmt.Errorf("%q: write VARIANT[/BATCH[/REPLICAS[/CORES]]], e.g. resnet50/4/2/1", s)
	}
	for i, dst := range []*int{&c.MaxBatch, &c.Replicas, &c.Cores} {
		if i+1 < len(parts) {
			n, err := strconv.Atoi(strings.TrimSpace(parts[i+1]))
			if err != nil || n < 1 {
				return StageConfig{}, fmt.Errorf("%q: batch, replicas and cores are positive integers", s)
			}
			*dst = n
		}
	}
	if err := c.Validate(); err != nil {
		return StageConfig{}, fmt.Errorf("%q: %w", s, err)
	}
	return c, nil
}

// Short is the form ParseStageConfig reads (MaxWait aside).
func (c StageConfig) Short() string {
	return fmt.Sprintf("%s/%d/%d/%d", c.Variant, c.MaxBatch, c.Replicas, c.Cores)
}
